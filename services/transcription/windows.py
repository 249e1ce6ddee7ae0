"""The window loop every transcription backend shares: voice activity detection finds the passages
of singing, which are packed into windows of at most 30 s (the most Whisper's and Gemma 3n's audio
encoders hear) with a short silence before each passage in place of the stretch between passages.
So a model never hears the long silences between lines (which end Whisper's decoding early) nor the
band's bleed in them, yet hears several lines together; no text of an earlier window conditions the
next. A backend turns one window into words; the loop maps their times back to the audio, reports
progress and groups the words into lines."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from transformers import StoppingCriteria

from roar.progress import ProgressCallback, check_cancelled, no_progress, scaled
from roar.v1 import common_pb2
from services.transcription import vad
from services.transcription.cleanup import group_lines

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


def windows(spans: list[tuple[float, float]], options: TranscriptionOptions | None = None) -> list[Window]:
    """The passages, in order, packed into as few windows of at most window_seconds as go."""
    options = options or TranscriptionOptions()
    packed: list[Window] = []
    for index, span in enumerate(spans):
        if packed:
            candidate = Window((*packed[-1].passages, span), packed[-1].first, options.pack_gap_seconds)
            if candidate.duration + options.pack_gap_seconds <= options.window_seconds:
                packed[-1] = candidate
                continue
        packed.append(Window((span,), index, options.pack_gap_seconds))
    return packed


def window_message(window: Window, count: int) -> str:
    """The progress message for a window: "transcribing segment 3/9", or "segments 3-5/9"."""
    first, last = window.first + 1, window.first + len(window.passages)
    return (
        f"transcribing segment {first}/{count}"
        if first == last
        else f"transcribing segments {first}-{last}/{count}"
    )


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


def transcribe_windows(
    backend: Backend,
    audio: vad.Samples,
    language: str,
    progress: ProgressCallback,
    options: TranscriptionOptions | None = None,
    vad_options: vad.VadOptions | None = None,
) -> tuple[common_pb2.Transcript, list[WindowResult]]:
    """Transcribes mono 16 kHz audio window by window: the transcript (words in the audio's time,
    grouped into lines) and what each window heard. An empty `language` is detected on the first
    window."""
    options = options or TranscriptionOptions()
    progress(0.0, "finding the singing")
    spans = vad.speech_regions(audio, vad_options)
    packed = windows(spans, options)
    song = _SongBudget(round(options.song_tokens_per_second * len(audio) / SAMPLE_RATE))
    if not language and packed:
        language = backend.detect_language(packed[0].samples(audio))
    words: list[common_pb2.Word] = []
    results: list[WindowResult] = []
    for window in packed:
        check_cancelled()
        start = 100.0 * window.first / len(spans)
        end = 100.0 * (window.first + len(window.passages)) / len(spans)
        message = window_message(window, len(spans))
        progress(start, message)

        def window_progress(percent: float, detail: str = "", start=start, end=end, message=message) -> None:
            progress(start + (end - start) * percent / 100.0, f"{message}: {detail}" if detail else message)

        for part, heard in _heard_in(backend, audio, window, language, window_progress, song, options):
            results.append(WindowResult(part, heard))
            for word in heard.words:
                word_start, word_end = part.audio_times(word.start, word.end)
                if words and word_start < words[-1].end:
                    word_start = max(word_start, words[-1].start)
                    words[-1].end = word_start
                    word_end = max(word_end, word_start)
                timed = common_pb2.Word(
                    text=word.text,
                    start=word_start,
                    end=word_end,
                    confidence=word.confidence,
                    heard=word.heard,
                    from_transcript=True,
                )
                words.append(timed)
    progress(100.0, f"transcribed {len(spans)} segments")
    transcript = common_pb2.Transcript(language=language, segments=group_lines(words), model=backend.name)
    return transcript, results
