"""Audio decoding, encoding and resampling shared by the services (numpy in, numpy out).

Audio arrays are float32 shaped (channels, frames).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from roar.config import Settings
from roar.errors import BadInput
from roar.v1 import common_pb2

# Audio format name (as in AudioFormat and file extensions) -> (soundfile format, subtype, MIME type).
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
}


# AudioFormat enum value -> format name (a FORMATS key and the file extension).
_FORMAT_NAMES = {
    common_pb2.AUDIO_FORMAT_UNSPECIFIED: "wav",
    common_pb2.AUDIO_FORMAT_WAV: "wav",
    common_pb2.AUDIO_FORMAT_FLAC: "flac",
    common_pb2.AUDIO_FORMAT_MP3: "mp3",
}


def format_name(audio_format: int) -> str:
    """The name and file extension of an AudioFormat value (UNSPECIFIED: wav)."""
    if audio_format not in _FORMAT_NAMES:
        raise BadInput(f"unknown audio format {audio_format}")
    return _FORMAT_NAMES[audio_format]


# Sample rates the pipeline takes; FinishUpload refuses files outside them.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# Frames per block when reading a file piece by piece (bounded memory whatever the length).
BLOCK_FRAMES = 1 << 16
# Source subtypes a 16-bit FLAC holds without loss; anything finer is normalised to 24 bits.
_AT_MOST_16_BITS = {"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "DWVW_12", "DWVW_16", "DPCM_8", "DPCM_16"}
LIMIT_SETTING = "ROAR_MAX_AUDIO_MINUTES"


@dataclass(frozen=True)
class Decoded:
    audio: np.ndarray
    sample_rate: int
    format: str

    @property
    def channels(self) -> int:
        return self.audio.shape[0]

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / self.sample_rate


def max_audio_seconds() -> float:
    """The longest song this process accepts (ROAR_MAX_AUDIO_MINUTES), read like every setting."""
    return Settings.from_env().max_audio_minutes * 60.0


def max_encoded_bytes(max_seconds: float) -> int:
    """The most bytes an encoded song of at most `max_seconds` takes as a stage receives it:
    stereo 24-bit PCM at the highest accepted rate, plus room for FLAC frame headers and
    container headers. Anything larger cannot be a song the pipeline accepts."""
    return int(max_seconds * MAX_SAMPLE_RATE * 2 * 3 * 1.02) + (1 << 20)


def _too_long(seconds: float, max_seconds: float) -> BadInput:
    return BadInput(
        f"the audio lasts more than {seconds / 60:.1f} minutes; this server takes songs of at most "
        f"{max_seconds / 60:g} minutes ({LIMIT_SETTING})"
    )


def refuse_past(frames: int, sample_rate: int, max_seconds: float) -> None:
    """Raises BadInput once a reader has read more than `max_seconds` of audio."""
    if frames > max_seconds * sample_rate:
        raise _too_long(frames / sample_rate, max_seconds)


def _check_rate(sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise BadInput(f"the sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")


def decode(data: bytes, max_seconds: float | None = None) -> Decoded:
    """Decodes any format libsndfile reads (wav, flac, ogg, opus, mp3; it trims the MP3 encoder
    delay) and, when ffmpeg is installed, anything ffmpeg reads (m4a, aac, ...).

    Audio longer than `max_seconds` (default: ROAR_MAX_AUDIO_MINUTES) is refused from its header
    before anything is decoded, and reading never goes past the limit, so a small file that
    claims hours of audio cannot fill the memory."""
    if not data:
        raise BadInput("the audio file is empty")
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_rate(f.samplerate)
            if f.frames > limit * f.samplerate:
                raise _too_long(f.frames / f.samplerate, limit)
            # read() stops at the header's frame count, which is within the limit.
            audio = f.read(dtype="float32", always_2d=True).T
            decoded = Decoded(np.ascontiguousarray(audio), f.samplerate, f.format)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        decoded = _decode_with_ffmpeg(data, max_seconds=limit)
    if decoded.audio.shape[1] == 0:
        raise BadInput("the audio file holds no samples")
    return decoded


# How a file no decoder reads is refused, in plain words: clients put the file's name in front
# ("song.txt is not an audio file Roar can read (...)"). Neither ffmpeg's nor libsndfile's own
# message is passed on: they name decoder internals and server paths.
NOT_AUDIO = "not an audio file Roar can read"
_READABLE = "wav, flac, ogg, opus and mp3 are read directly"


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BadInput(
            f"{NOT_AUDIO} ({_READABLE}; other formats such as m4a/aac need ffmpeg installed on the server)"
        )
    return ffmpeg


def _ffmpeg_failure(stderr: bytes) -> BadInput:
    """Why ffmpeg could not decode a file, in plain words."""
    text = stderr.decode(errors="replace")
    if "matches no streams" in text or "does not contain any stream" in text:
        return BadInput(f"{NOT_AUDIO} (it holds no audio stream)")
    return BadInput(f"{NOT_AUDIO} ({_READABLE}, m4a, aac and most other formats through ffmpeg)")


def _output_limit(max_seconds: float) -> str:
    """ffmpeg's -t for a decode bounded by max_seconds: just past it, so a longer file shows."""
    return f"{max_seconds + 0.5:.3f}"


def _decode_with_ffmpeg(data: bytes, max_seconds: float) -> Decoded:
    proc = subprocess.run(
        [
            *(_ffmpeg(), "-v", "error", "-nostdin", "-i", "pipe:0"),
            *("-t", _output_limit(max_seconds), "-f", "wav", "-acodec", "pcm_f32le", "pipe:1"),
        ],
        input=data,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise _ffmpeg_failure(proc.stderr)
    # ffmpeg cannot seek back on a pipe, so the RIFF sizes are unset: read the frames raw.
    with sf.SoundFile(io.BytesIO(proc.stdout)) as f:
        _check_rate(f.samplerate)
        audio = f.read(dtype="float32", always_2d=True).T
    if audio.shape[1] > max_seconds * f.samplerate:
        raise _too_long(audio.shape[1] / f.samplerate, max_seconds)
    return Decoded(np.ascontiguousarray(audio), f.samplerate, "FFMPEG")


class _DiskWrites(io.RawIOBase):
    """A file for libsndfile to write through that keeps the first OSError (a full disk): an
    exception cannot cross libsndfile's C callbacks, so it is raised again afterwards."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        try:
            return self._file.write(data) or 0
        except OSError as exc:
            self.error = self.error or exc
            return 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


@contextmanager
def flac_writer(
    target: Path, sample_rate: int, channels: int, subtype: str
) -> Iterator[Callable[[np.ndarray], None]]:
    """A FLAC written block by block through `write((frames, channels) float block)`; a full disk
    raises its OSError (libsndfile alone would report a vague error, or none)."""
    with open(target, "wb", buffering=0) as raw:
        disk = _DiskWrites(raw)
        try:
            with sf.SoundFile(disk, "w", sample_rate, channels, subtype, format="FLAC") as out:

                def write(block: np.ndarray) -> None:
                    out.write(block)
                    disk.raise_error()

                yield write
        except sf.LibsndfileError:
            disk.raise_error()  # the real cause, when the disk refused a write
            raise
        disk.raise_error()


def normalise(source: Path, target: Path, max_seconds: float) -> common_pb2.AudioInfo:
    """Checks that an uploaded file decodes and writes it as the FLAC every stage gets: mono or
    stereo (more channels are mixed down to mono), its own sample rate (8-192 kHz, else
    refused), 16 or 24 bits. Reads and writes block by block, so memory stays small whatever
    the file; stops past `max_seconds`. Returns what the upload holds (its own channels, rate,
    duration and format). Raises BadInput for what the pipeline cannot take, OSError when the
    disk is full."""
    try:
        audio_file = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _normalise_with_ffmpeg(source, target, max_seconds)
    with audio_file:
        return _normalise_open(audio_file, target, max_seconds, audio_file.format)


def _normalise_with_ffmpeg(source: Path, target: Path, max_seconds: float) -> common_pb2.AudioInfo:
    """ffmpeg turns the first audio stream into a FLAC (stopping just past the limit), which is
    then normalised like any FLAC."""
    # Beside the source: ffmpeg runs in its directory, with relative names only.
    converted = source.with_name(target.name + ".ffmpeg.flac")
    try:
        proc = subprocess.run(
            [
                *(_ffmpeg(), "-v", "error", "-nostdin", "-y", "-i", source.name, "-map", "0:a:0"),
                *("-t", _output_limit(max_seconds), "-c:a", "flac", converted.name),
            ],
            cwd=source.parent,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise _ffmpeg_failure(proc.stderr)
        with sf.SoundFile(converted) as audio_file:
            return _normalise_open(audio_file, target, max_seconds, "FFMPEG")
    finally:
        converted.unlink(missing_ok=True)


def _normalise_open(
    audio_file: sf.SoundFile, target: Path, max_seconds: float, fmt: str
) -> common_pb2.AudioInfo:
    rate, channels = audio_file.samplerate, audio_file.channels
    _check_rate(rate)
    max_frames = int(max_seconds * rate)
    if audio_file.frames > max_frames:  # from the header: nothing decoded yet
        raise _too_long(audio_file.frames / rate, max_seconds)
    subtype = "PCM_16" if audio_file.subtype in _AT_MOST_16_BITS else "PCM_24"
    frames = 0
    with open(target, "wb", buffering=0) as raw:
        disk = _DiskWrites(raw)
        try:
            out_channels = channels if channels <= 2 else 1
            with sf.SoundFile(disk, "w", rate, out_channels, subtype, format="FLAC") as out:
                for block in audio_file.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                    frames += len(block)
                    if frames > max_frames:
                        raise _too_long(frames / rate, max_seconds)
                    if channels > 2:
                        block = block.mean(axis=1, keepdims=True)
                    out.write(np.clip(block, -1.0, 1.0))
                    disk.raise_error()
        except sf.LibsndfileError:
            disk.raise_error()  # the real cause, when the disk refused a write
            raise
        disk.raise_error()
    if frames == 0:
        raise BadInput("the audio file holds no samples")
    return common_pb2.AudioInfo(
        duration_seconds=frames / rate, sample_rate=rate, channels=channels, format=fmt
    )


def encode(audio: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encodes (channels, frames) float audio; samples beyond [-1, 1] are clipped."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown audio format {fmt!r}; use one of {', '.join(FORMATS)}")
    container, subtype, _ = FORMATS[fmt]
    buffer = io.BytesIO()
    clipped = np.clip(audio, -1.0, 1.0).T
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    if ext in FORMATS:
        return FORMATS[ext][2]
    return {
        "lrc": "text/plain",
        "elrc": "text/plain",
        "ass": "text/x-ssa",
        "vtt": "text/vtt",
        "json": "application/json",
        "mp4": "video/mp4",
    }.get(ext, "application/octet-stream")


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (no torchaudio needed)."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    g = gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // g, from_rate // g, axis=-1).astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Up- or down-mixes to the channel count a model expects."""
    if audio.shape[0] == channels:
        return audio
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    raise BadInput(f"cannot map {audio.shape[0]} channels to {channels}")


def resample_blocks(blocks: Iterable[np.ndarray], from_rate: int, to_rate: int) -> Iterator[np.ndarray]:
    """`resample` for audio that arrives as (channels, frames) blocks: yields the resampled audio
    in blocks, holding only a block and the filter's reach in memory. Each piece is resampled with
    enough input on both sides for the polyphase filter, so the joins equal one `resample` of the
    whole signal (to float rounding, about 1e-7) and the output is always the same for the same input."""
    if from_rate == to_rate:
        for block in blocks:
            yield block.astype(np.float32, copy=False)
        return
    g = gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    # resample_poly's filter has 10 * max(up, down) taps each side at the upsampled rate; in input
    # frames, rounded up to whole multiples of `down` so that every piece starts on an input frame
    # that falls exactly on an output frame.
    reach = -(-(10 * max(up, down) // up + 2) // down) * down
    pending: np.ndarray | None = None
    pending_start = 0  # the input frame pending[:, 0] is
    emitted = 0  # output frames yielded so far
    for block in blocks:
        pending = block if pending is None else np.concatenate([pending, block], axis=1)
        # Output frames whose filter input lies wholly within what has arrived.
        ready = max(0, (pending_start + pending.shape[1] - reach) * up // down)
        if ready - emitted < BLOCK_FRAMES:
            continue
        yield _resampled_piece(pending, pending_start, emitted, ready, up, down)
        emitted = ready
        # Keep the input the next piece's first output frames reach back to.
        keep_from = max(0, (emitted * down // up - reach) // down * down)
        pending = pending[:, keep_from - pending_start :]
        pending_start = keep_from
    if pending is None:
        return
    total = -(-(pending_start + pending.shape[1]) * up // down)
    if total > emitted:
        yield _resampled_piece(pending, pending_start, emitted, total, up, down)


def _resampled_piece(
    pending: np.ndarray, pending_start: int, first: int, end: int, up: int, down: int
) -> np.ndarray:
    """Output frames [first, end) from input that starts at pending_start (a multiple of down)."""
    offset = pending_start * up // down
    piece = resample_poly(pending, up, down, axis=-1)
    return piece[:, first - offset : end - offset].astype(np.float32)


@contextmanager
def open_audio(
    path: Path, scratch: Path, max_seconds: float | None = None
) -> Iterator[tuple[sf.SoundFile, str]]:
    """The audio file at `path` opened for block reads, with the name of its format. Formats
    libsndfile cannot read go through ffmpeg into a temporary FLAC in the directory `scratch`
    first (on disk, never in memory; stopped just past the limit). Refuses a rate outside
    8-192 kHz and, from the header, audio longer than `max_seconds` (default:
    ROAR_MAX_AUDIO_MINUTES); readers must still count what they read, as a header can lie."""
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    converted: Path | None = None
    try:
        try:
            audio_file = sf.SoundFile(path)
            fmt = audio_file.format
        except (sf.LibsndfileError, RuntimeError, TypeError):
            converted = scratch / "ffmpeg.flac"
            _convert_with_ffmpeg(path, converted, limit)
            audio_file, fmt = sf.SoundFile(converted), "FFMPEG"
        with audio_file:
            _check_rate(audio_file.samplerate)
            if audio_file.frames > limit * audio_file.samplerate:
                raise _too_long(audio_file.frames / audio_file.samplerate, limit)
            yield audio_file, fmt
    finally:
        if converted is not None:
            converted.unlink(missing_ok=True)


def _convert_with_ffmpeg(source: Path, target: Path, max_seconds: float) -> None:
    """ffmpeg's first audio stream of source as a FLAC at target (24 bits, its own rate)."""
    # Run in the target's directory with a relative output name; the input's name is taken out
    # of ffmpeg's message, so no server path reaches a client.
    proc = subprocess.run(
        [
            *(_ffmpeg(), "-v", "error", "-nostdin", "-y", "-i", str(source), "-map", "0:a:0"),
            *("-t", _output_limit(max_seconds), "-c:a", "flac", "-sample_fmt", "s32", target.name),
        ],
        cwd=target.parent,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise _ffmpeg_failure(proc.stderr)


def mono_blocks(
    source: str | Path | BinaryIO,
    to_rate: int,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """A file's audio as consecutive blocks of mono float32 at `to_rate`, decoded, mixed down and
    resampled a block at a time (`open_audio`, `resample_blocks`), so memory stays small whatever
    the file's length. Joined, the blocks equal `resample(to_mono(decode(data).audio), rate,
    to_rate)`. Refuses audio longer than `max_seconds` (default: ROAR_MAX_AUDIO_MINUTES); raises
    BadInput (at the first block) for audio that does not decode or holds no samples."""
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    with tempfile.TemporaryDirectory(prefix="roar-decode-") as scratch:
        if isinstance(source, (str, Path)):
            path = Path(source)
        else:  # a file object: libsndfile and ffmpeg both read it from disk
            path = Path(scratch, "input")
            source.seek(0)
            with open(path, "wb") as copy:
                shutil.copyfileobj(source, copy)
        with open_audio(path, Path(scratch), limit) as (audio_file, _):
            rate = audio_file.samplerate
            read = 0

            def mono() -> Iterator[np.ndarray]:
                nonlocal read
                for block in audio_file.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                    read += len(block)
                    refuse_past(read, rate, limit)  # a header can lie
                    yield block.mean(axis=1, dtype=np.float32)[None]

            for piece in resample_blocks(mono(), rate, to_rate):
                yield piece[0]
            if read == 0:
                raise BadInput("the audio file holds no samples")
