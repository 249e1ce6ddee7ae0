"""Lyrics-guided alignment: the user's words timed against a vocals stem with pocketsphinx, anchored
by what the model hears; unsung lines reported, lines missing from the lyrics, repeated choruses and
a quiet voice, each against the words' true times."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bench.align_sets import judged_by
from bench.metrics import share_within, word_onset_errors
from roar.errors import Cancelled
from roar.progress import no_progress
from roar.text import normalize_word
from roar.v1 import common_pb2
from services.transcription.align import (
    MIN_MISSING_WORDS,
    _align,
    _Dictionary,
    _fits_better_warped,
    _heard_instead,
    _keep_uncovered,
    align_lyrics,
    letters_to_phones,
    number_words,
    transcript_from_lyrics,
)
from services.transcription.lyrics import parse_lyrics
from services.transcription.transcriber import Transcriber, load_transcriber
from services.transcription.vad import SAMPLE_RATE, speech_regions
from tests.conftest import shared_path
from tests.support.espeak_words import SONGS, sing, truth, vocals_with_bleed


def _words(segments: list[common_pb2.Segment]) -> list[common_pb2.Word]:
    return [word for segment in segments for word in segment.words]


def _assert_ordered(segments: list[common_pb2.Segment], duration: float) -> None:
    words = _words(segments)
    assert all(0.0 <= w.start <= w.end <= duration for w in words)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(words))
    for segment in segments:
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)


def _onset_errors(words: list[common_pb2.Word], truth_words: list[dict]) -> np.ndarray:
    assert [normalize_word(w.text) for w in words] == [normalize_word(t["word"]) for t in truth_words]
    return np.abs([w.start - t["start"] for w, t in zip(words, truth_words, strict=True)])


@pytest.mark.parametrize("name", ["song_000", "song_001"])
def test_words_are_timed_to_the_singing(name: str) -> None:
    audio = vocals_with_bleed(SONGS / name, bleed=0.2)
    song = truth(SONGS / name)
    segments = align_lyrics(audio, song["lyrics"])
    assert [s.text for s in segments] == [line["text"] for line in song["lines"]]
    _assert_ordered(segments, len(audio) / SAMPLE_RATE)
    errors = _onset_errors(_words(segments), song["words"])
    # The band's bleed pulls a few words (short ones: "the", "to") early by 0.2-0.3 s.
    assert np.median(errors) <= 0.1 and np.mean(errors <= 0.2) >= 0.8, errors
    assert all(w.heard and w.confidence > 0.0 for w in _words(segments))


def test_the_users_lines_spelling_and_unknown_words(tmp_path: Path) -> None:
    """Lines follow the user's line breaks (blank lines and section markers skipped), words keep
    their punctuation, and a word CMUdict lacks is still found between its neighbours."""
    lines = [
        "the morning light is on the hill",
        "I saw Zorblax at the door",
        "we walk together down the road",
    ]
    song_dir = sing(tmp_path / "song", lines, seed=4, min_gap=3.5)
    audio = vocals_with_bleed(song_dir, bleed=0.3, band_stems=("drums",))
    song = truth(song_dir)
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(song["lines"])]
    assert min(gaps) >= 3.5

    lyrics = (
        "[Verse 1]\nThe morning light is on the hill,\n\nI saw Zorblax at the door!\n[Chorus]\n" + lines[2]
    )
    segments = align_lyrics(audio, lyrics)
    assert [s.text for s in segments] == [
        "The morning light is on the hill,",
        "I saw Zorblax at the door!",
        lines[2],
    ]
    words = _words(segments)
    assert [w.text for w in words][5:10] == ["the", "hill,", "I", "saw", "Zorblax"]
    _assert_ordered(segments, len(audio) / SAMPLE_RATE)
    errors = _onset_errors(words, song["words"])
    assert np.median(errors) <= 0.1, errors
    zorblax = next(i for i, w in enumerate(words) if w.text == "Zorblax")
    assert words[zorblax - 1].end <= words[zorblax].start < words[zorblax + 1].start
    assert errors[zorblax] <= 0.2


def test_a_word_without_a_pronunciation_is_spread_between_its_neighbours() -> None:
    audio = vocals_with_bleed(SONGS / "song_000", bleed=0.2)
    song = truth(SONGS / "song_000")
    first, *rest = song["lyrics"].split("\n")
    words = first.split()
    lyrics = "\n".join([" ".join([*words[:3], "—", *words[3:]]), *rest])
    segments = align_lyrics(audio, lyrics)
    _assert_ordered(segments, len(audio) / SAMPLE_RATE)
    dash = segments[0].words[3]
    assert dash.text == "—" and dash.confidence == 0.0 and not dash.heard
    assert segments[0].words[2].end <= dash.start <= dash.end <= segments[0].words[4].start
    kept = [w for w in _words(segments) if w.text != "—"]
    assert np.median(_onset_errors(kept, song["words"])) <= 0.1


def test_a_long_song_is_aligned_window_by_window_with_progress() -> None:
    """Seven times the song (140 s) with nothing heard is too long a gap to align at once: it takes
    several windows, each reports progress, and the words of every repeat land on their own repeat."""
    once = vocals_with_bleed(SONGS / "song_001", bleed=0.2)
    song = truth(SONGS / "song_001")
    repeats = 7
    audio = np.tile(once, repeats)
    length = len(once) / SAMPLE_RATE
    truth_words = [{**w, "start": w["start"] + k * length} for k in range(repeats) for w in song["words"]]
    reports: list[float] = []
    segments = align_lyrics(
        audio, "\n".join([song["lyrics"]] * repeats), progress=lambda p, m="": reports.append(p)
    )
    assert len(segments) == repeats * len(song["lines"])
    _assert_ordered(segments, len(audio) / SAMPLE_RATE)
    errors = _onset_errors(_words(segments), truth_words)
    assert np.median(errors) <= 0.1 and np.mean(errors <= 0.2) >= 0.8, errors
    assert len(reports) >= 3 and reports == sorted(reports) and reports[-1] == 100.0


def test_cancelling_stops_the_alignment() -> None:
    audio = np.tile(vocals_with_bleed(SONGS / "song_001", bleed=0.2), 4)
    lyrics = "\n".join([truth(SONGS / "song_001")["lyrics"]] * 4)
    reports: list[float] = []

    def progress(percent: float, message: str = "") -> None:
        reports.append(percent)
        if len(reports) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        align_lyrics(audio, lyrics, progress=progress)
    assert len(reports) == 2


def test_without_singing_anywhere_the_words_are_spread_over_the_audio() -> None:
    """Nothing to tell sung lines from unsung ones by: every line stays, spread, marked not heard."""
    silence = np.zeros(SAMPLE_RATE * 10, dtype=np.float32)
    segments = align_lyrics(silence, "one two three\n\n[Outro]\nfour five")
    assert [[w.text for w in s.words] for s in segments] == [["one", "two", "three"], ["four", "five"]]
    assert not any(s.not_sung for s in segments)
    _assert_ordered(segments, 10.0)
    assert segments[0].start == 0.0 and segments[-1].end == 10.0
    assert all(w.confidence == 0.0 and not w.heard for w in _words(segments))
    assert align_lyrics(silence, "\n[Chorus]\n") == []


def test_pronunciations_for_words_cmudict_lacks() -> None:
    assert number_words(1999) == ["nineteen", "ninety", "nine"]
    assert number_words(2005) == ["two", "thousand", "five"]
    assert number_words(42) == ["forty", "two"]
    assert letters_to_phones("zorblax") == "Z AO R B L AE K S"
    assert letters_to_phones("yell") == "Y EH L"
    assert letters_to_phones("日本") is None


# --- anchored by a real transcription (whisper-tiny.en from ../shared) ---
# A song of a verse, a chorus of two lines, another verse and the chorus again; the band is its drums.

VERSES = ["we ran across the golden field", "my brother plays a silver horn"]
CHORUS = ["stay with me tonight", "the birds are flying to the south"]
SUNG = [VERSES[0], *CHORUS, VERSES[1], *CHORUS]
UNSUNG = "the winter wind is cold and long"


@pytest.mark.parametrize(
    ("voice", "high"), [("en+f3", True), ("en+f4", True), ("en", False), ("en+m3", False)]
)
def test_a_high_voice_is_aligned_with_features_warped_for_it(tmp_path: Path, voice: str, high: bool) -> None:
    """Female voices fit the acoustic model better with its features warped for a shorter vocal
    tract, male ones do not: the choice is the voice's, from the fit of the same lines both ways."""
    song_dir = sing(tmp_path / "song", SUNG, seed=8, min_gap=1.5, voice=voice)
    audio = vocals_with_bleed(song_dir, bleed=0.3, band_stems=("drums",))
    dictionary = _Dictionary()
    parsed = parse_lyrics("\n".join(SUNG))
    lines, _ = _align(audio, parsed, [], speech_regions(audio), dictionary, no_progress)
    assert _fits_better_warped(audio, lines, dictionary) is high


@pytest.fixture(scope="module")
def song_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sing(tmp_path_factory.mktemp("anchored") / "song", SUNG, seed=8, min_gap=1.5)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return load_transcriber(str(shared_path("models", "whisper-tiny.en")))


def _mix(song_dir: Path, vocals_db: float, bleed: float) -> np.ndarray:
    """The vocals `vocals_db` against their written level, plus `bleed` times the drums."""
    vocals = vocals_with_bleed(song_dir, bleed=0.0, band_stems=("drums",))
    drums = vocals_with_bleed(song_dir, bleed=1.0, band_stems=("drums",)) - vocals
    return (10 ** (vocals_db / 20) * vocals + bleed * drums).astype(np.float32)


def _aligned(audio: np.ndarray, lyrics: str, transcriber: Transcriber) -> list[common_pb2.Segment]:
    """As the service aligns: anchored by the model's words and judged by it."""
    heard = lambda p: transcriber.transcribe(audio, "", p)  # noqa: E731
    return list(transcript_from_lyrics(audio, lyrics, "en", heard, judge=judged_by(transcriber)).segments)


def _placed(segments: list[common_pb2.Segment]) -> list[dict]:
    return [{"word": w.text, "start": w.start} for s in segments if not s.not_sung for w in s.words]


@pytest.mark.shared
def test_an_unsung_line_is_reported_and_moves_nothing(song_dir: Path, transcriber: Transcriber) -> None:
    audio = _mix(song_dir, 0.0, bleed=0.3)
    song = truth(song_dir)
    lyrics = "\n".join([*SUNG[:2], UNSUNG, *SUNG[2:]])
    segments = _aligned(audio, lyrics, transcriber)
    assert [s.text for s in segments if s.not_sung] == [UNSUNG]
    assert [s.text for s in segments if not s.not_sung] == SUNG
    _assert_ordered([s for s in segments if not s.not_sung], len(audio) / SAMPLE_RATE)
    after = [w for w in song["words"] if w["line"] >= 2]
    errors = np.array(word_onset_errors(after, _placed(segments)))
    assert len(errors) == len(after) and np.all(errors <= 0.3), errors


@pytest.mark.shared
@pytest.mark.parametrize("replaced", [1, 4])
def test_a_line_written_in_place_of_a_sung_one_is_reported(
    song_dir: Path, transcriber: Transcriber, replaced: int
) -> None:
    """Lyrics pasted from another song's page: one sung line is swapped for a line never sung, so
    the singing holds a line where the lyrics hold another. No path of the aligner runs through the
    wrong line there, and it is reported, not squeezed in."""
    audio = _mix(song_dir, 0.0, bleed=0.3)
    song = truth(song_dir)
    segments = _aligned(audio, "\n".join([*SUNG[:replaced], UNSUNG, *SUNG[replaced + 1 :]]), transcriber)
    assert [s.text for s in segments if s.not_sung] == [UNSUNG]
    kept = [w for w in song["words"] if w["line"] != replaced]
    assert share_within(kept, _placed(segments), 0.3) >= 0.95
    # What the model heard of the line sung there stays, as heard, where it is sung.
    sung_there = song["lines"][replaced]
    heard = [w for s in segments for w in s.words if w.from_transcript]
    assert len(heard) >= MIN_MISSING_WORDS
    assert all(sung_there["start"] - 0.5 <= w.start <= sung_there["end"] + 0.5 and w.heard for w in heard)


@pytest.mark.shared
def test_a_line_put_where_the_model_heard_another_is_not_sung(
    song_dir: Path, transcriber: Transcriber
) -> None:
    """Step 6 of the aligner: every line judged as if placed without anchors, one of them with the
    text of a line never sung (as when an unsung line is put where a line the lyrics lack is sung).
    The model finds the words it heard there far likelier than that text: that line is not sung, and
    the words heard there are kept as a passage the lyrics lack. The sung lines stay sung."""
    audio = _mix(song_dir, 0.0, bleed=0.3)
    heard = [w for s in transcriber.transcribe(audio).segments for w in s.words]
    parsed = parse_lyrics("\n".join(SUNG))
    lines, missing = _align(audio, parsed, heard, speech_regions(audio), _Dictionary(), no_progress)
    assert all(line.sung for line in lines) and not missing
    for line in lines:
        line.anchors.clear()
    lines[3].text = UNSUNG  # where "my brother plays a silver horn" is sung
    _heard_instead(audio, lines, missing, heard, judged_by(transcriber))
    assert [line.text for line in lines if not line.sung] == [UNSUNG]
    _keep_uncovered(lines, missing, heard)
    [passage] = missing
    assert passage.after == 2  # between the lines sung around it
    kept = {normalize_word(w.text) for w in passage.words}
    assert len(kept & set(VERSES[1].split())) >= 3, kept


@pytest.mark.shared
def test_a_line_missing_from_the_lyrics_drags_nothing(song_dir: Path, transcriber: Transcriber) -> None:
    audio = _mix(song_dir, 0.0, bleed=0.3)
    song = truth(song_dir)
    missing = song["lines"][3]
    segments = _aligned(audio, "\n".join(SUNG[:3] + SUNG[4:]), transcriber)
    assert not any(s.not_sung for s in segments)
    lyric_words = [w for s in segments for w in s.words if not w.from_transcript]
    assert [w.text for w in lyric_words] == " ".join(SUNG[:3] + SUNG[4:]).split()
    # No word of the lyrics is put where the missing line is sung...
    assert not [w.text for w in lyric_words if missing["start"] + 0.3 < w.start < missing["end"] - 0.3]
    kept = [w for w in song["words"] if w["line"] != 3]
    assert share_within(kept, [{"word": w.text, "start": w.start} for w in lyric_words], 0.3) >= 0.95
    # ...and what the model heard of it stays, as heard.
    heard = [w for s in segments for w in s.words if w.from_transcript]
    assert all(missing["start"] - 0.5 <= w.start <= missing["end"] + 0.5 and w.heard for w in heard)


@pytest.mark.shared
def test_a_chorus_written_once_is_timed_each_time_it_is_sung(
    song_dir: Path, transcriber: Transcriber
) -> None:
    audio = _mix(song_dir, 0.0, bleed=0.3)
    song = truth(song_dir)
    lyrics = (
        f"[Verse 1]\n{VERSES[0]}\n\n[Chorus]\n{CHORUS[0]}\n{CHORUS[1]}\n\nVerse 2:\n{VERSES[1]}\n\n[Chorus]\n"
    )
    segments = _aligned(audio, lyrics, transcriber)
    assert [s.text for s in segments] == SUNG and not any(s.not_sung for s in segments)
    errors = _onset_errors(_words(segments), song["words"])
    assert np.median(errors) <= 0.08 and np.mean(errors <= 0.2) >= 0.9, errors


@pytest.mark.shared
def test_a_quiet_voice_is_still_timed(song_dir: Path, transcriber: Transcriber) -> None:
    audio = _mix(song_dir, -8.0, bleed=0.4)
    song = truth(song_dir)
    segments = _aligned(audio, "\n".join(SUNG), transcriber)
    assert not any(s.not_sung for s in segments)
    errors = _onset_errors(_words(segments), song["words"])
    assert np.median(errors) <= 0.08 and np.mean(errors <= 0.2) >= 0.9, errors
