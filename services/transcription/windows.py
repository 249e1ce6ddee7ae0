"""The window loop every transcription backend shares: voice activity detection finds the passages
of singing, which are packed into windows of at most 30 s (the most Whisper's and Gemma 3n's audio
encoders hear) with a short silence before each passage in place of the stretch between passages.
So a model never hears the long silences between lines (which end Whisper's decoding early) nor the
band's bleed in them, yet hears several lines together; no text of an earlier window conditions the
next. A backend turns one window into words; the loop maps their times back to the audio, reports
progress and groups the words into lines.

Windows are packed and transcribed as the passages are found (WindowPacker, SongWindows): a window is
closed once the next passage does not fit in it, or the audio has ended, so the service transcribes a
song while it still arrives, and each window transcribed is a checkpoint (a Passage) to resume from."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import torch
from transformers import StoppingCriteria

from roar.errors import BadInput, Cancelled
from roar.progress import ProgressCallback, check_cancelled, no_progress, scaled
from roar.v1 import common_pb2, transcription_pb2
from services.transcription import vad
from services.transcription.cleanup import group_lines

log = logging.getLogger("roar.transcription")
_T = TypeVar("_T")

SAMPLE_RATE = vad.SAMPLE_RATE
# Progress is reported at least this often (seconds of compute) while a window decodes.
PROGRESS_SECONDS = 1.0


class TokenBudget(StoppingCriteria):
    """The tokens all the decodings of a window may write together: decoding stops, keeping what
    it wrote, once they are spent. Reports progress (the share of the budget spent) every
    PROGRESS_SECONDS while decoding."""

    def __init__(self, tokens: int, progress: ProgressCallback = no_progress) -> None:
        self.total = self.left = tokens
        self.cut_short = False  # whether it stopped a decoding
        self._progress = progress
        self._reported = time.monotonic()
        self.message = ""

    def charge(self, tokens: int) -> None:
        self.left -= tokens
        self.report()

    def report(self) -> None:
        self._reported = time.monotonic()
        spent = min(max(self.total - self.left, 0), self.total)
        self._progress(100.0 * spent / max(self.total, 1), self.message)

    def tick(self) -> None:
        """Reports progress if PROGRESS_SECONDS passed since the last report."""
        if time.monotonic() - self._reported >= PROGRESS_SECONDS:
            self.report()

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        self.left -= input_ids.shape[0]  # called once per decoding step: a new token for each beam
        self.cut_short = self.left <= 0
        self.tick()
        return torch.full((input_ids.shape[0],), self.cut_short, dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class TranscriptionOptions:
    """How the passages are packed into windows and how a window's decodings are judged (the
    judging thresholds are openai-whisper's, as faster-whisper's TranscriptionOptions has them)."""

    # The models hear at most this much at once...
    window_seconds: float = 30.0
    # ...with this much silence before each passage and after the last. (On the synthetic songs'
    # separated vocals whisper-tiny.en made 28 % word errors so, 39 % hearing each passage alone, 31 %
    # hearing the whole song in 30 s windows; 0.3 s to 0.7 s all did as well, 1 s set off more loops.)
    pack_gap_seconds: float = 0.5
    # A window whose text compresses better than this is a loop, and one whose tokens average a
    # lower log-probability than this a poor guess: either is decoded again at the next temperature.
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    # A window the model gives this probability of holding no speech, and whose text is a poor
    # guess, is dropped at once.
    no_speech_threshold: float = 0.6
    # Greedy first, then sampling at each of these in turn until a decoding passes.
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # Greedy (1 beam): beam search cost five times the compute and copied the encoder's cache at every
    # step; on an instrumental clip one window took minutes.
    num_beams: int = 1
    # A decoding stops after this many tokens per second of the window's audio (more than anyone
    # sings), so that a model caught in a loop stops soon...
    max_tokens_per_second: float = 12.0
    min_new_tokens: int = 16
    # ...and all the decodings of a window together, fallbacks included, after this many times as
    # many (each charged attempt_tokens up front for its encoder pass): the fallbacks stop once it is
    # spent, and the best decoding so far stands.
    decoding_budget: float = 2.0
    attempt_tokens: int = 48
    # The whole input's decodings, in the same tokens, may cost this many per second of the input:
    # what its windows leave unspent pays for hearing poor windows again in halves, and no more.
    # (Measured on this CPU, a token costs about 20 ms of tiny.en: this keeps a song well under its
    # duration, which the first decoding of every window alone may pass on a short input.)
    song_tokens_per_second: float = 24.0


@dataclass(frozen=True)
class Window:
    """Passages of the audio packed into one model input, each after `gap` seconds of silence."""

    passages: tuple[tuple[float, float], ...]  # (start, end) in the audio, in order
    first: int  # the index of the first passage among all of the audio's
    gap: float

    @property
    def offsets(self) -> list[float]:
        """Where each passage starts in the window, in seconds."""
        offsets, position = [], 0.0
        for start, end in self.passages:
            position += self.gap
            offsets.append(position)
            position += end - start
        return offsets

    @property
    def duration(self) -> float:
        """Up to the end of the last passage."""
        return self.offsets[-1] + self.passages[-1][1] - self.passages[-1][0]

    def samples(self, audio: vad.Samples) -> np.ndarray:
        silence = np.zeros(round(self.gap * SAMPLE_RATE), np.float32)
        parts = [silence]
        for start, end in self.passages:
            parts += [audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)], silence]
        return np.concatenate(parts)

    def audio_times(self, start: float, end: float) -> tuple[float, float]:
        """The times in the audio of a word heard from `start` to `end` (seconds) in the window. A
        word heard in the silence before a passage starts with it; a word ends in the passage it
        starts in."""
        for (passage_start, passage_end), offset in zip(self.passages, self.offsets, strict=True):
            length = passage_end - passage_start
            if start < offset + length:
                word_start = passage_start + max(start - offset, 0.0)
                return word_start, max(passage_start + min(end - offset, length), word_start)
        return self.passages[-1][1], self.passages[-1][1]


class WindowPacker:
    """Packs passages, given in order as they are found, into windows as `windows` does, and hands
    back each window as soon as it is closed: when the next passage does not fit in it, or at the
    end of the audio."""

    def __init__(self, options: TranscriptionOptions | None = None) -> None:
        self._options = options or TranscriptionOptions()
        self.open: Window | None = None  # the window passages are still added to
        self._count = 0

    def add(self, span: tuple[float, float]) -> Window | None:
        """Adds the next passage; returns the window it closed, if any."""
        index, self._count = self._count, self._count + 1
        gap = self._options.pack_gap_seconds
        if self.open is not None:
            candidate = Window((*self.open.passages, span), self.open.first, gap)
            if candidate.duration + gap <= self._options.window_seconds:
                self.open = candidate
                return None
        closed, self.open = self.open, Window((span,), index, gap)
        return closed

    @property
    def passages(self) -> int:
        """Passages added so far."""
        return self._count

    def close(self) -> Window | None:
        """The last window, at the end of the audio."""
        closed, self.open = self.open, None
        return closed


def windows(spans: list[tuple[float, float]], options: TranscriptionOptions | None = None) -> list[Window]:
    """The passages, in order, packed into as few windows of at most window_seconds as go."""
    packer = WindowPacker(options)
    packed = [closed for span in spans if (closed := packer.add(span)) is not None]
    last = packer.close()
    return packed if last is None else [*packed, last]


def window_message(window: Window) -> str:
    """The progress message for a window: "transcribing segment 3", or "segments 3-5"."""
    first, last = window.first + 1, window.first + len(window.passages)
    return f"transcribing segment {first}" if first == last else f"transcribing segments {first}-{last}"


@dataclass
class WindowWords:
    """What a backend heard in one window: its words with times in the window, and the scores of the
    decoding that stands (as faster-whisper's Segment keeps them; NaN where a backend has none)."""

    words: list[common_pb2.Word] = field(default_factory=list)
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    compression_ratio: float = float("nan")
    temperature: float = float("nan")
    dropped: str = ""  # why its words were dropped: "no speech", "poor", "loop"; empty when kept
    tokens: int = 0  # what its decodings cost, in TokenBudget's tokens


class Backend(Protocol):
    name: str

    def language_for(self, language: str) -> str:
        """The language to transcribe in for a requested ISO 639-1 code ("": detect it). Raises
        BadInput for one the model does not know."""
        ...

    def detect_language(self, samples: np.ndarray) -> str:
        """The ISO 639-1 code of the language sung in a window's samples ("" when unknown)."""
        ...

    def window_words(
        self,
        samples: np.ndarray,
        window: Window,
        language: str,
        progress: ProgressCallback,
        max_tokens: int | None = None,
    ) -> WindowWords:
        """The words heard in a window's samples, with times in the window (seconds), in order.
        `progress(0..100, message)` reports the work inside the window; its decodings cost no more
        than `max_tokens` when given."""
        ...

    def text_logprobs(self, samples: np.ndarray, texts: list[str], language: str) -> list[float] | None:
        """The mean log-probability per token the model gives each text as the words sung in
        `samples` (up to 30 s); None when it cannot judge a given text."""
        ...


@dataclass
class WindowResult:
    window: Window
    heard: WindowWords


@dataclass
class _SongBudget:
    tokens: int  # left to spend


def _heard_in(
    backend: Backend,
    audio: vad.Samples,
    window: Window,
    language: str,
    progress: ProgressCallback,
    song: _SongBudget,
    options: TranscriptionOptions,
    max_tokens: int | None = None,
) -> list[tuple[Window, WindowWords]]:
    """What the backend hears in a window. A window of several passages that it hears only as a
    poor guess is heard again as two windows, each half of its passages, and so on, while the
    song's budget lasts: one passage of bleed or mumbling then costs only itself, not the lines
    packed with it. (Progress: the window 0-50 %, its halves 50-75 % and 75-100 %.)"""
    splittable = len(window.passages) > 1
    heard = backend.window_words(
        window.samples(audio),
        window,
        language,
        scaled(progress, 0.0, 50.0) if splittable else progress,
        max_tokens,
    )
    song.tokens -= heard.tokens
    halves_cost = 2 * (options.attempt_tokens + options.min_new_tokens)
    if heard.dropped != "poor" or not splittable or song.tokens < halves_cost:
        return [(window, heard)]
    half = len(window.passages) // 2
    first = Window(window.passages[:half], window.first, window.gap)
    second = Window(window.passages[half:], window.first + half, window.gap)
    heard_first = _heard_in(
        backend, audio, first, language, scaled(progress, 50.0, 75.0), song, options, song.tokens // 2
    )
    if song.tokens < halves_cost // 2:
        return [*heard_first, (second, WindowWords(dropped="poor"))]
    return [
        *heard_first,
        *_heard_in(
            backend, audio, second, language, scaled(progress, 75.0, 100.0), song, options, song.tokens
        ),
    ]


# What a Passage's state may hold, at most (it is JSON: {"tokens": N, "language": "en"}).
MAX_STATE_BYTES = 256


@dataclass(frozen=True)
class PassageState:
    """What resuming after a transcribed window needs besides its words: what its decodings cost
    (the song's budget goes on from there) and the language the song is transcribed in."""

    tokens: int
    language: str

    def encode(self) -> bytes:
        return json.dumps({"tokens": self.tokens, "language": self.language}).encode()

    @classmethod
    def decode(cls, data: bytes) -> PassageState:
        """Raises BadInput for state this service did not write."""
        try:
            fields = json.loads(data.decode()) if len(data) <= MAX_STATE_BYTES else None
        except (UnicodeDecodeError, ValueError):
            fields = None
        if (
            not isinstance(fields, dict)
            or set(fields) != {"tokens", "language"}
            or not isinstance(fields["tokens"], int)
            or fields["tokens"] < 0
            or not isinstance(fields["language"], str)
            or len(fields["language"]) > 8
        ):
            raise BadInput("a done passage's state is not one this service wrote")
        return cls(fields["tokens"], fields["language"])


class SongWindows:
    """Transcribes a song's windows one at a time as they close (`add`), in order, and gives the
    transcript once the last is added. Each window transcribed is handed to `publish` as a Passage
    (words in the song's time); windows an earlier call transcribed (`done`, its passages) are not
    transcribed again: their words and state are taken as they are, so the transcript equals an
    unbroken call's.

    The song's decoding budget (song_tokens_per_second) grows with the audio heard when each window
    closes, so it does not depend on the song's length, which is not known until its end.
    `backend()` loads the model on first use; `tolerate_failures`: a model that fails is logged and
    the song gets no words (the lyrics aligner goes on without them)."""

    def __init__(
        self,
        backend: Callable[[], Backend],
        audio: vad.Samples,
        language: str,
        options: TranscriptionOptions | None = None,
        done: Sequence[transcription_pb2.Passage] = (),
        publish: Callable[[transcription_pb2.Passage], None] = lambda passage: None,
        position: Callable[[float, str], None] = lambda seconds, message: None,
        tolerate_failures: bool = False,
    ) -> None:
        self._backend = backend
        self._audio = audio
        self._requested_language = language
        self._language: str | None = None
        self._options = options or TranscriptionOptions()
        self._done = done
        self._publish = publish
        self._position = position
        self._tolerate_failures = tolerate_failures
        self._failed = False
        self._name = ""
        self._spent = 0  # tokens the windows so far cost
        self._words: list[common_pb2.Word] = []
        self.results: list[WindowResult] = []  # what each window transcribed here heard
        self.passages = 0  # windows added
        self.transcribed = 0  # windows transcribed by this call (not taken from done)

    def add(self, window: Window, heard_seconds: float) -> None:
        """Transcribes the next window, closed once `heard_seconds` of the audio were heard."""
        check_cancelled()
        index, self.passages = self.passages, self.passages + 1
        start, end = window.passages[0][0], window.passages[-1][1]
        if index < len(self._done):
            passage = self._done[index]
            if abs(passage.start - start) > 1e-6 or abs(passage.end - end) > 1e-6:
                raise BadInput(
                    f"done passage {index} ({passage.start:.2f}-{passage.end:.2f} s) is not this audio's "
                    f"window {index} ({start:.2f}-{end:.2f} s): it is from another song or stem"
                )
            state = PassageState.decode(passage.state)
            self._language = state.language
            self._spent += state.tokens
            self._words += list(passage.words)
            return
        transcribed = self._unless_failed(
            "transcribing the vocals",
            "the song gets no transcribed words",
            lambda: self._transcribe(window, heard_seconds),
        )
        if transcribed is None:
            return
        words, tokens = transcribed
        self.transcribed += 1
        self._spent += tokens
        self._words += words
        assert self._language is not None
        self._publish(
            transcription_pb2.Passage(
                index=index,
                start=start,
                end=end,
                words=words,
                state=PassageState(tokens, self._language).encode(),
            )
        )

    def _transcribe(self, window: Window, heard_seconds: float) -> tuple[list[common_pb2.Word], int]:
        """The words of a window in the audio's time, and what decoding them cost."""
        first, last = window.passages[0][0], window.passages[-1][1]
        message = window_message(window)
        self._position(first, message)
        backend = self._backend()
        self._name = backend.name
        if self._language is None:
            self._language = backend.language_for(self._requested_language)
            if not self._language:
                self._language = backend.detect_language(window.samples(self._audio))

        def window_progress(percent: float, detail: str = "") -> None:
            self._position(
                first + (last - first) * min(max(percent, 0.0), 100.0) / 100.0,
                f"{message}: {detail}" if detail else message,
            )

        options = self._options
        song = _SongBudget(round(options.song_tokens_per_second * heard_seconds) - self._spent)
        spent = song.tokens
        words: list[common_pb2.Word] = []
        for part, heard in _heard_in(
            backend, self._audio, window, self._language, window_progress, song, options
        ):
            self.results.append(WindowResult(part, heard))
            for word in heard.words:
                word_start, word_end = part.audio_times(word.start, word.end)
                words.append(
                    common_pb2.Word(
                        text=word.text,
                        start=word_start,
                        end=word_end,
                        confidence=word.confidence,
                        heard=word.heard,
                        from_transcript=True,
                    )
                )
        self._position(last, message)
        return words, spent - song.tokens

    def judge(self, samples: np.ndarray, texts: list[str]) -> list[float] | None:
        """The backend's text_logprobs in the song's language (the lyrics aligner's judge); None
        when the model failed or cannot judge."""

        def scores() -> list[float] | None:
            backend = self._backend()  # loads the model when every window was done before
            language = self._language or backend.language_for(self._requested_language)
            return backend.text_logprobs(samples, texts, language) if language else None

        return self._unless_failed("judging the lyrics", "the aligner goes without", scores)

    def _unless_failed(self, what: str, without: str, call: Callable[[], _T | None]) -> _T | None:
        """call()'s result; None once the model failed. With failures tolerated (there are lyrics to
        align), a failure is logged and the model is not asked again."""
        if self._failed:
            return None
        try:
            return call()
        except Cancelled:
            raise
        except Exception:
            if not self._tolerate_failures:
                raise
            log.exception("%s failed; %s", what, without)
            self._failed = True
            return None

    def transcript(self) -> common_pb2.Transcript:
        """The song's words, each ending where the next starts at the latest, grouped into lines."""
        words: list[common_pb2.Word] = []
        for heard in self._words:
            word = common_pb2.Word()
            word.CopyFrom(heard)
            if words and word.start < words[-1].end:
                word.start = max(word.start, words[-1].start)
                words[-1].end = word.start
                word.end = max(word.end, word.start)
            words.append(word)
        return common_pb2.Transcript(
            language=self._requested_language.strip().lower() if self._language is None else self._language,
            segments=group_lines(words),
            model=self._name,
        )


def transcribe_windows(
    backend: Backend,
    audio: vad.Samples,
    language: str,
    progress: ProgressCallback,
    options: TranscriptionOptions | None = None,
    vad_options: vad.VadOptions | None = None,
) -> tuple[common_pb2.Transcript, list[WindowResult]]:
    """Transcribes mono 16 kHz audio held whole (already at its level) window by window, as the
    service transcribes a song as it arrives: the transcript (words in the audio's time, grouped into
    lines) and what each window heard. An empty `language` is detected on the first window."""
    progress(0.0, "finding the singing")
    duration = len(audio) / SAMPLE_RATE

    def position(seconds: float, message: str) -> None:
        progress(100.0 * seconds / max(duration, 1e-9), message)

    song = SongWindows(lambda: backend, audio, language, options, position=position)
    packer = WindowPacker(options)
    finder = vad.PassageFinder(vad.stem_level_db(audio), vad_options)
    chunk = vad.STREAM_CHUNK_FRAMES * vad.FRAME
    for start in range(0, len(audio), chunk):
        for span in finder.feed(audio[start : start + chunk]):
            if (closed := packer.add(span)) is not None:
                song.add(closed, finder.heard_seconds)
    for span in finder.finish():
        if (closed := packer.add(span)) is not None:
            song.add(closed, duration)
    if (last := packer.close()) is not None:
        song.add(last, duration)
    progress(100.0, f"transcribed {packer.passages} segments")
    transcript = song.transcript()
    if not transcript.model:
        transcript.model = backend.name
    return transcript, song.results
