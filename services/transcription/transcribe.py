"""One transcription job, as the service runs it: a vocals stem in, word-timed lyrics out: the user's
lyrics timed by forced alignment when there are any, else the model's transcription."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from roar.progress import ProgressCallback
from roar.v1 import common_pb2, transcription_pb2
from services.transcription.align import transcript_from_lyrics
from services.transcription.transcriber import Transcriber
from services.transcription.vocals import read_vocals


def transcribe_song(
    vocals: str | Path | BinaryIO,
    options: transcription_pb2.TranscriptionOptions,
    transcriber: Callable[[ProgressCallback], Transcriber],
    progress: ProgressCallback,
) -> common_pb2.Transcript:
    """The words of the vocals stem `vocals` (an audio file: a path or a binary file) with their
    times. `transcriber(progress)` gives the model, loaded on first use (and only when needed: not
    for lyrics the aligner places). The stem is decoded block by block to a temporary file and read
    back a stretch at a time, so memory does not grow with its length. Raises BadInput for audio
    that does not decode."""
    progress(0.0, "decoding the vocals")
    with read_vocals(vocals) as audio:

        def transcribe(progress: ProgressCallback) -> common_pb2.Transcript:
            return transcriber(progress).transcribe(audio, options.language, progress)

        if options.lyrics.strip():
            return transcript_from_lyrics(audio, options.lyrics, options.language, transcribe, progress)
        return transcribe(progress)
