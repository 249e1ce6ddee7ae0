"""The clean-up of a model's text into sung words and karaoke lines: captions of sounds dropped,
decoding loops collapsed, hyphenated words joined, repetitive text detected, lines grouped."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import TypeVar

from roar.text import normalize_word
from roar.v1 import common_pb2

# openai-whisper's threshold: text that gzip compresses better than this is a decoding loop.
COMPRESSION_RATIO_THRESHOLD = 2.4
# A run of words repeated this many times in a row is a decoding loop: it collapses to one.
LOOP_REPEATS = 3
# A line ends at a pause this long, after a sentence, or when it grows this long.
LINE_PAUSE_SECONDS = 0.8
LINE_MAX_WORDS = 8
LINE_MAX_SECONDS = 6.0
SENTENCE_ENDS = (".", "!", "?", "…", "。", "！", "？")
# Captions Whisper writes for sounds rather than words: "[Music]", "(upbeat music)", "*laughs*".
_CAPTION = re.compile(r"^[\[(*].*[\])*]$")
_SENTENCE = re.compile(r"(?<=[" + re.escape("".join(SENTENCE_ENDS)) + r"])\s+")

T = TypeVar("T")


def compression_ratio(text: str) -> float:
    """How well gzip compresses the text: above ~2.4, it repeats itself."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_loop(text: str) -> bool:
    return compression_ratio(text.strip()) > COMPRESSION_RATIO_THRESHOLD


def is_word(text: str) -> bool:
    """Whether a word of a transcript is sung text, not a caption Whisper writes for a sound
    ("♪", "[Music]", "(applause)")."""
    return bool(normalize_word(text)) and not _CAPTION.match(text)


def join_hyphenated(chunks: list[dict]) -> list[tuple[str, float, float]]:
    """The transformers pipeline's word chunks ({"text", "timestamp": (start, end)}) as (text, start,
    end), without blank ones, and with the parts of hyphenated words that it splits (" cold",
    "-hearted") joined."""
    pieces: list[tuple[str, float, float]] = []
    for chunk in chunks:
        text, (start, end) = chunk["text"], chunk["timestamp"]
        if not text.strip():
            continue
        end = start if end is None else end  # the last word of a window cut off mid-word
        if pieces and text.startswith("-"):
            previous_text, previous_start, _ = pieces[-1]
            pieces[-1] = (previous_text + text, previous_start, end)
        else:
            pieces.append((text, start, end))
    return pieces


def collapse_loops(items: list[T], key: Callable[[T], str]) -> list[T]:
    """`items` with every run of LOOP_REPEATS or more back-to-back repeats of the same phrase
    (compared by `key`) cut to its first occurrence: "thank you thank you thank you" -> "thank you"."""
    keys = [key(item) for item in items]
    kept: list[T] = []
    index = 0
    while index < len(items):
        for size in range(1, (len(items) - index) // LOOP_REPEATS + 1):
            phrase = keys[index : index + size]
            repeats = 1
            while keys[index + repeats * size : index + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= LOOP_REPEATS:
                kept += items[index : index + size]
                index += repeats * size
                break
        else:
            kept.append(items[index])
            index += 1
    return kept


def sentences(text: str) -> list[str]:
    """The text cut after each sentence end."""
    return [sentence for sentence in _SENTENCE.split(text.strip()) if sentence]


def group_lines(words: list[common_pb2.Word]) -> list[common_pb2.Segment]:
    """Groups words into karaoke lines: a new line after a pause, after a sentence, or when the
    line is full."""
    lines: list[list[common_pb2.Word]] = []
    for word in words:
        line = lines[-1] if lines else []
        if (
            not line
            or word.start - line[-1].end >= LINE_PAUSE_SECONDS
            or line[-1].text.endswith(SENTENCE_ENDS)
            or len(line) >= LINE_MAX_WORDS
            or word.end - line[0].start > LINE_MAX_SECONDS
        ):
            lines.append([word])
        else:
            line.append(word)
    return [
        common_pb2.Segment(
            text=" ".join(w.text for w in line), start=line[0].start, end=line[-1].end, words=line
        )
        for line in lines
    ]
