"""The karaoke stage: lyric files plus the instrumental in the requested format."""

from __future__ import annotations

from roar import audio
from roar.progress import ProgressCallback, no_progress
from roar.v1 import karaoke_pb2
from services.karaoke.formats import writers
from services.karaoke.lyrics import karaoke_lines

# Containers soundfile reports for files that are already in a format, so they pass through
# unchanged (WAVEX: WAV with the extensible header).
_SAME_CONTAINER = {"wav": {"WAV", "WAVEX"}, "flac": {"FLAC"}, "mp3": {"MP3"}}


def build_karaoke(
    options: karaoke_pb2.KaraokeOptions, instrumental: bytes, progress: ProgressCallback = no_progress
) -> dict[str, bytes]:
    """File name -> contents: the requested lyric files (none requested: all) and
    `instrumental.<wav|flac|mp3>`. Raises BadInput for undecodable audio or unknown formats."""
    extension = audio.format_name(options.instrumental_format)
    file_writers = writers(options.formats)

    progress(0.0, "decoding the instrumental")
    decoded = audio.decode(instrumental)
    progress(20.0, "timing the lyrics")
    lines = karaoke_lines(options.transcript, options.lyrics, decoded.duration)
    progress(40.0, "writing the lyric files")
    files = {name: write(lines, options.title).encode() for name, write in file_writers.items()}
    if decoded.format in _SAME_CONTAINER[extension]:
        files[f"instrumental.{extension}"] = instrumental
    else:
        progress(50.0, f"encoding the instrumental as {extension}")
        files[f"instrumental.{extension}"] = audio.encode(decoded.audio, decoded.sample_rate, extension)
    progress(100.0, "karaoke files ready")
    return files
