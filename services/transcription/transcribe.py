"""One transcription job, as the service runs it: a vocals stem in, as it arrives, word-timed lyrics
out: the user's lyrics timed by forced alignment when there are any, else the model's transcription.

The stem arrives a block at a time (decoded from a file, or raw samples as the separation makes
them) and goes to disk (vocals.VocalsFile). Once its level is known (vocals.StemLevel: from its
first LEVEL_SECONDS of sound), voice detection hears it as it comes (vad.PassageFinder), the passages
it settles are packed into windows (windows.WindowPacker), and each window is transcribed as soon as
it is closed and handed out as a Passage (windows.SongWindows). All of it depends on the samples
only, never on how they arrived, so a call resumed with the passages an earlier one sent skips
their windows and ends with the same transcript."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing

import numpy as np

from roar.audio import max_audio_seconds
from roar.errors import BadInput
from roar.progress import ProgressCallback, check_cancelled, scaled
from roar.v1 import common_pb2, transcription_pb2
from services.transcription import vad
from services.transcription.align import TRANSCRIBE_SHARE, transcript_from_lyrics
from services.transcription.transcriber import Transcriber
from services.transcription.vocals import StemLevel, VocalsFile
from services.transcription.windows import (
    MAX_STATE_BYTES,
    SongWindows,
    TranscriptionOptions,
    WindowPacker,
)

# Progress is reported at most this often while the audio is read and heard (window reports come too).
REPORT_SECONDS = 0.5
# A done passage holds at most this many words (more than 30 s of any singing) of at most this many
# characters; a song has at most one passage a second.
MAX_PASSAGE_WORDS = 1000
MAX_WORD_CHARS = 200


def check_done(done: Sequence[transcription_pb2.Passage]) -> None:
    """Refuses (BadInput) passages no earlier call of this service can have sent: out of order,
    times that are not times, too many or too large."""
    if len(done) > max_audio_seconds():
        raise BadInput(f"{len(done)} done passages are more than any song this service takes has")
    end = 0.0
    for index, passage in enumerate(done):
        times = [passage.start, passage.end, *(t for w in passage.words for t in (w.start, w.end))]
        if passage.index != index:
            raise BadInput(f"done passage {index} carries index {passage.index}: they go in order from 0")
        if not all(math.isfinite(t) and t >= 0.0 for t in times) or not end <= passage.start <= passage.end:
            raise BadInput(f"done passage {index} has times that are not in order within the song")
        if len(passage.words) > MAX_PASSAGE_WORDS or any(len(w.text) > MAX_WORD_CHARS for w in passage.words):
            raise BadInput(f"done passage {index} holds more words, or longer ones, than a passage can")
        if len(passage.state) > MAX_STATE_BYTES:
            raise BadInput(f"done passage {index}'s state is larger than this service writes")
        end = passage.end


class _Report:
    """Progress while the stem is still arriving: the share of the audio received so far that is
    transcribed (or holds no singing), as the service cannot know the song's length before its end."""

    def __init__(self, progress: ProgressCallback, audio: VocalsFile) -> None:
        self._progress = progress
        self._audio = audio
        self._reported = 0.0
        self._percent = 0.0
        self.ended = False  # the whole stem has arrived
        self.seconds = 0.0  # transcribed up to here
        self.message = "reading the vocals"

    def __call__(self, seconds: float | None = None, message: str | None = None, force: bool = True) -> None:
        if seconds is not None:
            self.seconds = seconds
        if message is not None:
            self.message = message
        now = time.monotonic()
        if not force and now - self._reported < REPORT_SECONDS:
            return
        self._reported = now
        received = len(self._audio) / vad.SAMPLE_RATE
        done = min(self.seconds, received)
        where = f"{done:.0f} of {received:.0f} s" + ("" if self.ended else " received so far")
        self._percent = 100.0 * done / received if received else 0.0
        self._progress(self._percent, f"{self.message} ({where})")

    def position(self, seconds: float, message: str) -> None:
        self(seconds, message)

    def loading(self, percent: float, message: str = "") -> None:
        """The model loader's reports, as they are."""
        self._progress(self._percent, message)


def transcribe_song(
    blocks: Iterator[np.ndarray],
    options: transcription_pb2.TranscriptionOptions,
    transcriber: Callable[[ProgressCallback], Transcriber],
    progress: ProgressCallback,
    publish: Callable[[transcription_pb2.Passage], None] = lambda passage: None,
    model_name: str = "",
) -> common_pb2.Transcript:
    """The words of a vocals stem that arrives as `blocks` of mono float32 at 16 kHz (roar.audio.
    mono_blocks of a file, or vocals.pcm_blocks of raw samples), with their times. Each window
    transcribed goes to `publish` as soon as it is done; windows of options.done are not transcribed
    again. `transcriber(progress)` gives the model, loaded on first use. Percent is of the audio
    received so far until the stem ends. Raises BadInput for audio that does not decode and for
    done passages that are not this audio's."""
    check_done(options.done)
    lyrics = bool(options.lyrics.strip())
    transcribing = scaled(progress, 0.0, TRANSCRIBE_SHARE) if lyrics else progress
    with VocalsFile.spooled() as audio, closing(blocks):  # the reader stops at once when cancelled
        report = _Report(transcribing, audio)
        report(0.0)
        loaded: list[Transcriber] = []

        def backend() -> Transcriber:
            if not loaded:
                loaded.append(transcriber(report.loading))
            return loaded[0]

        if not lyrics:  # a model that cannot load fails the call at once (with lyrics the aligner goes on)
            backend()

        song = SongWindows(
            backend,
            audio,
            options.language,
            TranscriptionOptions(),
            options.done,
            publish,
            report.position,
            tolerate_failures=lyrics,
        )
        packer = WindowPacker(TranscriptionOptions())
        level = StemLevel()
        finder: vad.PassageFinder | None = None
        heard = 0  # samples given to the finder

        def hear(spans: list[tuple[float, float]], heard_seconds: float) -> None:
            for span in spans:
                if (closed := packer.add(span)) is not None:
                    song.add(closed, heard_seconds)

        def start_hearing() -> vad.PassageFinder:
            stem = level.decide(audio)
            audio.gain = stem.gain
            return vad.PassageFinder(stem.heard_level_db)

        chunk = vad.STREAM_CHUNK_FRAMES * vad.FRAME
        for block in blocks:
            check_cancelled()
            audio.append(block)
            if finder is None:
                level.add(block)
                if level.frames is not None:
                    finder = start_hearing()
            while finder is not None and heard < len(audio):
                piece = audio[heard : min(heard + chunk, len(audio))]
                heard += len(piece)
                hear(finder.feed(piece), finder.heard_seconds)
            if finder is not None:  # all is transcribed up to the window still open, or what was heard
                report.seconds = packer.open.passages[0][0] if packer.open else finder.heard_seconds
            report(force=False)
        report.ended = True
        if finder is None:
            finder = start_hearing()
        for start in range(heard, len(audio), chunk):
            hear(finder.feed(audio[start : start + chunk]), finder.heard_seconds)
        duration = len(audio) / vad.SAMPLE_RATE
        hear(finder.finish(), duration)
        if (last := packer.close()) is not None:
            song.add(last, duration)
        if song.passages < len(options.done):
            raise BadInput(f"{len(options.done)} done passages, but this audio has {song.passages} windows")
        report(duration, f"transcribed {packer.passages} segments")
        transcript = song.transcript()
        if lyrics:
            lyrics_text, language = options.lyrics, options.language
            return transcript_from_lyrics(
                audio, lyrics_text, language, lambda _: transcript, progress, judge=song.judge
            )
        transcript.model = transcript.model or model_name or backend().name
        return transcript
