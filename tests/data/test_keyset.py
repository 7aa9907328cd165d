"""keyset.KeyTable: a set of 64- and 128-bit keys in one numpy table."""

from __future__ import annotations

import numpy as np
import pytest

from lit_pretrain.data.keyset import KeyTable
from lit_pretrain.data.sources import Document, SeenIds, check_unique_id


def test_key_table_behaves_like_a_set_while_growing():
    table = KeyTable(capacity=8)
    rng = np.random.default_rng(10)
    # Keys sharing their low bits collide in the table and must probe past each other.
    keys = np.concatenate(
        [rng.integers(1, 2**64, 3000, dtype=np.uint64), np.arange(1, 500, dtype=np.uint64) << 40]
    )
    reference: set[int] = set()
    for group in np.array_split(keys, 250):
        group_keys = group.tolist()
        assert table.contains_any(group_keys) == any(k in reference for k in group_keys)
        table.add([k for k in group_keys if k not in reference])
        reference.update(group_keys)
    assert table.size == len(reference)
    assert all(table.contains_any([k]) for k in reference)
    assert not any(table.contains_any([k]) for k in rng.integers(1, 2**64, 1000, dtype=np.uint64).tolist())
    table.add([0])
    assert table.contains_any([0])
    assert 2 * table.size <= table.nbytes // 8


# --- the hashing against references written from the definitions ----------------------------------

MASK64 = (1 << 64) - 1


def test_key_table_stays_between_a_quarter_and_half_full():
    table = KeyTable(capacity=8)
    rng = np.random.default_rng(13)
    slots = table.nbytes // 8
    # Growth is checked at its boundaries: 12 keys make the table exactly half full (no growth), 32
    # more need exactly the doubled capacity (one doubling, not two).
    for batch in [1] * 20 + [12, 32, 3, 40, 64, 1, 200, 5]:
        table.add(rng.integers(1, 2**64, batch, dtype=np.uint64).tolist())
        grown = table.nbytes // 8 != slots
        slots = table.nbytes // 8
        assert slots & (slots - 1) == 0, "the capacity is a power of two (lookups mask the key)"
        assert 2 * table.size <= slots, (table.size, slots)
        if grown:
            assert 4 * table.size > slots, (table.size, slots)


def test_key_table_keeps_zero_and_repeated_keys_through_growth():
    table = KeyTable(capacity=8)
    table.add([0, 1 << 40])  # zero is stored as one
    table.add([7, 7, 9])  # two bands of one document with the same key, then another key
    assert table.size == 4 and table.contains_any([9]) and table.contains_any([0])
    table.add(list(range(100, 400)))
    assert table.nbytes // 8 >= 2 * table.size
    assert all(table.contains_any([k]) for k in (0, 1, 1 << 40, 7, 9, 100, 399))
    assert not table.contains_any([2, 3, 400])


def test_wide_keys_are_told_apart_by_every_word():
    table = KeyTable(words=2, capacity=8)
    rng = np.random.default_rng(3)
    # Keys with equal low words (the slot) but different high words, and the other way round.
    low = rng.integers(1, 2**64, 300, dtype=np.uint64).tolist()
    keys = [lo | (hi << 64) for lo in low[:100] for hi in (1, 2)] + [5 | (hi << 64) for hi in low[100:]]
    reference: set[int] = set()
    for key in keys + keys[:50]:
        assert table.add_new(key) == (key not in reference)
        reference.add(key)
    assert table.size == len(reference) == 400
    assert all(key in table for key in reference)
    assert (low[0] | (3 << 64)) not in table and (7 | (low[101] << 64)) not in table
    assert table.add_new(0) and 0 in table and not table.add_new(0)
    assert 2 * table.size <= table.nbytes // 16, "16 bytes a slot, at most half full"


def test_many_digests_take_32_to_64_bytes_each():
    table = KeyTable(words=2)
    keys = np.random.default_rng(4).integers(1, 2**63, (200_000, 2), dtype=np.int64).tolist()
    table.add([lo | (hi << 64) for lo, hi in keys])
    assert 32 <= table.nbytes / table.size <= 64


def test_bad_table_shapes_are_refused():
    with pytest.raises(ValueError, match="power-of-two"):
        KeyTable(capacity=6)


def test_seen_ids_tell_every_id_apart_and_refuse_a_repeat():
    seen = SeenIds()
    ids = [f"web:part-{i // 100}.jsonl:{i % 100}" for i in range(3000)] + ["", "é", "\ud800"]
    assert all(seen.add(i) for i in ids)
    assert not any(seen.add(i) for i in ids)
    with pytest.raises(ValueError, match=r"'web:part-0.jsonl:5' \(a.jsonl:6\) occurs twice"):
        check_unique_id(Document("web:part-0.jsonl:5", "web", "a.jsonl:6", "text"), seen)


def test_many_keys_at_once_agree_with_one_at_a_time():
    rng = np.random.default_rng(21)
    batched, single = KeyTable(words=2, capacity=8), KeyTable(words=2, capacity=8)
    # Low words from a small range collide in the slots; repeats within and across batches; zero low words.
    low = rng.integers(0, 64, 4000, dtype=np.uint64) << np.uint64(40)
    keys = np.stack([low, rng.integers(0, 3, 4000, dtype=np.uint64)], axis=1)
    for group in np.array_split(keys, 37):
        rows = batched.rows(group)
        expected = [single.add_new(int(lo) | (int(hi) << 64)) for lo, hi in group.tolist()]
        assert batched.add_rows(rows).tolist() == expected
        assert batched.size == single.size
        assert batched.find(rows).all()
    absent = batched.rows(np.stack([low[:50], np.full(50, 7, dtype=np.uint64)], axis=1))
    assert not batched.find(absent).any()
    assert all(int(lo) | (int(hi) << 64) in batched for lo, hi in keys[:200].tolist())
    assert 2 * batched.size <= batched.nbytes // 16
