"""A compact set of fixed-width integer keys (hashes, digests) in one numpy table, for corpus-wide state.

A Python set of ints or bytes costs 75-100 bytes a key and one object each: a billion documents would
need a billion objects. This table costs 16-32 bytes per 64 bits of key (it is kept between a quarter
and half full), in one array. Lookups and inserts of many keys at once run as a few numpy passes (one
per probe step), not a Python loop per key.
"""

from __future__ import annotations

import numpy as np

_WORD_MASK = (1 << 64) - 1


class KeyTable:
    """A set of keys of `words` x 64 bits, in an open-addressing (linear probing) table.

    A key is a row of `words` uint64 (or a Python int below 2 ** (64 * words)) and is placed by its first
    (lowest) word, which must be well mixed (a hash). Zero in the first word marks an empty slot, so a key
    whose first word is zero is stored with that word set to one.
    """

    def __init__(self, words: int = 1, capacity: int = 1 << 12) -> None:
        if words < 1 or capacity < 1 or capacity & (capacity - 1):
            raise ValueError(f"need words >= 1 and a power-of-two capacity, got {words}, {capacity}")
        self.words = words
        self._slots = np.zeros((capacity, words), dtype=np.uint64)
        self._mask = capacity - 1
        self.size = 0

    @property
    def nbytes(self) -> int:
        """Memory held by the table."""
        return self._slots.nbytes

    # ------------------------------------------------------------------------------------- many keys
    def rows(self, keys: np.ndarray) -> np.ndarray:
        """Keys as the (n, words) uint64 rows the table stores (a copy; a zero first word becomes one)."""
        rows = np.array(keys, dtype=np.uint64).reshape(-1, self.words)
        rows[rows[:, 0] == 0, 0] = 1
        return rows

    def find(self, rows: np.ndarray) -> np.ndarray:
        """Whether each of the (n, words) rows (from `rows`) is in the table."""
        found = np.zeros(len(rows), dtype=bool)
        slot = (rows[:, 0] & np.uint64(self._mask)).astype(np.intp)
        active = np.arange(len(rows))
        # One pass per probe step: the table is at most half full, so probe runs are short.
        while len(active):
            occupants = self._slots[slot]
            matched = (occupants == rows[active]).all(axis=1)
            found[active[matched]] = True
            going_on = ~matched & (occupants[:, 0] != 0)
            active = active[going_on]
            slot = (slot[going_on] + 1) & self._mask
        return found

    def add_rows(self, rows: np.ndarray) -> np.ndarray:
        """Insert (n, words) rows (from `rows`) in order; whether each was new (a repeat within `rows`
        is not new after its first copy)."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        # One word: a plain sort, several times cheaper than comparing rows.
        _, first = np.unique(
            rows[:, 0] if self.words == 1 else rows, axis=None if self.words == 1 else 0, return_index=True
        )
        new = np.zeros(len(rows), dtype=bool)
        new[first] = True
        new[first[self.find(rows[first])]] = False
        self._insert_absent(rows[new])
        return new

    def _insert_absent(self, rows: np.ndarray) -> None:
        """Insert distinct rows that are not in the table."""
        if 2 * (self.size + len(rows)) > len(self._slots):
            self._grow(self.size + len(rows))
        self._place(rows)
        self.size += len(rows)

    def _place(self, rows: np.ndarray) -> None:
        home = (rows[:, 0] & np.uint64(self._mask)).astype(np.intp)
        # All rows at once: each round, the first row aiming at each free slot takes it and the others move
        # one slot on, so every row ends with only occupied slots between its home and itself, as lookups
        # assume.
        while len(rows):
            free = np.flatnonzero(self._slots[home, 0] == 0)
            _, first = np.unique(home[free], return_index=True)
            winners = free[first]
            self._slots[home[winners]] = rows[winners]
            left = np.ones(len(rows), dtype=bool)
            left[winners] = False
            rows = rows[left]
            home = (home[left] + 1) & self._mask

    def _grow(self, expected_size: int) -> None:
        rows = self._slots[self._slots[:, 0] != 0]
        capacity = len(self._slots) * 2
        while 2 * expected_size > capacity:
            capacity *= 2
        self._slots = np.zeros((capacity, self.words), dtype=np.uint64)
        self._mask = capacity - 1
        self._place(rows)

    # ---------------------------------------------------------------- one Python int at a time
    # Scalar probes: for a single key, a few numpy passes cost more than a Python loop over its slots.
    def _split(self, key: int) -> tuple[int, ...]:
        parts = tuple((key >> (64 * word)) & _WORD_MASK for word in range(self.words))
        return (parts[0] or 1, *parts[1:])

    def _find_one(self, parts: tuple[int, ...]) -> tuple[int, bool]:
        """The slot holding `parts`, or the free slot where they would go; and whether they were found."""
        slots, mask, words = self._slots, self._mask, self.words
        slot = parts[0] & mask
        while occupant := slots.item(slot, 0):
            if occupant == parts[0] and all(slots.item(slot, w) == parts[w] for w in range(1, words)):
                return slot, True
            slot = (slot + 1) & mask
        return slot, False

    def __contains__(self, key: int) -> bool:
        return self._find_one(self._split(key))[1]

    def contains_any(self, keys: list[int]) -> bool:
        """Whether any of the keys is in the table."""
        return any(self._find_one(self._split(key))[1] for key in keys)

    def add(self, keys: list[int]) -> None:
        """Insert keys (those already present are left as they are)."""
        for key in keys:
            self.add_new(key)

    def add_new(self, key: int) -> bool:
        """Insert one key; False if it was already there."""
        if 2 * (self.size + 1) > len(self._slots):
            self._grow(self.size + 1)
        parts = self._split(key)
        slot, found = self._find_one(parts)
        if not found:
            self._slots[slot] = parts
            self.size += 1
        return not found
