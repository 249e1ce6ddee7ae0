"""Vocals sung by espeak-ng with the true time of every word, for the voice activity and alignment
tests: the committed synthetic songs (tests/data/songs), or new ones from bench.synth.

The vocals come as a separation leaves them: the vocals stem with some of the band bleeding in,
mono at 16 kHz. Truth is bench.synth's truth.json: {"lyrics", "words": [{"word", "start", "end"}],
"lines": [{"text", "start", "end"}]}, seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from roar.audio import resample, to_mono

SONGS = Path(__file__).resolve().parents[1] / "data" / "songs"
SAMPLE_RATE = 16_000


def vocals_with_bleed(song_dir: Path, bleed: float, band_stems: tuple[str, ...] = ()) -> np.ndarray:
    """The song's vocals plus `bleed` times its band: mixture − vocals, or the sum of `band_stems`
    (e.g. ("drums",)) when given."""
    vocals, rate = _read(song_dir / "vocals")
    if band_stems:
        band = sum(_read(song_dir / stem)[0] for stem in band_stems)
    else:
        band = _read(song_dir / "mixture")[0] - vocals
    return resample(to_mono((vocals + bleed * band).T / 32768.0), rate, SAMPLE_RATE)


def truth(song_dir: Path) -> dict:
    return json.loads((song_dir / "truth.json").read_text())


def sing(out_dir: Path, lines: list[str], seed: int, min_gap: float, voice: str = "en") -> Path:
    """A new song of these lines, sung by espeak-ng's `voice`, with at least `min_gap` seconds of
    band between lines (vocals and drums stems written); skips the test when libespeak-ng is
    missing."""
    from bench import synth

    try:
        synth.make_song(
            out_dir, lines, seed=seed, bpm=120.0, voice=voice, min_gap=min_gap, stems=("vocals", "drums")
        )
    except RuntimeError as exc:  # bench.espeak's message names the Debian packages
        pytest.skip(str(exc))
    return out_dir


def _read(stem: Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 of 16-bit samples, so that stems add up as written."""
    path = next(stem.parent.glob(stem.name + ".*"))
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    return audio.astype(np.float32), rate
