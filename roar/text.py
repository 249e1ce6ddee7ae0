"""Word normalisation and word error rate, shared by alignment, tests and evaluation."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_NON_WORD = re.compile(r"[^\w']+")
# A language option: an ISO 639 code with optional BCP 47 subtags ("en", "haw", "pt-BR").
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}")
MAX_LANGUAGE_CHARS = 35
LANGUAGE_RULE = "language must be an ISO 639-1 code such as 'en', or empty"


def is_language_code(language: str) -> bool:
    """Whether a language option is empty (detect) or shaped like a language code; whether a
    model knows the language is the model's to say."""
    language = language.strip()
    return not language or (len(language) <= MAX_LANGUAGE_CHARS and _LANGUAGE.fullmatch(language) is not None)


def normalize_word(word: str) -> str:
    """Lower case, no accents, no punctuation but inner apostrophes: 'Don’t!' -> "don't"."""
    word = unicodedata.normalize("NFKD", word.translate(_APOSTROPHES))
    word = "".join(c for c in word if not unicodedata.combining(c)).lower()
    return _NON_WORD.sub("", word).strip("'")


def normalized_words(text: str) -> list[str]:
    return [w for w in (normalize_word(t) for t in re.split(r"[\s\-–—/]+", text)) if w]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_error_rate(reference: str | list[str], hypothesis: str | list[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, on normalised words."""
    ref = normalized_words(reference) if isinstance(reference, str) else reference
    hyp = normalized_words(hypothesis) if isinstance(hypothesis, str) else hypothesis
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
