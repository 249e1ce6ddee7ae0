"""Transcription models behind one interface: loading a Whisper or Gemma 3n model (local dir or hub
id, safetensors only) as a Transcriber, and the models' audio input. (The user's lyrics are timed
once, anchored by the model's transcription: align.transcript_from_lyrics.)

The backends (whisper.WhisperTranscriber, gemma.GemmaTranscriber) share one window loop
(windows.transcribe_windows) and one text clean-up (cleanup).
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from huggingface_hub import HfApi, is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import pipeline

from roar.errors import ModelUnavailable
from roar.progress import ProgressCallback, no_progress, stop_on_cancel
from roar.v1 import common_pb2
from services.transcription import vad
from services.transcription.vocals import read_vocals
from services.transcription.whisper import WhisperTranscriber
from services.transcription.windows import Backend, TranscriptionOptions

log = logging.getLogger("roar.transcription")

SAMPLE_RATE = vad.SAMPLE_RATE
HUB_TIMEOUT_SECONDS = 10.0
MODEL_HINT = (
    "a transcription model's source is a local Whisper or Gemma 3n model dir (safetensors weights), or "
    "a Hugging Face model id such as openai/whisper-small while the hub is reachable"
)
# What a hub download fetches: configs, tokenizers and safetensors weights, never pickled weights.
HUB_FILES = ["*.json", "*.jinja", "*.txt", "*.model", "*.safetensors"]
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class Transcriber(Backend, Protocol):
    """A model behind the window loop: its options and its own whole-audio transcription."""

    options: TranscriptionOptions
    vad_options: vad.VadOptions

    def transcribe(
        self, audio: vad.Samples, language: str = "", progress: ProgressCallback = no_progress
    ) -> common_pb2.Transcript: ...


def prepare_audio(data: bytes) -> np.ndarray:
    """A vocals stem (an audio file's bytes) as the models' and the aligner's input, whole in memory:
    mono float32 at 16 kHz, brought to one level (see vocals.read_vocals; raises BadInput)."""
    with read_vocals(io.BytesIO(data)) as vocals:
        return vocals[:]


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
        from services.transcription.gemma import load_gemma  # only when needed: it is big

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
