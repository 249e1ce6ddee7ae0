"""Whisper as a transcription backend, through transformers' ASR pipeline: each window is decoded
greedily; its text is checked as openai-whisper checks its windows: very repetitive text (gzip
compression ratio) or text the model itself finds unlikely (average log-probability) is decoded
again at rising temperatures; a window the model hears as no speech is dropped; a phrase repeated
over and over collapses to one; captions such as "♪" or "[Music]" are dropped. Word times come from
the pipeline's cross-attention alignment; word confidences and the window's scores from a
teacher-forced pass of the model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import StoppingCriteriaList
from transformers.models.whisper.tokenization_whisper import LANGUAGES
from transformers.pipelines import AutomaticSpeechRecognitionPipeline

from roar.errors import BadInput
from roar.progress import ProgressCallback, no_progress
from roar.text import normalize_word
from roar.v1 import common_pb2
from services.transcription import vad
from services.transcription.cleanup import collapse_loops, compression_ratio, is_word, join_hyphenated
from services.transcription.windows import (
    SAMPLE_RATE,
    TokenBudget,
    TranscriptionOptions,
    Window,
    WindowWords,
    transcribe_windows,
)

log = logging.getLogger("roar.transcription")


@dataclass
class _Decoded:
    """One decoding of a window: its words (text, start, end in the window) and its scores."""

    pieces: list[tuple[str, float, float]]
    confidences: list[float]
    avg_logprob: float
    no_speech_prob: float
    temperature: float

    @property
    def text(self) -> str:
        return "".join(text for text, _, _ in self.pieces)

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text.strip())

    def poor(self, options: TranscriptionOptions) -> bool:
        return (
            self.compression_ratio > options.compression_ratio_threshold
            or self.avg_logprob < options.log_prob_threshold
        )


@dataclass
class _WindowDecoding:
    """What the decodings of one window share."""

    samples: np.ndarray
    singing_ends: float  # seconds into the window: words heard later are dropped
    max_new_tokens: int  # per generate call
    budget: TokenBudget
    encoded: torch.Tensor | None = (
        None  # the encoder's output, kept from the first decoding for the scoring passes
    )


@dataclass
class WhisperTranscriber:
    name: str
    pipe: AutomaticSpeechRecognitionPipeline
    options: TranscriptionOptions = field(default_factory=TranscriptionOptions)
    vad_options: vad.VadOptions = field(default_factory=vad.VadOptions)

    @property
    def multilingual(self) -> bool:
        return bool(getattr(self.pipe.model.generation_config, "is_multilingual", False))

    def transcribe(
        self, audio: vad.Samples, language: str = "", progress: ProgressCallback = no_progress
    ) -> common_pb2.Transcript:
        """Transcribes mono 16 kHz audio. `language` is an ISO 639-1 code, or empty to let a
        multilingual model detect it (on the first window); English-only models ignore it."""
        return transcribe_windows(
            self, audio, self.language_for(language), progress, self.options, self.vad_options
        )[0]

    def language_for(self, language: str) -> str:
        """ "en" for English-only models; else the code given ("": detect), if Whisper knows it."""
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

    def detect_language(self, window: np.ndarray) -> str:
        """The language of a window, as Whisper detects it before transcribing. (The pipeline's own
        detection, return_language, breaks its word timestamps.)"""
        if not self.multilingual:
            return "en"
        token = int(self.pipe.model.detect_language(self._features(window))[0])
        return self.pipe.tokenizer.convert_ids_to_tokens(token).strip("<|>")

    def text_logprobs(self, samples: np.ndarray, texts: list[str], language: str) -> list[float] | None:
        """The mean log-probability per token the model gives each text as the words sung in
        `samples`, scored as its own decodings are (_score); None for more audio than it hears at
        once (30 s)."""
        if len(samples) > self.pipe.feature_extractor.n_samples:
            return None
        with torch.inference_mode():
            encoded = self.pipe.model.get_encoder()(self._features(samples)).last_hidden_state
        return [
            self._score(encoded, [(" " + word, 0.0, 0.0) for word in text.split()], language, 0.0).avg_logprob
            for text in texts
        ]

    def _max_new_tokens(self, samples: np.ndarray) -> int:
        """The tokens one decoding of a window may write: max_tokens_per_second of its audio, and
        no more than the model's own limit allows."""
        forced = 3 if self.multilingual else 1  # <|startoftranscript|> (<|lang|> <|transcribe|>)
        limit = self.pipe.model.generation_config.max_length - forced
        wanted = round(self.options.max_tokens_per_second * len(samples) / SAMPLE_RATE)
        return min(limit, max(self.options.min_new_tokens, wanted))

    def window_words(
        self,
        samples: np.ndarray,
        window: Window,
        language: str,
        progress: ProgressCallback,
        max_tokens: int | None = None,
    ) -> WindowWords:
        """The words of a window's passages, with times in the window; none when the model hears no
        speech there or only loops."""
        options = self.options
        max_new_tokens = self._max_new_tokens(samples)
        tokens = round(options.decoding_budget * max_new_tokens)
        budget = TokenBudget(tokens if max_tokens is None else min(tokens, max_tokens), progress)
        decoding = _WindowDecoding(samples, window.duration, max_new_tokens, budget)
        with self._watching_the_encoder(decoding):
            heard = self._window_words(decoding, language)
        heard.tokens = budget.total - budget.left
        return heard

    @contextmanager
    def _watching_the_encoder(self, decoding: _WindowDecoding) -> Iterator[None]:
        """Keeps the encoder's output of the window's first decoding (the scoring passes need it, and
        every decoding of the window encodes the same audio), and reports progress between its
        layers: one encoder pass of a larger model takes seconds."""
        encoder = self.pipe.model.get_encoder()

        def keep(module: object, inputs: object, output: tuple[torch.Tensor, ...]) -> None:
            if decoding.encoded is None:
                decoding.encoded = output[0]

        handles = [encoder.register_forward_hook(keep)]
        handles += [
            layer.register_forward_pre_hook(lambda *_: decoding.budget.tick()) for layer in encoder.layers
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _window_words(self, decoding: _WindowDecoding, language: str) -> WindowWords:
        options, budget = self.options, decoding.budget
        first, *fallbacks = options.temperatures
        decoded = self._decode(decoding, language, first)
        if (
            decoded.no_speech_prob > options.no_speech_threshold
            and decoded.avg_logprob < options.log_prob_threshold
        ):
            return self._heard(decoded, [], "no speech")
        for attempt, temperature in enumerate(fallbacks):
            if not decoded.poor(options) or budget.left < options.attempt_tokens + options.min_new_tokens:
                break
            # Seeded, so that a window transcribes the same every time.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(attempt)
                retry = self._decode(decoding, language, temperature)
            if budget.cut_short:
                break  # its words are not all there
            decoded = min(decoded, retry, key=lambda d: (d.poor(options), -d.avg_logprob))
        if decoded.avg_logprob < options.log_prob_threshold:
            # No temperature decodes it with confidence: Whisper's guesses at music or noise ("Thanks
            # for watching!", measured at -1.3 to -1.5 on the synthetic songs' band, sung lines -0.1
            # to -0.9 even when separated).
            return self._heard(decoded, [], "poor")
        kept = collapse_loops(
            list(zip(decoded.pieces, decoded.confidences, strict=True)),
            key=lambda item: normalize_word(item[0][0]),
        )
        words = [
            common_pb2.Word(text=text.strip(), start=start, end=end, confidence=confidence, heard=True)
            for (text, start, end), confidence in kept
            if is_word(text.strip())  # not a caption
        ]
        if words and compression_ratio(" ".join(w.text for w in words)) > options.compression_ratio_threshold:
            return self._heard(decoded, [], "loop")  # still a loop, of more than a line: nothing usable
        return self._heard(decoded, words, "")

    @staticmethod
    def _heard(decoded: _Decoded, words: list[common_pb2.Word], dropped: str) -> WindowWords:
        return WindowWords(
            words,
            decoded.avg_logprob,
            decoded.no_speech_prob,
            decoded.compression_ratio,
            decoded.temperature,
            dropped,
        )

    def _decode(self, decoding: _WindowDecoding, language: str, temperature: float) -> _Decoded:
        """Whisper's words for a window, without those it hears after the singing ends: in the
        silence at the end of a nearly full window it tends to make up a loop ("Thank you so much
        for watching, and I'll see you in the next video, and ..."), which would set off the
        fallback when the words of the singing are fine. At most `max_new_tokens` per generate
        call, and no more than the window's budget has left."""
        decoding.budget.message = f"decoding at temperature {temperature:g}"
        decoding.budget.charge(self.options.attempt_tokens)
        generate_kwargs: dict[str, object] = {
            "num_beams": self.options.num_beams,
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
        pieces = [piece for piece in join_hyphenated(output["chunks"]) if piece[1] < decoding.singing_ends]
        decoding.budget.report()
        assert decoding.encoded is not None  # kept by _watching_the_encoder
        return self._score(decoding.encoded, pieces, language, temperature)

    def _score(
        self, encoded: torch.Tensor, pieces: list[tuple[str, float, float]], language: str, temperature: float
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
        return _Decoded(pieces, confidences, float(np.mean(token_log_probs)), no_speech_prob, temperature)


def _no_speech_token(tokenizer: object) -> int | None:
    """Whisper's no-speech token: <|nospeech|> in the newest models, <|nocaptions|> before."""
    for token in ("<|nospeech|>", "<|nocaptions|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)  # type: ignore[attr-defined]
        if token_id is not None and token_id != tokenizer.unk_token_id:  # type: ignore[attr-defined]
            return int(token_id)
    return None
