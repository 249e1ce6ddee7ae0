"""Voice activity on vocals stems: silero-vad's model (our port of it) and the regions made from it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from services.transcription import vad
from tests.support.espeak_words import SONGS, truth, vocals_with_bleed


@pytest.mark.parametrize("name", ["song_000", "song_001"])
def test_regions_are_the_sung_lines_not_the_gaps_between_them(name: str) -> None:
    audio = vocals_with_bleed(SONGS / name, bleed=0.2)
    lines = truth(SONGS / name)["lines"]
    regions = vad.speech_regions(audio)
    assert len(regions) == len(lines)
    for (start, end), line in zip(regions, lines, strict=True):
        # The whole line is inside, with some padding before its first word.
        assert start <= line["start"] - 0.05, (start, line)
        assert end >= line["end"], (end, line)
        assert end - start <= line["end"] - line["start"] + 1.5, (start, end, line)
    for earlier, later in itertools.pairwise(regions):
        assert earlier[1] < later[0]


def test_the_band_alone_and_silence_hold_no_singing() -> None:
    vocals = vocals_with_bleed(SONGS / "song_000", bleed=0.0)
    song = vocals_with_bleed(SONGS / "song_000", bleed=1.0)
    assert vad.speech_regions(song - vocals) == []
    assert vad.speech_regions(np.zeros(vad.SAMPLE_RATE * 3, dtype=np.float32)) == []
    assert vad.speech_regions(np.zeros(0, dtype=np.float32)) == []


def test_long_singing_is_cut_to_fit_whisper_windows() -> None:
    """Lines sung back to back for ~45 s become regions of at most 28 s that still cover them."""
    audio = vocals_with_bleed(SONGS / "song_000", bleed=0.0)
    rate = vad.SAMPLE_RATE
    lines = [
        audio[round((line["start"] - 0.1) * rate) : round((line["end"] + 0.1) * rate)]
        for line in truth(SONGS / "song_000")["lines"]
    ]
    singing = np.concatenate(lines * 4)
    regions = vad.speech_regions(singing)
    duration = len(singing) / rate
    assert duration > 1.5 * vad.VadOptions().max_region_seconds
    assert len(regions) >= 2
    assert all(0.0 <= start < end <= duration for start, end in regions)
    assert all(end - start <= vad.VadOptions().max_region_seconds + 1e-6 for start, end in regions)
    assert sum(end - start for start, end in regions) >= 0.9 * duration


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_the_port_gives_silero_s_own_probabilities() -> None:
    """Our batched port against silero's TorchScript model called window by window, as its
    get_speech_timestamps does."""
    audio = vocals_with_bleed(SONGS / "song_000", bleed=0.2)
    clip = audio[vad.SAMPLE_RATE : vad.SAMPLE_RATE + 48 * vad.FRAME]  # 1-2.5 s: silence, then singing
    scripted = torch.jit.load(str(vad._silero_model_file()), map_location="cpu")
    scripted.reset_states()
    with torch.inference_mode():
        expected = [
            scripted(torch.from_numpy(clip[i : i + vad.FRAME]), vad.SAMPLE_RATE).item()
            for i in range(0, len(clip), vad.FRAME)
        ]
    probabilities = vad.speech_probabilities(clip)
    assert probabilities.shape == (len(expected),)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert probabilities.min() < 0.1 and probabilities.max() > 0.9  # both silence and singing


def quiet_line_vocals(line: int, db: float, gain: float) -> tuple[np.ndarray, list[dict]]:
    """song_000's vocals with its band bleeding in at 0.1, one line `db` under the others, and the
    whole stem at `gain`: a quiet voice as separation leaves it."""
    audio = vocals_with_bleed(SONGS / "song_000", bleed=0.0)
    band = vocals_with_bleed(SONGS / "song_000", bleed=1.0) - audio
    lines = truth(SONGS / "song_000")["lines"]
    rate = vad.SAMPLE_RATE
    quiet = slice(round((lines[line]["start"] - 0.3) * rate), round((lines[line]["end"] + 0.3) * rate))
    audio[quiet] *= 10.0 ** (db / 20.0)
    return (gain * (audio + 0.1 * band)).astype(np.float32), lines


@pytest.mark.parametrize("gain", [1.0, 0.003])
def test_a_quiet_line_in_a_quiet_stem_is_found_once_the_stem_is_normalised(gain: float) -> None:
    """One line 8 dB under the others, in a stem whose singing sits near -25 dBFS or 50 dB lower
    (where silero hears nothing at all): levelled, every line is a region, and the band's bleed
    between them is not."""
    stem, lines = quiet_line_vocals(1, -8.0, gain)
    levelled = vad.normalize_level(stem)
    # Brought near the target level (its peaks, ~30 dB over its level, may hold it a few dB under).
    assert vad.TARGET_LEVEL_DB - 12.0 < vad.stem_level_db(levelled) <= vad.TARGET_LEVEL_DB + 0.5
    regions = vad.speech_regions(levelled)
    assert len(regions) == len(lines)
    for (start, end), line in zip(regions, lines, strict=True):
        assert start <= line["start"] and end >= line["end"], (start, end, line)
    if gain < 0.01:
        assert vad.speech_regions(stem) == []  # why the level matters


def test_regions_far_under_the_stem_s_level_are_bleed() -> None:
    """The level gate is relative to the stem: the same line 40 dB under the others is dropped as
    bleed, while at 8 dB under it is kept (above)."""
    stem, lines = quiet_line_vocals(1, -40.0, 1.0)
    regions = vad.speech_regions(vad.normalize_level(stem))
    assert len(regions) == len(lines) - 1
    assert not any(start < lines[1]["end"] and end > lines[1]["start"] for start, end in regions)


def regions_as_they_arrive(audio: np.ndarray, piece: int) -> list[tuple[float, float]]:
    """PassageFinder's regions for the audio fed in pieces of `piece` samples."""
    finder = vad.PassageFinder(vad.stem_level_db(audio))
    found = [
        region
        for start in range(0, len(audio), piece)
        for region in finder.feed(audio[start : start + piece])
    ]
    return found + finder.finish()


def test_regions_found_as_the_audio_arrives_are_those_of_the_whole() -> None:
    """Long singing (cut at its quietest points) and lines with gaps, fed in pieces that fall anywhere:
    the same regions as speech_regions (to the probabilities' float rounding), whatever the pieces."""
    song = vocals_with_bleed(SONGS / "song_000", bleed=0.0)
    rate = vad.SAMPLE_RATE
    sung = [
        song[round((line["start"] - 0.1) * rate) : round((line["end"] + 0.1) * rate)]
        for line in truth(SONGS / "song_000")["lines"]
    ]
    audio = np.concatenate([song, *(sung * 4), song, np.zeros(rate // 3, np.float32)])
    whole = vad.speech_regions(audio)
    limit = vad.VadOptions().max_region_seconds
    assert len(whole) >= 8 and sum(end - start > limit / 2 for start, end in whole) >= 2  # cut pieces
    for piece in (4_001, 33_333, len(audio)):
        found = regions_as_they_arrive(audio, piece)
        assert found == regions_as_they_arrive(audio, 1_000)  # the pieces do not matter at all
        assert len(found) == len(whole)
        np.testing.assert_allclose(np.array(found), np.array(whole), atol=2 * vad.FRAME / vad.SAMPLE_RATE)
