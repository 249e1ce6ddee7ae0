"""Test audio made at test time: a tone-and-noise 'song' with a vocal-like voice part."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roar import audio


def make_song(seconds: float, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """(2, frames) float32: a chord pad, a pulsing noise 'drum' and a vibrato voice line."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pad = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.normal(0, 0.2, t.size)
    voice = (
        0.2
        * np.sin(2 * np.pi * (440 + 8 * np.sin(2 * np.pi * 5 * t)) * t)
        * (np.sin(2 * np.pi * 0.25 * t) > 0)
    )
    left, right = pad + beat + 0.9 * voice, pad + 0.8 * beat + voice
    return np.stack([left, right]).astype(np.float32)


def write_song(path: Path, seconds: float, fmt: str = "wav", seed: int = 0) -> Path:
    path.write_bytes(audio.encode(make_song(seconds, seed=seed), 44100, fmt))
    return path
