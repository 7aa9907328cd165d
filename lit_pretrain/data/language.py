"""Language identification of prose documents with py3langid, whose model ships inside the package.

The model (about 0.7 s to load) is loaded once per process, on first use, so that importing this module
and running prepare without a language filter cost nothing.
"""

from __future__ import annotations

import functools
from typing import Any

# Only the head of a document is identified: py3langid walks its input byte by byte in Python (about
# 3 MB/s), and its decision settles within a few hundred characters of running text.
LANGUAGE_SAMPLE_CHARS = 2000


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # norm_probs: a probability in [0, 1] (calibrated by length since py3langid 0.4), not a raw score.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language of the text's first characters."""
    language, probability = _identifier().classify(text[:LANGUAGE_SAMPLE_CHARS])
    return language, float(probability)


def known_languages() -> list[str]:
    """The language codes the model can return, sorted ("zxx": no linguistic content)."""
    return sorted(_identifier().labels)
