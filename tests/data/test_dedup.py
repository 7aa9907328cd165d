"""Deduplication: planted exact and near duplicates are caught, different texts are not, decisions are
deterministic, and the near-duplicate detection rate follows the LSH S-curve."""

from __future__ import annotations

import hashlib
import inspect
import random
import shlex
import textwrap

import numpy as np
import pytest

from lit_pretrain.data import dedup
from lit_pretrain.data.dedup import DedupConfig, Deduplicator, exact_key, normalize_for_exact
from lit_pretrain.data.tasks import key_slice

NGRAM = DedupConfig().ngram_size


def random_vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)]


def random_words(rng: random.Random, vocabulary: list[str], count: int = 2000) -> list[str]:
    return [rng.choice(vocabulary) for _ in range(count)]


def with_words_replaced(rng: random.Random, vocabulary: list[str], words: list[str], count: int) -> list[str]:
    changed = list(words)
    for position in rng.sample(range(len(words)), count):
        changed[position] = rng.choice(vocabulary)
    return changed


def word_ngram_jaccard(first: list[str], second: list[str], n: int = NGRAM) -> float:
    """Ground truth computed independently of the module's hashing."""
    first_ngrams = {tuple(first[i : i + n]) for i in range(len(first) - n + 1)}
    second_ngrams = {tuple(second[i : i + n]) for i in range(len(second) - n + 1)}
    return len(first_ngrams & second_ngrams) / len(first_ngrams | second_ngrams)


def s_curve(similarity: float, config: DedupConfig) -> float:
    return 1 - (1 - similarity**config.rows_per_band) ** config.num_bands


def is_flagged_after(first: str, second: str, config: DedupConfig) -> bool:
    deduplicator = Deduplicator(config)
    assert deduplicator.check(first) is None
    return deduplicator.check(second) is not None


@pytest.fixture(scope="module")
def vocabulary() -> list[str]:
    return random_vocabulary(random.Random(0))


# --- configuration ---------------------------------------------------------------------------------


def test_default_bands_and_rows_put_the_threshold_near_0_8():
    config = DedupConfig()
    assert config.exact and config.near, "both on by default"
    assert config.threshold == pytest.approx((1 / config.num_bands) ** (1 / config.rows_per_band))
    assert 0.78 <= config.threshold <= 0.82


def test_from_dict_accepts_known_keys_and_names_unknown_ones():
    config = DedupConfig.from_dict({"near": True, "num_bands": 20, "rows_per_band": 14, "seed": 7})
    assert config == DedupConfig(near=True, num_bands=20, rows_per_band=14, seed=7)
    assert DedupConfig.from_dict({}) == DedupConfig()
    with pytest.raises(ValueError, match="nearr.*threshhold|threshhold.*nearr"):
        DedupConfig.from_dict({"nearr": True, "threshhold": 0.8, "exact": True})
    with pytest.raises(ValueError, match="mapping"):
        DedupConfig.from_dict([("near", True)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_bands", 0),
        ("rows_per_band", -2),
        ("ngram_size", 0),
        ("ngram_size", 2.5),
        ("ngram_size", True),
        ("num_bands", "14"),
        ("exact", "yes"),
        ("near", 1),
        ("seed", -1),
        ("seed", None),
    ],
)
def test_invalid_values_are_rejected_with_the_option_named(key: str, value: object):
    with pytest.raises(ValueError, match=key):
        DedupConfig.from_dict({key: value})
    with pytest.raises(ValueError, match=key):
        DedupConfig(**{key: value})  # type: ignore[arg-type]


# --- exact duplicates ------------------------------------------------------------------------------


def test_normalisation_ignores_case_whitespace_and_unicode_composition():
    assert normalize_for_exact("  Hello,\tWORLD\n\n café ") == "hello,worldcafé"
    # Decomposed e + combining acute, a no-break space and an ideographic space.
    assert normalize_for_exact("Cafe\u0301\u00a0au\u3000LAIT") == normalize_for_exact("café au lait")
    assert normalize_for_exact("f(a,b)") == normalize_for_exact("f(a, b)\n")
    assert normalize_for_exact("hello world") != normalize_for_exact("hello word")


def test_exact_key_is_the_digest_of_the_normalised_text():
    # The fast path works on bytes; it must agree with the documented str definition on every kind of text.
    rng = random.Random(3)
    alphabet = list("aZ9 ,\t\n\r\x0b\x0c\x1c\x1f\x00\x7f") + [
        "\u00a0",
        "\u0085",
        "\u2003",
        "\u3000",
        "\u00c9",
        "e\u0301",
        "\u0130",
        "\u03a3",
        "\U0001f600",
        "\ud800",
    ]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        expected = hashlib.blake2b(
            normalize_for_exact(text).encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
        assert exact_key(text) == expected, repr(text)


def test_exact_copies_are_caught_and_the_first_survives(vocabulary: list[str]):
    rng = random.Random(1)
    original = " ".join(random_words(rng, vocabulary, 300))
    other = " ".join(random_words(rng, vocabulary, 300))
    deduplicator = Deduplicator(DedupConfig(near=False))
    decisions = [
        deduplicator.check(text)
        for text in (
            original,
            other,
            original,
            original.upper(),
            "\n\n" + original.replace(" ", "   \t"),
            other + " extra",
        )
    ]
    assert decisions == [None, None, "exact", "exact", "exact", None]
    assert deduplicator.counts == {"exact_duplicates": 3, "near_duplicates": 0}


def test_nothing_is_flagged_when_both_passes_are_off():
    deduplicator = Deduplicator(DedupConfig(exact=False, near=False))
    assert [deduplicator.check("same text") for _ in range(3)] == [None, None, None]
    assert deduplicator.counts == {"exact_duplicates": 0, "near_duplicates": 0}


# --- near duplicates -------------------------------------------------------------------------------


def test_near_duplicate_of_a_long_text_is_caught_only_with_near_on(vocabulary: list[str]):
    rng = random.Random(2)
    words = random_words(rng, vocabulary)
    edited = with_words_replaced(rng, vocabulary, words, 10)
    assert word_ngram_jaccard(words, edited) > 0.94
    assert is_flagged_after(" ".join(words), " ".join(edited), DedupConfig(near=True))
    assert not is_flagged_after(" ".join(words), " ".join(edited), DedupConfig(near=False))
    deduplicator = Deduplicator(DedupConfig(near=True))
    assert [deduplicator.check(" ".join(w)) for w in (words, edited)] == [None, "near"]
    assert deduplicator.counts == {"exact_duplicates": 0, "near_duplicates": 1}


def test_near_duplicate_source_code_is_caught_and_different_code_is_not():
    source = inspect.getsource(textwrap)
    lines = source.splitlines()
    for line_number in range(0, len(lines), 50):
        lines[line_number] += "  # edited"
    edited = "\n".join(lines)
    config = DedupConfig(near=True)
    assert is_flagged_after(source, edited, config)
    assert not is_flagged_after(source, inspect.getsource(shlex), config)


def test_copies_of_a_dropped_near_duplicate_count_as_exact(vocabulary: list[str]):
    rng = random.Random(4)
    words = random_words(rng, vocabulary)
    edited = " ".join(with_words_replaced(rng, vocabulary, words, 5))
    deduplicator = Deduplicator(DedupConfig(near=True))
    decisions = [deduplicator.check(text) for text in (" ".join(words), edited, edited)]
    assert decisions == [None, "near", "exact"]
    assert deduplicator.counts == {"exact_duplicates": 1, "near_duplicates": 1}


def _band_keys(*rows: list[int]) -> dedup.DedupKeys:
    bands = np.array(rows, dtype=np.uint64)
    return dedup.DedupKeys(len(bands), None, bands)


def test_a_near_duplicate_of_a_dropped_document_is_dropped_too():
    # A ~ B share band 0; B ~ C share band 1; C shares nothing with A. B is dropped as a copy of A, and C
    # is judged against B all the same: the rule looks at earlier keys, never at earlier verdicts.
    a, b, c = [10, 11, 12], [10, 21, 22], [30, 21, 32]
    deduplicator = Deduplicator(DedupConfig(exact=False, near=True, num_bands=3))
    assert deduplicator.decide(_band_keys(a, b, c)) == [None, "near", "near"]
    assert deduplicator.decide(_band_keys([40, 41, 42], [50, 51, 12])) == [None, "near"]


@pytest.mark.parametrize("cuts", [[], [1], [1, 2, 3, 4, 5], [3]])
def test_verdicts_do_not_depend_on_how_the_stream_is_cut_into_batches(cuts: list[int]):
    rng = np.random.default_rng(0)
    # Six documents whose keys are drawn from small pools, so that some repeat across documents.
    bands = rng.integers(1, 30, size=(6, 4)).astype(np.uint64)
    exact = np.repeat(rng.integers(1, 5, size=(6, 1)), 2, axis=1).astype(np.uint64)
    whole = Deduplicator(DedupConfig(near=True, num_bands=4)).decide(dedup.DedupKeys(6, exact, bands))
    cut = Deduplicator(DedupConfig(near=True, num_bands=4))
    verdicts: list[str | None] = []
    for start, end in zip([0, *cuts], [*cuts, 6], strict=True):
        verdicts += cut.decide(dedup.DedupKeys(end - start, exact[start:end], bands[start:end]))
    assert verdicts == whole
    assert "near" in whole and "exact" in whole and None in whole


def test_key_slices_decided_apart_and_or_ed_give_the_same_verdicts():
    rng = np.random.default_rng(1)
    bands = dedup.mix64(rng.integers(0, 40, size=(200, 5)).astype(np.uint64))
    whole = dedup.repeated_rows(dedup.KeyTable(), bands)
    slices = 3
    flagged = np.zeros(len(bands), dtype=bool)
    for part in range(slices):
        # Each slice sees only its keys, document by document, as a dedup task does.
        documents, columns = np.nonzero(key_slice(bands, slices) == part)
        flagged[dedup.repeated_owners(dedup.KeyTable(), bands[documents, columns, None], documents)] = True
    assert np.array_equal(flagged, whole)
    assert 0 < whole.sum() < len(bands)


def test_exact_copies_are_caught_by_the_near_pass_alone():
    deduplicator = Deduplicator(DedupConfig(exact=False, near=True))
    text = "one two three four five six seven eight nine ten"
    assert [deduplicator.check(t) for t in (text, text.upper(), "something else entirely here")] == [
        None,
        "near",
        None,
    ]


def test_documents_shorter_than_a_shingle_are_compared_whole():
    deduplicator = Deduplicator(DedupConfig(exact=False, near=True))
    decisions = [deduplicator.check(t) for t in ("", "   ", "hi", "Hi\n", "hi there", "hello")]
    assert decisions == [None, "near", None, "near", None, None]


def test_clearly_different_texts_are_never_flagged(vocabulary: list[str]):
    rng = random.Random(5)
    config = DedupConfig(near=True)
    similarities = []
    for pair in range(200):
        first = random_words(rng, vocabulary, 1000)
        # Half the pairs unrelated, half sharing long runs of words (Jaccard about 0.3).
        if pair % 2:
            second = random_words(rng, vocabulary, 1000)
        else:
            second = with_words_replaced(rng, vocabulary, first, 150)
        similarities.append(word_ngram_jaccard(first, second))
        assert not is_flagged_after(" ".join(first), " ".join(second), config)
    assert max(similarities) < 0.5 and np.mean(similarities[1::2]) < 0.01


@pytest.mark.parametrize(
    ("words_changed", "low", "high"), [(10, 0.97, 1.0), (45, 0.3, 0.95), (160, 0.0, 0.05)]
)
def test_detection_rate_follows_the_s_curve(
    vocabulary: list[str], words_changed: int, low: float, high: float
):
    # About 0.95, 0.8 and 0.5 Jaccard similarity: almost always, sometimes and almost never caught.
    rng = random.Random(words_changed)
    config = DedupConfig(near=True)
    similarities, caught = [], []
    for _ in range(100):
        words = random_words(rng, vocabulary)
        edited = with_words_replaced(rng, vocabulary, words, words_changed)
        similarities.append(word_ngram_jaccard(words, edited))
        caught.append(is_flagged_after(" ".join(words), " ".join(edited), config))
    probabilities = np.array([s_curve(s, config) for s in similarities])
    expected, observed = probabilities.mean(), np.mean(caught)
    # Four binomial standard deviations of the mean, plus slack for pairs near the curve's steep middle.
    tolerance = 4 * np.sqrt((probabilities * (1 - probabilities)).sum()) / len(caught) + 0.02
    assert abs(observed - expected) <= tolerance, (np.mean(similarities), observed, expected)
    assert low <= observed <= high


def test_signature_agreement_estimates_jaccard_without_bias(vocabulary: list[str]):
    rng = random.Random(6)
    deduplicator = Deduplicator(DedupConfig(near=True))
    errors = []
    for words_changed in (20, 60, 120, 250) * 10:
        words = random_words(rng, vocabulary)
        edited = with_words_replaced(rng, vocabulary, words, words_changed)
        agreement = np.mean(
            deduplicator.signature(" ".join(words)) == deduplicator.signature(" ".join(edited))
        )
        errors.append(agreement - word_ngram_jaccard(words, edited))
    # Each estimate has a standard deviation of at most sqrt(0.25 / 168) = 0.039.
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.05


# --- determinism and the streaming corpus ----------------------------------------------------------


def test_signatures_are_equal_across_instances_with_the_same_seed(vocabulary: list[str]):
    text = " ".join(random_words(random.Random(7), vocabulary, 500))
    first = Deduplicator(DedupConfig(near=True)).signature(text)
    second = Deduplicator(DedupConfig(near=True)).signature(text)
    other_seed = Deduplicator(DedupConfig(near=True, seed=43)).signature(text)
    assert first.dtype == np.uint32 and first.shape == (DedupConfig().num_permutations,)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other_seed)
    reformatted = "\n  ".join(text.upper().split(" "))
    assert np.array_equal(first, Deduplicator(DedupConfig(near=True)).signature(reformatted))


def test_planted_duplicates_in_a_stream_are_found_deterministically(vocabulary: list[str]):
    rng = random.Random(8)
    originals = [random_words(rng, vocabulary, rng.randint(200, 1500)) for _ in range(150)]
    documents = [(" ".join(words), None) for words in originals]
    for words in rng.sample(originals, 30):
        documents.append((" ".join(words).title(), "exact"))
    for words in rng.sample(originals, 30):
        documents.append((" ".join(with_words_replaced(rng, vocabulary, words, len(words) // 200)), "near"))
    rng.shuffle(documents)
    # Whichever copy comes first in the stream survives, original or not.
    runs = []
    for _ in range(2):
        deduplicator = Deduplicator(DedupConfig(near=True))
        runs.append([deduplicator.check(text) for text, _ in documents])
        assert sum(d is not None for d in runs[-1]) == 60
        assert deduplicator.counts["exact_duplicates"] + deduplicator.counts["near_duplicates"] == 60
    assert runs[0] == runs[1]
    originals_first = sorted(documents, key=lambda document: document[1] is not None)
    deduplicator = Deduplicator(DedupConfig(near=True))
    assert [deduplicator.check(text) for text, _ in originals_first] == [kind for _, kind in originals_first]


def test_words_are_what_str_split_finds_in_the_lowercased_text():
    rng = random.Random(11)
    alphabet = list("aBc1 \t\n\r\x0b\x0c\x1c\x1f\x00\x08\x7f,") + [
        "\u00a0",
        "\u2003",
        "\u00c9",
        "e\u0301",
        "\u3000",
    ]
    deduplicator = Deduplicator(DedupConfig(near=True, ngram_size=2))
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        words = text.split()
        shingles = deduplicator.shingle_hashes(text)
        assert len(shingles) == max(1, len(words) - 1), repr(text)
        assert np.array_equal(shingles, deduplicator.shingle_hashes(" ".join(words).lower())), repr(text)


def test_shingles_do_not_depend_on_where_they_fall_in_long_documents(vocabulary: list[str]):
    # Long enough to span several hashing windows, with one word longer than a window.
    rng = random.Random(9)
    words = random_words(rng, vocabulary, 40_000)
    words[20_000] = "x" * (dedup._HASH_WINDOW_BYTES + 10)
    text = " ".join(words)
    deduplicator = Deduplicator(DedupConfig(near=True))
    shingles = deduplicator.shingle_hashes(text)
    assert len(shingles) == len(words) - NGRAM + 1
    shifted = deduplicator.shingle_hashes("padding " * 7 + text)
    assert np.array_equal(shifted[7:], shingles)
    assert len(np.unique(shingles)) == len({tuple(words[i : i + NGRAM]) for i in range(len(shingles))})


# --- the hashing against references written from the definitions ----------------------------------
MASK64 = (1 << 64) - 1


def splitmix64_finaliser(x: int) -> int:
    """splitmix64's output function (Steele, Lea and Flood, 2014) on Python ints."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_shingle_hashes(deduplicator: Deduplicator, text: str) -> list[int]:
    """Word hashes sum((byte + 1) * base**i) mod 2**64, combined per n-gram with the position multipliers."""
    base = dedup._polynomial_hash().base
    words = [word.encode("utf-8") for word in text.lower().split()]
    word_hashes = [
        sum((byte + 1) * pow(base, i, 1 << 64) for i, byte in enumerate(w)) & MASK64 for w in words
    ]
    n = deduplicator.config.ngram_size
    multipliers = [int(m) for m in deduplicator._position_multipliers]
    return [
        splitmix64_finaliser(
            sum(h * m for h, m in zip(word_hashes[i : i + n], multipliers, strict=False)) & MASK64
        )
        for i in range(max(1, len(words) - n + 1))
    ]


def reference_signature(deduplicator: Deduplicator, text: str) -> np.ndarray:
    """MinHash: for each permutation x -> (a * x + b) mod 2**32 of the shingles' top 32 bits, the minimum."""
    values = np.array(reference_shingle_hashes(deduplicator, text), dtype=np.uint64) >> np.uint64(32)
    a = deduplicator._multipliers.astype(np.uint64)[:, None]
    b = deduplicator._increments.astype(np.uint64)[:, None]
    return ((values[None, :] * a + b) & np.uint64(0xFFFFFFFF)).min(axis=1).astype(np.uint32)


def reference_band_keys(deduplicator: Deduplicator, signature: np.ndarray) -> list[int]:
    config = deduplicator.config
    rows = signature.reshape(config.num_bands, config.rows_per_band).tolist()
    multipliers = [int(m) for m in deduplicator._row_multipliers]
    salts = [int(s) for s in deduplicator._band_salts]
    return [
        splitmix64_finaliser((sum(r * m for r, m in zip(band, multipliers, strict=True)) + salt) & MASK64)
        for band, salt in zip(rows, salts, strict=True)
    ]


def test_mix64_is_splitmix64():
    assert splitmix64_finaliser(0) == 0xE220A8397B1DCDAF  # splitmix64's first output from seed 0
    values = [0, 1, 2, 12345, 1 << 63, MASK64, 0x0123456789ABCDEF]
    assert dedup.mix64(np.array(values, dtype=np.uint64)).tolist() == list(map(splitmix64_finaliser, values))


def test_power_tables_hold_successive_powers():
    base = dedup._polynomial_hash().base
    assert base % 2 == 1
    assert dedup._power_table(base, 5).tolist() == [pow(base, i, 1 << 64) for i in range(5)]
    inverse = dedup._polynomial_hash().inverse_powers[:5].tolist()
    assert [(p * q) & MASK64 for p, q in zip(dedup._power_table(base, 5).tolist(), inverse, strict=True)] == [
        1
    ] * 5


@pytest.mark.parametrize("ngram_size", [1, 3, 5])
def test_shingle_hashes_match_the_reference(vocabulary: list[str], ngram_size: int):
    deduplicator = Deduplicator(DedupConfig(near=True, ngram_size=ngram_size))
    rng = random.Random(ngram_size)
    texts = ["", "one", "Two Words", "x\x00y \t z", " ".join(random_words(rng, vocabulary, 300))]
    for text in texts:
        assert deduplicator.shingle_hashes(text).tolist() == reference_shingle_hashes(deduplicator, text), (
            text
        )


def test_shingle_hashes_of_a_text_longer_than_a_window_match_the_reference(vocabulary: list[str]):
    words = random_words(random.Random(12), vocabulary, 30_000)  # about 170 KB: two hashing windows
    words[100] = "y" * (dedup._HASH_WINDOW_BYTES + 3)  # and a word longer than a window
    text = " ".join(words)
    assert len(text) > 2 * dedup._HASH_WINDOW_BYTES
    deduplicator = Deduplicator(DedupConfig(near=True))
    assert deduplicator.shingle_hashes(text).tolist() == reference_shingle_hashes(deduplicator, text)


@pytest.mark.parametrize("words", [3, 400, 7_000])  # one block of few shingles, one large block, two blocks
def test_signature_and_band_keys_match_the_reference(vocabulary: list[str], words: int):
    deduplicator = Deduplicator(DedupConfig(near=True))
    if words > 1000:  # several blocks of the (permutation x shingle) matrix
        assert words > dedup._MINHASH_BLOCK_ELEMENTS // deduplicator.config.num_permutations
    text = " ".join(random_words(random.Random(words), vocabulary, words))
    signature = deduplicator.signature(text)
    assert signature.dtype == np.uint32
    assert np.array_equal(signature, reference_signature(deduplicator, text))
    assert deduplicator.band_keys(signature).tolist() == reference_band_keys(deduplicator, signature)


def test_hash_constants_are_fixed_across_versions():
    # Band keys decide which documents are near duplicates, so the same corpus must give the same
    # keys in every version: otherwise a re-prepared dataset keeps different documents. If a change
    # to the hashing is intended, update this digest and say so in the changelog.
    deduplicator = Deduplicator(DedupConfig(near=True))
    keys = deduplicator.band_keys(deduplicator.signature("The quick brown fox jumps over the lazy dog " * 3))
    assert hashlib.sha256(keys.astype("<u8").tobytes()).hexdigest()[:16] == "d2a1b09766613d03"


def test_seed_zero_is_valid_and_unknown_options_are_named():
    assert DedupConfig(seed=0).seed == 0
    with pytest.raises(ValueError, match=r"unknown dedup option 'nearr'; valid options are: exact, near"):
        DedupConfig.from_dict({"nearr": True})


def geometric_word_hash(byte: int, length: int, base: int) -> int:
    """sum((byte + 1) * base**i for i < length) mod 2**64, by doubling (a word of one repeated byte)."""
    total, power, size = 0, 1, 0  # sum of base**i for i < size, and base**size
    for bit in bin(length)[2:]:
        total, power, size = (total + total * power) & MASK64, (power * power) & MASK64, 2 * size
        if bit == "1":
            total, power, size = (total + power) & MASK64, (power * base) & MASK64, size + 1
    assert size == length
    return ((byte + 1) * total) & MASK64


def test_a_word_too_big_for_the_kept_scratch_arrays_hashes_like_the_reference():
    # 3 MiB: its (uint64) scratch arrays exceed _MAX_KEPT_SCRATCH_BYTES and are allocated afresh.
    length = 3 << 20
    assert 8 * length > dedup._MAX_KEPT_SCRATCH_BYTES
    base = dedup._polynomial_hash().base
    assert geometric_word_hash(ord("z"), 5, base) == (
        sum((ord("z") + 1) * pow(base, i, 1 << 64) for i in range(5)) & MASK64
    )
    deduplicator = Deduplicator(DedupConfig(near=True, ngram_size=1))
    hashes = deduplicator.shingle_hashes("short " + "z" * length + " words")
    word_hash = geometric_word_hash(ord("z"), length, base)
    assert hashes[1] == splitmix64_finaliser(
        (word_hash * int(deduplicator._position_multipliers[0])) & MASK64
    )
