"""Sung words with their times from a vocals stem.

Voice activity detection (vad.speech_regions) finds the passages of singing, and the model hears
them packed into windows of at most 30 s with a short silence before each passage in place of the
stretch between passages. So it never hears the long silences between lines (which end Whisper's
decoding early) nor the band's bleed in them, yet still hears several lines together; no text of an
earlier window conditions the next. Each window's text is checked as openai-whisper checks its
windows: very repetitive text (gzip compression ratio) or text the model itself finds unlikely
(average log-probability) is decoded again at rising temperatures; a window the model hears as no
speech is dropped; a phrase repeated over and over collapses to one; captions such as "♪" or
"[Music]" are dropped. Word times come from the pipeline's cross-attention alignment, mapped back
from the window to the audio; word confidences from a teacher-forced pass of the model.

With the user's lyrics, their words are timed by forced alignment (align.align_lyrics) instead.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from huggingface_hub import HfApi, is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import StoppingCriteria, StoppingCriteriaList, pipeline
from transformers.models.whisper.tokenization_whisper import LANGUAGES
from transformers.pipelines import AutomaticSpeechRecognitionPipeline

from roar.audio import decode, resample, to_mono
from roar.errors import BadInput, ModelUnavailable
from roar.progress import ProgressCallback, no_progress, stop_on_cancel
from roar.text import normalize_word
from roar.v1 import common_pb2
from services.transcription import align, vad

log = logging.getLogger("roar.transcription")

SAMPLE_RATE = vad.SAMPLE_RATE
# The models hear at most 30 s at once; passages are packed into windows this long at most...
WINDOW_SECONDS = 30.0
# ...with this much silence before each passage and after the last. (On the synthetic songs' separated
# vocals whisper-tiny.en made 28 % word errors so, 39 % hearing each passage alone, 31 % hearing the
# whole song in 30 s windows; 0.3 s to 0.7 s all did as well, 1 s set off more loops.)
PACK_GAP_SECONDS = 0.5
# openai-whisper's thresholds: a window whose text compresses better than this is a loop...
COMPRESSION_RATIO_THRESHOLD = 2.4
# ...and one whose tokens average a lower log-probability than this is a poor guess; either is
# decoded again, sampling at each of these temperatures in turn until one passes. A window still a
# poor guess at every temperature is dropped.
LOGPROB_THRESHOLD = -1.0
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
# Decoding is greedy: the pipeline's default beam search (5 beams, as openai-whisper) cost five
# times the compute and copied the encoder's cache at every step; on an instrumental clip one
# window took minutes.
NUM_BEAMS = 1
# A decoding of a window stops after this many tokens per second of its audio (more than anyone
# sings, timestamps included), so that a model caught in a loop stops soon...
MAX_TOKENS_PER_SECOND = 12
MIN_NEW_TOKENS = 16
# ...and all the decodings of a window together, fallbacks included, after this many times as
# many: the fallbacks stop once it is spent, and the best decoding so far stands.
DECODING_BUDGET = 2.0
# Each decoding is charged this many tokens up front for its encoder pass over the 30 s window
# (with the attention maps that word timings need, about as long as 48 decoding steps of tiny.en),
# and none starts without room for MIN_NEW_TOKENS more.
ATTEMPT_TOKENS = 48
# A window the model gives this probability of holding no speech, and whose text is a poor guess,
# is dropped at once.
NO_SPEECH_THRESHOLD = 0.6
# A run of words repeated this many times in a row is a decoding loop: it collapses to one.
LOOP_REPEATS = 3
# A line ends at a pause this long, after a sentence, or when it grows this long.
LINE_PAUSE_SECONDS = 0.8
LINE_MAX_WORDS = 8
LINE_MAX_SECONDS = 6.0
SENTENCE_ENDS = (".", "!", "?", "…", "。", "！", "？")
HUB_TIMEOUT_SECONDS = 10.0
MODEL_HINT = (
    "a transcription model's source is a local Whisper or Gemma 3n model dir (safetensors weights), or "
    "a Hugging Face model id such as openai/whisper-small while the hub is reachable"
)
# What a hub download fetches: configs, tokenizers and safetensors weights, never pickled weights.
HUB_FILES = ["*.json", "*.jinja", "*.txt", "*.model", "*.safetensors"]
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Captions Whisper writes for sounds rather than words: "[Music]", "(upbeat music)", "*laughs*".
_CAPTION = re.compile(r"^[\[(*].*[\])*]$")

T = TypeVar("T")


class Transcriber(Protocol):
    name: str

    def transcribe(
        self, audio: np.ndarray, language: str = "", progress: ProgressCallback = no_progress
    ) -> common_pb2.Transcript: ...


def prepare_audio(data: bytes) -> np.ndarray:
    """An audio file as the models' input: mono float32 at 16 kHz (raises BadInput)."""
    decoded = decode(data)
    return resample(to_mono(decoded.audio), decoded.sample_rate, SAMPLE_RATE)


def speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """The passages of the audio to transcribe, in seconds, each shorter than a window."""
    return vad.speech_regions(audio)


@dataclass
class Window:
    """Passages of the audio packed into one model input, each after PACK_GAP_SECONDS of silence."""

    passages: list[tuple[float, float]]  # (start, end) in the audio, in order
    first: int  # the index of the first passage among all of the audio's

    @property
    def offsets(self) -> list[float]:
        """Where each passage starts in the window, in seconds."""
        offsets, position = [], 0.0
        for start, end in self.passages:
            position += PACK_GAP_SECONDS
            offsets.append(position)
            position += end - start
        return offsets

    @property
    def duration(self) -> float:
        """Up to the end of the last passage."""
        return self.offsets[-1] + self.passages[-1][1] - self.passages[-1][0]

    def samples(self, audio: np.ndarray) -> np.ndarray:
        gap = np.zeros(round(PACK_GAP_SECONDS * SAMPLE_RATE), np.float32)
        parts = [gap]
        for start, end in self.passages:
            parts += [audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)], gap]
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


def windows(spans: list[tuple[float, float]]) -> list[Window]:
    """The passages, in order, packed into as few windows of at most WINDOW_SECONDS as go."""
    packed: list[Window] = []
    for index, (start, end) in enumerate(spans):
        if packed:
            candidate = Window([*packed[-1].passages, (start, end)], packed[-1].first)
            if candidate.duration + PACK_GAP_SECONDS <= WINDOW_SECONDS:
                packed[-1] = candidate
                continue
        packed.append(Window([(start, end)], index))
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
class _Decoded:
    """One decoding of a window: its words (text, start, end in the window) and its scores."""

    pieces: list[tuple[str, float, float]]
    confidences: list[float]
    avg_logprob: float
    no_speech_prob: float

    @property
    def text(self) -> str:
        return "".join(text for text, _, _ in self.pieces)

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text.strip())

    @property
    def poor(self) -> bool:
        return self.compression_ratio > COMPRESSION_RATIO_THRESHOLD or self.avg_logprob < LOGPROB_THRESHOLD


class TokenBudget(StoppingCriteria):
    """The tokens all the decodings of a window may write together: decoding stops, keeping what
    it wrote, once they are spent."""

    def __init__(self, tokens: int) -> None:
        self.left = tokens
        self.cut_short = False  # whether it stopped a decoding

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        self.left -= 1  # called once per decoding step, after each new token
        self.cut_short = self.left <= 0
        return torch.full((input_ids.shape[0],), self.cut_short, dtype=torch.bool, device=input_ids.device)


@dataclass
class _WindowDecoding:
    """What the decodings of one window share."""

    samples: np.ndarray
    singing_ends: float  # seconds into the window: words heard later are dropped
    encoded: torch.Tensor  # the encoder's output, for the scoring passes
    max_new_tokens: int  # per generate call
    budget: TokenBudget


@dataclass
class WhisperTranscriber:
    name: str
    pipe: AutomaticSpeechRecognitionPipeline

    @property
    def multilingual(self) -> bool:
        return bool(getattr(self.pipe.model.generation_config, "is_multilingual", False))

    def transcribe(
        self, audio: np.ndarray, language: str = "", progress: ProgressCallback = no_progress
    ) -> common_pb2.Transcript:
        """Transcribes mono 16 kHz audio. `language` is an ISO 639-1 code, or empty to let a
        multilingual model detect it; English-only models ignore it."""
        language = self._check_language(language)
        progress(0.0, "finding the singing")
        spans = speech_spans(audio)
        packed = windows(spans)
        if self.multilingual and not language and packed:
            language = self._detect_language(packed[0].samples(audio))
        words: list[common_pb2.Word] = []
        for window in packed:
            progress(100.0 * window.first / len(spans), window_message(window, len(spans)))
            words += self._transcribe_window(window, window.samples(audio), language)
        progress(100.0, f"transcribed {len(spans)} segments")
        return common_pb2.Transcript(language=language, segments=group_lines(words), model=self.name)

    def _check_language(self, language: str) -> str:
        language = language.strip().lower()
        if not self.multilingual:
            if language not in ("", "en"):
                log.warning("%s is English-only; ignoring language %r", self.name, language)
            return "en"
        if language and language not in LANGUAGES:
            raise BadInput(
                f"unknown language {language!r}: use an ISO 639-1 code Whisper knows, such as 'en'"
            )
        return language

    def _features(self, window: np.ndarray) -> torch.Tensor:
        """Whisper's log-mel input for up to 30 s of audio, on the model's device."""
        model = self.pipe.model
        features = self.pipe.feature_extractor(window, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return features.input_features.to(model.device, model.dtype)

    def _detect_language(self, window: np.ndarray) -> str:
        """The language of a window, as Whisper detects it before transcribing. (The pipeline's own
        detection, return_language, breaks its word timestamps.)"""
        token = int(self.pipe.model.detect_language(self._features(window))[0])
        return self.pipe.tokenizer.convert_ids_to_tokens(token).strip("<|>")

    def _max_new_tokens(self, samples: np.ndarray) -> int:
        """The tokens one decoding of a window may write: MAX_TOKENS_PER_SECOND of its audio, and
        no more than the model's own limit allows."""
        forced = 3 if self.multilingual else 1  # <|startoftranscript|> (<|lang|> <|transcribe|>)
        limit = self.pipe.model.generation_config.max_length - forced
        return min(limit, max(MIN_NEW_TOKENS, round(MAX_TOKENS_PER_SECOND * len(samples) / SAMPLE_RATE)))

    def _transcribe_window(self, window: Window, samples: np.ndarray, language: str) -> list[common_pb2.Word]:
        """The words of a window's passages, with times in the audio; none when the model hears no
        speech there or only loops."""
        max_new_tokens = self._max_new_tokens(samples)
        with torch.inference_mode():
            encoded = self.pipe.model.get_encoder()(self._features(samples)).last_hidden_state
        decoding = _WindowDecoding(
            samples,
            window.duration,
            encoded,
            max_new_tokens,
            TokenBudget(round(DECODING_BUDGET * max_new_tokens)),
        )
        decoded = self._decode(decoding, language, temperature=0.0)
        if decoded.no_speech_prob > NO_SPEECH_THRESHOLD and decoded.avg_logprob < LOGPROB_THRESHOLD:
            return []
        for attempt, temperature in enumerate(FALLBACK_TEMPERATURES):
            if not decoded.poor or decoding.budget.left < ATTEMPT_TOKENS + MIN_NEW_TOKENS:
                break
            # Seeded, so that a window transcribes the same every time.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(attempt)
                retry = self._decode(decoding, language, temperature)
            if decoding.budget.cut_short:
                break  # its words are not all there
            decoded = min(decoded, retry, key=lambda d: (d.poor, -d.avg_logprob))
        if decoded.avg_logprob < LOGPROB_THRESHOLD:
            # No temperature decodes it with confidence: Whisper's guesses at music or noise ("Thanks
            # for watching!", measured at -1.3 to -1.5 on the synthetic songs' band, sung lines -0.1
            # to -0.9 even when separated).
            return []
        kept = collapse_loops(
            list(zip(decoded.pieces, decoded.confidences, strict=True)),
            key=lambda item: normalize_word(item[0][0]),
        )
        words: list[common_pb2.Word] = []
        for (text, piece_start, piece_end), confidence in kept:
            text = text.strip()
            if not is_word(text):  # a caption
                continue
            word_start, word_end = window.audio_times(piece_start, piece_end)
            if words and word_start < words[-1].end:
                word_start = max(word_start, words[-1].start)
                words[-1].end = word_start
                word_end = max(word_end, word_start)
            words.append(common_pb2.Word(text=text, start=word_start, end=word_end, confidence=confidence))
        if words and compression_ratio(" ".join(w.text for w in words)) > COMPRESSION_RATIO_THRESHOLD:
            return []  # still a loop, of something longer than a line: nothing usable
        return words

    def _decode(self, decoding: _WindowDecoding, language: str, temperature: float) -> _Decoded:
        """Whisper's words for a window, without those it hears after the singing ends: in the
        silence at the end of a nearly full window it tends to make up a loop ("Thank you so much
        for watching, and I'll see you in the next video, and ..."), which would set off the
        fallback when the words of the singing are fine. At most `max_new_tokens` per generate
        call, and no more than the window's budget has left."""
        decoding.budget.left -= ATTEMPT_TOKENS
        generate_kwargs: dict[str, object] = {
            "num_beams": NUM_BEAMS,
            "max_new_tokens": decoding.max_new_tokens,
            "stopping_criteria": StoppingCriteriaList([decoding.budget]),
        }
        if self.multilingual:
            generate_kwargs |= {"language": language, "task": "transcribe"}
        if temperature > 0.0:
            generate_kwargs |= {"do_sample": True, "temperature": temperature}
        output = self.pipe(
            {"raw": decoding.samples, "sampling_rate": SAMPLE_RATE},
            return_timestamps="word",
            generate_kwargs=generate_kwargs,
        )
        pieces = [piece for piece in _join_hyphenated(output["chunks"]) if piece[1] < decoding.singing_ends]
        return self._score(decoding.encoded, pieces, language)

    def _score(
        self, encoded: torch.Tensor, pieces: list[tuple[str, float, float]], language: str
    ) -> _Decoded:
        """Scores a decoding with one teacher-forced pass of the model, as openai-whisper scores its
        own: the probability of <|nocaptions|> (or <|nospeech|>) right after the start token, the
        mean log-probability of the text's tokens and the end token, and each word's confidence, the
        mean probability of its tokens given the audio and the words before it. (The pipeline does not
        hand out its token scores.) Words past the decoder's length limit get confidence 1.0, unknown."""
        model, tokenizer = self.pipe.model, self.pipe.tokenizer
        generation = model.generation_config
        prompt = [generation.decoder_start_token_id]
        if self.multilingual:
            prompt += [generation.lang_to_id[f"<|{language}|>"], generation.task_to_id["transcribe"]]
        prompt.append(generation.no_timestamps_token_id)
        word_tokens = [tokenizer.encode(text, add_special_tokens=False) for text, _, _ in pieces]
        limit = model.config.max_target_positions - len(prompt) - 1
        tokens = [*[t for ts in word_tokens for t in ts][:limit], generation.eos_token_id]
        with torch.inference_mode():
            logits = model(
                encoder_outputs=(encoded,),
                decoder_input_ids=torch.tensor([prompt + tokens], device=model.device),
            ).logits[0]
        log_probs = logits.float().log_softmax(-1)
        no_speech = _no_speech_token(tokenizer)
        no_speech_prob = float(log_probs[0, no_speech].exp()) if no_speech is not None else 0.0
        token_log_probs = log_probs[
            torch.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens)), tokens
        ].tolist()
        probabilities = np.exp(token_log_probs[:-1]).tolist()
        confidences = []
        for ts in word_tokens:
            scored, probabilities = probabilities[: len(ts)], probabilities[len(ts) :]
            confidences.append(float(np.mean(scored)) if len(scored) == len(ts) else 1.0)
        return _Decoded(pieces, confidences, float(np.mean(token_log_probs)), no_speech_prob)


def _no_speech_token(tokenizer: object) -> int | None:
    """Whisper's no-speech token: <|nospeech|> in the newest models, <|nocaptions|> before."""
    for token in ("<|nospeech|>", "<|nocaptions|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)  # type: ignore[attr-defined]
        if token_id is not None and token_id != tokenizer.unk_token_id:  # type: ignore[attr-defined]
            return int(token_id)
    return None


def compression_ratio(text: str) -> float:
    """How well gzip compresses the text: above ~2.4, it repeats itself."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _join_hyphenated(chunks: list[dict]) -> list[tuple[str, float, float]]:
    """The pipeline's word chunks as (text, start, end), without blank ones, and with the parts of
    hyphenated words that it splits (" cold", "-hearted") joined."""
    pieces: list[tuple[str, float, float]] = []
    for chunk in chunks:
        text, (start, end) = chunk["text"], chunk["timestamp"]
        if not text.strip():
            continue
        end = start if end is None else end  # the last word of a window cut off mid-word
        if pieces and text.startswith("-"):
            previous_text, previous_start, _ = pieces[-1]
            pieces[-1] = (previous_text + text, previous_start, end)
        else:
            pieces.append((text, start, end))
    return pieces


def is_word(text: str) -> bool:
    """Whether a word of a transcript is sung text, not a caption Whisper writes for a sound
    ("♪", "[Music]", "(applause)")."""
    return bool(normalize_word(text)) and not _CAPTION.match(text)


def collapse_loops(items: list[T], key: Callable[[T], str]) -> list[T]:
    """`items` with every run of LOOP_REPEATS or more back-to-back repeats of the same phrase
    (compared by `key`) cut to its first occurrence: "thank you thank you thank you" -> "thank you"."""
    keys = [key(item) for item in items]
    kept: list[T] = []
    index = 0
    while index < len(items):
        for size in range(1, (len(items) - index) // LOOP_REPEATS + 1):
            phrase = keys[index : index + size]
            repeats = 1
            while keys[index + repeats * size : index + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= LOOP_REPEATS:
                kept += items[index : index + size]
                index += repeats * size
                break
        else:
            kept.append(items[index])
            index += 1
    return kept


def group_lines(words: list[common_pb2.Word]) -> list[common_pb2.Segment]:
    """Groups words into karaoke lines: a new line after a pause, after a sentence, or when the
    line is full."""
    lines: list[list[common_pb2.Word]] = []
    for word in words:
        line = lines[-1] if lines else []
        if (
            not line
            or word.start - line[-1].end >= LINE_PAUSE_SECONDS
            or line[-1].text.endswith(SENTENCE_ENDS)
            or len(line) >= LINE_MAX_WORDS
            or word.end - line[0].start > LINE_MAX_SECONDS
        ):
            lines.append([word])
        else:
            line.append(word)
    return [
        common_pb2.Segment(
            text=" ".join(w.text for w in line), start=line[0].start, end=line[-1].end, words=line
        )
        for line in lines
    ]


def transcribe_with_lyrics(
    audio: np.ndarray,
    lyrics: str,
    language: str,
    transcribe: Callable[[ProgressCallback], common_pb2.Transcript],
    progress: ProgressCallback = no_progress,
) -> common_pb2.Transcript:
    """The user's lyrics (in `language`, an ISO 639-1 code or empty), line by line, each word timed
    against the audio, anchored by what `transcribe(progress)` hears (align.transcript_from_lyrics)."""
    return align.transcript_from_lyrics(audio, lyrics, language, transcribe, progress)


def _model_dir(source: str) -> str:
    """A local dir holding the model `source` names: the dir itself, or a hub model from the local
    cache, fetched first when not cached. Fails fast, without the hub's retries, when the hub is
    unreachable. The source is the operator's (from the model catalog); messages never repeat it
    or the library's text (which holds paths), as they reach clients: the log has them."""
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if not _HUB_ID.match(source):
        raise ModelUnavailable(f"its source is neither a local dir nor a hub id: {MODEL_HINT}")
    try:
        return snapshot_download(source, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    if is_offline_mode():
        raise ModelUnavailable(
            f"it is neither a local dir nor in the model cache (HF_HUB_OFFLINE is set): {MODEL_HINT}"
        )
    try:
        HfApi().model_info(source, timeout=HUB_TIMEOUT_SECONDS)
        log.info("downloading %s", source)
        return snapshot_download(source, allow_patterns=HUB_FILES)
    except Exception as exc:  # unreachable, unknown, gated, cut off: every way the files cannot come
        log.error("cannot fetch %s from the Hugging Face hub: %s", source, exc)
        raise ModelUnavailable(
            f"it cannot be fetched from the Hugging Face hub ({type(exc).__name__}): {MODEL_HINT}"
        ) from exc


def _model_type(model_dir: str) -> str:
    try:
        return str(json.loads((Path(model_dir) / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        log.error("no readable config.json in %s: %s", model_dir, exc)
        raise ModelUnavailable(f"its model dir has no readable config.json: {MODEL_HINT}") from exc


def load_transcriber(source: str, device: str = "cpu", name: str = "") -> Transcriber:
    """Loads a Whisper or Gemma 3n model (hub id or local dir) for `device` ("cpu", "cuda",
    "cuda:1"), chosen by the model's config; transcripts carry `name` (default: the source). Only
    safetensors weights load, never pickles. A model that cannot be found raises ModelUnavailable;
    one whose files do not load raises what transformers raises (ModelCache turns that into
    ModelUnavailable)."""
    name = name or source
    model_dir = _model_dir(source)
    if _model_type(model_dir) == "gemma3n":
        from services.transcription.gemma import load_gemma  # it builds on this module

        return load_gemma(name, model_dir, device)
    pipe = pipeline(
        "automatic-speech-recognition",
        model=model_dir,
        device=device,
        dtype=torch.float16 if device.startswith("cuda") else torch.float32,
        model_kwargs={"use_safetensors": True},
    )
    if pipe.type != "seq2seq_whisper":
        raise ModelUnavailable(f"it is neither a Whisper nor a Gemma 3n model: {MODEL_HINT}")
    stop_on_cancel(pipe.model)
    return WhisperTranscriber(name=name, pipe=pipe)
