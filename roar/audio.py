"""Audio decoding, encoding and resampling shared by the services (numpy in, numpy out).

Audio arrays are float32 shaped (channels, frames).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

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


def decode(data: bytes) -> Decoded:
    """Decodes any format libsndfile reads (wav, flac, ogg, opus, mp3; it trims the MP3 encoder
    delay) and, when ffmpeg is installed, anything ffmpeg reads (m4a, aac, ...)."""
    if not data:
        raise BadInput("the audio file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            audio = f.read(dtype="float32", always_2d=True).T
            decoded = Decoded(np.ascontiguousarray(audio), f.samplerate, f.format)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        decoded = _decode_with_ffmpeg(data, reason=str(exc))
    if decoded.audio.shape[1] == 0:
        raise BadInput("the audio file holds no samples")
    return decoded


def _decode_with_ffmpeg(data: bytes, reason: str) -> Decoded:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BadInput(
            f"could not decode the audio ({reason}); wav, flac, ogg, opus and mp3 are read "
            "directly, other formats such as m4a/aac need ffmpeg installed"
        )
    proc = subprocess.run(
        [ffmpeg, "-v", "error", "-i", "pipe:0", "-f", "wav", "-acodec", "pcm_f32le", "pipe:1"],
        input=data,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BadInput(f"could not decode the audio: {message[-1] if message else reason}")
    # ffmpeg cannot seek back on a pipe, so the RIFF sizes are unset: read the frames raw.
    with sf.SoundFile(io.BytesIO(proc.stdout)) as f:
        audio = f.read(dtype="float32", always_2d=True).T
        return Decoded(np.ascontiguousarray(audio), f.samplerate, "FFMPEG")


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


def probe(path: str) -> tuple[float, int, int, str]:
    """(duration seconds, sample rate, channels, format) from the file's header where libsndfile
    can read it, else by decoding."""
    try:
        info = sf.info(path)
        return info.duration, info.samplerate, info.channels, info.format
    except (sf.LibsndfileError, RuntimeError, TypeError):
        with open(path, "rb") as f:
            decoded = decode(f.read())
        return decoded.duration, decoded.sample_rate, decoded.channels, decoded.format
