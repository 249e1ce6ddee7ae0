"""One separation job: song bytes in, encoded stems out (vocals, the karaoke instrumental and,
on request, every source of the model)."""

from __future__ import annotations

from dataclasses import dataclass

from roar.audio import FORMATS, decode, encode, match_channels, resample
from roar.errors import BadInput
from roar.progress import ProgressCallback, scaled
from roar.v1 import common_pb2
from services.separation.separator import Separator

# Percent ranges of the job's phases: decoding and resampling are quick, the model is not.
SEPARATION_START = 2.0
SEPARATION_END = 94.0
ENCODING_START = 95.0


@dataclass(frozen=True)
class SeparationOutput:
    # File name ("vocals.wav") -> encoded audio, in the order they are sent.
    stems: dict[str, bytes]
    input: common_pb2.AudioInfo


def separate_song(
    separator: Separator, data: bytes, all_stems: bool, fmt: str, progress: ProgressCallback
) -> SeparationOutput:
    if fmt not in FORMATS:  # before the expensive part
        raise BadInput(f"unknown audio format {fmt!r}; use one of {', '.join(FORMATS)}")
    progress(0.0, "decoding the audio")
    decoded = decode(data)
    info = common_pb2.AudioInfo(
        duration_seconds=decoded.duration,
        sample_rate=decoded.sample_rate,
        channels=decoded.channels,
        format=decoded.format,
    )
    mix = match_channels(decoded.audio, separator.channels)
    if decoded.sample_rate != separator.sample_rate:
        progress(1.0, f"resampling {decoded.sample_rate} Hz to {separator.sample_rate} Hz")
        mix = resample(mix, decoded.sample_rate, separator.sample_rate)
    frames = mix.shape[1]

    sources = separator.separate(mix, scaled(progress, SEPARATION_START, SEPARATION_END))
    # Every stem lasts exactly as long as the input, whatever padding a backend keeps.
    sources = {name: audio[:, :frames] for name, audio in sources.items()}
    stems = {
        "vocals": sources["vocals"],
        "instrumental": sum(audio for name, audio in sources.items() if name != "vocals"),
    }
    if all_stems:
        stems.update(sources)

    encoded = {}
    for i, (name, audio) in enumerate(stems.items()):
        file_name = f"{name}.{fmt}"
        progress(ENCODING_START + (100.0 - ENCODING_START) * i / len(stems), f"encoding {file_name}")
        encoded[file_name] = encode(audio, separator.sample_rate, fmt)
    progress(100.0, f"separated into {len(encoded)} stems")
    return SeparationOutput(stems=encoded, input=info)
