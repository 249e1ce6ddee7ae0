"""Where the singing is in a vocals stem: silero-vad's voice activity model, then the regions cleaned
up for Whisper (each fits its 30 s window) and for lyric alignment.

The model is silero-vad 6's (the `silero_vad.jit` its PyPI package ships), run through a plain torch
port of its 16 kHz network below rather than its stateful TorchScript module: the port gives the
same probabilities (to 1e-5) for a whole song in one batched call (~40 ms a minute of audio instead
of one call per 32 ms window, seconds a minute on a busy CPU), holds no state so threads can share
it, and needs no import of the `silero_vad` package, which sets torch's thread count to 1 for the
whole process.

A song's audio is read a stretch at a time (Samples: a numpy array, or a long song kept on disk), so
that the model's activations and the loudness arrays stay small whatever the song's length.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from roar.errors import ModelUnavailable
from roar.progress import stop_on_cancel

SAMPLE_RATE = 16_000
FRAME = 512  # silero's window at 16 kHz: one speech probability per 32 ms
_CONTEXT = 64  # samples of the previous window the model hears with each window
_FRAME_SECONDS = FRAME / SAMPLE_RATE
# The model hears this many windows at a time (a minute of audio): its activations take ~20 MB.
_CHUNK_WINDOWS = 1875

# Frames quieter than this (dBFS) are digital silence, not part of the stem's level.
SILENCE_DB = -80.0
# The stem's own level is the loudness its loudest frames reach: this percentile of its frames'
# RMS (dB) among the frames that are not silence. Singing fills far more than the loudest 10 % of a
# song's frames, so bleed between lines does not set it.
LEVEL_PERCENTILE = 90.0
# The level a vocal stem is brought to before voice detection, transcription and alignment (speech
# recordings' usual level), never past PEAK_DB at its peak nor by more than MAX_GAIN_DB: a quiet
# voice under a loud band comes out of separation 10-20 dB under a loud one, and silero's
# probabilities (and Whisper's log-mel floor) depend on the level.
TARGET_LEVEL_DB = -20.0
PEAK_DB = -1.0
MAX_GAIN_DB = 40.0


@dataclass(frozen=True)
class VadOptions:
    """Voice activity detection's thresholds (like faster-whisper's VadOptions); levels are in dB
    relative to the stem's own level (see stem_level_db)."""

    # Hysteresis with silero's default thresholds: singing starts at onset and goes on until the
    # probability drops below offset, so held notes with a dip in the middle stay one region.
    onset: float = 0.5
    offset: float = 0.35
    # Regions whose loudest frame stays this far under the stem's level are bleed of the band or
    # a click, not singing (a sung line reaches within a few dB of it).
    min_region_level_db: float = -30.0
    # Regions closer than this are one phrase (a breath between words).
    merge_gap_seconds: float = 0.3
    # Shorter regions left after merging are clicks or consonants of bleed, not a sung word.
    min_region_seconds: float = 0.15
    # Each region is widened by this on both sides: the model reacts a window late and soft onsets
    # and endings (breaths, fading notes) belong to the words.
    pad_seconds: float = 0.2
    # Whisper hears 30 s at once; longer regions are cut at their quietest point.
    max_region_seconds: float = 28.0


# Loudness is smoothed over this long to find the quietest point of a long region.
_SPLIT_SMOOTHING_SECONDS = 0.25


class Samples(Protocol):
    """Mono float32 audio at 16 kHz that gives its samples a stretch at a time: a numpy array, or a
    song kept on disk (vocals.VocalsFile). Slices are plain (no step) and within the audio."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> np.ndarray: ...


Span = tuple[float, float]  # (start, end) in seconds


def stretches(audio: Samples, length: int) -> Iterator[np.ndarray]:
    """The audio in consecutive stretches of `length` samples (the last one shorter)."""
    for start in range(0, len(audio), length):
        yield audio[start : start + length]


class _SileroVad(nn.Module):
    """silero-vad 6's 16 kHz network: STFT as a convolution, four convolutions, an LSTM over the
    windows and a sigmoid. Each 512-sample window is heard with the 64 samples before it."""

    def __init__(self) -> None:
        super().__init__()
        self.stft = nn.Conv1d(1, 258, 256, stride=128, bias=False)  # 129 real and 129 imaginary bins
        self.encoder = nn.ModuleList(
            [
                nn.Conv1d(129, 128, 3, padding=1),
                nn.Conv1d(128, 64, 3, stride=2, padding=1),
                nn.Conv1d(64, 64, 3, stride=2, padding=1),
                nn.Conv1d(64, 128, 3, padding=1),
            ]
        )
        self.rnn = nn.LSTM(128, 128, batch_first=True)
        self.output = nn.Conv1d(128, 1, 1)

    def forward(
        self, audio: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(_CONTEXT + windows * FRAME,) float audio at 16 kHz, each window after the _CONTEXT samples
        before it, and the LSTM's state after the windows before -> (windows,) speech probabilities
        and the LSTM's state after them."""
        windows = audio.unfold(0, FRAME + _CONTEXT, FRAME)
        windows = nn.functional.pad(windows, (0, _CONTEXT), mode="reflect").unsqueeze(1)
        spectrum = self.stft(windows)
        features = (spectrum[:, :129] ** 2 + spectrum[:, 129:] ** 2).sqrt()
        for conv in self.encoder:
            features = conv(features).relu()
        hidden, state = self.rnn(features.squeeze(-1).unsqueeze(0), state)
        return self.output(hidden.relu().transpose(1, 2)).sigmoid().reshape(-1), state


def _silero_model_file() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "voice activity detection needs the silero-vad package: pip install silero-vad"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"


@functools.cache
def load_vad_model() -> _SileroVad:
    """The model with silero's weights, loaded once per process."""
    path = _silero_model_file()
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript; silero ships its v6 weights only as TorchScript and ONNX.
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelUnavailable(f"could not load silero-vad's model {path}: {exc}") from exc
    weights = dict(scripted._model.named_parameters())
    state = {"stft.weight": scripted._model.stft.forward_basis_buffer}
    for index in range(4):
        for kind in ("weight", "bias"):
            state[f"encoder.{index}.{kind}"] = weights[f"encoder.{index}.reparam_conv.{kind}"]
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        state[f"rnn.{kind}_l0"] = weights[f"decoder.rnn.{kind}"]
    state["output.weight"] = weights["decoder.decoder.2.weight"]
    state["output.bias"] = weights["decoder.decoder.2.bias"]
    model = _SileroVad()
    model.load_state_dict(state)
    return stop_on_cancel(model.eval())


def speech_probabilities(audio: Samples) -> np.ndarray:
    """The model's speech probability for each 512-sample (32 ms) window of 16 kHz mono audio (the
    last window padded with silence), heard _CHUNK_WINDOWS windows at a time."""
    model = load_vad_model()
    windows = -(-len(audio) // FRAME)
    probabilities = np.empty(windows, np.float32)
    state = None
    with torch.inference_mode():
        for first in range(0, windows, _CHUNK_WINDOWS):
            last = min(first + _CHUNK_WINDOWS, windows)
            start = first * FRAME - _CONTEXT
            chunk = np.zeros(_CONTEXT + (last - first) * FRAME, np.float32)  # silence around the audio
            heard = audio[max(start, 0) : min(last * FRAME, len(audio))]
            chunk[max(-start, 0) : max(-start, 0) + len(heard)] = heard
            chunk_probabilities, state = model(torch.from_numpy(chunk), state)
            probabilities[first:last] = chunk_probabilities.numpy()
    return probabilities


def frame_loudness_db(audio: Samples) -> np.ndarray:
    """The RMS level (dBFS) of each 512-sample frame (the last one padded with silence)."""
    levels = []
    for stretch in stretches(audio, _CHUNK_WINDOWS * FRAME):
        padded = np.zeros(-(-len(stretch) // FRAME) * FRAME, dtype=np.float64)
        padded[: len(stretch)] = stretch
        rms = np.sqrt(np.mean(padded.reshape(-1, FRAME) ** 2, axis=1))
        levels.append(20.0 * np.log10(np.maximum(rms, 1e-10)))
    return np.concatenate(levels) if levels else np.zeros(0)


def level_of(loudness: np.ndarray) -> float | None:
    """A stem's own level (dBFS) from its frame_loudness_db: LEVEL_PERCENTILE of the frames that
    are not silence; None when all of it is silence."""
    sounding = loudness[loudness > SILENCE_DB]
    return float(np.percentile(sounding, LEVEL_PERCENTILE)) if sounding.size else None


def stem_level_db(audio: Samples) -> float | None:
    """The stem's own level (dBFS, see level_of); None when all of it is silence."""
    return level_of(frame_loudness_db(audio))


def level_gain(audio: Samples) -> np.float32:
    """The factor that brings the stem to TARGET_LEVEL_DB, within PEAK_DB and MAX_GAIN_DB; 1 for
    silence."""
    return gain_for(stem_level_db(audio), audio)


def gain_for(level: float | None, audio: Samples) -> np.float32:
    """The factor that brings audio of `level` (dBFS) to TARGET_LEVEL_DB, within PEAK_DB of the
    audio's peak and MAX_GAIN_DB; 1 for silence (no level)."""
    if level is None:
        return np.float32(1.0)
    peak = max(float(np.max(np.abs(stretch))) for stretch in stretches(audio, _CHUNK_WINDOWS * FRAME))
    gain_db = min(TARGET_LEVEL_DB - level, PEAK_DB - 20.0 * np.log10(peak), MAX_GAIN_DB)
    return np.float32(10.0 ** (gain_db / 20.0))


def normalize_level(audio: np.ndarray) -> np.ndarray:
    """The stem brought to TARGET_LEVEL_DB (float32), within PEAK_DB and MAX_GAIN_DB; silence as it is."""
    return (audio * level_gain(audio)).astype(np.float32)


def speech_regions(audio: Samples, options: VadOptions | None = None) -> list[tuple[float, float]]:
    """(start, end) seconds of the sung passages of a vocals stem (mono float32, 16 kHz): ordered,
    apart from each other, each at most max_region_seconds long and within the audio."""
    options = options or VadOptions()
    if len(audio) == 0:
        return []
    speech = _hysteresis(speech_probabilities(audio), options.onset, options.offset)
    loudness = frame_loudness_db(audio)
    level = level_of(loudness)
    runs = _merged(_runs(speech), round(options.merge_gap_seconds / _FRAME_SECONDS))
    runs = [
        (a, b)
        for a, b in runs
        if (b - a) * _FRAME_SECONDS >= options.min_region_seconds
        and level is not None
        and loudness[a:b].max() >= level + options.min_region_level_db
    ]
    pad = round(options.pad_seconds / _FRAME_SECONDS)
    runs = _merged([(max(a - pad, 0), min(b + pad, len(speech))) for a, b in runs], 0)
    runs = _split_long(runs, loudness, options.max_region_seconds)
    duration = len(audio) / SAMPLE_RATE
    return [(a * _FRAME_SECONDS, min(b * _FRAME_SECONDS, duration)) for a, b in runs]


def _hysteresis(probabilities: np.ndarray, onset: float, offset: float) -> np.ndarray:
    speech = np.zeros(len(probabilities), dtype=bool)
    active = False
    for index, probability in enumerate(probabilities):
        active = probability >= (offset if active else onset)
        speech[index] = active
    return speech


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges where mask is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _merged(runs: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < max(max_gap, 1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split_long(
    runs: list[tuple[int, int]], loudness: np.ndarray, max_seconds: float
) -> list[tuple[int, int]]:
    """Cuts runs longer than max_seconds at their quietest point between half and all of the limit
    from their start, so only a last piece can be short."""
    limit = int(max_seconds / _FRAME_SECONDS)
    width = max(round(_SPLIT_SMOOTHING_SECONDS / _FRAME_SECONDS), 1)
    smooth = np.convolve(loudness, np.ones(width) / width, mode="same")
    pieces = []
    for start, end in runs:
        while end - start > limit:
            low = start + limit // 2
            cut = low + int(np.argmin(smooth[low : start + limit]))
            pieces.append((start, cut))
            start = cut
        pieces.append((start, end))
    return pieces


# --- voice detection as the audio arrives ---

# Audio that arrives a stretch at a time is heard in chunks of this many frames (2 s), on a fixed grid
# from the song's start, and its regions are settled at each chunk's end: what is found depends only
# on the audio, never on how it arrived.
STREAM_CHUNK_FRAMES = 64
# A region is final once the audio heard reaches this far past its end: a later run cannot merge with
# it (the merge gap and both pads together are 0.7 s).
SETTLE_SECONDS = 1.0


class _Growing:
    """A 1-d numpy array that grows at its end (amortised doubling)."""

    def __init__(self, dtype: type) -> None:
        self._data = np.zeros(1024, dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        if self.size + len(values) > len(self._data):
            grown = np.zeros(max(2 * len(self._data), self.size + len(values)), self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : self.size + len(values)] = values
        self.size += len(values)

    def since(self, start: int) -> np.ndarray:
        return self._data[start : self.size]


class PassageFinder:
    """speech_regions for audio that arrives a stretch at a time: `feed` the samples as they come
    (already brought to their level), `finish` at the end; each returns the regions that became
    final, in order. The voice model's LSTM state and the hysteresis carry over from chunk to chunk;
    frame speech flags and loudness (12 bytes per 32 ms) are all it keeps.

    `level_db` is the level (level_of) of the audio fed in, decided before it (see vocals.StemLevel).
    The regions equal speech_regions' on the same audio with that level, except where a run still
    quiet when its neighbour settled turns loud later (they are not merged then)."""

    def __init__(self, level_db: float | None, options: VadOptions | None = None) -> None:
        self._model = load_vad_model()
        self._options = options or VadOptions()
        self._level = level_db
        self._pending = np.zeros(0, np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._active = False  # the hysteresis' state after the last frame
        self._speech = _Growing(bool)
        self._loudness = _Growing(np.float64)
        self._samples = 0  # samples heard
        self._restart = 0  # the frame the unsettled regions are found from (no speech run crosses it)

    @property
    def heard_seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[tuple[float, float]]:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        found: list[tuple[float, float]] = []
        chunk = STREAM_CHUNK_FRAMES * FRAME
        while len(self._pending) >= chunk:
            self._hear(self._pending[:chunk])
            self._pending = self._pending[chunk:]
            found += self._settle(final=False)
        return found

    def finish(self) -> list[tuple[float, float]]:
        """The regions left once the audio has ended (its last frame padded with silence)."""
        if len(self._pending):
            padded = np.zeros(-(-len(self._pending) // FRAME) * FRAME, np.float32)
            padded[: len(self._pending)] = self._pending
            self._hear(padded, len(self._pending))
            self._pending = np.zeros(0, np.float32)
        return self._settle(final=True)

    def _hear(self, chunk: np.ndarray, samples: int | None = None) -> None:
        """Speech flags and loudness of a whole number of frames."""
        with torch.inference_mode():
            probabilities, self._state = self._model(
                torch.from_numpy(np.concatenate([self._context, chunk])), self._state
            )
        self._context = chunk[-_CONTEXT:].copy()
        speech = np.zeros(len(probabilities), bool)
        for index, probability in enumerate(probabilities.numpy()):
            self._active = bool(
                probability >= (self._options.offset if self._active else self._options.onset)
            )
            speech[index] = self._active
        self._speech.extend(speech)
        rms = np.sqrt(np.mean(chunk.astype(np.float64).reshape(-1, FRAME) ** 2, axis=1))
        self._loudness.extend(20.0 * np.log10(np.maximum(rms, 1e-10)))
        self._samples += len(chunk) if samples is None else samples

    def _settle(self, final: bool) -> list[tuple[float, float]]:
        """The regions (in seconds) found from the restart frame that no later audio can change."""
        options, start = self._options, self._restart
        speech, loudness = self._speech.since(start), self._loudness.since(start)
        if self._level is None:
            return []
        runs = _merged(_runs(speech), round(options.merge_gap_seconds / _FRAME_SECONDS))
        runs = [
            (a, b)
            for a, b in runs
            if (b - a) * _FRAME_SECONDS >= options.min_region_seconds
            and loudness[a:b].max() >= self._level + options.min_region_level_db
        ]
        pad = round(options.pad_seconds / _FRAME_SECONDS)
        runs = _merged([(max(a - pad, 0), min(b + pad, len(speech))) for a, b in runs], 0)
        settle = round(SETTLE_SECONDS / _FRAME_SECONDS)
        limit = int(options.max_region_seconds / _FRAME_SECONDS)
        settled: list[tuple[int, int]] = []
        for run in runs:
            pieces = _split_long([run], loudness, options.max_region_seconds)
            if final or run[1] + settle <= len(speech):
                settled += pieces
                continue
            # A long run still going: the pieces cut off its start are final once the audio heard
            # reaches past where the next cut could fall.
            settled += [p for p in pieces[:-1] if p[0] + limit + settle <= len(speech)]
            break
        if settled:
            self._restart = start + settled[-1][1]
        duration = self._samples / SAMPLE_RATE
        return [
            ((start + a) * _FRAME_SECONDS, min((start + b) * _FRAME_SECONDS, duration)) for a, b in settled
        ]
