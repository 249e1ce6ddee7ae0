"""Sung words with their times: transformers' Whisper pipeline, run window by window over a vocals
stem, with word timestamps (cross-attention alignment) and word confidences (token probabilities).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import HfApi, is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import LogitsProcessor, LogitsProcessorList, pipeline
from transformers.models.whisper.tokenization_whisper import LANGUAGES
from transformers.pipelines import AutomaticSpeechRecognitionPipeline

from roar.audio import decode, resample, to_mono
from roar.errors import BadInput, ModelUnavailable
from roar.progress import ProgressCallback, no_progress
from roar.v1 import common_pb2

log = logging.getLogger("roar.transcription")

SAMPLE_RATE = 16_000
# Whisper hears at most 30 s at once.
WINDOW_SECONDS = 30.0
# A word ending this close to the end of a window that is not the last may be cut off; the next
# window starts after the last word before it and hears that word whole.
WINDOW_TAIL_SECONDS = 1.0
# The least a window moves on, so that a window with nothing usable cannot repeat forever.
MIN_ADVANCE_SECONDS = 1.0
# A line ends at a pause this long, after a sentence, or when it grows this long.
LINE_PAUSE_SECONDS = 0.8
LINE_MAX_WORDS = 8
LINE_MAX_SECONDS = 6.0
SENTENCE_ENDS = (".", "!", "?", "…", "。", "！", "？")
HUB_TIMEOUT_SECONDS = 10.0
MODEL_HINT = (
    "set ROAR_TRANSCRIPTION_MODEL (or --model) to a local Whisper model dir, or to a Hugging Face "
    "model id such as openai/whisper-small while the hub is reachable"
)
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_LANGUAGE_CODES = {name: code for code, name in LANGUAGES.items()}


def prepare_audio(data: bytes) -> np.ndarray:
    """An audio file as Whisper's input: mono float32 at 16 kHz (raises BadInput)."""
    decoded = decode(data)
    return resample(to_mono(decoded.audio), decoded.sample_rate, SAMPLE_RATE)


def speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """The stretches of the audio to transcribe, in seconds: all of it."""
    return [(0.0, len(audio) / SAMPLE_RATE)]


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


class _TokenProbabilities(LogitsProcessor):
    """Records the tokens greedy decoding picks (the best of the final scores: this processor
    runs last) and their probabilities, one list per decoding pass: the pipeline decodes a window
    in several passes when a pass ends before the window does."""

    def __init__(self) -> None:
        self.passes: list[list[tuple[int, float]]] = []
        self._length = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.passes or input_ids.shape[-1] <= self._length:
            self.passes.append([])
        self._length = input_ids.shape[-1]
        probability, token = scores[0].float().softmax(-1).max(-1)
        self.passes[-1].append((int(token), float(probability)))
        return scores


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
        spans = speech_spans(audio)
        duration = len(audio) / SAMPLE_RATE
        total = sum(end - start for start, end in spans) or 1.0
        covered = 0.0
        words: list[common_pb2.Word] = []
        progress(0.0, f"transcribing 0:00 / {clock(duration)}")
        for span_start, span_end in spans:
            seek = span_start
            while seek < span_end:
                window_end = min(seek + WINDOW_SECONDS, span_end)
                window_words, language = self._transcribe_window(audio, seek, window_end, language)
                if window_end < span_end:
                    keep_until = window_end - WINDOW_TAIL_SECONDS
                    window_words = [w for w in window_words if w.end <= keep_until]
                    next_seek = window_words[-1].end if window_words else keep_until
                    next_seek = max(next_seek, seek + MIN_ADVANCE_SECONDS)
                else:
                    next_seek = window_end
                words.extend(window_words)
                covered += next_seek - seek
                progress(100.0 * covered / total, f"transcribing {clock(next_seek)} / {clock(duration)}")
                seek = next_seek
        return common_pb2.Transcript(
            language=language if self.multilingual else "en", segments=group_lines(words), model=self.name
        )

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

    def _transcribe_window(
        self, audio: np.ndarray, start: float, end: float, language: str
    ) -> tuple[list[common_pb2.Word], str]:
        """The words of audio[start:end] (seconds) with times from the start of the audio, and the
        language (detected when `language` is empty)."""
        window = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        recorder = _TokenProbabilities()
        generate_kwargs: dict = {
            "num_beams": 1,
            "do_sample": False,
            "logits_processor": LogitsProcessorList([recorder]),
        }
        detect = self.multilingual and not language
        if self.multilingual:
            generate_kwargs["task"] = "transcribe"
            if language:
                generate_kwargs["language"] = language
        output = self.pipe(
            {"raw": window, "sampling_rate": SAMPLE_RATE},
            return_timestamps="word",
            return_language=detect or None,
            generate_kwargs=generate_kwargs,
        )
        chunks = output["chunks"]
        if detect and chunks and chunks[0].get("language"):
            language = _LANGUAGE_CODES.get(chunks[0]["language"], "")
        confidences = self._word_confidences(recorder, [c["text"] for c in chunks])
        words: list[common_pb2.Word] = []
        for chunk, confidence in zip(chunks, confidences, strict=True):
            if not chunk["text"].strip():
                continue
            word_start, word_end = chunk["timestamp"]
            word_start = min(start + word_start, end)
            word_end = min(start + (word_end if word_end is not None else word_start), end)
            if words:
                # Passes of one window can overlap a little: keep the words in time order.
                word_start = max(word_start, words[-1].start)
                words[-1].end = min(words[-1].end, word_start)
            words.append(
                common_pb2.Word(
                    text=chunk["text"].strip(),
                    start=max(word_start, start),
                    end=max(word_end, word_start, start),
                    confidence=confidence,
                )
            )
        return words, language

    def _word_confidences(self, recorder: _TokenProbabilities, words: list[str]) -> list[float]:
        """The mean probability of each word's tokens, as Whisper scores words; 1.0 (unknown)
        where the recorded tokens do not spell the words.

        The pipeline's words spell the text tokens of its decoding passes, less the unfinished
        end of a pass that the next pass decodes again: of each pass, the longest run of tokens
        that continues the words is theirs. A token belongs to the word its text ends in."""
        decode = self.pipe.tokenizer.decode
        eos = self.pipe.tokenizer.eos_token_id
        text = "".join(words)
        tokens: list[int] = []
        probabilities: list[float] = []
        for decoding in recorder.passes:
            run = [(t, p) for t, p in decoding if t < eos]
            while run and not text.startswith(decode(tokens + [t for t, _ in run])):
                run.pop()
            tokens += [t for t, _ in run]
            probabilities += [p for _, p in run]
        if decode(tokens) != text:
            return [1.0] * len(words)
        word_ends = np.cumsum([len(w) for w in words])
        per_word: list[list[float]] = [[] for _ in words]
        index = 0
        for k, probability in enumerate(probabilities):
            token_end = len(decode(tokens[: k + 1]))
            while index < len(words) - 1 and token_end > word_ends[index]:
                index += 1
            per_word[index].append(probability)
        return [float(np.mean(p)) if p else 1.0 for p in per_word]


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


def _model_dir(model: str) -> str:
    """A local dir holding `model`: the dir itself, or a hub model from the local cache, fetched
    first when not cached. Fails fast, without the hub's retries, when the hub is unreachable."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if not _HUB_ID.match(model):
        raise ModelUnavailable(f"no Whisper model dir at {model}: {MODEL_HINT}")
    try:
        return snapshot_download(model, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    if is_offline_mode():
        raise ModelUnavailable(
            f"{model!r} is neither a local dir nor in the model cache, and HF_HUB_OFFLINE is set: {MODEL_HINT}"
        )
    try:
        HfApi().model_info(model, timeout=HUB_TIMEOUT_SECONDS)
    except Exception as exc:  # unreachable, unknown or gated: every way the files cannot come
        raise ModelUnavailable(
            f"cannot fetch {model!r} from the Hugging Face hub ({exc}): {MODEL_HINT}"
        ) from exc
    log.info("downloading %s", model)
    return snapshot_download(model, allow_patterns=["*.json", "*.txt", "*.safetensors"])


def load_transcriber(model: str, device: str = "cpu") -> WhisperTranscriber:
    """Loads a Whisper model (hub id or local dir) for `device` ("cpu", "cuda", "cuda:1")."""
    source = _model_dir(model)
    try:
        pipe = pipeline(
            "automatic-speech-recognition",
            model=source,
            device=device,
            dtype=torch.float16 if device.startswith("cuda") else torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load Whisper model {model!r} ({exc}): {MODEL_HINT}") from exc
    if pipe.type != "seq2seq_whisper":
        raise ModelUnavailable(f"{model!r} is not a Whisper model: {MODEL_HINT}")
    return WhisperTranscriber(name=model, pipe=pipe)
