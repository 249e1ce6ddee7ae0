"""Word normalisation and word error rate, shared by alignment, tests and evaluation."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_NON_WORD = re.compile(r"[^\w']+")
# A language option: an ISO 639 code with optional BCP 47 subtags ("en", "haw", "pt-BR").
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})([-_][A-Za-z0-9]{1,8}){0,3}")
MAX_LANGUAGE_CHARS = 35
# Every ISO 639-1 code: a two-letter language must be one of them ("xx" is refused); three-letter
# ISO 639-3 codes (Whisper's "haw", "yue") are taken by their shape.
_ISO_639_1_CODES = (
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da "
    "de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz "
    "ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln "
    "lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi "
    "pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti "
    "tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu"
)
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())
LANGUAGE_RULE = (
    "language must be an ISO 639-1 code such as 'en' or 'pt-BR' (three-letter ISO 639-3 codes such as "
    "'haw' too), or empty"
)


def is_language_code(language: str) -> bool:
    """Whether a language option is empty (detect) or a language code; whether a model knows the
    language is the model's to say."""
    language = language.strip()
    if not language:
        return True
    match = _LANGUAGE.fullmatch(language) if len(language) <= MAX_LANGUAGE_CHARS else None
    if match is None:
        return False
    primary = match.group(1).lower()
    return len(primary) == 3 or primary in ISO_639_1


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
