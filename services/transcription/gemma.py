"""Gemma 3n as a transcription backend: transformers' Gemma3nForConditionalGeneration hears the
passages of singing that voice activity detection finds, packed into windows of at most 30 s as
for Whisper (its audio encoder takes no more), and writes their words when asked "Transcribe this
audio."; the words get their times from forced alignment of that text to the window
(align.align_lyrics), as the user's own lyrics do.

The model is built without its vision tower: the service only hears audio, and the tower (a
300 M-parameter MobileNet from timm) would need timm and torchvision besides. Its weights in a
checkpoint are left unread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoProcessor,
    Gemma3nConfig,
    Gemma3nForConditionalGeneration,
    ProcessorMixin,
)
from transformers.models.gemma3n.modeling_gemma3n import (
    Gemma3nModel,
    Gemma3nMultimodalEmbedder,
    Gemma3nPreTrainedModel,
)

from roar.progress import ProgressCallback, no_progress, stop_on_cancel
from roar.text import normalize_word
from roar.v1 import common_pb2
from services.transcription import align, vad
from services.transcription.cleanup import collapse_loops, is_loop, is_word, sentences
from services.transcription.windows import (
    SAMPLE_RATE,
    TokenBudget,
    TranscriptionOptions,
    Window,
    WindowWords,
    transcribe_windows,
)

PROMPT = "Transcribe this audio."
# Room for the words of a passage: more tokens a second than anyone sings, so that a model caught in
# a loop stops soon.
MAX_TOKENS_PER_SECOND = 8
MIN_NEW_TOKENS = 16


class _Gemma3nAudioModel(Gemma3nModel):
    """Gemma3nModel as transformers builds it, less the vision tower."""

    def __init__(self, config: Gemma3nConfig) -> None:
        Gemma3nPreTrainedModel.__init__(self, config)
        self.vocab_size = config.text_config.vocab_size
        self.language_model = AutoModel.from_config(config.text_config)
        self.vocab_size_per_layer_input = config.text_config.vocab_size_per_layer_input
        self.audio_tower = AutoModel.from_config(config.audio_config)
        # forward() embeds the image vocabulary's tokens with embed_vision, images or not.
        self.embed_vision = Gemma3nMultimodalEmbedder(config.vision_config, config.text_config)
        self.embed_audio = Gemma3nMultimodalEmbedder(config.audio_config, config.text_config)
        self.post_init()


class Gemma3nForAudio(Gemma3nForConditionalGeneration):
    """Gemma3nForConditionalGeneration without the vision tower: audio and text in, text out."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"vision_tower\."]

    def __init__(self, config: Gemma3nConfig) -> None:
        Gemma3nPreTrainedModel.__init__(self, config)
        self.model = _Gemma3nAudioModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


@dataclass
class GemmaTranscriber:
    name: str
    model: Gemma3nForConditionalGeneration
    processor: ProcessorMixin

    options: TranscriptionOptions = field(default_factory=TranscriptionOptions)
    vad_options: vad.VadOptions = field(default_factory=vad.VadOptions)

    def transcribe(
        self, audio: vad.Samples, language: str = "", progress: ProgressCallback = no_progress
    ) -> common_pb2.Transcript:
        """Transcribes mono 16 kHz audio window by window. `language` (an ISO 639-1 code) is only
        passed on: Gemma 3n hears the language itself."""
        return transcribe_windows(
            self, audio, self.language_for(language), progress, self.options, self.vad_options
        )[0]

    def language_for(self, language: str) -> str:
        return language.strip().lower()

    def detect_language(self, samples: np.ndarray) -> str:
        return ""  # Gemma 3n does not name the language it hears

    def window_words(
        self,
        samples: np.ndarray,
        window: Window,
        language: str,
        progress: ProgressCallback,
        max_tokens: int | None = None,
    ) -> WindowWords:
        """Gemma 3n's text for the window, its words timed by forced alignment to the window. (It
        never judges a window poor, so is never asked to hear one again: `max_tokens` goes unused.)"""
        text = self._transcribe_window(samples, progress)
        words = [
            word
            for segment in align.align_lyrics(samples, "\n".join(sentences(text)))
            for word in segment.words
        ]
        return WindowWords(words)

    def text_logprobs(self, samples: np.ndarray, texts: list[str], language: str) -> None:
        """Gemma 3n does not judge a given text here: the lyrics aligner goes without."""
        return None

    def _transcribe_window(self, samples: np.ndarray, progress: ProgressCallback) -> str:
        """The text Gemma 3n hears in up to 30 s of audio, loops and captions left out."""
        content = [{"type": "audio", "audio": samples}, {"type": "text", "text": PROMPT}]
        messages = [{"role": "user", "content": content}]
        inputs = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        inputs = {
            key: value.to(self.model.device, self.model.dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
        }
        prompt_length = inputs["input_ids"].shape[1]
        seconds = len(samples) / SAMPLE_RATE
        max_new_tokens = max(MIN_NEW_TOKENS, round(MAX_TOKENS_PER_SECOND * seconds))
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                stopping_criteria=[TokenBudget(max_new_tokens, progress)],  # for its progress reports
            )
        text = self.processor.decode(output[0, prompt_length:], skip_special_tokens=True)
        kept = [word for word in collapse_loops(text.split(), key=normalize_word) if is_word(word)]
        text = " ".join(kept)
        return "" if is_loop(text) else text


def load_gemma(name: str, model_dir: str, device: str = "cpu") -> GemmaTranscriber:
    """Loads a Gemma 3n model dir (weights, processor, chat template) for `device`."""
    model = Gemma3nForAudio.from_pretrained(
        model_dir, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32, use_safetensors=True
    )
    return GemmaTranscriber(
        name=name,
        model=stop_on_cancel(model.to(device).eval()),
        processor=AutoProcessor.from_pretrained(model_dir),
    )
