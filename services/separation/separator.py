"""The interface every separation backend implements (Demucs, Spleeter)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from roar.progress import ProgressCallback


class Separator(Protocol):
    name: str
    sample_rate: int
    channels: int
    # Every source the model produces, e.g. ["drums", "bass", "other", "vocals"].
    sources: list[str]

    def separate(self, audio: np.ndarray, progress: ProgressCallback) -> dict[str, np.ndarray]:
        """Splits float32 (channels, frames) audio at `sample_rate` into every source, each of the
        same shape. Calls progress(percent, message) per chunk of work; an exception it raises
        (Cancelled) aborts the separation."""
        ...
