"""The interface every separation backend implements (Demucs, Spleeter): one model window at a
time, so that a song of any length is separated in bounded memory (services/separation/separate.py
cuts the windows and crossfades them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


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


# The heartbeat of the model window under way in this thread (see beating); None outside one.
_heartbeat: ContextVar[Callable[[], None] | None] = ContextVar("separation_heartbeat", default=None)


def beat_on_every_layer(model: ModuleT) -> ModuleT:
    """Makes each forward pass of each of the model's modules call the heartbeat of the window
    under way, so that progress shows within a long window. Install once, where the model loads."""
    for module in model.modules():
        module.register_forward_pre_hook(_beat)
    return model


def _beat(module: object, inputs: object) -> None:
    heartbeat = _heartbeat.get()
    if heartbeat is not None:
        heartbeat()


@contextmanager
def beating(heartbeat: Callable[[], None]) -> Iterator[None]:
    """Within the block, the model's hooked layers call `heartbeat` in this thread."""
    token = _heartbeat.set(heartbeat)
    try:
        yield
    finally:
        _heartbeat.reset(token)
