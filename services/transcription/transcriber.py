"""Sung words with their times from a vocals stem: transformers' Whisper pipeline (with its default
beam search) over windows of at most 30 s, one after another; word times from its cross-attention
alignment, word confidences from a teacher-forced pass of the model.
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
from transformers import pipeline
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


def prepare_audio(data: bytes) -> np.ndarray:
    """An audio file as Whisper's input: mono float32 at 16 kHz (raises BadInput)."""
    decoded = decode(data)
    return resample(to_mono(decoded.audio), decoded.sample_rate, SAMPLE_RATE)


def speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """The stretches of the audio to transcribe, in seconds; windows are cut from each. All of it."""
    return [(0.0, len(audio) / SAMPLE_RATE)]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


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
        progress(0.0, f"transcribing 0:00 / {_clock(duration)}")
        if self.multilingual and not language and spans:
            language = self._detect_language(audio, spans[0][0])
        for span_start, span_end in spans:
            seek = span_start
            while seek < span_end:
                window_end = min(seek + WINDOW_SECONDS, span_end)
                window_words = self._transcribe_window(audio, seek, window_end, language)
                if window_end < span_end:
                    keep_until = window_end - WINDOW_TAIL_SECONDS
                    window_words = [w for w in window_words if w.end <= keep_until]
                    next_seek = window_words[-1].end if window_words else keep_until
                    next_seek = max(next_seek, seek + MIN_ADVANCE_SECONDS)
                else:
                    next_seek = window_end
                words.extend(window_words)
                covered += next_seek - seek
                progress(100.0 * covered / total, f"transcribing {_clock(next_seek)} / {_clock(duration)}")
                seek = next_seek
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

    def _detect_language(self, audio: np.ndarray, start: float) -> str:
        """The language of the 30 s from `start`, as Whisper detects it before transcribing. (The
        pipeline's own detection, return_language, breaks its word timestamps.)"""
        window = audio[round(start * SAMPLE_RATE) : round((start + WINDOW_SECONDS) * SAMPLE_RATE)]
        token = int(self.pipe.model.detect_language(self._features(window))[0])
        return self.pipe.tokenizer.convert_ids_to_tokens(token).strip("<|>")

    def _transcribe_window(
        self, audio: np.ndarray, start: float, end: float, language: str
    ) -> list[common_pb2.Word]:
        """The words of audio[start:end] (seconds), with times from the start of the audio."""
        window = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        generate_kwargs = {"language": language, "task": "transcribe"} if self.multilingual else {}
        output = self.pipe(
            {"raw": window, "sampling_rate": SAMPLE_RATE},
            return_timestamps="word",
            generate_kwargs=generate_kwargs,
        )
        pieces = _join_hyphenated(output["chunks"])
        confidences = self._word_confidences(window, [text for text, _, _ in pieces], language)
        words: list[common_pb2.Word] = []
        for (text, piece_start, piece_end), confidence in zip(pieces, confidences, strict=True):
            word_start = min(start + piece_start, end)
            word_end = min(max(start + piece_end, word_start), end)
            if words and word_start < words[-1].end:
                # The pipeline decodes a window in passes, which may overlap a little.
                word_start = max(word_start, words[-1].start)
                words[-1].end = word_start
                word_end = max(word_end, word_start)
            words.append(
                common_pb2.Word(text=text.strip(), start=word_start, end=word_end, confidence=confidence)
            )
        return words

    def _word_confidences(self, window: np.ndarray, words: list[str], language: str) -> list[float]:
        """The mean probability of each word's tokens given the audio and the words before it,
        from one teacher-forced pass of the model, as openai-whisper scores words. (The pipeline's
        beam search does not hand out its token scores.) Words past the decoder's length limit
        get 1.0, unknown."""
        if not words:
            return []
        model, tokenizer = self.pipe.model, self.pipe.tokenizer
        generation = model.generation_config
        prompt = [generation.decoder_start_token_id]
        if self.multilingual:
            prompt += [generation.lang_to_id[f"<|{language}|>"], generation.task_to_id["transcribe"]]
        prompt.append(generation.no_timestamps_token_id)
        word_tokens = [tokenizer.encode(word, add_special_tokens=False) for word in words]
        tokens = [t for ts in word_tokens for t in ts][: model.config.max_target_positions - len(prompt)]
        with torch.inference_mode():
            logits = model(
                input_features=self._features(window),
                decoder_input_ids=torch.tensor([prompt + tokens], device=model.device),
            ).logits[0, len(prompt) - 1 : -1]
        probabilities = logits.float().softmax(-1)[torch.arange(len(tokens)), tokens].tolist()
        confidences = []
        for ts in word_tokens:
            scored, probabilities = probabilities[: len(ts)], probabilities[len(ts) :]
            confidences.append(float(np.mean(scored)) if len(scored) == len(ts) else 1.0)
        return confidences


def _join_hyphenated(chunks: list[dict]) -> list[tuple[str, float, float]]:
    """The pipeline's word chunks as (text, start, end), without blank ones, and with the parts of
    hyphenated words that it splits (" cold", "-hearted") joined."""
    pieces: list[tuple[str, float, float]] = []
    for chunk in chunks:
        text, (start, end) = chunk["text"], chunk["timestamp"]
        if not text.strip():
            continue
        if pieces and text.startswith("-"):
            previous_text, previous_start, _ = pieces[-1]
            pieces[-1] = (previous_text + text, previous_start, end)
        else:
            pieces.append((text, start, end))
    return pieces


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
            f"{model!r} is neither a local dir nor in the model cache (HF_HUB_OFFLINE is set): {MODEL_HINT}"
        )
    try:
        HfApi().model_info(model, timeout=HUB_TIMEOUT_SECONDS)
        log.info("downloading %s", model)
        return snapshot_download(model, allow_patterns=["*.json", "*.txt", "*.safetensors"])
    except Exception as exc:  # unreachable, unknown, gated, cut off: every way the files cannot come
        raise ModelUnavailable(
            f"cannot fetch {model!r} from the Hugging Face hub ({exc}): {MODEL_HINT}"
        ) from exc


def load_transcriber(model: str, device: str = "cpu") -> WhisperTranscriber:
    """Loads a Whisper model (hub id or local dir) for `device` ("cpu", "cuda", "cuda:1"). A model
    that cannot be found raises ModelUnavailable; one whose files do not load raises what
    transformers raises (ModelCache turns that into ModelUnavailable)."""
    pipe = pipeline(
        "automatic-speech-recognition",
        model=_model_dir(model),
        device=device,
        dtype=torch.float16 if device.startswith("cuda") else torch.float32,
    )
    if pipe.type != "seq2seq_whisper":
        raise ModelUnavailable(f"{model!r} is not a Whisper model: {MODEL_HINT}")
    return WhisperTranscriber(name=model, pipe=pipe)
