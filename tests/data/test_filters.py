"""Document cleaning and quality filters: each filter keeps good documents and drops planted bad ones."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from lit_pretrain.data.filters import DocumentFilter, FilterConfig, has_control_chars, non_alnum_fraction
from lit_pretrain.data.repetition import duplicate_line_fraction, top_ngram_char_fraction, word_chars
from lit_pretrain.data.sources import ReadReport, python_stdlib_code, python_stdlib_prose

PROSE = (
    "The river leaves the mountains through a narrow gorge, then widens into a valley where farmers "
    "have grown barley and apples for centuries. In spring the meltwater rises quickly, and the old "
    "stone bridge near the mill has been rebuilt three times since records began. Visitors usually "
    "arrive in autumn, when the orchards are heavy with fruit and the light turns the hillsides gold.\n"
    "Most of them walk the path along the eastern bank, stopping at the chapel before climbing to the "
    "ridge, from which the whole valley can be seen on a clear day."
)
CODE = '''"""Small helpers."""

import os


def read_lines(path):
    """Return the lines of a file."""
    with open(path) as handle:
        return handle.read().splitlines()


def is_hidden(path):
    return os.path.basename(path).startswith(".")
'''


def dropped_by(config: FilterConfig | None, text: str, is_code: bool = False) -> str | None:
    """The name of the counter a single document increments when it is dropped, or None if kept."""
    document_filter = DocumentFilter(config)
    if document_filter(text, is_code) is not None:
        return None
    (name,) = [name for name, count in document_filter.counts.items() if count]
    return name


def only(**options: object) -> FilterConfig:
    """A config with every filter off but min_chars and the given ones, so every drop is theirs."""
    return dataclasses.replace(FilterConfig.disabled(), min_chars=10, **options)


def top_ngrams_only(max_top_ngram_fraction: dict[int, float] | None = None) -> FilterConfig:
    """Only min_chars and the top n-gram filters (Gopher's by default) on."""
    return only(max_top_ngram_fraction=max_top_ngram_fraction or {2: 0.20, 3: 0.18, 4: 0.16})


def test_clean_documents_pass_unchanged():
    document_filter = DocumentFilter()
    assert document_filter(PROSE, is_code=False) == PROSE
    assert document_filter(CODE, is_code=True) == CODE
    assert not any(document_filter.counts.values())


def test_counter_names_are_stable_and_all_start_at_zero():
    assert DocumentFilter().counts == dict.fromkeys(
        [
            "min_chars",
            "max_chars",
            "blocklist",
            "code_line_length",
            "generated_code",
            "non_alnum_fraction",
            "min_words",
            "max_words",
            "duplicate_lines",
            "duplicate_line_chars",
            "duplicate_paragraphs",
            "duplicate_paragraph_chars",
            "min_mean_word_length",
            "max_mean_word_length",
            "hash_ratio",
            "ellipsis_ratio",
            "stop_words",
            "alpha_words",
            "bullet_lines",
            "ellipsis_lines",
            "top_2gram",
            "top_3gram",
            "top_4gram",
            *(f"duplicate_{n}gram" for n in range(5, 11)),
            "language",
            "language_score",
            "nfc_changed",
            "control_chars_removed",
        ],
        0,
    )


def test_min_chars_counts_text_without_surrounding_whitespace():
    assert dropped_by(None, "Return x.") == "min_chars"
    assert dropped_by(None, "   ok   \n\n\n   ") == "min_chars"
    assert dropped_by(None, "", is_code=True) == "min_chars"
    assert dropped_by(None, "Return the sum.") is None


def test_max_chars():
    config = FilterConfig(max_chars=len(PROSE))
    assert dropped_by(config, PROSE) is None
    assert dropped_by(config, PROSE + "!") == "max_chars"


def test_blocklist_is_case_insensitive_for_prose_and_code():
    config = FilterConfig(blocklist=["Casino Bonus"])
    assert dropped_by(config, PROSE) is None
    assert dropped_by(config, PROSE + " Claim your CASINO bonus now.") == "blocklist"
    assert dropped_by(config, CODE + "# casino BONUS\n", is_code=True) == "blocklist"


def test_symbol_soup_is_dropped_as_prose_only():
    soup = "@@@ ### $$$ %%% ^^^ &&& *** ((( ))) <<< >>> ~~~ |||  !!! ??? +++ === --- ;;; :::" * 3
    assert dropped_by(None, soup) == "non_alnum_fraction"
    assert dropped_by(None, soup, is_code=True) is None
    # Doctest-style docstrings are symbol-heavy but well under the default limit.
    doctest = "Add two numbers.\n\n>>> add(2, [3])\nTraceback (most recent call last):\nTypeError: ..."
    assert dropped_by(None, doctest) is None


def test_repeated_lines_are_dropped_as_prose_only():
    lines = ["Buy cheap watches online!", "Great prices every day.", "Buy cheap watches online!"]
    spam = "\n".join(lines * 4 + ["Contact us for details."])
    assert dropped_by(None, spam) == "duplicate_lines"
    assert dropped_by(None, spam, is_code=True) is None
    # Blank lines and indentation do not count as repeats.
    assert dropped_by(None, "\n\n   \n".join(PROSE.split(". "))) is None


def test_duplicate_line_fraction_threshold_follows_gopher():
    unique = [f"Line number {i} is unique." for i in range(7)]
    three_repeats = "\n".join(unique + ["Repeated line."] * 4)  # 3 of 11 lines repeat: 0.27
    four_repeats = "\n".join(unique + ["Repeated line."] * 5)  # 4 of 12 lines repeat: 0.33
    assert dropped_by(None, three_repeats) is None
    assert dropped_by(None, four_repeats) == "duplicate_lines"


SPAM = " ".join(["win a free cruise today"] * 15 + PROSE.split()[:40])


@pytest.mark.parametrize("n", [2, 3, 4])
def test_spammy_repeated_ngram_is_dropped(n: int):
    config = FilterConfig(max_top_ngram_fraction={n: 0.16})
    assert dropped_by(config, PROSE) is None
    assert dropped_by(config, SPAM) == f"top_{n}gram"


def test_first_failing_filter_in_order_is_the_one_counted():
    assert dropped_by(None, SPAM) == "top_2gram"
    config = FilterConfig(blocklist=["cruise"])
    assert dropped_by(config, SPAM) == "blocklist"
    assert dropped_by(config, "cruise") == "min_chars"


def test_ngram_filters_skip_documents_with_few_words():
    short_spam = " ".join(["buy now"] * 20)  # 40 words, under Gopher's 50
    assert dropped_by(None, short_spam) is None
    assert dropped_by(FilterConfig(top_ngram_min_words=40), short_spam) == "top_2gram"


def test_ngram_filters_skip_code():
    repetitive_code = "\n".join(f"self.assertEqual(result[{i}], expected[{i}])" for i in range(60))
    assert dropped_by(None, repetitive_code, is_code=True) is None
    assert dropped_by(None, " ".join(["x = x + 1"] * 60), is_code=True) is None


def test_top_ngram_fraction_counts_overlapping_occurrences_once():
    assert top_ngram_char_fraction(["a"] * 4, 2) == 1.0
    assert top_ngram_char_fraction(["ab", "c", "ab", "c", "dddd"], 2) == pytest.approx(6 / 10)
    assert top_ngram_char_fraction(["every", "word", "here", "is", "unique"], 2) == 0.0


def test_ties_go_to_the_longest_ngram_so_phrase_order_does_not_matter():
    for phrase in ("win a free cruise today", "free cruise today win a"):
        words = (phrase + " ").split() * 15
        assert top_ngram_char_fraction(words, 2) == pytest.approx(165 / 285)  # "cruise today" x 15
        assert dropped_by(None, " ".join(words + PROSE.split()[:40])) == "top_2gram"


def reference_top_ngram_fraction(words: list[str], n: int) -> float:
    """Gopher's statistic computed the obvious way, to check the filter's shortcuts against."""
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    counts = Counter(grams)
    top_count = max(counts.values())
    if top_count < 2:
        return 0.0
    top = max((gram for gram in counts if counts[gram] == top_count), key=lambda gram: len("".join(gram)))
    covered = {i + k for i, gram in enumerate(grams) if gram == top for k in range(n)}
    return sum(len(words[i]) for i in covered) / sum(map(len, words))


@pytest.mark.parametrize("limits", [{2: 0.2, 3: 0.18, 4: 0.16}, {2: 0.6, 3: 0.4, 4: 0.2}])
def test_ngram_shortcuts_never_change_a_decision(limits: dict[int, float]):
    rng = random.Random(1234)
    config = top_ngrams_only(limits)
    reasons = Counter()
    for _ in range(300):
        # Small, skewed vocabularies with words of mixed length make repeats, and near misses, common.
        vocabulary = ["w" * rng.randint(1, 12) + str(i) for i in range(rng.randint(2, 60))]
        weights = [rng.random() ** 3 for _ in vocabulary]
        words = rng.choices(vocabulary, weights, k=rng.randint(50, 300))
        expected = next(
            (f"top_{n}gram" for n, limit in limits.items() if reference_top_ngram_fraction(words, n) > limit),
            None,
        )
        assert dropped_by(config, " ".join(words)) == expected
        reasons[expected] += 1
    assert reasons[None] and reasons["top_2gram"], reasons


@pytest.mark.parametrize("n", [3, 4])
def test_ngram_shortcuts_agree_on_longer_ngrams_near_the_limit(n: int):
    # A phrase of n words repeated among ordinary prose, more or less often, lands on both sides of the
    # limit; with only the n-gram filter on, every decision is that filter's.
    rng = random.Random(n)
    config = FilterConfig(max_top_ngram_fraction={n: 0.16})
    filler = PROSE.split()
    reasons = Counter()
    for _ in range(40):
        phrase = " ".join(f"{rng.choice(filler)}{i}" for i in range(n))
        pieces = rng.choices(filler, k=rng.randint(40, 120)) + [phrase] * rng.randint(2, 12)
        rng.shuffle(pieces)
        words = " ".join(pieces).split()
        expected = f"top_{n}gram" if reference_top_ngram_fraction(words, n) > 0.16 else None
        assert dropped_by(config, " ".join(words)) == expected
        reasons[expected] += 1
    assert reasons[None] and reasons[f"top_{n}gram"], reasons


def test_minified_code_line_is_dropped():
    minified = "var a=" + "[1,2,3]," * 625 + ";\n"  # one 5000+ character line
    assert dropped_by(None, CODE + minified, is_code=True) == "code_line_length"
    assert dropped_by(None, CODE + "x = 1  # " + "y" * 990 + "\n", is_code=True) is None
    assert dropped_by(FilterConfig(code_max_line_length=None), CODE + minified, is_code=True) is None


@pytest.mark.parametrize(
    "head",
    [
        "# Code generated by protoc. DO NOT EDIT.\n",
        "// @generated by the build\n",
        "# -*- coding: utf-8 -*-\n# Autogenerated by Sphinx on Tue Jun 6 2023\n",
        "# Generated by Django 4.2 on 2024-01-01 12:00\n",
        '"""Keywords.\n\nThis file is automatically generated; please do not edit it."""\n',
    ],
)
def test_generated_code_is_dropped(head: str):
    assert dropped_by(None, head + CODE, is_code=True) == "generated_code"
    assert dropped_by(FilterConfig(drop_generated_code=False), head + CODE, is_code=True) is None
    assert dropped_by(None, head + PROSE) is None  # prose about generated code is still prose


def test_generation_words_away_from_a_files_head_are_not_markers():
    assert dropped_by(None, '"""Parser for the tables generated by pgen."""\n' + CODE, is_code=True) is None
    assert (
        dropped_by(None, "# Maps names so that pickles\n# generated with Python 2 load.\n" + CODE, True)
        is None
    )
    assert dropped_by(None, CODE + "\n" * 10 + "# DO NOT EDIT below this line\n", is_code=True) is None


def test_nfc_composes_prose_and_leaves_code_alone():
    decomposed = "Cafe\u0301 au lait, served in the small cafe\u0301 near the station every morning."
    document_filter = DocumentFilter()
    cleaned = document_filter(decomposed, is_code=False)
    assert cleaned == decomposed.replace("e\u0301", "\u00e9") and "\u0301" not in cleaned
    assert document_filter.counts["nfc_changed"] == 1
    # In code NFC would change what a literal means (U+2126 OHM SIGN becomes U+03A9).
    code = "assert normcase('\u2126') == '\u2126'\nname = 'nai\u0308ve'\n"
    assert document_filter(code, is_code=True) == code
    assert document_filter(decomposed.replace("e\u0301", "\u00e9"), is_code=False) is not None
    assert document_filter.counts["nfc_changed"] == 1


def test_control_characters_are_removed_but_whitespace_is_kept():
    text = "Bell\x07 and NUL\x00 go;\ttabs,\nnewlines,\r\nform feeds\x0c and\x1b escapes\x7f, C1\x85\x9f too."
    document_filter = DocumentFilter()
    cleaned = document_filter(text, is_code=False)
    assert cleaned == "Bell and NUL go;\ttabs,\nnewlines,\r\nform feeds\x0c and escapes, C1 too."
    assert document_filter(CODE.replace("import os", "import os\x00"), is_code=True) == CODE
    assert document_filter.counts["control_chars_removed"] == 2
    # Non-ASCII text without controls, including the C1 range's UTF-8 lead byte, is untouched.
    assert (
        document_filter("Caf\u00e9 \u00a9 2024, \u00bfqu\u00e9 tal? \u00a0 Good morning.", False) is not None
    )
    assert document_filter.counts["control_chars_removed"] == 2


def test_disabled_config_keeps_every_document_unchanged():
    awkward = [
        ("", False),
        ("x", False),
        ("nul\x00 and cafe\u0301", False),
        ("@#$%^&*" * 50, False),
        ("same line\n" * 50, False),
        (SPAM, False),
        ("# Code generated by protoc. DO NOT EDIT.\n" + "a" * 5000, True),
    ]
    document_filter = DocumentFilter(FilterConfig.disabled())
    for text, is_code in awkward:
        assert document_filter(text, is_code) == text
    assert not any(document_filter.counts.values())


def test_filtering_is_deterministic():
    documents = [(PROSE, False), (SPAM, False), (CODE, True), ("tiny", False), ("cafe\u0301 " * 20, False)]
    runs = []
    for _ in range(2):
        document_filter = DocumentFilter()
        runs.append(([document_filter(text, is_code) for text, is_code in documents], document_filter.counts))
    assert runs[0] == runs[1]


def test_merge_counts_adds_worker_counts():
    total, worker = DocumentFilter(), DocumentFilter()
    total("tiny", is_code=False)
    worker("tiny", is_code=False)
    worker(SPAM, is_code=False)
    total.merge_counts(worker.counts)
    assert total.counts["min_chars"] == 2 and total.counts["top_2gram"] == 1
    assert total.dropped == 3


def test_from_dict_reads_yaml_style_options_and_round_trips():
    config = FilterConfig.from_dict(
        {"min_chars": 5, "max_top_ngram_fraction": {3: 0.2}, "blocklist": ["spam"], "max_chars": None}
    )
    assert (
        config.min_chars == 5 and config.max_top_ngram_fraction == {3: 0.2} and config.blocklist == ["spam"]
    )
    # A manifest stores the config as JSON, which turns the n-gram sizes into strings.
    assert FilterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert FilterConfig.from_dict({}) == FilterConfig()


def test_from_dict_names_an_unknown_key_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown filter option 'min_char'; valid options are: .*min_chars"):
        FilterConfig.from_dict({"min_char": 5})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_duplicate_line_fraction": 1.5}, r"max_duplicate_line_fraction must be a fraction in \[0, 1\]"),
        ({"max_non_alnum_fraction": -0.1}, r"max_non_alnum_fraction must be a fraction"),
        ({"min_chars": -1}, r"min_chars must be a non-negative integer, got -1$"),
        ({"min_chars": None}, r"min_chars must be a non-negative integer, got None$"),
        ({"top_ngram_min_words": None}, r"top_ngram_min_words must be a non-negative integer, got None$"),
        ({"max_non_alnum_fraction": True}, r"max_non_alnum_fraction must be a fraction"),
        ({"max_duplicate_line_fraction": "0.3"}, r"max_duplicate_line_fraction must be a fraction"),
        ({"max_top_ngram_fraction": [0.2]}, r"max_top_ngram_fraction must map n to a fraction"),
        (
            {"max_top_ngram_fraction": {2: None}},
            r"max_top_ngram_fraction\[2\] must be a fraction in \[0, 1\]$",
        ),
        ({"code_max_line_length": -5}, r"code_max_line_length must be a non-negative integer or null"),
        ({"max_chars": "100"}, r"max_chars must be a non-negative integer"),
        ({"normalize_nfc": "yes"}, r"normalize_nfc must be true or false"),
        ({"max_top_ngram_fraction": {2: 1.2}}, r"max_top_ngram_fraction\[2\] must be a fraction"),
        ({"max_top_ngram_fraction": {"two": 0.2}}, r"n must be a positive integer, got 'two'"),
        ({"max_top_ngram_fraction": {0: 0.2}}, r"n must be a positive integer, got 0"),
        ({"blocklist": "spam"}, r"blocklist must be a list of non-empty strings"),
        ({"blocklist": ["spam", ""]}, r"blocklist must be a list of non-empty strings"),
    ],
)
def test_from_dict_rejects_invalid_values(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        FilterConfig.from_dict(options)


def test_defaults_keep_the_standard_library_code():
    document_filter = DocumentFilter()
    documents = list(python_stdlib_code(ReadReport()))
    kept = sum(document_filter(document.text, is_code=True) is not None for document in documents)
    assert kept / len(documents) >= 0.95, document_filter.counts


@pytest.mark.slow
def test_defaults_keep_the_standard_library_docstrings():
    document_filter = DocumentFilter()
    documents = list(python_stdlib_prose(ReadReport()))
    kept = sum(document_filter(document.text, is_code=False) is not None for document in documents)
    assert kept / len(documents) >= 0.95, document_filter.counts


def test_from_dict_accepts_the_ends_of_every_range():
    config = FilterConfig.from_dict(
        {
            "max_non_alnum_fraction": 0,
            "max_duplicate_line_fraction": 1.0,
            "max_top_ngram_fraction": {1: 0.5, "3": 0},
            "min_chars": 0,
            "top_ngram_min_words": 0,
        }
    )
    assert config.max_top_ngram_fraction == {1: 0.5, 3: 0.0}
    assert config.max_non_alnum_fraction == 0 and config.max_duplicate_line_fraction == 1.0


# Each threshold keeps a document exactly at it and drops one just past it.


def test_min_chars_boundary():
    assert dropped_by(None, "x" * 10) is None
    assert dropped_by(None, "  " + "x" * 10 + "\n") is None
    assert dropped_by(None, "x" * 9) == "min_chars"
    assert dropped_by(None, "  " + "x" * 9 + "  ") == "min_chars"
    assert dropped_by(FilterConfig(min_chars=0), "") is None  # switched off: even the empty text is kept


def test_code_line_length_boundary():
    config = FilterConfig(code_max_line_length=100)
    assert dropped_by(config, CODE + "x" * 100 + "\n", is_code=True) is None
    assert dropped_by(config, CODE + "x" * 101 + "\n", is_code=True) == "code_line_length"
    assert dropped_by(config, "y" * 101, is_code=True) == "code_line_length"


def test_non_alnum_fraction_boundary():
    assert dropped_by(None, "a!" * 20) is None  # exactly half
    assert dropped_by(None, "a!" * 20 + "!") == "non_alnum_fraction"


def test_duplicate_line_fraction_boundary():
    config = only(max_duplicate_line_fraction=0.3)
    unique = [f"Line number {i} is unique." for i in range(7)]
    assert dropped_by(config, "\n".join(unique + [unique[0]] * 3)) is None  # 3 of 10 lines: exactly 0.3
    assert dropped_by(config, "\n".join(unique[:6] + [unique[0]] * 3)) == "duplicate_lines"  # 3 of 9


def test_shortest_text_with_enough_words_is_judged_by_the_ngram_filters():
    fifty_words = " ".join(["a"] * 50)  # 99 characters: the fewest that can hold 50 words
    assert dropped_by(top_ngrams_only(), fifty_words) == "top_2gram"
    assert dropped_by(None, " ".join(["a"] * 49)) is None


def test_top_ngram_fraction_boundary_with_overlapping_occurrences():
    # "aa aa aa" ten times: the bigram (aa, aa) occurs 20 times but covers only 60 characters, which
    # is exactly a quarter of 240 (the filler words are unique, 3 characters each).
    runs = [["aa", "aa", "aa", f"w{i:02d}", f"x{i:02d}", f"y{i:02d}", f"z{i:02d}"] for i in range(10)]
    fillers = [f"v{i:02d}" for i in range(20)]
    words = [word for run in runs for word in run] + fillers
    assert reference_top_ngram_fraction(words, 2) == 0.25
    config = top_ngrams_only({2: 0.25})
    assert dropped_by(config, " ".join(words)) is None
    assert dropped_by(config, " ".join(words[:-1])) == "top_2gram"


def test_an_ngram_counts_from_its_second_occurrence():
    fillers = [f"w{i:02d}" for i in range(50)]
    phrase = ["x" * 30, "y" * 30]
    config = top_ngrams_only({2: 0.2})
    # Once, it covers 60 of 210 characters but is not a repetition: kept.
    assert dropped_by(config, " ".join(fillers[:25] + phrase + fillers[25:])) is None
    # Twice, 120 of 270: dropped.
    twice = fillers[:10] + phrase + fillers[10:30] + phrase + fillers[30:]
    assert reference_top_ngram_fraction(twice, 2) == pytest.approx(120 / 270)
    assert dropped_by(config, " ".join(twice)) == "top_2gram"


@pytest.mark.parametrize(("n", "limit", "fillers"), [(2, 0.2, 95), (3, 0.18, 113), (4, 0.16, 120)])
def test_one_heavy_word_can_carry_a_phrase_over_the_limit(n: int, limit: float, fillers: int):
    # A phrase of one long word and n - 1 one-letter words, 6 times among unique filler words: only
    # the long word is heavy, yet the phrase covers more than the limit. The shortcut that rules
    # n-grams out from single-word masses must still let it through.
    phrase = ["h" * 20, "b", "c", "d"][:n]
    words = []
    for i in range(fillers):
        words.append(f"w{i:04d}")
        if i % 15 == 7 and i < 90:
            words += phrase
    assert words.count("b" if n > 1 else phrase[0]) == 6
    assert reference_top_ngram_fraction(words, n) > limit
    assert dropped_by(top_ngrams_only({n: limit}), " ".join(words)) == f"top_{n}gram"
    looser = reference_top_ngram_fraction(words, n) + 0.001
    assert dropped_by(top_ngrams_only({n: looser}), " ".join(words)) is None


def test_an_ngram_longer_than_the_document_never_drops_it():
    config = top_ngrams_only({60: 0.01})
    assert dropped_by(config, " ".join(["spam"] * 55)) is None


def test_non_ascii_spam_is_judged_on_its_characters():
    words = ["größe", "maß"] * 20 + [f"wört{i}" for i in range(20)]
    assert word_chars(" ".join(words), words) == sum(map(len, words)) == 20 * 8 + 10 * 5 + 10 * 6
    assert dropped_by(top_ngrams_only(), " ".join(words)) == "top_2gram"


def test_word_chars_counts_characters_not_bytes_or_spaces():
    assert word_chars("ab  c\td\n", ["ab", "c", "d"]) == 4
    assert word_chars("héllo wörld ☃", ["héllo", "wörld", "☃"]) == 11
    assert word_chars("a\x1cb", ["a", "b"]) == 2  # str.split splits on the ASCII separators too


def reference_non_alnum_fraction(text: str) -> float:
    return sum(not c.isalnum() and not c.isspace() for c in text) / len(text) if text else 0.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain words and spaces",
        "snake_case_name = x + 1;",
        "naïve_snake_case = «x» + 1;",  # non-ASCII text with ASCII symbols, the underscore among them
        "café!! über-groß?",
        "naïve «quote» — ok…",
        "日本語の文章、句読点。",
        "emoji 😀 and ½ ² ٣ digits",
        "e\u0301 combining and \u00a0 no-break space",
        "lone \ud800 surrogate!",
    ],
)
def test_non_alnum_fraction_matches_a_character_by_character_count(text: str):
    assert non_alnum_fraction(text) == pytest.approx(reference_non_alnum_fraction(text), abs=1e-12)


def test_duplicate_lines_of_every_line_ending_and_of_blank_text():
    assert duplicate_line_fraction("same\rsame\rother") == pytest.approx(1 / 3)
    assert duplicate_line_fraction("same\r\nsame\r\nsame") == pytest.approx(2 / 3)
    assert duplicate_line_fraction("one line only") == 0.0
    assert duplicate_line_fraction("\n  \n\t\n") == 0.0  # blank lines are not lines
    assert dropped_by(None, "Same old line here.\rSame old line here.\rSame old line here.") == (
        "duplicate_lines"
    )


def test_top_ngram_fraction_of_too_few_words_or_no_characters_is_zero():
    assert top_ngram_char_fraction(["word"], 2) == 0.0
    assert top_ngram_char_fraction([], 2) == 0.0
    assert top_ngram_char_fraction(["", "", ""], 2) == 0.0
    assert top_ngram_char_fraction(["a", "b"], 2) == 0.0  # one bigram, not repeated


def test_c1_controls_alone_are_found_and_removed():
    text = "Caf\u00e9 au lait\x85 costs\x9f three euros in the morning."
    assert has_control_chars(text) and not has_control_chars("Caf\u00e9 \u00a0 au lait")
    document_filter = DocumentFilter()
    assert document_filter(text, is_code=False) == "Caf\u00e9 au lait costs three euros in the morning."
    assert document_filter.counts["control_chars_removed"] == 1


def test_lone_surrogates_do_not_break_cleaning_or_filters():
    # JSON can carry unpaired surrogates ("\\ud800"); they must not raise anywhere.
    text = "A sentence with an unpaired \ud800 surrogate in it, and more words after."
    assert not has_control_chars(text)
    assert DocumentFilter()(text, is_code=False) == text
    assert has_control_chars(text + "\x07")


@pytest.mark.parametrize(
    "head",
    [
        "#!/usr/bin/env python\n# Generated by Django 4.2 on 2024-01-01 12:00\n",
        "#!/usr/bin/env python\n#\n#\n#\n# DO NOT EDIT\n",  # the fifth line is still the head
    ],
)
def test_markers_on_later_lines_of_the_head_count(head: str):
    assert dropped_by(None, head + CODE, is_code=True) == "generated_code"


def test_a_marker_past_the_fifth_line_does_not_count():
    assert dropped_by(None, "#\n" * 5 + "# DO NOT EDIT\n" + CODE, is_code=True) is None


def test_every_drop_and_rewrite_is_counted():
    document_filter = DocumentFilter()
    for _ in range(3):
        document_filter("tiny", is_code=False)
        document_filter("Cafe\u0301 au lait, served in the small cafe near the station.", is_code=False)
    assert document_filter.counts["min_chars"] == 3 and document_filter.counts["nfc_changed"] == 3
    assert document_filter.dropped == 3


def test_merge_counts_adds_counters_this_filter_does_not_have():
    document_filter = DocumentFilter()
    document_filter.merge_counts({"top_9gram": 2, "min_chars": 1})
    assert document_filter.counts["top_9gram"] == 2 and document_filter.counts["min_chars"] == 1


# Gopher's quality filter and repetition removal (appendix A), prose only. Each rule is tested alone
# (`only`) on planted documents just inside and just outside its default threshold.

GOPHER_NGRAM_LIMITS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


def unique_words(count: int, length: int = 5, prefix: str = "w") -> list[str]:
    """`count` distinct words of `length` characters (letters and digits, no stop word)."""
    return [f"{prefix}{i:0{length - len(prefix)}d}" for i in range(count)]


def test_gopher_defaults():
    config = FilterConfig()
    assert (config.min_words, config.max_words) == (None, 100_000)
    assert (config.min_mean_word_length, config.max_mean_word_length) == (3.0, 10.0)
    assert config.max_hash_word_ratio == config.max_ellipsis_word_ratio == 0.1
    assert (config.min_stop_words, config.min_alpha_word_fraction) == (None, 0.8), "stop words: English only"
    assert (config.max_bullet_line_fraction, config.max_ellipsis_line_fraction) == (0.9, 0.3)
    assert config.max_duplicate_paragraph_fraction == 0.3
    assert config.max_duplicate_line_char_fraction == config.max_duplicate_paragraph_char_fraction == 0.2
    assert config.max_duplicate_ngram_fraction == GOPHER_NGRAM_LIMITS
    assert config.word_stats_min_words == 50 and config.languages is None and not config.count_languages


def test_word_count_bounds():
    config = only(min_words=50, max_words=60)
    words = unique_words(61)
    assert dropped_by(config, " ".join(words[:50])) is None
    assert dropped_by(config, " ".join(words[:49])) == "min_words"
    assert dropped_by(config, " ".join(words[:60])) is None
    assert dropped_by(config, " ".join(words)) == "max_words"
    assert dropped_by(config, "\n".join(words[:5]), is_code=True) is None
    assert dropped_by(only(min_words=None, max_words=None), " ".join(words[:5])) is None
    # Off by default: most of the built-in corpus's docstrings have fewer than 50 words.
    assert dropped_by(None, "Return the sum of the two numbers.") is None


def test_mean_word_length_bounds():
    config = only(min_mean_word_length=3.0, max_mean_word_length=10.0)
    assert dropped_by(config, " ".join(["abc"] * 50)) is None  # exactly 3
    assert dropped_by(config, " ".join(["abc"] * 49 + ["ab"])) == "min_mean_word_length"
    assert dropped_by(config, " ".join(["abcdefghij"] * 50)) is None  # exactly 10
    assert dropped_by(config, " ".join(["abcdefghij"] * 49 + ["abcdefghijk"])) == "max_mean_word_length"
    assert dropped_by(config, " ".join(["ab"] * 50), is_code=True) is None
    assert dropped_by(only(min_mean_word_length=None), " ".join(["ab"] * 50)) is None


def test_statistics_of_short_documents_are_not_judged():
    config = only(min_stop_words=2, min_mean_word_length=3.0)
    assert dropped_by(config, " ".join(unique_words(49))) is None
    assert dropped_by(config, " ".join(unique_words(50))) == "stop_words"
    assert dropped_by(dataclasses.replace(config, word_stats_min_words=0), "ab cd ef gh ij") == (
        "min_mean_word_length"
    )


@pytest.mark.parametrize(
    ("option", "marker", "counter"),
    [
        ("max_hash_word_ratio", "#tag", "hash_ratio"),
        ("max_ellipsis_word_ratio", "wait...", "ellipsis_ratio"),
        ("max_ellipsis_word_ratio", "wait\u2026", "ellipsis_ratio"),
    ],
)
def test_symbol_to_word_ratios(option: str, marker: str, counter: str):
    config = only(**{option: 0.1})
    words = unique_words(50)
    assert dropped_by(config, " ".join([marker] * 5 + words[5:])) is None  # 5 of 50 words: exactly 0.1
    assert dropped_by(config, " ".join([marker] * 6 + words[6:])) == counter
    assert dropped_by(config, " ".join([marker] * 6 + words[6:]), is_code=True) is None
    assert dropped_by(only(**{option: None}), " ".join([marker] * 50)) is None


def test_stop_words_are_whole_words_in_any_case():
    config = only(min_stop_words=2)
    words = unique_words(48)
    assert dropped_by(config, " ".join(["The", "of,"] + words)) is None
    assert dropped_by(config, " ".join(["the", "theory", "often", "tow"] + words)) == "stop_words"
    assert dropped_by(config, " ".join(words + ["word"] * 2), is_code=True) is None
    assert dropped_by(only(min_stop_words=None), " ".join(unique_words(60))) is None


def test_alpha_word_fraction():
    config = only(min_alpha_word_fraction=0.8)
    words = unique_words(40)
    no_letters = ["123", "-->", "(1)", "3.14", "__", "½", "—", "2²", "#1", "..."]
    assert dropped_by(config, " ".join(words + no_letters)) is None  # 40 of 50: exactly 0.8
    assert dropped_by(config, " ".join(words[1:] + no_letters + ["42"])) == "alpha_words"
    assert dropped_by(config, " ".join(["x1", "é9", "日本"] * 17)) is None  # one letter is enough
    assert dropped_by(config, " ".join(no_letters * 5), is_code=True) is None
    assert dropped_by(only(min_alpha_word_fraction=None), " ".join(no_letters * 5)) is None


def reference_words_without_letter(text: str) -> int:
    return sum(not any(char.isalpha() for char in word) for word in text.split())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain words only",
        "12 + 34 = 46 -- ok",
        "a\x1cb \x1d 1\x1f2",  # str.split splits on the ASCII information separators
        "caf\u00e9 \u00bd \u2014 \u00b2 x\u00b2 \u65e5\u672c 42\u00a0bis \u3000 7",
        "e\u0301 \u0301 \u2028 1\u2029x \x85 _",
        "lone \ud800 surrogate \ud800x",
    ],
)
def test_words_without_letter_match_a_word_by_word_count(text: str):
    from lit_pretrain.data.filters import words_without_letter

    assert words_without_letter(text, text.split()) == reference_words_without_letter(text)


def lines_of(count: int, words_per_line: int = 6) -> list[str]:
    words = unique_words(count * words_per_line)
    return [" ".join(words[i * words_per_line : (i + 1) * words_per_line]) for i in range(count)]


def test_bullet_line_fraction():
    config = only(max_bullet_line_fraction=0.9)
    lines = lines_of(10)
    bullets = ["- ", "  * ", "\u2022 ", "\t\u25cf "] * 3
    nine = [bullet + line for bullet, line in zip(bullets, lines[:9], strict=False)] + lines[9:]
    assert dropped_by(config, "\n\n".join(nine)) is None  # 9 of 10 non-blank lines: exactly 0.9
    assert dropped_by(config, "\n".join(nine[:9] + ["- " + lines[9]])) == "bullet_lines"
    assert dropped_by(config, "\n".join("- " + line for line in lines), is_code=True) is None
    assert dropped_by(only(max_bullet_line_fraction=None), "\n".join("- " + line for line in lines)) is None


def test_ellipsis_line_fraction():
    config = only(max_ellipsis_line_fraction=0.3)
    lines = lines_of(10)
    three = [line + "..." for line in lines[:3]] + lines[3:]
    assert dropped_by(config, "\n".join(three)) is None  # 3 of 10 lines: exactly 0.3
    four = three[:3] + [lines[3] + " \u2026  "] + lines[4:]
    assert dropped_by(config, "\n".join(four)) == "ellipsis_lines"
    assert dropped_by(config, "\n".join(four), is_code=True) is None
    assert dropped_by(only(max_ellipsis_line_fraction=None), "\n".join(four)) is None


def test_duplicate_line_char_fraction():
    config = only(max_duplicate_line_char_fraction=0.2)
    unique = [f"line {i:05d}" for i in range(8)]  # 10 characters each
    # Two more copies of a line: 20 of 100 characters repeat an earlier line, exactly 0.2.
    assert dropped_by(config, "\n".join(unique + unique[:1] * 2)) is None
    long_line = "line 12345!"  # 11 characters, three times among 7 others: 22 of 103
    assert dropped_by(config, "\n".join(unique[:7] + [long_line] * 3)) == "duplicate_line_chars"
    assert dropped_by(config, "\n".join(unique[:7] + [long_line] * 3), is_code=True) is None
    assert (
        dropped_by(only(max_duplicate_line_char_fraction=None), "\n".join(unique + [long_line] * 9)) is None
    )


def test_long_repeated_lines_are_caught_by_characters_where_the_line_count_is_fine():
    # 1 of 5 lines repeats (0.2, under the 0.3 line limit), but it holds a third of the characters.
    lines = ["short one", "short two", "short three", "A long line of boilerplate that repeats " * 2]
    text = "\n".join(lines + lines[-1:])
    assert dropped_by(only(max_duplicate_line_fraction=0.3), text) is None
    assert dropped_by(only(max_duplicate_line_fraction=0.3, max_duplicate_line_char_fraction=0.2), text) == (
        "duplicate_line_chars"
    )


def test_duplicate_paragraph_fraction():
    config = only(max_duplicate_paragraph_fraction=0.3)
    paragraphs = [f"Paragraph {i}\nwith a second line {i}." for i in range(7)]
    # Paragraph breaks: two or more line breaks, blank lines with spaces and CRLF included.
    assert dropped_by(config, "\n  \n".join(paragraphs + paragraphs[:3])) is None  # 3 of 10: 0.3
    assert dropped_by(config, "\r\n\r\n\r\n".join(paragraphs[:6] + paragraphs[:3])) == "duplicate_paragraphs"
    assert dropped_by(config, "\n\n".join(paragraphs[:6] + paragraphs[:3]), is_code=True) is None
    assert dropped_by(only(max_duplicate_paragraph_fraction=None), "\n\n".join(paragraphs * 3)) is None
    # A single line break does not end a paragraph: these are two paragraphs, neither repeated.
    assert dropped_by(config, "\n".join(paragraphs[:1] * 3) + "\n\n" + paragraphs[1]) is None


def test_duplicate_paragraph_char_fraction():
    config = only(max_duplicate_paragraph_char_fraction=0.2)
    paragraphs = [f"paragraph {i:04d}!" for i in range(8)]  # 16 characters each
    assert dropped_by(config, "\n\n".join(paragraphs + paragraphs[:2])) is None  # 32 of 160: 0.2
    longer = "paragraph 12345!"[:-1] + "!!"  # 17 characters, three times: 34 of 163
    assert dropped_by(config, "\n\n".join(paragraphs[:7] + [longer] * 3)) == "duplicate_paragraph_chars"
    assert dropped_by(config, "\n\n".join(paragraphs[:7] + [longer] * 3), is_code=True) is None


def test_repeated_shares_and_paragraphs():
    from lit_pretrain.data.repetition import paragraphs, repeated_shares

    assert repeated_shares([]) == (0.0, 0.0)
    assert repeated_shares(["ab", "c", "ab", "ab"]) == (0.5, pytest.approx(4 / 7))
    assert paragraphs("  one\ntwo \n\n\n three\n \t\nfour\n\n") == ["one\ntwo", "three", "four"]


def reference_duplicate_ngram_fraction(words: list[str], n: int) -> float:
    """Gopher's statistic computed the obvious way, to check the filter's shortcuts against."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = {i + k for i, gram in enumerate(grams) if counts[gram] > 1 for k in range(n)}
    return sum(len(words[i]) for i in covered) / sum(map(len, words))


def test_duplicate_ngram_fraction_boundary():
    from lit_pretrain.data.repetition import duplicate_ngram_char_fraction

    config = only(max_duplicate_ngram_fraction=GOPHER_NGRAM_LIMITS)
    phrase = ["aaa", "bbb", "ccc", "ddd", "eee"]
    fillers = unique_words(35, 4, "x") + unique_words(10, 3, "y")  # 170 characters
    words = fillers[:20] + phrase + fillers[20:30] + phrase + fillers[30:]
    # The phrase covers 30 of 200 characters both times: exactly 0.15.
    assert duplicate_ngram_char_fraction(words, 5) == reference_duplicate_ngram_fraction(words, 5) == 0.15
    assert dropped_by(config, " ".join(words)) is None
    longer = [word.replace("aaa", "aaaa") for word in words]  # 32 of 202
    assert dropped_by(config, " ".join(longer)) == "duplicate_5gram"
    assert dropped_by(config, " ".join(longer), is_code=True) is None
    assert dropped_by(only(max_duplicate_ngram_fraction=None), " ".join(longer)) is None
    # Once is not a repetition.
    assert dropped_by(config, " ".join(fillers[:20] + phrase + fillers[20:])) is None


def test_the_first_exceeded_ngram_size_is_counted():
    # A repeated 10-word phrase covers 60 of 500 characters (0.12) for every n from 5 to 10: under the
    # limits for 5, 6 and 7, exactly at 8's, over 9's.
    phrase = [f"p{i:02d}" for i in range(10)]
    fillers = unique_words(110, 4)
    words = fillers[:50] + phrase + fillers[50:80] + phrase + fillers[80:]
    assert {reference_duplicate_ngram_fraction(words, n) for n in range(5, 11)} == {0.12}
    assert dropped_by(only(max_duplicate_ngram_fraction=GOPHER_NGRAM_LIMITS), " ".join(words)) == (
        "duplicate_9gram"
    )
    assert dropped_by(only(max_duplicate_ngram_fraction={10: 0.12}), " ".join(words)) is None


@pytest.mark.parametrize("limits", [GOPHER_NGRAM_LIMITS, {5: 0.5, 7: 0.3, 10: 0.05}])
def test_duplicate_ngram_shortcuts_never_change_a_decision(limits: dict[int, float]):
    rng = random.Random(5)
    config = only(max_duplicate_ngram_fraction=limits)
    reasons = Counter()
    for _ in range(150):
        # Repeated phrases of various lengths among random words make every n-gram size the first
        # one exceeded in some documents.
        vocabulary = unique_words(rng.randint(20, 400), rng.randint(2, 9))
        words = rng.choices(vocabulary, k=rng.randint(50, 250))
        for _ in range(rng.randint(0, 3)):
            start, length = rng.randrange(len(words) - 12), rng.randint(4, 12)
            at = rng.randrange(len(words))
            words[at:at] = words[start : start + length]
        expected = next(
            (
                f"duplicate_{n}gram"
                for n, limit in limits.items()
                if reference_duplicate_ngram_fraction(words, n) > limit
            ),
            None,
        )
        assert dropped_by(config, " ".join(words)) == expected
        reasons[expected] += 1
    assert reasons[None] and len(reasons) >= 3, reasons


def test_gopher_rules_leave_code_alone():
    code = CODE + "\n".join(f"# {i} ...\nx{i} = [{i}] * 10  # ..." for i in range(60)) + "\n"
    code += "\n".join(["- - -", "- - -"] * 30)
    config = dataclasses.replace(FilterConfig(), min_words=10_000)
    assert dropped_by(config, code, is_code=True) is None
    assert dropped_by(config, code) == "min_words"


def test_default_order_counts_repetition_before_statistics():
    # Lines without stop words repeated: both the line and the stop-word rules would drop it.
    text = "\n".join(["Buy cheap watches online now"] * 10 + ["Great prices every day"])
    assert dropped_by(None, text) == "duplicate_lines"
    assert dropped_by(FilterConfig(max_duplicate_line_fraction=None), text) == "duplicate_line_chars"


def test_merge_counts_sums_the_new_counters():
    total, worker = DocumentFilter(), DocumentFilter(FilterConfig(min_stop_words=2))
    worker(" ".join(unique_words(60)), is_code=False)
    total.merge_counts(worker.counts)
    assert total.counts["stop_words"] == 1 and total.dropped == 1


def test_from_dict_round_trips_the_duplicate_ngram_limits():
    config = FilterConfig.from_dict({"max_duplicate_ngram_fraction": {"6": 0.2, 5: 0.3}, "min_words": 50})
    assert config.max_duplicate_ngram_fraction == {5: 0.3, 6: 0.2}
    assert FilterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_words": -1}, r"min_words must be a non-negative integer or null, got -1$"),
        ({"max_words": "10"}, r"max_words must be a non-negative integer or null"),
        ({"min_words": 60, "max_words": 50}, r"min_words \(60\) must not exceed max_words \(50\)"),
        ({"word_stats_min_words": None}, r"word_stats_min_words must be a non-negative integer, got None"),
        ({"min_mean_word_length": -1}, r"min_mean_word_length must be a non-negative number or null"),
        ({"max_mean_word_length": True}, r"max_mean_word_length must be a non-negative number"),
        (
            {"min_mean_word_length": 5, "max_mean_word_length": 4},
            r"min_mean_word_length \(5\) must not exceed",
        ),
        ({"max_hash_word_ratio": "0.1"}, r"max_hash_word_ratio must be a non-negative number or null"),
        ({"max_ellipsis_word_ratio": float("inf")}, r"max_ellipsis_word_ratio must be a non-negative number"),
        ({"min_stop_words": 1.5}, r"min_stop_words must be a non-negative integer or null, got 1.5"),
        ({"min_alpha_word_fraction": 1.5}, r"min_alpha_word_fraction must be a fraction in \[0, 1\]"),
        ({"max_bullet_line_fraction": -0.1}, r"max_bullet_line_fraction must be a fraction"),
        ({"max_ellipsis_line_fraction": "x"}, r"max_ellipsis_line_fraction must be a fraction"),
        ({"max_duplicate_line_char_fraction": 2}, r"max_duplicate_line_char_fraction must be a fraction"),
        ({"max_duplicate_paragraph_fraction": 2}, r"max_duplicate_paragraph_fraction must be a fraction"),
        ({"max_duplicate_paragraph_char_fraction": -1}, r"max_duplicate_paragraph_char_fraction must be"),
        ({"max_duplicate_ngram_fraction": [0.1]}, r"max_duplicate_ngram_fraction must map n to a fraction"),
        ({"max_duplicate_ngram_fraction": {5: 1.5}}, r"max_duplicate_ngram_fraction\[5\] must be a fraction"),
        (
            {"max_duplicate_ngram_fraction": {"five": 0.1}},
            r"max_duplicate_ngram_fraction: n must be a positive",
        ),
        ({"language_min_score": 1.5}, r"language_min_score must be a fraction in \[0, 1\]"),
        ({"count_languages": "yes"}, r"count_languages must be true or false"),
        ({"languages": "en"}, r"languages must be a non-empty list of language codes"),
        ({"languages": []}, r"languages must be a non-empty list of language codes"),
        ({"languages": ["en", 1]}, r"languages must be a non-empty list of language codes"),
    ],
)
def test_from_dict_rejects_invalid_gopher_and_language_options(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        FilterConfig.from_dict(options)
