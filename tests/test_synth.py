"""Synthetic songs (bench.synth), the committed test songs, and the evaluation metrics (bench.metrics)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import espeak, metrics, synth

SONGS = Path(__file__).parent / "data" / "songs"
LINES = ["the morning light is on the hill", "we walk together down the road"]


@pytest.fixture(scope="module")
def espeak_installed() -> None:
    try:
        espeak.library()
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def song(espeak_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("song")
    synth.make_song(out_dir, LINES, seed=3, bpm=120.0)
    return out_dir


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == synth.SAMPLE_RATE
    return audio.astype(np.int32)


def _rms(audio: np.ndarray, start: float, end: float) -> float:
    return float(np.sqrt(np.mean(audio[int(start * synth.SAMPLE_RATE) : int(end * synth.SAMPLE_RATE)] ** 2)))


def test_same_seed_gives_the_same_bytes(espeak_installed: None, tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        synth.make_song(tmp_path / name, ["hold my hand"], seed=seed, bpm=140.0)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted([f"{stem}.wav" for stem in synth.STEMS] + ["truth.json", "lyrics.txt"])
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / "mixture.wav").read_bytes() != (tmp_path / "c" / "mixture.wav").read_bytes()


def test_stems_add_up_to_the_mixture(song: Path) -> None:
    stems = {name: _read(song / f"{name}.wav") for name in synth.STEMS}
    for name in synth.STEMS:
        assert sf.info(song / f"{name}.wav").subtype == "PCM_16"
        assert stems[name].shape == stems["mixture"].shape
    assert stems["mixture"].shape[1] == 2
    np.testing.assert_array_equal(stems["drums"] + stems["bass"] + stems["other"], stems["instrumental"])
    np.testing.assert_array_equal(stems["vocals"] + stems["instrumental"], stems["mixture"])
    # the band plays left and right differently (panning), and every stem is heard
    assert not np.array_equal(stems["other"][:, 0], stems["other"][:, 1])
    assert all(np.abs(stems[name]).max() > 1000 for name in synth.STEMS)


def test_truth_word_times_are_in_order_inside_the_song(song: Path) -> None:
    truth = json.loads((song / "truth.json").read_text())
    duration = sf.info(song / "mixture.wav").duration
    assert truth["lyrics"] == "\n".join(LINES)
    assert (song / "lyrics.txt").read_text() == "\n".join(LINES) + "\n"
    assert [w["word"] for w in truth["words"]] == " ".join(LINES).split()
    times = [t for w in truth["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times)
    assert times[0] > 0 and times[-1] < duration
    assert all(w["end"] - w["start"] > 0.1 for w in truth["words"])
    assert [line["text"] for line in truth["lines"]] == LINES
    assert truth["lines"][0]["start"] == truth["words"][0]["start"]
    assert truth["lines"][1]["end"] == truth["words"][-1]["end"]


def test_vocals_sound_inside_the_word_times_and_not_between_lines(song: Path) -> None:
    """Checks the WORD event timing: voice within each word, silence before each line starts."""
    truth = json.loads((song / "truth.json").read_text())
    vocals = _read(song / "vocals.wav") / 32768.0
    word_rms = [_rms(vocals, w["start"], w["end"]) for w in truth["words"]]
    assert min(word_rms) > 0.3 * float(np.median(word_rms))
    first, second = truth["lines"]
    assert second["start"] - first["end"] >= 2.0  # a musical gap
    loud = float(np.median(word_rms))
    assert _rms(vocals, first["end"] + 1.0, second["start"]) < 1e-3 * loud  # the echo has died away
    for line in truth["lines"]:
        assert _rms(vocals, line["start"] - 0.3, line["start"]) < 1e-3 * loud
        assert _rms(vocals, line["start"], line["start"] + 0.15) > 0.1 * loud


def test_command_line_draws_lines_from_a_file(espeak_installed: None, tmp_path: Path) -> None:
    lines_file = tmp_path / "lines.txt"
    lines_file.write_text("sing a little song\n\nwe go home\n")
    options = [
        "--form",
        "simple",
        "--count",
        "2",
        "--seed",
        "4",
        "--lines",
        "1",
        "1",
        "--bpm",
        "150",
        "--stems",
        "mixture",
        "vocals",
    ]
    synth.main([str(tmp_path / "out"), "--lines-file", str(lines_file), *options])
    songs = sorted((tmp_path / "out").iterdir())
    assert [s.name for s in songs] == ["song_000", "song_001"]
    for song_dir in songs:
        assert sorted(p.name for p in song_dir.iterdir()) == [
            "lyrics.txt",
            "mixture.wav",
            "truth.json",
            "vocals.wav",
        ]
        assert (song_dir / "lyrics.txt").read_text() in ("sing a little song\n", "we go home\n")


@pytest.mark.parametrize("song_dir", sorted(SONGS.glob("song_*")), ids=lambda p: p.name)
def test_committed_songs_are_consistent(song_dir: Path) -> None:
    truth = json.loads((song_dir / "truth.json").read_text())
    mixture, vocals = _read(song_dir / "mixture.flac"), _read(song_dir / "vocals.flac")
    assert mixture.shape == vocals.shape and mixture.shape[1] == 2
    assert 20.0 <= mixture.shape[0] / synth.SAMPLE_RATE <= 30.0
    assert (song_dir / "lyrics.txt").read_text() == truth["lyrics"] + "\n"
    assert [w["word"] for w in truth["words"]] == truth["lyrics"].split()
    assert truth["words"][-1]["end"] < mixture.shape[0] / synth.SAMPLE_RATE
    assert np.abs(mixture - vocals).max() <= 32767  # the instrumental fits 16 bits


SHAPED_LINES = ("we walk together down the road", "the river runs into the sea")
CHORUS = ("come and sing this song with me", "hold on", "hold on")
UNSUNG = "the moon is hiding in the clouds"
SHAPED = (
    synth.Section("Intro", bars=3),
    synth.Section("Verse 1", SHAPED_LINES),
    synth.Section("Chorus", CHORUS),
    synth.Section("Break", bars=6),
    synth.Section("Chorus", CHORUS),
    synth.Section("Outro", bars=2),
)
SHAPED_BPM = 150.0
QUIET_LOW = synth.Performance(voice="en+m3", level_db=-6.0, low=True, hold=1.0, min_gap=0.8)


@pytest.fixture(scope="module")
def shaped(espeak_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("shaped")
    synth.render_song(
        out_dir, SHAPED, seed=11, bpm=SHAPED_BPM, how=QUIET_LOW, unsung_line=UNSUNG, markup=True
    )
    return out_dir


def _sheet_lines(text: str) -> list[str]:
    """The sung lines a lyrics sheet stands for: headers and blank lines out, "(x2)" expanded."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or re.fullmatch(r"\[.*\]", line):
            continue
        repeat = re.fullmatch(r"(.*) \(x(\d+)\)", line)
        lines += [repeat[1]] * int(repeat[2]) if repeat else [line]
    return lines


def test_shaped_song_has_intro_repeated_chorus_break_and_outro(shaped: Path) -> None:
    truth = json.loads((shaped / "truth.json").read_text())
    bar = 60.0 / SHAPED_BPM * 4
    sung = [*SHAPED_LINES, *CHORUS, *CHORUS]
    assert [line["text"] for line in truth["lines"]] == sung
    assert [w["word"] for w in truth["words"]] == " ".join(sung).split()
    names = [section["name"] for section in truth["sections"]]
    assert names == ["Intro", "Verse 1", "Chorus", "Break", "Chorus", "Outro"]
    # the first word comes on the first beat after the 3-bar intro; the break is at least 6 bars of band
    assert truth["words"][0]["start"] == pytest.approx(3 * bar, abs=1e-3)
    first_chorus, second_chorus = truth["lines"][2:5], truth["lines"][5:8]
    assert second_chorus[0]["start"] - first_chorus[-1]["end"] >= 6 * bar
    duration = sf.info(shaped / "mixture.wav").duration
    assert duration - truth["lines"][-1]["end"] >= 2 * bar
    # the chorus comes back with the same words and the same melody and timing
    for one, two in zip(first_chorus, second_chorus, strict=True):
        assert one["text"] == two["text"]
        assert two["end"] - two["start"] == pytest.approx(one["end"] - one["start"], abs=2e-3)
    assert truth["style"]["level_db"] == -6.0 and truth["style"]["low"] is True


def test_shaped_song_sets_the_vocals_under_the_band(shaped: Path) -> None:
    truth = json.loads((shaped / "truth.json").read_text())
    vocals = _read(shaped / "vocals.wav").astype(np.float64)
    band = _read(shaped / "instrumental.wav").astype(np.float64)
    singing = np.zeros(len(vocals), dtype=bool)
    for word in truth["words"]:
        singing[round(word["start"] * synth.SAMPLE_RATE) : round(word["end"] * synth.SAMPLE_RATE)] = True
    level = 20 * np.log10(np.sqrt(np.mean(vocals[singing] ** 2)) / np.sqrt(np.mean(band[singing] ** 2)))
    assert level == pytest.approx(-6.0, abs=0.3)
    # nothing is sung in the intro
    intro_end = round(truth["words"][0]["start"] * synth.SAMPLE_RATE)
    assert np.abs(vocals[:intro_end]).max() < 50


def test_lyrics_files_carry_markup_and_the_wrong_lyrics_one_unsung_line(shaped: Path) -> None:
    truth = json.loads((shaped / "truth.json").read_text())
    lyrics = (shaped / "lyrics.txt").read_text()
    assert "[Chorus]" in lyrics and "[Verse 1]" in lyrics and "\n\n" in lyrics
    assert "hold on (x2)" in lyrics
    sung = truth["lyrics"].splitlines()
    assert _sheet_lines(lyrics) == sung
    wrong = _sheet_lines((shaped / "lyrics_wrong.txt").read_text())
    assert Counter(wrong) - Counter(sung) == Counter([UNSUNG])
    [absent] = truth["absent_lines"]
    assert Counter(sung) - Counter(wrong) == Counter([sung[absent]])
    assert truth["unsung_lines"] == [UNSUNG]
    # the unsung line is in the middle, not first or last
    assert 0 < wrong.index(UNSUNG) < len(wrong) - 1
    absent_words = [truth["words"][i] for i in truth["absent_words"]]
    assert " ".join(w["word"] for w in absent_words) == sung[absent]
    assert {w["line"] for w in absent_words} == {absent}


def test_plans_vary_and_keep_the_song_shape() -> None:
    rng = np.random.default_rng(0)
    pool = synth.LinePool.of([*synth.LYRIC_LINES, *synth.SHORT_LINES, *synth.LONG_LINES])
    order = rng.permutation(len(synth._PROFILES))
    plans = [synth.plan_song(rng, pool, synth._PROFILES[order[i]], max_seconds=110) for i in range(8)]
    assert sum(p.how.level_db <= -5 for p in plans) >= 2
    assert any(p.how.low for p in plans) and any(p.how.low and p.how.level_db <= -5 for p in plans)
    assert any(p.markup for p in plans) and not all(p.markup for p in plans)
    assert len({p.how.voice for p in plans}) >= 3 and len({p.bpm for p in plans}) == 8
    for plan in plans:
        names = [s.name for s in plan.sections]
        assert names[0] == "Intro" and 3 <= plan.sections[0].bars <= 8
        assert names[-1] == "Outro" and "Break" in names
        assert 6 <= plan.sections[names.index("Break")].bars <= 12
        choruses = [s.lines for s in plan.sections if s.name == "Chorus"]
        assert 2 <= len(choruses) <= 3 and len(set(choruses)) == 1
        sung = {line for s in plan.sections for line in s.lines}
        assert plan.unsung_line not in sung
        assert 45 <= plan.estimated_seconds() <= 125
    lengths = {len(line.split()) for p in plans for s in p.sections for line in s.lines}
    assert min(lengths) <= 3 and max(lengths) >= 9


def test_lyrics_sheet_markup() -> None:
    sections = [("Verse 1", ["a b", "c d"]), ("Chorus", ["e f", "g", "g", "g"])]
    assert synth.lyrics_sheet(sections, markup=False) == "a b\nc d\ne f\ng\ng\ng"
    assert synth.lyrics_sheet(sections, markup=True) == "[Verse 1]\na b\nc d\n\n[Chorus]\ne f\ng (x3)"


def test_sdr_of_known_noise() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 10_000))
    noise = rng.standard_normal((2, 10_000))
    noise *= np.sqrt(np.sum(reference**2) / np.sum(noise**2) / 100.0)  # 20 dB below the reference
    assert metrics.sdr(reference, reference + noise) == pytest.approx(20.0, abs=1e-9)
    assert metrics.sdr(reference, reference - 2.0 * noise) == pytest.approx(20.0 - 20 * np.log10(2), abs=1e-9)
    # lengths are trimmed to the shorter; a perfect estimate is infinitely good
    assert metrics.sdr(reference, np.pad(reference + noise, ((0, 0), (0, 50)))) == pytest.approx(20.0)
    assert metrics.sdr(reference, reference) == float("inf")
    assert metrics.sdr(reference, np.zeros_like(reference)) == pytest.approx(0.0)


def test_word_onset_errors_match_words_in_order() -> None:
    truth = [
        {"word": w, "start": s, "end": s + 0.3}
        for w, s in [("The", 1.0), ("cat", 1.5), ("sat", 2.0), ("on", 2.5), ("the", 3.0), ("mat.", 3.5)]
    ]
    hypothesis = [
        {"word": w, "start": s}
        for w, s in [("the", 1.1), ("Cat", 1.4), ("sad", 2.0), ("on", 2.8), ("um", 2.9), ("the", 3.05)]
    ]
    # "sat"/"sad" and "mat" (missing) are unmatched, "um" is extra
    assert metrics.word_onset_errors(truth, hypothesis) == pytest.approx([0.1, 0.1, 0.3, 0.05])
    # of two equally long alignments, the one with the nearer onsets wins: "the" pairs with the second "the"
    only_the = [{"word": "the", "start": 2.95}]
    assert metrics.word_onset_errors(truth, only_the) == pytest.approx([0.05])
    assert metrics.word_onset_errors(truth, []) == []


def test_sung_words_within_a_tolerance_leave_out_unsung_lyrics() -> None:
    truth = [
        {"word": w, "start": float(i)}
        for i, w in enumerate(["hold", "my", "hand", "and", "count", "to", "ten"])
    ]
    words = [
        *({"word": w["word"], "start": w["start"] + 0.25, "sung": True} for w in truth[:4]),
        # an unsung line of the lyrics, reported as such: its words are not placed
        *({"word": w, "start": None, "end": None, "sung": False} for w in ["the", "moon", "is", "hiding"]),
        {"word": "count", "start": 4.5},  # no "sung" key: today's outputs, read as sung
        {"word": "to", "start": 5.1},
    ]  # "ten" is missing
    placed = metrics.placed_words(words)
    assert [w["word"] for w in placed] == ["hold", "my", "hand", "and", "count", "to"]
    assert metrics.share_within(truth, placed, 0.3) == pytest.approx(5 / 7)
    assert metrics.share_within(truth, placed, 0.2) == pytest.approx(1 / 7)
    lines = [
        {"text": "hold my hand and", "start": 0.25, "end": 3.5, "words": [0, 1, 2, 3], "sung": True},
        {"text": "The moon, is hiding", "start": None, "end": None, "words": [4, 5, 6, 7], "sung": False},
        {"text": "count to ten", "start": 4.5, "end": 5.4, "words": [8, 9]},
    ]
    assert metrics.unsung_reported(["the moon is hiding"], lines) == 1.0
    assert metrics.falsely_unsung(["the moon is hiding"], lines) == 0
    # a sung line reported as unsung is a false report; without the key, nothing is reported
    assert metrics.falsely_unsung([], lines) == 1
    today = [{k: v for k, v in line.items() if k != "sung"} for line in lines]
    assert metrics.unsung_reported(["the moon is hiding"], today) == 0.0


def test_onset_summary() -> None:
    summary = metrics.onset_summary([0.1, 0.3, 0.05, 0.5])
    assert summary == pytest.approx({"median": 0.2, "mean": 0.2375, "within_0_2": 0.5, "count": 4})
    assert metrics.onset_summary([])["count"] == 0
    assert metrics.word_error_rate("the cat sat", "the cat sad") == pytest.approx(1 / 3)
