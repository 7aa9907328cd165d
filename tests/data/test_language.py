"""Language identification (py3langid) and the prose language filter with its per-language counts."""

from __future__ import annotations

import json

import pytest

from lit_pretrain.data import language
from lit_pretrain.data.filters import DocumentFilter, FilterConfig
from lit_pretrain.data.language import identify_language, known_languages

ENGLISH = (
    "The village sits at the foot of the hills, where the river bends towards the sea. Every morning "
    "the baker opens his shop before sunrise, and the smell of fresh bread fills the narrow streets."
)
FRENCH = (
    "Le village se trouve au pied des collines, là où la rivière tourne vers la mer. Chaque matin, le "
    "boulanger ouvre sa boutique avant le lever du soleil, et l'odeur du pain frais remplit les rues."
)
GERMAN = (
    "Das Dorf liegt am Fuß der Hügel, wo der Fluss sich zum Meer hin wendet. Jeden Morgen öffnet der "
    "Bäcker seinen Laden vor Sonnenaufgang, und der Duft von frischem Brot erfüllt die engen Gassen."
)


@pytest.mark.parametrize(("text", "code"), [(ENGLISH, "en"), (FRENCH, "fr"), (GERMAN, "de")])
def test_paragraphs_are_identified(text: str, code: str):
    identified, probability = identify_language(text)
    assert identified == code and 0.9 < probability <= 1.0
    assert isinstance(probability, float)


def test_the_model_is_loaded_once():
    identify_language(ENGLISH)
    identify_language(FRENCH)
    assert language._identifier.cache_info().currsize == 1
    assert {"en", "fr", "de"} <= set(known_languages())


def test_languages_keeps_the_listed_ones_and_counts_every_identified_document():
    document_filter = DocumentFilter(FilterConfig(languages=["en", "fr"]))
    assert document_filter(ENGLISH, is_code=False) == ENGLISH
    assert document_filter(FRENCH, is_code=False) == FRENCH
    assert document_filter(GERMAN, is_code=False) is None
    assert document_filter.counts["language"] == 1 and document_filter.dropped == 1
    assert document_filter.language_counts == {"en": 1, "fr": 1, "de": 1}
    # Kept or dropped, every count is a document that reached the language check; the counts are not
    # drop reasons, so they stay out of `counts`.
    assert not set(document_filter.language_counts) & set(document_filter.counts)


def test_documents_dropped_earlier_and_code_are_not_identified():
    document_filter = DocumentFilter(FilterConfig(languages=["fr"]))
    assert document_filter("Kurz.", is_code=False) is None  # min_chars, before the language check
    code = "def greet(name):\n    return 'Hello, ' + name\n"
    assert document_filter(code, is_code=True) == code
    assert document_filter.language_counts == {} and document_filter.counts["min_chars"] == 1


def test_language_min_score_boundary():
    text = "Hello there, my friend."
    code, score = identify_language(text)
    assert code == "en" and score < 0.99
    assert DocumentFilter(FilterConfig(languages=["en"], language_min_score=score))(text, False) == text
    stricter = DocumentFilter(FilterConfig(languages=["en"], language_min_score=min(1.0, score + 0.01)))
    assert stricter(text, False) is None
    assert stricter.counts["language_score"] == 1 and stricter.language_counts == {"en": 1}
    assert DocumentFilter(FilterConfig(languages=["en"], language_min_score=None))(text, False) == text


def test_count_languages_counts_without_dropping():
    document_filter = DocumentFilter(FilterConfig(count_languages=True))
    for text in (ENGLISH, FRENCH, GERMAN, GERMAN):
        assert document_filter(text, is_code=False) == text
    assert document_filter.language_counts == {"en": 1, "fr": 1, "de": 2}
    assert document_filter.dropped == 0


def test_no_identification_unless_asked(monkeypatch: pytest.MonkeyPatch):
    def fail(text: str) -> tuple[str, float]:
        raise AssertionError("identified a language without languages or count_languages")

    monkeypatch.setattr("lit_pretrain.data.filters.identify_language", fail)
    document_filter = DocumentFilter()
    assert document_filter(GERMAN, is_code=False) == GERMAN
    assert document_filter.language_counts == {}


def test_merge_language_counts_sums_workers():
    total, worker = (
        DocumentFilter(FilterConfig(count_languages=True)),
        DocumentFilter(FilterConfig(count_languages=True)),
    )
    total(ENGLISH, is_code=False)
    worker(ENGLISH, is_code=False)
    worker(GERMAN, is_code=False)
    total.merge_language_counts(worker.language_counts)
    total.merge_language_counts({"xx": 0})
    assert total.language_counts == {"en": 2, "de": 1, "xx": 0}


def test_unknown_language_codes_are_named():
    with pytest.raises(
        ValueError, match=r"languages: unknown language code\(s\) 'english'; py3langid knows: .*\ben\b"
    ):
        FilterConfig.from_dict({"languages": ["english", "fr"]})


def test_language_options_round_trip():
    config = FilterConfig.from_dict({"languages": ["en", "fr"], "language_min_score": 0.7})
    assert config.languages == ["en", "fr"] and config.language_min_score == 0.7
    assert FilterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
