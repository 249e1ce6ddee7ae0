"""Audio decoding, encoding and resampling shared by the services (numpy in, numpy out).

Audio arrays are float32 shaped (channels, frames).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
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
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        decoded = _decode_with_ffmpeg(data, reason=str(exc), max_seconds=limit)
    if decoded.audio.shape[1] == 0:
        raise BadInput("the audio file holds no samples")
    return decoded


def _ffmpeg(reason: str) -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BadInput(
            f"could not decode the audio ({reason}); wav, flac, ogg, opus and mp3 are read "
            "directly, other formats such as m4a/aac need ffmpeg installed"
        )
    return ffmpeg


def _ffmpeg_failure(stderr: bytes, reason: str, input_name: str) -> BadInput:
    """The reason ffmpeg gave, without the input's name (a server path must not reach clients)."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    message = lines[-1].removeprefix(f"{input_name}: ") if lines else reason
    return BadInput(f"could not decode the audio: {message}")


def _output_limit(max_seconds: float) -> str:
    """ffmpeg's -t for a decode bounded by max_seconds: just past it, so a longer file shows."""
    return f"{max_seconds + 0.5:.3f}"


def _decode_with_ffmpeg(data: bytes, reason: str, max_seconds: float) -> Decoded:
    proc = subprocess.run(
        [
            *(_ffmpeg(reason), "-v", "error", "-nostdin", "-i", "pipe:0"),
            *("-t", _output_limit(max_seconds), "-f", "wav", "-acodec", "pcm_f32le", "pipe:1"),
        ],
        input=data,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise _ffmpeg_failure(proc.stderr, reason, "pipe:0")
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


def normalise(source: Path, target: Path, max_seconds: float) -> common_pb2.AudioInfo:
    """Checks that an uploaded file decodes and writes it as the FLAC every stage gets: mono or
    stereo (more channels are mixed down to mono), its own sample rate (8-192 kHz, else
    refused), 16 or 24 bits. Reads and writes block by block, so memory stays small whatever
    the file; stops past `max_seconds`. Returns what the upload holds (its own channels, rate,
    duration and format). Raises BadInput for what the pipeline cannot take, OSError when the
    disk is full."""
    try:
        audio_file = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        return _normalise_with_ffmpeg(source, target, max_seconds, reason=str(exc))
    with audio_file:
        return _normalise_open(audio_file, target, max_seconds, audio_file.format)


def _normalise_with_ffmpeg(
    source: Path, target: Path, max_seconds: float, reason: str
) -> common_pb2.AudioInfo:
    """ffmpeg turns the first audio stream into a FLAC (stopping just past the limit), which is
    then normalised like any FLAC."""
    # Beside the source: ffmpeg runs in its directory, with relative names only.
    converted = source.with_name(target.name + ".ffmpeg.flac")
    try:
        proc = subprocess.run(
            [
                *(_ffmpeg(reason), "-v", "error", "-nostdin", "-y", "-i", source.name, "-map", "0:a:0"),
                *("-t", _output_limit(max_seconds), "-c:a", "flac", converted.name),
            ],
            cwd=source.parent,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise _ffmpeg_failure(proc.stderr, reason, source.name)
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


def mono_blocks(
    source: str | Path | BinaryIO,
    to_rate: int,
    max_seconds: float | None = None,
    block_seconds: float = 10.0,
) -> Iterator[np.ndarray]:
    """A file's audio as consecutive blocks of mono float32 at `to_rate` (about `block_seconds`
    each), decoded, mixed down and resampled a block at a time, so memory stays small whatever the
    file's length. Joined, the blocks equal `resample(to_mono(decode(data).audio), rate, to_rate)`
    to float rounding (each block is resampled with enough of its neighbours around it). Reads
    what `decode` reads (ffmpeg converts other formats to a temporary FLAC first); refuses audio
    longer than `max_seconds` (default: ROAR_MAX_AUDIO_MINUTES) from its header. Raises BadInput
    (at the first block) for audio that does not decode, an empty file or one with no samples."""
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    if not isinstance(source, (str, Path)):
        source.seek(0)
    try:
        audio_file = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        yield from _mono_blocks_with_ffmpeg(source, to_rate, limit, block_seconds, reason=str(exc))
        return
    with audio_file:
        yield from _mono_blocks_of(audio_file, to_rate, limit, block_seconds)


def _mono_blocks_with_ffmpeg(
    source: str | Path | BinaryIO, to_rate: int, max_seconds: float, block_seconds: float, reason: str
) -> Iterator[np.ndarray]:
    ffmpeg = _ffmpeg(reason)
    with tempfile.TemporaryDirectory(prefix="roar-decode-") as scratch:
        # ffmpeg reads a file, not a pipe (an MP4 may hold its index at the end), by a relative name
        # (its messages reach clients and must not name server paths).
        encoded = Path(scratch, "input")
        if isinstance(source, (str, Path)):
            encoded.symlink_to(Path(source).resolve())
        else:
            source.seek(0)
            with open(encoded, "wb") as copy:
                shutil.copyfileobj(source, copy)
        converted = Path(scratch, "decoded.flac")
        proc = subprocess.run(
            [
                *(ffmpeg, "-v", "error", "-nostdin", "-y", "-i", encoded.name, "-map", "0:a:0"),
                *("-t", _output_limit(max_seconds), "-c:a", "flac", converted.name),
            ],
            cwd=scratch,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise _ffmpeg_failure(proc.stderr, reason, encoded.name)
        with sf.SoundFile(converted) as audio_file:
            yield from _mono_blocks_of(audio_file, to_rate, max_seconds, block_seconds)


def _mono_blocks_of(
    audio_file: sf.SoundFile, to_rate: int, max_seconds: float, block_seconds: float
) -> Iterator[np.ndarray]:
    rate = audio_file.samplerate
    _check_rate(rate)
    if audio_file.frames > max_seconds * rate:  # from the header: nothing decoded yet
        raise _too_long(audio_file.frames / rate, max_seconds)
    g = gcd(rate, to_rate)
    up, down = to_rate // g, rate // g
    # Output sample j sits at input frame j * down / up, so a stretch that starts at a multiple of
    # `down` input frames starts at a whole output sample. resample_poly's filter reaches
    # 10 * max(up, down) upsampled taps, i.e. that / up input frames, to each side: `context`
    # input frames on each side of a block make its outputs those of the whole-file resample.
    context = down * -(-(10 * max(up, down) // up + 2) // down)
    block = down * max(1, round(block_seconds * rate / down))
    held = np.zeros(0, np.float32)  # mono input frames from `held_from` on
    held_from = 0
    start = 0  # the first input frame of the block to be emitted next
    reads = audio_file.blocks(block, dtype="float32", always_2d=True)
    ended = False
    while True:
        while held_from + len(held) < start + block + context and not ended:
            piece = next(reads, None)
            if piece is None:
                ended = True
            else:
                held = np.concatenate([held, piece.mean(axis=1, dtype=np.float32)])
                if held_from + len(held) > max_seconds * rate:  # a header can lie
                    raise _too_long((held_from + len(held)) / rate, max_seconds)
        lead = start - held_from  # context frames held before the block
        frames = min(block, len(held) - lead)  # the block's own frames
        if frames <= 0:
            if start == 0:
                raise BadInput("the audio file holds no samples")
            return
        if up == down:
            out = held[lead : lead + frames]
        else:
            first, stop = lead * up // down, -(-(lead + frames) * up // down)
            out = resample_poly(held[: lead + frames + context], up, down)[first:stop]
        yield out.astype(np.float32, copy=False)
        start += frames
        cut = max(start - context, 0) - held_from
        held, held_from = held[cut:], held_from + cut
