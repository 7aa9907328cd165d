"""Decontamination: training documents that share a word n-gram with evaluation data are dropped and reported.

As in GPT-3 (Brown et al., 2020, appendix C) a training document is contaminated when it contains any
13-word sequence of an evaluation example, with punctuation, whitespace and case ignored. Both sides are
normalised the same way:

* NFKC, case-folded (ASCII text takes a byte-wise fast path with the same result);
* words are maximal runs of letters and digits: punctuation, underscores and whitespace only separate
  words, so `Hello, World!` and `hello world` are the same two words, and so are `foo_bar(x)` and
  `Foo bar X` three.

Evaluation data (`DecontaminationConfig.files`: files, directories or globs, local or fsspec URLs):

* JSONL (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`), one example per line. A multiple-choice record of the
  evaluation package (`{"context": str, "choices": [str, ...], "label": int}`) gives one text per choice:
  the context with that choice appended, as the evaluator scores it, so n-grams that run from the
  question into its answer count too. `choices: correct` keeps only the labelled choice, for tasks whose
  distractors are drawn from the training distribution (the shipped stdlib tasks). Any other record
  needs a string at `text_field` ("text").
* any other file is plain text. With `text_unit: line` (the default) each non-empty line is one example,
  the format of prompt lists; with `text_unit: file` the whole file is one example, its n-grams run
  across line breaks, and a match is reported at the line where the n-gram starts. Directories and
  globs pick up `.jsonl*` and `.txt` files only; a file named on its own is read whatever its name.

A text of fewer than `ngram` words has no n-gram of that length. As GPT-3 does, such a text is matched
whole (a training document is contaminated by it if it contains all its words in order), provided it has
at least `min_words` words (8, GPT-3's smallest n, for spurious matches below it); shorter ones are
ignored and counted as too short, as a bare "yes" or "42" would match nearly every document. A file that
cannot be read or a record that is not an example is an error naming the file and line: a skipped
evaluation example would be contamination nobody looks for.

Hashing: each word gets a polynomial hash of its bytes and each n-gram a polynomial hash of its words'
hashes, both from prefix sums (numpy), so a document's n-grams of every indexed length are hashed at
once in a few passes. The index is one sorted uint64 array of the distinct n-grams' hashes (lengths kept
apart by a salt) with the file and line of each one's first occurrence, 20 bytes an n-gram, plus a
prefilter of 16 one-byte slots an n-gram (64 KiB to 64 MiB) addressed by a hash's top bits, which rules
out most of a document's n-grams before the binary search. Two different n-grams share a hash with
probability about 2**-64. All three shipped tasks index 20,280 n-grams in under 0.1 s and 0.9 MB.
Throughput (one core, docs/data.md): 65-100 MB/s on the standard library's code (18 KB a file), 13-20
MB/s on its docstrings, where a fixed 11-18 us a document dominates (240 bytes on average).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lit_pretrain.data.dedup import mix64
from lit_pretrain.data.options import dataclass_from_dict
from lit_pretrain.data.sources import (
    JSONL_EXTENSIONS,
    display_path,
    dotted_get,
    expand_paths,
    is_url,
    open_binary,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# GPT-3's n; its appendix C also sets 8 as the smallest n for short examples.
DEFAULT_NGRAM = 13
DEFAULT_MIN_WORDS = 8
CHOICES = ("all", "correct")
TEXT_UNITS = ("line", "file")
# What a directory or glob of evaluation data picks up; a file named on its own is read whatever its name.
EVAL_EXTENSIONS = (*JSONL_EXTENSIONS, ".txt")
# How many "document id -> file:line" examples a report keeps; the counts are always complete.
MAX_EXAMPLES = 20

_SPACE = 32
# 1 for a byte of a word, 0 for the space between words.
_WORD_FLAGS = bytes(int(c != _SPACE) for c in range(256))
# ASCII letters and digits to lower case, every other byte to a space (a word separator).
_ASCII_WORDS = bytes(ord(chr(c).lower()) if c < 128 and chr(c).isalnum() else _SPACE for c in range(256))
# The same for UTF-8, whose bytes from 0x80 up belong to non-ASCII letters and digits once the other
# non-ASCII characters are replaced by spaces.
_UTF8_WORDS = _ASCII_WORDS[:128] + bytes(range(128, 256))
# A run of non-ASCII characters that are neither letters nor digits (\w is str.isalnum() plus "_").
_NON_ASCII_NON_WORD = re.compile(r"[^\w\x00-\x7f]+")
# Bytes hashed into words at once, and word positions hashed into n-grams at once: bounds the scratch
# arrays, and power tables of these lengths (4 MiB and 0.5 MiB) are kept for reuse.
_WINDOW_BYTES = 1 << 18
_WINDOW_WORDS = 1 << 15
# The prefilter of the index: at most 2**26 one-byte slots (64 MiB), for indexes of over 4M n-grams.
_MAX_FILTER_BITS = 26
_HASH_SEED = 0x13DEC0DE
_SPREAD = np.uint64(0x9E3779B97F4A7C15)


class EvalLocation(NamedTuple):
    """An evaluation file and the line of an example in it; str() is `file:line`."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class DecontaminationConfig:
    """Which evaluation data training documents are checked against, and how.

    Attributes:
        files: evaluation files, directories or globs (local, or fsspec URLs); none switches it off.
        ngram: words per n-gram; a training document sharing one with an evaluation text is dropped.
        min_words: a text shorter than `ngram` words is matched whole if it has at least this many,
            and ignored (counted as too short) otherwise.
        choices: of a multiple-choice record, index every choice ("all") or only the labelled one
            ("correct").
        text_unit: in a plain-text file, an example is a "line" or the whole "file".
        text_field: dotted path of the text in JSONL records that are not multiple-choice records.
    """

    files: list[str] = field(default_factory=list)
    ngram: int = DEFAULT_NGRAM
    min_words: int = DEFAULT_MIN_WORDS
    choices: str = "all"
    text_unit: str = "line"
    text_field: str = "text"

    def __post_init__(self) -> None:
        if isinstance(self.files, str) or not all(isinstance(f, str) and f for f in self.files):
            raise ValueError(f"decontamination files must be a list of paths, got {self.files!r}")
        self.files = list(self.files)
        for name in ("ngram", "min_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"decontamination {name} must be a positive integer, got {value!r}")
        if self.choices not in CHOICES:
            raise ValueError(
                f"decontamination choices must be one of {', '.join(CHOICES)}, got {self.choices!r}"
            )
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(
                f"decontamination text_unit must be one of {', '.join(TEXT_UNITS)}, got {self.text_unit!r}"
            )
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(
                f"decontamination text_field must be a non-empty string, got {self.text_field!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DecontaminationConfig:
        """A config from a mapping (e.g. a YAML section), rejecting keys that are not fields."""
        return dataclass_from_dict(cls, values, "decontamination")

    @property
    def enabled(self) -> bool:
        """Whether any evaluation data is given."""
        return bool(self.files)


def normalize_words(text: str) -> bytes:
    """The text case-folded and NFKC-normalised, with a space for every character that is not a letter or
    digit (UTF-8): its words are the runs of bytes between spaces."""
    if text.isascii():
        # NFKC and case folding do nothing to ASCII beyond lowering A-Z.
        return text.encode("ascii").translate(_ASCII_WORDS)
    if not unicodedata.is_normalized("NFKC", text):  # a quick check, much cheaper than normalising
        text = unicodedata.normalize("NFKC", text)
    # Only the non-ASCII separators need the regular expression; the bytes of ASCII ones are translated.
    folded = _NON_ASCII_NON_WORD.sub(" ", text.casefold())
    return folded.encode("utf-8", "surrogatepass").translate(_UTF8_WORDS)


@dataclass(frozen=True)
class _Powers:
    powers: np.ndarray  # base**i mod 2**64
    inverse: np.ndarray  # base**-i mod 2**64


def _power_table(base: int, length: int) -> np.ndarray:
    table = np.full(length, base, dtype=np.uint64)
    table[0] = 1
    # uint64 products wrap modulo 2**64, the arithmetic the polynomial hashes are defined in.
    return np.cumprod(table, out=table)


@functools.cache
def _bases() -> tuple[int, int]:
    # Fixed, so that a hash means the same in every process (an index can be built once and sent to workers).
    byte_base, word_base = np.random.default_rng(_HASH_SEED).integers(
        0, 2**64, 2, dtype=np.uint64, endpoint=False
    )
    return int(byte_base) | 1, int(word_base) | 1  # odd: invertible modulo 2**64


@functools.cache
def _cached_powers(which: int, length: int) -> _Powers:
    base = _bases()[which]
    return _Powers(_power_table(base, length), _power_table(pow(base, -1, 1 << 64), length))


def _powers(which: int, length: int, window: int) -> _Powers:
    """Tables of at least `length` powers of the byte (0) or word (1) base; cached up to `window`."""
    if length <= window:
        return _cached_powers(which, window)
    return _cached_powers.__wrapped__(which, length)  # a single huge word or n-gram: not kept


def word_hashes(normalized: bytes) -> np.ndarray:
    """A uint64 hash of each word of `normalize_words` output, in order; equal words hash equal anywhere."""
    if len(normalized) <= _WINDOW_BYTES:
        return _window_word_hashes(normalized)
    parts, start = [], 0
    while start < len(normalized):
        end = start + _WINDOW_BYTES
        if end < len(normalized):
            # Windows end between words, so that no word is cut.
            cut = normalized.rfind(b" ", start, end)
            if cut <= start:  # one word fills the window
                cut = normalized.find(b" ", end)
            end = len(normalized) if cut < 0 else cut
        parts.append(_window_word_hashes(normalized[start:end]))
        start = end
    return np.concatenate(parts)


def _window_word_hashes(chunk: bytes) -> np.ndarray:
    # Spaces at both ends, so that word starts and ends alternate among the flag changes: padded[e + 1]
    # starts a word for the even changes e, and padded[e] ends one for the odd ones.
    padded_bytes = b" " + chunk + b" "
    padded = np.frombuffer(padded_bytes, dtype=np.uint8)
    flags = np.frombuffer(padded_bytes.translate(_WORD_FLAGS), dtype=np.uint8)
    edges = np.flatnonzero(flags[1:] != flags[:-1])
    starts, ends = edges[0::2], edges[1::2]
    powers = _powers(0, len(padded), _WINDOW_BYTES + 2)
    # prefix[j] = sum of (byte + 1) * base**i over the first j bytes; the hash of bytes [s, e) is
    # (prefix[e] - prefix[s]) * base**-s, which no longer depends on where the word lies. Both are read
    # one place on (prefix[1:], inverse[1:]) since the changes are one byte before the word's bytes.
    terms = np.add(padded, 1, dtype=np.uint64)
    terms *= powers.powers[: len(padded)]
    prefix = np.empty(len(padded) + 1, dtype=np.uint64)
    prefix[0] = 0
    terms.cumsum(out=prefix[1:])
    shifted = prefix[1:]
    hashes = shifted[ends]
    hashes -= shifted[starts]
    hashes *= powers.inverse[1:][starts]
    return hashes


class NgramHasher:
    """Hashes of every word n-gram of a text, for several n at once (one 2-D block: positions x lengths)."""

    def __init__(self, lengths: Iterable[int]) -> None:
        self.lengths = np.array(sorted(set(lengths)), dtype=np.intp)
        # One hash space for all lengths: the salt keeps an n-gram apart from a different-length one.
        self._salts = mix64(self.lengths.astype(np.uint64) + np.uint64(_HASH_SEED))
        self._ends: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The offsets table is rebuilt on first use: not worth sending to worker processes.
        return {**self.__dict__, "_ends": None}

    def _end_offsets(self, window_words: int) -> np.ndarray:
        """ends[i, j] = i + lengths[j] for every position of a window; kept, as it is the same for all."""
        positions = window_words - int(self.lengths[0]) + 1
        if self._ends is None or len(self._ends) != positions:
            self._ends = np.arange(positions)[:, None] + self.lengths
        return self._ends

    def blocks(self, words: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first word position, hashes, valid) per window of a text's word hashes (from `word_hashes`).

        hashes[i, j] is the hash of the lengths[j] words from position first + i; valid[i, j] says whether
        that many words are left there. Windows overlap by max(lengths) - 1 words, so each n-gram is whole
        in at least one.
        """
        total, shortest, longest = len(words), int(self.lengths[0]), int(self.lengths[-1])
        window_words = max(_WINDOW_WORDS, 2 * longest)
        first = 0
        while total - first >= shortest:
            last = min(total, first + window_words)
            count = last - first
            powers = _powers(1, count + 1, _WINDOW_WORDS + 1)
            # The same polynomial trick as for bytes, over word hashes: any n costs the same. The prefix
            # runs `longest` places past the words, unset: what is read there is masked out by `valid`.
            prefix = np.empty(count + longest + 1, dtype=np.uint64)
            prefix[0] = 0
            (words[first:last] * powers.powers[:count]).cumsum(out=prefix[1 : count + 1])
            positions = count - shortest + 1
            ends = self._end_offsets(window_words)[:positions]
            valid = ends <= count
            block = prefix[ends]
            block -= prefix[:positions, None]
            block *= powers.inverse[:positions, None]
            block += self._salts
            # One multiplication spreads every bit into the top ones, which the index's prefilter reads.
            block *= _SPREAD
            yield first, block, valid
            if last >= total:
                return
            first = last - longest + 1


@dataclass
class EvalFileSummary:
    """What one evaluation file contributed to the index."""

    path: str
    sha256: str
    records: int = 0  # examples read (JSONL records or plain-text lines / files)
    texts: int = 0  # texts indexed (a multiple-choice record gives one per indexed choice)
    ngrams: int = 0  # n-grams indexed, repeats included
    whole: int = 0  # texts shorter than `ngram` words matched whole
    too_short: int = 0  # texts under `min_words` words, ignored

    def to_manifest(self) -> dict[str, Any]:
        """The summary as it appears in manifest.json."""
        return dict(vars(self))


class DecontaminationIndex:
    """The n-grams of the evaluation data, built once; `match` checks a training document against them."""

    def __init__(self, config: DecontaminationConfig) -> None:
        self.config = config
        self.files: list[EvalFileSummary] = []
        self._hashers: dict[int, NgramHasher] = {}
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for fs, path in _eval_files(config.files):
            self._add_file(fs, path)
        if self._pending:
            hashes, files, lines = (np.concatenate(column) for column in zip(*self._pending, strict=True))
        else:
            hashes, files, lines = (np.empty(0, dtype=t) for t in (np.uint64, np.int32, np.int64))
        del self._pending
        # return_index gives each distinct hash's first occurrence: the location a report names.
        self._hashes, first = np.unique(hashes, return_index=True)
        self._files, self._lines = files[first], lines[first]
        # A bit per slot, addressed by a hash's top bits and set for the indexed ones: most of a document's
        # n-grams are ruled out by one look-up in it (in cache for small indexes) instead of a binary search.
        bits = int(np.clip(np.ceil(np.log2(16 * max(1, len(self._hashes)))), 16, _MAX_FILTER_BITS))
        self._shift = np.uint64(64 - bits)
        self._filter = np.zeros(1 << bits, dtype=np.bool_)
        self._filter[self._hashes >> self._shift] = True
        self._hasher = NgramHasher(self._hashers) if self._hashers else None

    @property
    def lengths(self) -> list[int]:
        """The n-gram lengths indexed: `ngram`, and those of short texts matched whole."""
        return sorted(self._hashers)

    @property
    def ngram_count(self) -> int:
        """Distinct n-grams (of every length) in the index."""
        return len(self._hashes)

    @property
    def nbytes(self) -> int:
        """Memory held by the index."""
        return self._hashes.nbytes + self._files.nbytes + self._lines.nbytes + self._filter.nbytes

    def match(self, text: str) -> EvalLocation | None:
        """Where the first n-gram of `text` that occurs in the evaluation data was first seen, or None."""
        if self._hasher is None:
            return None
        normalized = normalize_words(text)
        shortest = int(self._hasher.lengths[0])
        # Many documents are a few words (a docstring, a title): counting them is cheaper than hashing.
        if len(normalized) < 16 * shortest and len(normalized.split()) < shortest:
            return None
        for _, block, valid in self._hasher.blocks(word_hashes(normalized)):
            maybe = self._filter[block >> self._shift]
            maybe &= valid
            # Row-major: by position in the document, then by length, so the first hit is the earliest.
            candidates = maybe.ravel().nonzero()[0]
            if not len(candidates):
                continue
            values = block.ravel()[candidates]
            positions = np.searchsorted(self._hashes, values)
            np.minimum(positions, len(self._hashes) - 1, out=positions)
            found = (self._hashes[positions] == values).nonzero()[0]
            if len(found):
                index = positions[found[0]]
                return EvalLocation(self.files[self._files[index]].path, int(self._lines[index]))
        return None

    def summary(self) -> list[dict[str, Any]]:
        """Per evaluation file, what it contributed (for the manifest)."""
        return [f.to_manifest() for f in self.files]

    # --- building -------------------------------------------------------------------------------------

    def _add_file(self, fs: AbstractFileSystem | None, path: str) -> None:
        name = display_path(path, fs)
        if any(f.path == name for f in self.files):
            return  # named twice (a file and a directory holding it): indexed once
        try:
            with open_binary(path, fs) as stream:
                data = stream.read()
            digest = _file_sha256(path, fs)
        except Exception as err:  # OSError, and gzip's and zstandard's own errors alike
            raise ValueError(f"cannot read decontamination file {name}: {err}") from err
        summary = EvalFileSummary(path=name, sha256=digest)
        file_index = len(self.files)
        self.files.append(summary)
        lines = data.decode("utf-8", errors="replace").split("\n")
        if path.endswith(JSONL_EXTENSIONS):
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    summary.records += 1
                    for text in self._record_texts(line, f"{name}:{number}"):
                        self._add_text(summary, file_index, word_hashes(normalize_words(text)), number)
        elif self.config.text_unit == "line":
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    summary.records += 1
                    self._add_text(summary, file_index, word_hashes(normalize_words(line)), number)
        else:
            # Words never span a line break, so the file's words are its lines' words in order.
            per_line = [word_hashes(normalize_words(line)) for line in lines]
            counts = [len(words) for words in per_line]
            if sum(counts):
                summary.records += 1
                word_lines = np.repeat(np.arange(1, len(lines) + 1), counts)
                self._add_text(summary, file_index, np.concatenate(per_line), word_lines)

    def _record_texts(self, line: str, location: str) -> list[str]:
        """The texts of one JSONL record: one per indexed choice of a multiple-choice record, else its text."""
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"decontamination file {location}: invalid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ValueError(
                f"decontamination file {location}: a JSON {type(record).__name__}, not an object"
            )
        context, choices = record.get("context"), record.get("choices")
        if context is not None or choices is not None:
            if not isinstance(context, str):
                raise ValueError(f"decontamination file {location}: no string at 'context'")
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise ValueError(f"decontamination file {location}: no list of strings at 'choices'")
            if self.config.choices == "all":
                # The evaluator appends a choice to the context as it is, so the text is read that way too.
                return [context + choice for choice in choices] or [context]
            label = record.get("label")
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
                raise ValueError(
                    f"decontamination file {location}: choices 'correct' needs an integer 'label' in range "
                    f"for {len(choices)} choices, got {label!r}"
                )
            return [context + choices[label]]
        text = dotted_get(record, self.config.text_field)
        if not isinstance(text, str):
            raise ValueError(
                f"decontamination file {location}: neither a multiple-choice record (context, choices) nor "
                f"a string at {self.config.text_field!r}"
            )
        return [text]

    def _add_text(
        self, summary: EvalFileSummary, file_index: int, words: np.ndarray, lines: int | np.ndarray
    ) -> None:
        """Index one text's n-grams (from its word hashes); `lines` is its line, or the line of each word."""
        n = self.config.ngram
        if len(words) < n:
            if len(words) < self.config.min_words:
                summary.too_short += 1
                return
            n = len(words)  # matched whole
            summary.whole += 1
        summary.texts += 1
        hasher = self._hashers.setdefault(n, NgramHasher([n]))
        for first, block, _ in hasher.blocks(words):
            hashes = block[:, 0]  # one length: every position has its n words
            if isinstance(lines, np.ndarray):
                gram_lines = lines[first : first + len(hashes)].astype(np.int64)
            else:
                gram_lines = np.full(len(hashes), lines, dtype=np.int64)
            self._pending.append((hashes, np.full(len(hashes), file_index, dtype=np.int32), gram_lines))
            summary.ngrams += len(hashes)


def _plain(path: str, fs: AbstractFileSystem | None) -> Any:
    return open(path, "rb") if fs is None else fs.open(path, "rb")


def _file_sha256(path: str, fs: AbstractFileSystem | None) -> str:
    digest = hashlib.sha256()
    with _plain(path, fs) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _eval_files(patterns: Iterable[str]) -> Iterator[tuple[AbstractFileSystem | None, str]]:
    """(filesystem or None for local, path) of every evaluation file the patterns name, in order."""
    for pattern in patterns:
        if is_url(pattern):
            from lit_pretrain.data.remote_sources import expand_remote_paths, filesystem

            fs, path = filesystem(pattern)
            # A file named on its own is read whatever its extension, as locally.
            files = [path] if fs.isfile(path) else expand_remote_paths(pattern, EVAL_EXTENSIONS)[1]
            found: list[tuple[AbstractFileSystem | None, str]] = [(fs, p) for p in files]
        else:
            local = Path(pattern).expanduser()
            files = [local] if local.is_file() else expand_paths(pattern, EVAL_EXTENSIONS)
            found = [(None, str(p)) for p in files]
        if not found:
            raise FileNotFoundError(
                f"decontamination file {pattern!r} does not exist, or is a directory or glob with no "
                f"{', '.join(EVAL_EXTENSIONS)} file"
            )
        yield from found


@dataclass
class DecontaminationReport:
    """Training documents dropped as contaminated, per evaluation file, with a few examples."""

    dropped: int = 0
    by_file: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def record(self, document_id: str, location: EvalLocation) -> None:
        """Count one dropped document under the evaluation file it matched, keeping an example while there is room."""
        self.dropped += 1
        self.by_file[location.file] = self.by_file.get(location.file, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{document_id} -> {location}")

    def merge(self, other: DecontaminationReport) -> DecontaminationReport:
        """Add another report's counts (e.g. another worker's) to this one; returns self."""
        self.dropped += other.dropped
        for path, count in other.by_file.items():
            self.by_file[path] = self.by_file.get(path, 0) + count
        self.examples.extend(other.examples[: max(0, MAX_EXAMPLES - len(self.examples))])
        return self

    def to_manifest(self) -> dict[str, Any]:
        """The counts as they appear in manifest.json."""
        return {
            "dropped": self.dropped,
            "by_file": dict(sorted(self.by_file.items())),
            "examples": list(self.examples),
        }

    @classmethod
    def from_manifest(cls, values: Mapping[str, Any]) -> DecontaminationReport:
        """A report from its manifest form (e.g. to sum the manifests of several prepare runs)."""
        return cls(int(values["dropped"]), dict(values["by_file"]), list(values["examples"]))


class Decontaminator:
    """Checks training documents against an index and counts what it drops; picklable, for worker processes."""

    def __init__(self, config: DecontaminationConfig, index: DecontaminationIndex | None = None) -> None:
        self.config = config
        self.index = index if index is not None else DecontaminationIndex(config)
        self.report = DecontaminationReport()

    def check(self, document_id: str, text: str) -> EvalLocation | None:
        """The evaluation example the document shares an n-gram with (the document is then counted), or None."""
        location = self.index.match(text)
        if location is not None:
            self.report.record(document_id, location)
        return location

    def to_manifest(self) -> dict[str, Any]:
        """The settings, the evaluation files and the counts, as they appear in manifest.json."""
        config = self.config
        return {
            "ngram": config.ngram,
            "min_words": config.min_words,
            "choices": config.choices,
            "text_unit": config.text_unit,
            "files": self.index.summary(),
            **self.report.to_manifest(),
        }
