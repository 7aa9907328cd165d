"""Streaming deduplication across all sources of a corpus: exact (hash of normalised text) and near (MinHash-LSH).

Documents arrive one at a time in a deterministic order and the first occurrence survives, so which copy
is kept never depends on timing.

* Exact: the 16-byte blake2b digest of `normalize_for_exact(text)` (NFC, lowercase, whitespace removed).
* Near: the text's word n-grams (whitespace-separated words of the lowercased text) are hashed to 64 bits,
  MinHash takes the minimum of `num_bands * rows_per_band` universal hash functions over them (numpy, all
  functions at once), and a document is a near duplicate when any of its bands' keys was seen before.

Both rules compare a document with every earlier document that passed screening, dropped ones included,
never with earlier verdicts: in a chain A ~ B ~ C where C shares a band with B only and B is dropped as a
copy of A, C is dropped too. That makes each key's answer independent of every other key's, so the key
space can be cut into slices decided by separate tasks (tasks.py) with the same result as one process.
Comparing with survivors only would make each verdict wait on the earlier ones, one document at a time.

One core on the Python standard library's .py files (31.5 MB, code): exact about 200 MB/s (380 MB/s on its
ASCII files, whose normalisation is done on bytes), near about 40 MB/s.

Memory grows per document, not per byte, and holds no Python object per document (keyset.KeyTable: numpy
open-addressing tables kept between a quarter and half full):

* exact: the 16-byte digest of each document that was not itself an exact duplicate: 32-64 bytes a
  document;
* near: the `num_bands` band keys (8 bytes each) of each document, less those an earlier document already
  had: 16-32 bytes a key, at most 224-448 bytes a document at the defaults.

Signatures are not kept, so a band collision is not re-checked against the estimated Jaccard
similarity. Keeping them would cost `num_bands * rows_per_band * 4` bytes a document (672 at the defaults,
about twice the band keys) only to cut the S-curve's tail of flagged pairs below the threshold (18% of
pairs at Jaccard similarity 0.7, 0.3% at 0.5); at corpus scale the memory matters more than that tail.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lit_pretrain.data.keyset import KeyTable
from lit_pretrain.data.options import dataclass_from_dict

# Every character for which `str.isspace()` holds, split into the ASCII ones (handled byte-wise) and the
# others (rare, so replaced only when a search finds them).
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_NON_ASCII_WHITESPACE = tuple(
    chr(code) for code in (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
)
_ASCII_LOWERCASE_TABLE = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_IS_WORD_BYTE = bytes(byte not in _ASCII_WHITESPACE for byte in range(256))

# Fixed, so that shingle hashes and band keys mean the same in every run; only the MinHash permutations
# depend on `DedupConfig.seed`.
_HASH_CONSTANTS_SEED = 0x5DEECE66D
# Bytes hashed at once when hashing words: their two uint64 scratch arrays (1 MiB each) stay in cache.
_HASH_WINDOW_BYTES = 1 << 17
# Elements of the (permutation x shingle) matrix computed at once: 4 MiB of uint32.
_MINHASH_BLOCK_ELEMENTS = 1 << 20
# Below this many shingles the matrix is laid out the other way round (measured crossover).
_FEW_SHINGLES = 512
# Scratch arrays are kept for reuse up to this many bytes each: a fresh large array faults in its pages,
# which costs more than the arithmetic done on it.
_MAX_KEPT_SCRATCH_BYTES = 1 << 24


@dataclass
class DedupConfig:
    """Which deduplication to run and the MinHash-LSH parameters of the near-duplicate pass.

    Attributes:
        exact: drop a document whose normalized text (NFC, lower case, no whitespace) hashes like an
            earlier one.
        near: MinHash-LSH near-duplicate detection (on by default; slower than exact).
        ngram_size: words per shingle of the near-duplicate pass.
        num_bands: LSH bands; the threshold is about (1/num_bands)^(1/rows_per_band).
        rows_per_band: MinHash rows per LSH band.
        seed: seed of the MinHash permutations.
    """

    exact: bool = True
    # On by default, as in FineWeb-style pipelines: near duplicates (templated pages, vendored copies of
    # a file, codec tables) are common and waste tokens. It costs about 17% of a one-process prepare on
    # the built-in corpus (docs/benchmarks.md), and runs in the workers with --num_proc;
    # `--dedup '{near: false}'` turns it off.
    near: bool = True
    # Word n-grams: words are whitespace-separated tokens of the lowercased text, which suits prose and
    # keeps code's identifiers and punctuation together (`foo(bar,`) rather than dropping them.
    ngram_size: int = 5
    # (1/14)^(1/12) = 0.803: pairs with Jaccard similarity 0.9 are caught 99% of the time, 0.5 only 0.3%.
    num_bands: int = 14
    rows_per_band: int = 12
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("exact", "near"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"dedup {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("ngram_size", "num_bands", "rows_per_band"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"dedup {name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"dedup seed must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DedupConfig:
        """A config from a mapping (e.g. a YAML section), rejecting keys that are not fields."""
        return dataclass_from_dict(cls, values, "dedup")

    @property
    def num_permutations(self) -> int:
        """Length of a MinHash signature."""
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """(1/b)^(1/r), the usual estimate of the S-curve's threshold: pairs this similar are flagged ~63% of the time."""
        return (1 / self.num_bands) ** (1 / self.rows_per_band)


def normalize_for_exact(text: str) -> str:
    """NFC, lowercase, every whitespace character removed: the form whose hash decides exact duplicates."""
    # Removing whitespace rather than collapsing it also merges copies that were re-indented, re-wrapped
    # or reformatted (`f(a,b)` / `f(a, b)`); two different documents that differ only in where spaces fall
    # do not occur in practice. Lowercasing merges copies that were re-cased (titles, shouting). NFC only
    # merges encodings of the same characters, which readers cannot tell apart.
    return "".join(unicodedata.normalize("NFC", text).lower().split())


def _lowercase_utf8(text: str) -> bytes:
    """UTF-8 of the NFC, lowercased text, with every whitespace character turned into ASCII whitespace.

    ASCII text is returned unchanged: the caller folds its case along with a pass it makes anyway, which
    is cheaper than `str.lower()`.
    """
    if text.isascii():
        return text.encode("ascii")
    lowered = unicodedata.normalize("NFC", text).lower()
    for whitespace in _NON_ASCII_WHITESPACE:
        # One search per character is several times faster than a regular expression for the class.
        if whitespace in lowered:
            lowered = lowered.replace(whitespace, " ")
    return lowered.encode("utf-8", "surrogatepass")


def exact_key(text: str) -> bytes:
    """The 16-byte blake2b digest of `normalize_for_exact(text)`, computed without building that string."""
    canonical = _lowercase_utf8(text).translate(_ASCII_LOWERCASE_TABLE, _ASCII_WHITESPACE)
    return hashlib.blake2b(canonical, digest_size=16).digest()


@dataclass(frozen=True)
class _PolynomialHash:
    base: int  # odd, so invertible modulo 2**64
    powers: np.ndarray  # base**i mod 2**64 for i < _HASH_WINDOW_BYTES
    inverse_powers: np.ndarray  # base**-i mod 2**64


@functools.cache
def _polynomial_hash() -> _PolynomialHash:
    base = int(_fixed_uint64(0, 1, odd=True)[0])
    return _PolynomialHash(
        base=base,
        powers=_power_table(base, _HASH_WINDOW_BYTES),
        inverse_powers=_power_table(pow(base, -1, 1 << 64), _HASH_WINDOW_BYTES),
    )


def _fixed_uint64(stream: int, count: int, odd: bool = False) -> np.ndarray:
    """Constants that are the same in every run; each stream is independent of the others' counts."""
    values = np.random.default_rng([_HASH_CONSTANTS_SEED, stream]).integers(
        0, 2**64, count, dtype=np.uint64, endpoint=False
    )
    return values | np.uint64(1) if odd else values


def _power_table(base: int, length: int) -> np.ndarray:
    table = np.full(length, base, dtype=np.uint64)
    table[0] = 1
    # uint64 products wrap modulo 2**64, which is the arithmetic the polynomial hash is defined in.
    return np.cumprod(table, out=table)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: spreads every input bit over all output bits."""
    values += np.uint64(0x9E3779B97F4A7C15)
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


class DedupKeys(NamedTuple):
    """What deduplication needs of a batch of documents, one row each (None when that pass is off)."""

    documents: int  # n
    exact: np.ndarray | None  # (n, 2) uint64: each document's 16-byte exact_key, as two little-endian words
    bands: np.ndarray | None  # (n, num_bands) uint64: each document's LSH band keys


# Verdicts of `Deduplicator.decide`, by code.
_VERDICTS = (None, "exact", "near")
_NEW, _EXACT, _NEAR = range(3)


class Deduplicator:
    """Decides, document by document, whether a text repeats an earlier one; the first occurrence survives.

    Memory: 32-64 bytes a document for exact deduplication, plus 16-32 bytes per new band key (at most
    224-448 bytes a document at the default 14 bands); not thread-safe (it keeps scratch arrays between
    calls).
    """

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.counts: dict[str, int] = {"exact_duplicates": 0, "near_duplicates": 0}
        self._exact_seen = KeyTable(words=2)
        self._band_index = KeyTable(words=1)
        self._polynomial = _polynomial_hash()
        self._position_multipliers = _fixed_uint64(1, config.ngram_size, odd=True)
        self._row_multipliers = _fixed_uint64(2, config.rows_per_band, odd=True)
        self._band_salts = _fixed_uint64(3, config.num_bands)
        permutations = np.random.default_rng(config.seed)
        # Universal hashing a*x + b modulo 2**32 rather than modulo a prime: numpy has no 64x64->128-bit
        # product, and with a odd each function is a bijection of 32-bit values, a permutation as MinHash
        # wants (the shingle hashes it permutes are already uniformly mixed). The tests check that the
        # signatures' agreement rate estimates Jaccard similarity without bias.
        num_permutations = config.num_permutations
        self._multipliers = permutations.integers(0, 2**32, num_permutations, dtype=np.uint32) | np.uint32(1)
        self._increments = permutations.integers(0, 2**32, num_permutations, dtype=np.uint32)
        self._scratch: dict[str, np.ndarray] = {}

    def check(self, text: str) -> str | None:
        """None if the document is new (and remember it), "exact" or "near" if it repeats an earlier one."""
        return self.decide(self.keys([text]))[0]

    def keys(self, texts: list[str]) -> DedupKeys:
        """The texts' keys: the costly, order-free half of `check`, which may run in any process."""
        exact = near = None
        if self.config.exact:
            digests = b"".join(exact_key(text) for text in texts)
            exact = np.frombuffer(digests, dtype="<u8").astype(np.uint64).reshape(len(texts), 2)
        if self.config.near:
            near = np.empty((len(texts), self.config.num_bands), dtype=np.uint64)
            for row, text in enumerate(texts):
                near[row] = self.band_keys(self.signature(text))
        return DedupKeys(len(texts), exact, near)

    def decide(self, keys: DedupKeys) -> list[str | None]:
        """`check` for a batch of precomputed keys, in row order: batches must come in input order, to one
        process. Each document is judged against every earlier one, those of its own batch included."""
        verdicts = np.full(keys.documents, _NEW, dtype=np.int8)
        if keys.bands is not None:
            verdicts[repeated_rows(self._band_index, keys.bands)] = _NEAR
        # After the near pass, so that a document that is both counts as an exact duplicate.
        if keys.exact is not None:
            verdicts[repeated_rows(self._exact_seen, keys.exact)] = _EXACT
        self.counts["exact_duplicates"] += int((verdicts == _EXACT).sum())
        self.counts["near_duplicates"] += int((verdicts == _NEAR).sum())
        return [_VERDICTS[code] for code in verdicts.tolist()]

    @property
    def index_bytes(self) -> int:
        """Approximate memory held by the indexes of seen documents."""
        return self._exact_seen.nbytes + self._band_index.nbytes

    def shingle_hashes(self, text: str) -> np.ndarray:
        """uint64 hashes of the text's word n-grams, in order; the whole text is one shingle if it is shorter."""
        lowered = _lowercase_utf8(text).translate(_ASCII_LOWERCASE_TABLE)
        # One flag byte per text byte, padded with whitespace at both ends so that word starts and ends
        # alternate; bytes.translate makes it in one pass, cheaper than numpy comparisons.
        is_word = np.frombuffer(b"\x00" + lowered.translate(_IS_WORD_BYTE) + b"\x00", dtype=np.bool_)
        edges = np.flatnonzero(is_word[1:] != is_word[:-1])
        word_hashes = self._word_hashes(np.frombuffer(lowered, dtype=np.uint8), edges[0::2], edges[1::2])
        ngram_size = self.config.ngram_size
        num_shingles = max(1, len(word_hashes) - ngram_size + 1)
        shingles = np.zeros(num_shingles, dtype=np.uint64)
        for position in range(min(ngram_size, len(word_hashes))):
            shingles += word_hashes[position : position + num_shingles] * self._position_multipliers[position]
        return mix64(shingles)

    def _word_hashes(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Polynomial hashes (mod 2**64) of data[start:end] for each word, independent of its position.

        Not mixed: they are only combined linearly into shingle hashes, which are.
        """
        if len(data) <= _HASH_WINDOW_BYTES:  # nearly every document: one window, no bookkeeping
            return self._window_word_hashes(data, starts, ends)
        hashes = np.empty(len(starts), dtype=np.uint64)
        # np.searchsorted copies a strided array on every call.
        ends = np.ascontiguousarray(ends)
        first = 0
        while first < len(starts):
            # Whole words a window at a time, so that scratch arrays and power tables stay small.
            window_start = starts[first]
            last = max(first + 1, int(np.searchsorted(ends, window_start + _HASH_WINDOW_BYTES, side="right")))
            hashes[first:last] = self._window_word_hashes(
                data[window_start : ends[last - 1]],
                starts[first:last] - window_start,
                ends[first:last] - window_start,
            )
            first = last
        return hashes

    def _window_word_hashes(self, window: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        polynomial = self._polynomial
        if len(window) <= _HASH_WINDOW_BYTES:
            powers, inverse_powers = polynomial.powers, polynomial.inverse_powers
        else:  # a single word longer than a window (a minified line, an inlined blob)
            powers = _power_table(polynomial.base, len(window))
            inverse_powers = _power_table(pow(polynomial.base, -1, 1 << 64), len(window))
        terms = self._scratch_array("terms", len(window), np.uint64)
        # Byte value + 1, so that a NUL byte still counts.
        np.add(window, np.uint64(1), out=terms)
        terms *= powers[: len(window)]
        prefix_sums = self._scratch_array("prefix_sums", len(window) + 1, np.uint64)
        prefix_sums[0] = 0
        np.cumsum(terms, out=prefix_sums[1:])
        # The sum of (byte + 1) * base**offset over each word, times base**-start so its place drops out.
        word_sums = prefix_sums[ends] - prefix_sums[starts]
        word_sums *= inverse_powers[starts]
        return word_sums

    def signature(self, text: str) -> np.ndarray:
        """MinHash signature: uint32 array of num_bands * rows_per_band minima, one per permutation."""
        # The top 32 bits of the mixed shingle hashes; two shingles colliding in them are merged, which
        # moves the estimated similarity by about (shingles / 2**32).
        values = (self.shingle_hashes(text) >> np.uint64(32)).astype(np.uint32)
        num_permutations = self.config.num_permutations
        columns = max(1, _MINHASH_BLOCK_ELEMENTS // num_permutations)
        minima = None
        for offset in range(0, len(values), columns):
            chunk = values[offset : offset + columns]
            block = self._scratch_array("minhash_block", num_permutations * len(chunk), np.uint32)
            if len(chunk) < _FEW_SHINGLES:
                # Shingles down, permutations across: min(axis=0) is then one vectorised pass per shingle,
                # where min(axis=1) would pay a reduction's set-up cost per permutation.
                block = block.reshape(len(chunk), num_permutations)
                np.multiply(chunk[:, None], self._multipliers, out=block)
                block += self._increments
                chunk_minima = block.min(axis=0)
            else:
                block = block.reshape(num_permutations, len(chunk))
                np.multiply(self._multipliers[:, None], chunk, out=block)
                block += self._increments[:, None]
                chunk_minima = block.min(axis=1)
            minima = chunk_minima if minima is None else np.minimum(minima, chunk_minima, out=minima)
        return minima

    def _scratch_array(self, name: str, length: int, dtype: type) -> np.ndarray:
        """An uninitialised array of `length` elements, reusing the memory of earlier calls."""
        most_kept = _MAX_KEPT_SCRATCH_BYTES // np.dtype(dtype).itemsize
        if length > most_kept:
            return np.empty(length, dtype=dtype)
        buffer = self._scratch.get(name)
        if buffer is None or len(buffer) < length:
            # Doubling, so that documents of slowly growing sizes do not each allocate afresh.
            doubled = 2 * len(buffer) if buffer is not None else 0
            buffer = self._scratch[name] = np.empty(max(length, min(doubled, most_kept)), dtype=dtype)
        return buffer[:length]

    def band_keys(self, signature: np.ndarray) -> np.ndarray:
        """One uint64 key per LSH band; equal keys mean equal rows in that band, barring a 2**-64 collision."""
        rows = signature.reshape(self.config.num_bands, self.config.rows_per_band).astype(np.uint64)
        keys = rows @ self._row_multipliers
        keys += self._band_salts
        return mix64(keys)


def repeated_rows(table: KeyTable, keys: np.ndarray) -> np.ndarray:
    """Which documents (rows of `keys`, in input order) have a key that an earlier document had, in the
    table or in an earlier row; every key is then added to the table.

    A row holds a document's keys, each of `table.words` x 64 bits.
    """
    flagged = np.zeros(len(keys), dtype=bool)
    if len(keys):
        per_row = keys.shape[1] // table.words
        owners = np.repeat(np.arange(len(keys)), per_row)
        flagged[repeated_owners(table, keys.reshape(-1, table.words), owners)] = True
    return flagged


def repeated_owners(table: KeyTable, keys: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """The documents (sorted, each once) owning a key that an earlier key had, in the table or earlier in
    `keys`; every key is then added to the table. `keys` (n, table.words) are in input order, `owners[i]`
    is the document of key i.

    The rule looks at keys alone, never at earlier verdicts, so the key space can be cut into slices
    decided apart (tasks.py) and the slices' answers OR-ed: the answer is the same.
    """
    new = table.add_rows(table.rows(keys))
    return np.unique(owners[~new])
