"""The clean-up of a model's text: captions, loops, hyphen joins, sentences and karaoke lines."""

from __future__ import annotations

import pytest

from roar.v1 import common_pb2
from services.transcription.cleanup import (
    collapse_loops,
    compression_ratio,
    group_lines,
    is_loop,
    is_word,
    join_hyphenated,
    sentences,
)


def word(text: str, start: float, end: float) -> common_pb2.Word:
    return common_pb2.Word(text=text, start=start, end=end, confidence=1.0)


def test_lines_break_at_pauses_sentences_and_length() -> None:
    words = [
        word("one", 0.0, 0.3),
        word("two.", 0.4, 0.7),  # sentence end
        word("three", 0.8, 1.0),
        word("four", 2.0, 2.2),  # after a 1 s pause
        *[word(f"w{i}", 2.3 + 0.3 * i, 2.5 + 0.3 * i) for i in range(9)],  # 8 words at most
        word("long", 6.0, 9.0),  # would make the line longer than 6 s
    ]
    lines = [segment.text for segment in group_lines(words)]
    assert lines == ["one two.", "three", "four w0 w1 w2 w3 w4 w5 w6", "w7 w8", "long"]


# Clean-up of decoded text


def test_phrases_repeated_in_a_loop_collapse_to_one() -> None:
    looped = "the stars come out " + "thank you for watching. " * 12 + "and goodbye"
    assert " ".join(collapse_loops(looped.split(), key=str.lower)) == (
        "the stars come out thank you for watching. and goodbye"
    )
    assert collapse_loops(["la", "la", "la", "la"], key=str) == ["la"]
    # Two in a row is a sung repeat, not a loop; the key decides what is the same word.
    sung = ["baby", "baby", "one", "more", "time"]
    assert collapse_loops(sung, key=str) == sung
    assert collapse_loops(["Go,", "go", "GO!", "now"], key=lambda w: w.strip(",!").lower()) == ["Go,", "now"]


@pytest.mark.parametrize("text", ["♪", "♪♪", "[Music]", "(upbeat music)", "*laughs*", "..."])
def test_captions_of_sounds_are_not_words(text: str) -> None:
    assert not is_word(text)


@pytest.mark.parametrize("text", ["don't", "rock-n-roll", "(oh)yeah", "1999", "Über", "歌"])
def test_sung_words_are_words(text: str) -> None:
    assert is_word(text)


def test_gemma_text_is_cut_into_sentences_for_the_aligner() -> None:
    assert sentences(" I dream of snow. The lanterns glow!  Along the street ") == [
        "I dream of snow.",
        "The lanterns glow!",
        "Along the street",
    ]


def test_hyphenated_words_split_by_the_pipeline_join_and_blank_chunks_go() -> None:
    chunks = [
        {"text": " my", "timestamp": (0.0, 0.2)},
        {"text": " cold", "timestamp": (0.2, 0.5)},
        {"text": "-hearted", "timestamp": (0.5, 0.9)},
        {"text": " ", "timestamp": (0.9, 1.0)},
        {"text": " love", "timestamp": (1.0, None)},  # cut off at the window's end
    ]
    assert join_hyphenated(chunks) == [(" my", 0.0, 0.2), (" cold-hearted", 0.2, 0.9), (" love", 1.0, 1.0)]


def test_repetitive_text_is_a_loop_and_sung_lines_are_not() -> None:
    looped = "Thank you for watching. " * 8
    sung = "I hear the thunder far away, the lanterns glow along the street, we walk together down the road"
    assert compression_ratio(looped) > 2.4 and is_loop(looped)
    assert not is_loop(sung)
    assert compression_ratio("") == 0.0 and not is_loop("  ")
