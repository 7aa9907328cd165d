"""Gopher's repetition measures for prose (Rae et al., 2021, appendix A, "repetition removal").

Repeated lines and paragraphs (by count and by characters), the share of characters the most frequent
word n-gram covers, and the share of characters inside word n-grams that occur more than once. The
filters in filters.py compare these with their thresholds; the functions here only measure.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections import Counter
from collections.abc import Iterator

# (n, largest allowed share, counter name) for each n-gram filter.
NgramLimits = list[tuple[int, float, str]]

_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())
# Two or more line breaks, with only blanks between them, end a paragraph.
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")


def word_chars(text: str, words: list[str]) -> int:
    """Total characters of the words `text.split()` gave, whitespace excluded."""
    if text.isascii():
        # Deleting ASCII whitespace (exactly what str.split splits ASCII text on) from the bytes is
        # several times faster than summing the lengths of thousands of word objects.
        return len(text.encode("ascii").translate(None, _ASCII_SPACE))
    return sum(map(len, words))


def nonblank_lines(text: str) -> list[str]:
    """The lines of `text` without surrounding whitespace, blank ones left out."""
    return list(filter(None, map(str.strip, text.splitlines())))


def paragraphs(text: str) -> list[str]:
    """The paragraphs of `text` (split on two or more line breaks), stripped, blank ones left out."""
    return list(filter(None, map(str.strip, _PARAGRAPH_BREAK.split(text))))


def repeated_shares(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier item, share of all items' characters those repeats hold)."""
    if not items:
        return 0.0, 0.0
    distinct = set(items)
    if len(distinct) == len(items):
        return 0.0, 0.0  # nothing repeats: the usual case, settled without counting characters
    total_chars = sum(map(len, items))
    # The characters of every item less those of one copy of each distinct item: those of the repeats.
    repeated_chars = total_chars - sum(map(len, distinct))
    return (len(items) - len(distinct)) / len(items), repeated_chars / total_chars if total_chars else 0.0


def duplicate_line_fraction(text: str) -> float:
    """Share of non-blank lines that repeat an earlier line, ignoring surrounding whitespace (Gopher)."""
    if "\n" not in text and "\r" not in text:
        return 0.0  # one line cannot repeat; most short documents end here
    return repeated_shares(nonblank_lines(text))[0]


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Share of word characters covered by occurrences of the most frequent word n-gram (Gopher)."""
    total_chars = sum(map(len, words))
    if len(words) < n or total_chars == 0:
        return 0.0
    counts = Counter(_ngrams(words, n))
    top_count = max(counts.values())
    return _covered_chars(words, _longest_of(counts, top_count)) / total_chars if top_count >= 2 else 0.0


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Share of word characters inside word n-grams that occur more than once, every occurrence (Gopher)."""
    total_chars = sum(map(len, words))
    if len(words) < n or total_chars == 0:
        return 0.0
    return _covered_by(_repeated_starts(words, n), n, _prefix_lengths(words)) / total_chars


def first_top_ngram_exceeded(text: str, words: list[str], limits: NgramLimits) -> str | None:
    """The name of the first limit that the most frequent n-gram's share of characters exceeds, or None."""
    total_chars = word_chars(text, words) if limits else 0
    if total_chars == 0:
        return None
    # Counting n-grams is by far the most expensive step of all filters, so an upper bound on what
    # any n-gram can cover, from single-word counts, rules it out first; it never changes a decision.
    word_counts = Counter(words)
    limits = _not_ruled_out_by_word_masses(word_counts, limits, total_chars)
    longest_word = max(map(len, word_counts)) if limits else 0
    for n, limit, name in limits:
        if _exceeds_top_ngram_fraction(words, n, limit * total_chars, longest_word):
            return name
    return None


def first_duplicate_ngram_exceeded(text: str, words: list[str], limits: NgramLimits) -> str | None:
    """The name of the first limit that the share of characters in repeated n-grams exceeds, or None."""
    if not limits or len(words) < limits[0][0]:
        return None
    # The n-grams are counted for the smallest n only. A repeated (n+1)-gram starts where two repeated
    # n-grams start one after the other, and its copies do too, so only those starts can hold one. And
    # whatever repeated (n+1)-grams cover, repeated n-grams cover too: the share only falls as n grows.
    starts = _repeated_starts(words, limits[0][0])
    if not starts:
        return None  # ordinary prose: no n-gram of 5 or more words repeats
    total_chars = word_chars(text, words)
    prefix = _prefix_lengths(words)
    size = limits[0][0]
    for index, (n, limit, name) in enumerate(limits):
        while size < n and starts:
            starts = _repeated_starts(words, size + 1, _followed_by_a_start(starts))
            size += 1
        covered = _covered_by(starts, n, prefix)
        if covered > limit * total_chars:
            return name
        if all(covered <= later * total_chars for _, later, _ in limits[index + 1 :]):
            return None  # the share only falls as n grows: no later limit can be exceeded
    return None


def _repeated_starts(words: list[str], n: int, candidates: list[int] | None = None) -> list[int]:
    """The positions (of `candidates`, or all) where an n-gram starts that occurs more than once there."""
    if candidates is None:
        # A set of the n-grams settles the usual case, no repeat, twice as fast as a list or a Counter;
        # the n-grams are made again (by zip, in C) when one repeats.
        if len(set(_ngrams(words, n))) == len(words) - n + 1:
            return []
        counts = Counter(_ngrams(words, n))
        flags = map((1).__lt__, map(counts.__getitem__, _ngrams(words, n)))
        return list(itertools.compress(itertools.count(), flags))
    grams = [tuple(words[start : start + n]) for start in candidates]
    counts = Counter(grams)
    return list(itertools.compress(candidates, map((1).__lt__, map(counts.__getitem__, grams))))


def _followed_by_a_start(starts: list[int]) -> list[int]:
    following = set(starts)
    return [start for start in starts if start + 1 in following]


def _prefix_lengths(words: list[str]) -> list[int]:
    return [0, *itertools.accumulate(map(len, words))]


def _covered_by(starts: list[int], n: int, prefix: list[int]) -> int:
    """Characters of the words inside the n-grams at `starts` (sorted), each word counted once."""
    # Only the starts reach Python code; runs of overlapping n-grams are merged and their characters
    # read off the prefix sums of word lengths.
    covered, run_start, run_end = 0, 0, 0
    for start in starts:
        if start > run_end:
            covered += prefix[run_end] - prefix[run_start]
            run_start = start
        run_end = start + n
    return covered + prefix[run_end] - prefix[run_start]


def _not_ruled_out_by_word_masses(
    word_counts: Counter[str], limits: NgramLimits, total_chars: int
) -> NgramLimits:
    """The limits that the n largest word masses (count x length) do not rule out."""
    # The occurrences of an n-gram cover at most all occurrences of its (at most n distinct) words. In
    # natural prose even the heaviest words ("the", "of", ...) stay well under the limits.
    # Only masses of at least `cutoff` are sorted; every other word stands in as `cutoff`, an upper bound
    # on its mass. A quarter of the smallest per-word share keeps that slack small while leaving only
    # a dozen or so words to sort in natural text.
    cutoff = min(limit / n for n, limit, _ in limits) * total_chars / 4
    masses = map(operator.mul, word_counts.values(), map(len, word_counts))
    heavy = sorted(filter(functools.partial(operator.le, cutoff), masses), reverse=True)
    return [
        (n, limit, name)
        for n, limit, name in limits
        if sum(heavy[:n]) + max(0, n - len(heavy)) * cutoff > limit * total_chars
    ]


def _exceeds_top_ngram_fraction(words: list[str], n: int, allowed_chars: float, longest_word: int) -> bool:
    if len(words) < n:
        return False
    counts = Counter(_ngrams(words, n))
    # The top count alone settles most cases; finding which n-gram has it is a second, slower pass.
    top_count = max(counts.values())
    if top_count < 2 or top_count * n * longest_word <= allowed_chars:
        return False
    top = _longest_of(counts, top_count)
    # count x length overstates coverage when occurrences overlap ("a a a a"); the exact figure needs
    # another pass, only worth making when the estimate is over the limit.
    if top_count * sum(map(len, top)) <= allowed_chars:
        return False
    return _covered_chars(words, top) > allowed_chars


def _longest_of(counts: Counter[tuple[str, ...]], count: int) -> tuple[str, ...]:
    # Gopher leaves ties open. The longest tied n-gram (then the first seen, as Counter keeps insertion
    # order) makes spam count the same whichever word of a repeated phrase comes first: with the first
    # seen, "win a free cruise today" x 15 would be judged by "win a" and kept, "free cruise today win
    # a" x 15 by "free cruise" and dropped.
    tied = itertools.compress(counts, map(functools.partial(operator.eq, count), counts.values()))
    return max(tied, key=lambda gram: sum(map(len, gram)))


def _ngrams(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    # Shifted copies of the list end at different lengths; zip stopping at the shortest is the point.
    return zip(*(words[i:] for i in range(n)), strict=False)


def _covered_chars(words: list[str], gram: tuple[str, ...]) -> int:
    n = len(gram)
    covered = [False] * len(words)
    for start, candidate in enumerate(_ngrams(words, n)):
        if candidate == gram:
            covered[start : start + n] = [True] * n
    return sum(len(word) for word, hit in zip(words, covered, strict=True) if hit)
