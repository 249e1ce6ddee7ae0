"""The karaoke stage: the lyric files of a song from its transcript and its duration."""

from __future__ import annotations

import math

from roar.errors import BadInput
from roar.progress import ProgressCallback, no_progress
from roar.v1 import common_pb2, karaoke_pb2
from services.karaoke.formats import writers
from services.karaoke.lyrics import karaoke_lines

# Latest time a transcript may give, in seconds (a week): far past any song, and small enough
# that every time stamp format writes it in a few characters.
MAX_TIME_SECONDS = 7 * 24 * 3600.0


def build_karaoke(
    options: karaoke_pb2.KaraokeOptions, progress: ProgressCallback = no_progress
) -> dict[str, bytes]:
    """File name -> contents: the requested lyric files (none requested: all). Raises BadInput
    for times out of range or unknown formats."""
    file_writers = writers(options.formats)
    _check_times(options.transcript)
    duration = options.duration_seconds
    if not (math.isfinite(duration) and 0.0 <= duration <= MAX_TIME_SECONDS):
        raise BadInput(
            f"duration_seconds must be a finite number of seconds from 0 (unknown) to {MAX_TIME_SECONDS:g}"
        )
    progress(0.0, "timing the lyrics")
    lines = karaoke_lines(options.transcript)
    if duration > 0:
        _end_by(lines, duration)
    progress(40.0, "writing the lyric files")
    files = {name: write(lines, options.title).encode() for name, write in file_writers.items()}
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


def _end_by(lines: list[common_pb2.Segment], duration: float) -> None:
    """No line or word reaches past the song's end (a cue after it would never show)."""
    for line in lines:
        line.start, line.end = min(line.start, duration), min(line.end, duration)
        for word in line.words:
            word.start, word.end = min(word.start, duration), min(word.end, duration)
