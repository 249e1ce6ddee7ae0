"""Transcription: the Whisper wrapper with a tiny random Whisper (windows, progress, word times,
languages, loading), real whisper-tiny.en on read speech (../shared), and the gRPC service."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from roar import audio
from roar.errors import BadInput, ModelUnavailable
from roar.models import ModelCache
from roar.service import request_stream
from roar.text import edit_distance, normalized_words
from roar.v1 import common_pb2, transcription_pb2, transcription_pb2_grpc
from services.transcription.server import TranscriptionServicer
from services.transcription.transcriber import (
    SAMPLE_RATE,
    WhisperTranscriber,
    group_lines,
    load_transcriber,
    prepare_audio,
)
from tests.support.tiny_whisper import build_tiny_whisper

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_TINY_EN = SHARED / "models" / "whisper-tiny.en"
LIBRIVOX = SHARED / "audio" / "librivox"

needs_shared = pytest.mark.skipif(
    not (WHISPER_TINY_EN.is_dir() and LIBRIVOX.is_dir()),
    reason=f"needs whisper-tiny.en and the LibriVox clips in {SHARED}",
)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def all_words(transcript: common_pb2.Transcript) -> list[common_pb2.Word]:
    return [word for segment in transcript.segments for word in segment.words]


def assert_words_in_order_within(words: list[common_pb2.Word], duration: float) -> None:
    assert words
    for word in words:
        assert word.text.strip() == word.text and word.text
        assert 0.0 <= word.start <= word.end <= duration + 1e-6, (word.text, word.start, word.end)
        assert 0.0 <= word.confidence <= 1.0
    for before, after in itertools.pairwise(words):
        assert before.end <= after.start + 1e-6, (before.text, before.end, after.text, after.start)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Other test processes share the cores: torch's multi-threaded kernels then stall (seen 20x
    slower with 2 threads on 2 busy cores), while one thread keeps these tests steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> WhisperTranscriber:
    return load_transcriber(str(tiny_dir), "cpu")


# The wrapper, with a tiny random Whisper of the real architecture


def test_long_audio_goes_window_by_window_with_rising_progress(tiny: WhisperTranscriber) -> None:
    reports: list[tuple[float, str]] = []
    transcript = tiny.transcribe(
        noise(50.0), "", lambda percent, message="": reports.append((percent, message))
    )

    percents = [p for p, _ in reports]
    assert len(reports) >= 3, reports  # the start, then one report per window: at least two windows
    assert percents[0] == 0.0 and percents[-1] == 100.0
    assert all(a < b for a, b in itertools.pairwise(percents)), percents
    assert reports[-1][1] == "transcribing 0:50 / 0:50"
    words = all_words(transcript)
    assert_words_in_order_within(words, 50.0)
    assert max(w.start for w in words) > 30.0  # the second window's words are there too
    assert transcript.language == "en" and transcript.model == tiny.name
    for segment in transcript.segments:
        assert segment.text == " ".join(w.text for w in segment.words)
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)


def test_english_only_models_ignore_the_language(tiny: WhisperTranscriber) -> None:
    assert tiny.transcribe(noise(3.0), "de").language == "en"


def test_multilingual_models_take_or_detect_the_language(tmp_path: Path) -> None:
    transcriber = load_transcriber(str(build_tiny_whisper(tmp_path / "multi", multilingual=True)), "cpu")
    assert transcriber.multilingual
    assert transcriber.transcribe(noise(3.0), "de").language == "de"
    detected = transcriber.transcribe(noise(3.0), "").language
    assert re.fullmatch(r"[a-z]{2,3}", detected), detected
    with pytest.raises(BadInput, match="xx"):
        transcriber.transcribe(noise(3.0), "xx")


def test_prepare_audio_makes_16k_mono() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * 44100) / 44100)
    stereo = np.stack([0.6 * tone, 0.2 * tone]).astype(np.float32)
    prepared = prepare_audio(audio.encode(stereo, 44100, "wav"))

    assert prepared.dtype == np.float32 and prepared.shape == (2 * SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(prepared))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(prepared) - 440) < 2
    assert 0.38 < np.max(np.abs(prepared)) < 0.42  # the mean of both channels


def test_undecodable_audio_is_bad_input() -> None:
    with pytest.raises(BadInput):
        prepare_audio(b"this is not audio" * 100)


@pytest.mark.parametrize("model", ["absent-dir", "roar-tests/no-such-whisper"])
def test_a_missing_model_fails_fast_naming_the_setting(tmp_path: Path, model: str) -> None:
    name = str(tmp_path / model) if model == "absent-dir" else model
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="ROAR_TRANSCRIPTION_MODEL"):
        load_transcriber(name, "cpu")
    assert time.monotonic() - started < 15


def word(text: str, start: float, end: float) -> common_pb2.Word:
    return common_pb2.Word(text=text, start=start, end=end, confidence=1.0)


def test_lines_break_at_pauses_sentences_and_length() -> None:
    words = [
        word("one", 0.0, 0.3),
        word("two.", 0.4, 0.7),  # sentence end
        word("three", 0.8, 1.0),
        word("four", 2.0, 2.2),  # after a 1 s pause
        *[word(f"w{i}", 2.3 + 0.3 * i, 2.5 + 0.3 * i) for i in range(9)],  # 8 words at most
        word("long", 6.0, 9.0),  # would make the line longer than 6 s
    ]
    lines = [segment.text for segment in group_lines(words)]
    assert lines == ["one two.", "three", "four w0 w1 w2 w3 w4 w5 w6", "w7 w8", "long"]


# Real whisper-tiny.en on read speech


def librivox_references() -> dict[str, str]:
    references = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        match = re.fullmatch(r"\s*<s>(.*)</s>\s*\((.+)\)\s*", line)
        if match:
            references[match.group(2)] = match.group(1)
    return references


@pytest.fixture(scope="module")
def tiny_en() -> WhisperTranscriber:
    return load_transcriber(str(WHISPER_TINY_EN), "cpu")


@pytest.mark.shared
@needs_shared
def test_real_whisper_transcribes_read_speech(tiny_en: WhisperTranscriber) -> None:
    errors = reference_words = 0
    confidences = []
    for name, reference in librivox_references().items():
        speech = prepare_audio((LIBRIVOX / f"{name}.wav").read_bytes())
        words = all_words(tiny_en.transcribe(speech))
        assert_words_in_order_within(words, len(speech) / SAMPLE_RATE)
        assert words[0].start < 1.0 and words[-1].end > 0.7 * len(speech) / SAMPLE_RATE  # spans the speech
        heard = normalized_words(" ".join(w.text for w in words))
        errors += edit_distance(normalized_words(reference), heard)
        reference_words += len(normalized_words(reference))
        confidences += [w.confidence for w in words]
    assert reference_words > 50
    assert errors / reference_words <= 0.10
    # Probabilities of the words the model chose: mostly high, not all the same.
    assert np.mean(confidences) > 0.7 and min(confidences) < 0.9


@pytest.mark.shared
@needs_shared
def test_real_whisper_neither_cuts_nor_repeats_words_between_windows(tiny_en: WhisperTranscriber) -> None:
    references = librivox_references()
    pause = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    parts, reference = [], []
    # Every clip, then the first two again: about 37 s, so words run across a window boundary.
    names = [*references, *list(references)[:2]]
    for name in names:
        parts += [prepare_audio((LIBRIVOX / f"{name}.wav").read_bytes()), pause]
        reference += normalized_words(references[name])
    speech = np.concatenate(parts)

    reports: list[float] = []
    words = all_words(tiny_en.transcribe(speech, "", lambda percent, message="": reports.append(percent)))
    assert len(reports) >= 3
    assert_words_in_order_within(words, len(speech) / SAMPLE_RATE)
    heard = normalized_words(" ".join(w.text for w in words))
    assert edit_distance(reference, heard) / len(reference) <= 0.10


# The gRPC service, in-process


@asynccontextmanager
async def transcription_stub(default_model: str) -> AsyncIterator[transcription_pb2_grpc.TranscriptionStub]:
    transcribers = ModelCache(
        lambda model: load_transcriber(model, "cpu"), default_model, "ROAR_TRANSCRIPTION_MODEL"
    )
    server = grpc.aio.server()
    transcription_pb2_grpc.add_TranscriptionServicer_to_server(TranscriptionServicer(transcribers), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield transcription_pb2_grpc.TranscriptionStub(channel)
    finally:
        await server.stop(grace=None)


def transcribe_requests(data: bytes, model: str = "") -> object:
    options = transcription_pb2.TranscriptionOptions(model=model, language="en")
    return request_stream(transcription_pb2.TranscribeRequest, options, "audio", data)


async def test_service_streams_progress_then_the_transcript(tiny_dir: Path) -> None:
    song = np.stack([noise(8.0), noise(8.0, seed=1)])
    data = audio.encode(audio.resample(song, SAMPLE_RATE, 44100), 44100, "flac")
    async with transcription_stub(str(tiny_dir)) as stub:
        responses = [r async for r in stub.Transcribe(transcribe_requests(data))]

    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[-1] == "transcript" and set(kinds[:-1]) == {"progress"}
    percents = [r.progress.percent for r in responses[:-1]]
    assert percents == sorted(percents) and percents[-1] == 100.0
    transcript = responses[-1].transcript
    assert transcript.model == str(tiny_dir)
    assert_words_in_order_within(all_words(transcript), 8.0)


async def test_service_rejects_undecodable_audio(tiny_dir: Path) -> None:
    async with transcription_stub(str(tiny_dir)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [r async for r in stub.Transcribe(transcribe_requests(b"not audio" * 100))]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_service_reports_a_missing_model(tiny_dir: Path, tmp_path: Path) -> None:
    data = audio.encode(noise(2.0)[None], SAMPLE_RATE, "wav")
    async with transcription_stub(str(tiny_dir)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [r async for r in stub.Transcribe(transcribe_requests(data, model=str(tmp_path / "absent")))]
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ROAR_TRANSCRIPTION_MODEL" in (raised.value.details() or "")
