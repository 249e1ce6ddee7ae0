"""One separation job in memory bounded by the window, not the song.

The song is decoded block by block into a temporary FLAC at the model's rate and channel count
(resampled on the way, see roar.audio.resample_blocks), which also measures the mix's level. The
model then runs window by window over that file the way demucs' split runs over a whole tensor:
windows of `window_frames` overlapping by a quarter, crossfaded with demucs' triangular weights.
Once a model window is done, the frames before the next one's start are final: that stretch is a
window of the song on the wire (StemWindow), yielded at once. No randomness anywhere, so a call
that starts at window k yields exactly what an uninterrupted call yields from k on; it recomputes
one model window of context (with an overlap under a half, only the previous one reaches in).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from roar.audio import (
    BLOCK_FRAMES,
    flac_writer,
    match_channels,
    max_audio_seconds,
    open_audio,
    refuse_past,
    resample_blocks,
)
from roar.errors import BadInput, ResourceExhausted, is_disk_full
from roar.progress import ProgressCallback, check_cancelled, no_progress
from roar.v1 import common_pb2
from services.separation.separator import MixLevel, Separator, beating

# As demucs' apply_model: a quarter of each model window overlaps the next. Must stay under a half,
# so that only one earlier model window reaches into a window (what a resumed call recomputes).
OVERLAP = 0.25
# Percent of the call spent decoding; the windows share the rest.
DECODED_PERCENT = 5.0
# Progress while decoding, and within a model window, at most this often (seconds).
DECODE_REPORT_SECONDS = 0.5
HEARTBEAT_SECONDS = 1.0
# The model's input sits on disk as 24-bit FLAC: lossless for 16- and 24-bit songs at its rate.
MIX_SUBTYPE = "PCM_24"


@dataclass(frozen=True)
class SongPlan:
    """What the windows will hold, known once the song is decoded (SeparationResult)."""

    stems: list[str]
    input: common_pb2.AudioInfo
    sample_rate: int
    channels: int
    frames: int
    window_count: int


@dataclass(frozen=True)
class SongWindow:
    """Frames [start_frame, start_frame + frames) of every stem, float32 (channels, frames)."""

    index: int
    start_frame: int
    stems: dict[str, np.ndarray]


def window_starts(frames: int, window_frames: int) -> range:
    """Where each model window (and each window of the song) starts; window i of the song ends
    where window i + 1 starts, the last at the song's end."""
    return range(0, frames, int((1 - OVERLAP) * window_frames))


def stem_names(sources: list[str], all_stems: bool) -> list[str]:
    """vocals, instrumental (every other source), then with all_stems each source not yet named."""
    names = ["vocals", "instrumental"]
    return names + [s for s in sources if s not in names] if all_stems else names


def separate_song(
    separator: Separator,
    source: Path,
    all_stems: bool = False,
    first_window: int = 0,
    progress: ProgressCallback = no_progress,
) -> Iterator[SongPlan | SongWindow]:
    """The direct call (the gRPC service runs exactly this): separates the audio file at `source`
    (any format roar.audio.open_audio reads, at most ROAR_MAX_AUDIO_MINUTES long). Yields one
    SongPlan, then SongWindows first_window.. in order, each as soon as it is final. Its
    temporary file (the decoded mix) goes when the iterator ends or is closed.
    Raises BadInput for audio it cannot take, Cancelled (from progress or the model) to stop."""
    progress(0.0, "decoding the audio")
    with tempfile.TemporaryDirectory(prefix="roar-separation-") as work_dir:
        mix_path = Path(work_dir) / "mix.flac"
        info, frames, level = _decode_to_mix(source, mix_path, separator, progress)
        starts = window_starts(frames, separator.window_frames)
        if first_window > len(starts):
            raise BadInput(f"first_window {first_window} is past the song's last window ({len(starts) - 1})")
        yield SongPlan(
            stems=stem_names(separator.sources, all_stems),
            input=info,
            sample_rate=separator.sample_rate,
            channels=separator.channels,
            frames=frames,
            window_count=len(starts),
        )
        with sf.SoundFile(mix_path) as mix:

            def read(start: int, stop: int) -> torch.Tensor:
                mix.seek(start)
                return torch.from_numpy(mix.read(stop - start, dtype="float32", always_2d=True).T.copy())

            windows = separate_windows(separator, read, frames, level, first_window, progress)
            for index, start, sources in windows:
                yield SongWindow(index, start, _stems(separator.sources, sources, all_stems))


def separate_audio(
    separator: Separator, audio: np.ndarray, progress: ProgressCallback = no_progress
) -> dict[str, np.ndarray]:
    """Every source of float32 (channels, frames) audio already at the model's rate and channel
    count, by the same windows as separate_song (for clips held in memory: tests, benchmarks)."""
    mix = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    reference = mix.mean(0).double()
    level = MixLevel(float(reference.mean()), float(reference.std()) + 1e-8)
    parts = [
        sources
        for _, _, sources in separate_windows(
            separator, lambda start, stop: mix[:, start:stop], mix.shape[1], level, 0, progress
        )
    ]
    joined = torch.cat(parts, dim=-1).numpy()
    return {name: joined[i] for i, name in enumerate(separator.sources)}


def separate_windows(
    separator: Separator,
    read: Callable[[int, int], torch.Tensor],
    frames: int,
    level: MixLevel,
    first_window: int,
    progress: ProgressCallback,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(index, start_frame, sources (sources, channels, n)) of windows first_window.. of a song of
    `frames` frames that `read(start, stop)` returns as (channels, stop - start) tensors.

    The crossfade is demucs' split: each model window's output weighted by a triangle peaking at
    its middle, summed in window order, divided by the summed weights, with the same float
    operations in the same order whichever window a call starts from."""
    length = separator.window_frames
    starts = window_starts(frames, length)
    if first_window >= len(starts):
        return
    weight = torch.cat([torch.arange(1, length // 2 + 1), torch.arange(length - length // 2, 0, -1)])
    weight = weight / weight.max()
    # Context read around a model window: demucs pads a short last window with up to half a
    # window of the song before it, and a model's valid length rarely exceeds its window by more.
    context = length // 2
    layer_calls = 0  # hooked layer calls of the last model window, for progress within the next
    # Weighted sums (and summed weights) of the frames from the last model window's start on.
    summed: torch.Tensor | None = None
    summed_weight: torch.Tensor | None = None
    for model_window in range(max(first_window - 1, 0), len(starts)):
        check_cancelled()
        start = starts[model_window]
        count = min(length, frames - start)
        read_from = max(0, start - context)
        audio = read(read_from, min(frames, start + count + context))
        heartbeat = _Heartbeat(progress, model_window, first_window, len(starts), layer_calls)
        with beating(heartbeat):
            out = separator.separate_window(audio, start - read_from, count, level)
        layer_calls = heartbeat.calls
        window_weight = weight[:count]
        # Carry the previous model window's overlap over, then add this one's.
        carried = 0 if summed is None else summed.shape[-1] - (start - starts[model_window - 1])
        next_summed = torch.zeros((*out.shape[:-1], count))
        next_weight = torch.zeros(count)
        if carried > 0:
            assert summed is not None and summed_weight is not None
            next_summed[..., :carried] = summed[..., -carried:]
            next_weight[:carried] = summed_weight[-carried:]
        next_summed += window_weight * out
        next_weight += window_weight
        summed, summed_weight = next_summed, next_weight
        if model_window < first_window:
            continue  # context for the first window asked for, which the next model window ends
        end = starts[model_window + 1] if model_window + 1 < len(starts) else frames
        final = end - start
        yield model_window, start, summed[..., :final] / summed_weight[:final]
        progress(
            _window_percent(model_window + 1, first_window, len(starts)),
            _window_message(model_window, len(starts)),
        )


def _window_percent(done: float, first_window: int, window_count: int) -> float:
    """The call's percent once `done` windows (fractions too) of the song are finished."""
    share = max(done - first_window, 0.0) / (window_count - first_window)
    return DECODED_PERCENT + (100.0 - DECODED_PERCENT) * share


def _window_message(model_window: int, count: int) -> str:
    return f"separating: window {model_window + 1}/{count}"


class _Heartbeat:
    """Progress within a model window, from its hooked layer calls, at most every
    HEARTBEAT_SECONDS: the fraction done is guessed from the previous window's calls."""

    def __init__(
        self, progress: ProgressCallback, model_window: int, first_window: int, count: int, expected: int
    ) -> None:
        self._progress = progress
        self._window, self._first_window, self._count = model_window, first_window, count
        self._expected = expected
        self._reported = time.monotonic()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if time.monotonic() - self._reported < HEARTBEAT_SECONDS:
            return
        fraction = min(self.calls / self._expected, 0.99) if self._expected else 0.0
        percent = _window_percent(self._window + fraction, self._first_window, self._count)
        self._progress(percent, _window_message(self._window, self._count))
        self._reported = time.monotonic()


def _stems(sources: list[str], separated: torch.Tensor, all_stems: bool) -> dict[str, np.ndarray]:
    by_source = {name: separated[i].numpy() for i, name in enumerate(sources)}
    stems = {
        "vocals": by_source["vocals"],
        "instrumental": sum(audio for name, audio in by_source.items() if name != "vocals"),
    }
    if all_stems:
        stems.update(by_source)
    return {name: np.ascontiguousarray(audio, dtype=np.float32) for name, audio in stems.items()}


def _decode_to_mix(
    source: Path, mix_path: Path, separator: Separator, progress: ProgressCallback
) -> tuple[common_pb2.AudioInfo, int, MixLevel]:
    """Decodes `source` block by block into `mix_path` (the model's rate and channels, samples
    clipped to [-1, 1]); returns what the song is, the mix's frame count and its level."""
    max_seconds = max_audio_seconds()
    with open_audio(source, mix_path.parent, max_seconds) as (song, fmt):
        rate = song.samplerate
        expected = max(song.frames, 1)
        decoded = 0
        reported = time.monotonic()
        message = "decoding the audio"
        if rate != separator.sample_rate:
            message += f" (resampling {rate} Hz to {separator.sample_rate} Hz)"

        def blocks() -> Iterator[np.ndarray]:
            nonlocal decoded, reported
            for block in song.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                decoded += len(block)
                refuse_past(decoded, rate, max_seconds)
                if time.monotonic() - reported > DECODE_REPORT_SECONDS:
                    progress(DECODED_PERCENT * min(decoded / expected, 1.0), message)
                    reported = time.monotonic()
                check_cancelled()
                yield match_channels(block.T, separator.channels)

        frames = 0
        total, total_squares = 0.0, 0.0
        try:
            with flac_writer(mix_path, separator.sample_rate, separator.channels, MIX_SUBTYPE) as write:
                for piece in resample_blocks(blocks(), rate, separator.sample_rate):
                    piece = np.clip(piece, -1.0, 1.0)
                    write(piece.T)
                    reference = piece.mean(axis=0, dtype=np.float64)
                    frames += piece.shape[1]
                    total += float(reference.sum())
                    total_squares += float(np.square(reference).sum())
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise ResourceExhausted("the service's disk is full") from exc
        if decoded == 0:
            raise BadInput("the audio file holds no samples")
        info = common_pb2.AudioInfo(
            duration_seconds=decoded / rate, sample_rate=rate, channels=song.channels, format=fmt
        )
    mean = total / frames
    variance = max(total_squares - frames * mean * mean, 0.0) / max(frames - 1, 1)
    # As demucs: the std of the channels' mean, plus a little so that silence divides.
    return info, frames, MixLevel(mean, variance**0.5 + 1e-8)
