"""A compact set of fixed-width integer keys (hashes, digests) in one numpy table, for corpus-wide state.

A Python set of ints or bytes costs 75-100 bytes a key and one object each: a billion documents would
need a billion objects. This table costs 16-32 bytes per 64 bits of key (it is kept between a quarter
and half full), in one array.
"""

from __future__ import annotations

import numpy as np

_WORD_MASK = (1 << 64) - 1


class KeyTable:
    """A set of keys of `words` x 64 bits, in an open-addressing (linear probing) table.

    Keys are Python ints below 2 ** (64 * words); a key is placed by its lowest 64 bits, which must be
    well mixed (a hash). Zero in the first word marks an empty slot, so a key whose lowest word is zero
    is stored with that word set to one.
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

    def _split(self, key: int) -> tuple[int, ...]:
        parts = tuple((key >> (64 * word)) & _WORD_MASK for word in range(self.words))
        return (parts[0] or 1, *parts[1:])

    def _find(self, parts: tuple[int, ...]) -> tuple[int, bool]:
        """The slot holding `parts`, or the free slot where they would go; and whether they were found."""
        slots, mask, words = self._slots, self._mask, self.words
        slot = parts[0] & mask
        while occupant := slots.item(slot, 0):
            if occupant == parts[0] and all(slots.item(slot, w) == parts[w] for w in range(1, words)):
                return slot, True
            slot = (slot + 1) & mask
        return slot, False

    def __contains__(self, key: int) -> bool:
        return self._find(self._split(key))[1]

    def contains_any(self, keys: list[int]) -> bool:
        """Whether any of the keys is in the table."""
        return any(self._find(self._split(key))[1] for key in keys)

    def add(self, keys: list[int]) -> None:
        """Insert keys (those already present are left as they are)."""
        if 2 * (self.size + len(keys)) > len(self._slots):
            self._grow(self.size + len(keys))
        for key in keys:
            parts = self._split(key)
            slot, found = self._find(parts)
            if not found:
                self._slots[slot] = parts
                self.size += 1

    def add_new(self, key: int) -> bool:
        """Insert one key; False if it was already there."""
        if 2 * (self.size + 1) > len(self._slots):
            self._grow(self.size + 1)
        parts = self._split(key)
        slot, found = self._find(parts)
        if not found:
            self._slots[slot] = parts
            self.size += 1
        return not found

    def _grow(self, expected_size: int) -> None:
        keys = self._slots[self._slots[:, 0] != 0]
        capacity = len(self._slots) * 2
        while 2 * expected_size > capacity:
            capacity *= 2
        self._slots = np.zeros((capacity, self.words), dtype=np.uint64)
        self._mask = capacity - 1
        home = (keys[:, 0] & np.uint64(self._mask)).astype(np.intp)
        # All keys at once: each round, the first key aiming at each free slot takes it and the others move
        # one slot on, so every key ends with only occupied slots between its home and itself, as lookups
        # assume.
        while len(keys):
            free = np.flatnonzero(self._slots[home, 0] == 0)
            _, first = np.unique(home[free], return_index=True)
            winners = free[first]
            self._slots[home[winners]] = keys[winners]
            left = np.ones(len(keys), dtype=bool)
            left[winners] = False
            keys = keys[left]
            home = (home[left] + 1) & self._mask
