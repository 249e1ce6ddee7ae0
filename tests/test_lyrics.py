"""Reading the user's lyrics: section headers, blank lines and repeat marks as users paste them."""

from __future__ import annotations

import pytest

from services.transcription.lyrics import MAX_REPEATS, parse_lyrics


def texts(lyrics: str) -> list[str]:
    return [line.text for line in parse_lyrics(lyrics)]


def test_headers_and_blank_lines_are_not_sung() -> None:
    lyrics = "[Verse 1]\nfirst line\n\n(Chorus)\nsecond line\nBridge:\nthird line\nVerse 2: Someone\nfourth"
    assert texts(lyrics) == ["first line", "second line", "third line", "fourth"]


@pytest.mark.parametrize("mark", ["(x2)", "x2", "[x2]", "(2x)", "×2", " ( x 2 )"])
def test_a_repeat_mark_repeats_its_line(mark: str) -> None:
    assert texts(f"let it shine {mark}\nthe end") == ["let it shine", "let it shine", "the end"]


def test_a_header_with_a_repeat_mark_repeats_its_section() -> None:
    assert texts("[Chorus x2]\nla la\nsing it\n[Verse 2]\nbye") == [
        "la la",
        "sing it",
        "la la",
        "sing it",
        "bye",
    ]


def test_a_section_named_again_without_its_lines_is_sung_again() -> None:
    lyrics = (
        "[Chorus]\noh my\nsing along\n\n[Verse 2]\nsomething new\n\n[Chorus]\n\n[Verse 3]\nbye now\nChorus"
    )
    chorus = ["oh my", "sing along"]
    assert texts(lyrics) == [*chorus, "something new", *chorus, "bye now", *chorus]
    # Verses are told apart by their number.
    assert texts("[Verse 1]\nhello\n[Verse 2]\n[Verse 1]") == ["hello", "hello"]


def test_words_keep_their_spelling_and_odd_lines_stay_lines() -> None:
    [line] = parse_lyrics("  Don't stop, Zorblax!  ")
    assert line.words == ("Don't", "stop,", "Zorblax!")
    # A lone mark, a sung word that only looks like a header, a huge repeat.
    assert texts("x2") == ["x2"]
    assert texts("Chorus of angels sings") == ["Chorus of angels sings"]
    assert len(texts("na (x99)")) == MAX_REPEATS
    assert texts("\n\n[Intro]\n\n") == []
