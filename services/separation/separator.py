"""The interface every separation backend implements (Demucs, Spleeter): one model window at a
time, so that a song of any length is separated in bounded memory (services/separation/separate.py
cuts the windows and crossfades them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class MixLevel:
    """The whole song's mean and standard deviation (of its channels' mean), known before the
    first window: demucs standardises every window with them as it does the whole mix."""

    mean: float
    std: float


class Separator(Protocol):
    name: str
    sample_rate: int
    channels: int
    # Every source the model produces, e.g. ["drums", "bass", "other", "vocals"].
    sources: list[str]
    # Frames the model separates in one call; consecutive calls overlap by a quarter of it.
    window_frames: int

    def separate_window(self, audio: torch.Tensor, start: int, frames: int, level: MixLevel) -> torch.Tensor:
        """Splits frames [start, start + frames) of float32 (channels, n) audio at `sample_rate`
        (frames <= window_frames) into (sources, channels, frames). The audio around that stretch
        is context a model may read (demucs pads a short last window with it). Cancellation
        (roar.progress.check_cancelled) stops it within one layer's compute."""
        ...
