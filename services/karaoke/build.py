"""The karaoke stage: lyric files plus the instrumental in the requested format."""

from __future__ import annotations

import math

from roar import audio
from roar.errors import BadInput
from roar.progress import ProgressCallback, no_progress
from roar.v1 import common_pb2, karaoke_pb2
from services.karaoke.formats import writers
from services.karaoke.lyrics import karaoke_lines

# Containers soundfile reports for files that are already in a format, so they pass through
# unchanged (WAVEX: WAV with the extensible header).
_SAME_CONTAINER = {"wav": {"WAV", "WAVEX"}, "flac": {"FLAC"}, "mp3": {"MP3"}}
# Latest time a transcript may give, in seconds (a week): far past any song, and small enough
# that every time stamp format writes it in a few characters.
MAX_TIME_SECONDS = 7 * 24 * 3600.0


def build_karaoke(
    options: karaoke_pb2.KaraokeOptions, instrumental: bytes, progress: ProgressCallback = no_progress
) -> dict[str, bytes]:
    """File name -> contents: the requested lyric files (none requested: all) and
    `instrumental.<wav|flac|mp3>`. Raises BadInput for undecodable audio or unknown formats."""
    extension = audio.format_name(options.instrumental_format)
    file_writers = writers(options.formats)
    _check_times(options.transcript)

    progress(0.0, "decoding the instrumental")
    decoded = audio.decode(instrumental)
    progress(20.0, "timing the lyrics")
    lines = karaoke_lines(options.transcript)
    progress(40.0, "writing the lyric files")
    files = {name: write(lines, options.title).encode() for name, write in file_writers.items()}
    if decoded.format in _SAME_CONTAINER[extension]:
        files[f"instrumental.{extension}"] = instrumental
    else:
        progress(50.0, f"encoding the instrumental as {extension}")
        files[f"instrumental.{extension}"] = audio.encode(decoded.audio, decoded.sample_rate, extension)
    progress(100.0, "karaoke files ready")
    return files


def _check_times(transcript: common_pb2.Transcript) -> None:
    """Every segment and word time a finite number of seconds within 0..MAX_TIME_SECONDS."""
    for segment in transcript.segments:
        times = [segment.start, segment.end, *(t for w in segment.words for t in (w.start, w.end))]
        if not all(math.isfinite(t) and 0.0 <= t <= MAX_TIME_SECONDS for t in times):
            raise BadInput(
                f"the transcript's times must be finite numbers of seconds from 0 to {MAX_TIME_SECONDS:g}"
            )
