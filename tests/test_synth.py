"""Synthetic songs (bench.synth), the committed test songs, and the evaluation metrics (bench.metrics)."""

from __future__ import annotations

import json
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


def test_onset_summary() -> None:
    summary = metrics.onset_summary([0.1, 0.3, 0.05, 0.5])
    assert summary == pytest.approx({"median": 0.2, "mean": 0.2375, "within_0_2": 0.5, "count": 4})
    assert metrics.onset_summary([])["count"] == 0
    assert metrics.word_error_rate("the cat sat", "the cat sad") == pytest.approx(1 / 3)
