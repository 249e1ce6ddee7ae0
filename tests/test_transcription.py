"""Transcription: the Whisper wrapper with a tiny random Whisper (sung passages, progress, word times,
languages, loading), the Gemma 3n backend with a tiny random Gemma 3n, the user's lyrics timed by
forced alignment, the clean-up of decoded text, real whisper-tiny.en on read speech (../shared), and
the gRPC service. Quality on sung vocals: test_transcription_quality.py."""

from __future__ import annotations

import io
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import torch

from roar import audio
from roar.catalog import transcription_catalog
from roar.config import Settings
from roar.errors import BadInput, ModelUnavailable
from roar.models import ModelCache
from roar.service import request_stream
from roar.text import edit_distance, normalized_words
from roar.v1 import common_pb2, transcription_pb2, transcription_pb2_grpc
from services.transcription import vad
from services.transcription.align import ALIGNER_NAME, transcript_from_lyrics
from services.transcription.gemma import GemmaTranscriber
from services.transcription.server import TranscriptionServicer
from services.transcription.transcriber import (
    SAMPLE_RATE,
    load_transcriber,
    prepare_audio,
)
from services.transcription.vad import speech_regions as speech_spans
from services.transcription.whisper import WhisperTranscriber
from services.transcription.windows import windows
from tests.support.tiny_gemma import build_tiny_gemma
from tests.support.tiny_whisper import build_tiny_whisper

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SONG = Path(__file__).resolve().parent / "data" / "songs" / "song_000"
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


@pytest.fixture(scope="module")
def vocals() -> np.ndarray:
    """A committed synthetic song's vocals (20 s, three sung lines) as 16 kHz mono."""
    return prepare_audio((SONG / "vocals.flac").read_bytes())


def assert_inside_spans(words: list[common_pb2.Word], spans: list[tuple[float, float]]) -> None:
    for word in words:
        assert any(start - 1e-6 <= word.start <= word.end <= end + 1e-6 for start, end in spans), (
            word.text,
            word.start,
            word.end,
            spans,
        )


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


def test_sung_passages_are_transcribed_window_by_window(tiny: WhisperTranscriber, vocals: np.ndarray) -> None:
    song = np.concatenate([vocals, vocals, vocals])  # one minute, nine sung lines
    spans = speech_spans(song)
    assert len(spans) == 9
    reports: list[tuple[float, str]] = []
    transcript = tiny.transcribe(song, "", lambda percent, message="": reports.append((percent, message)))

    percents = [p for p, _ in reports]
    assert percents[0] == 0.0 and percents[-1] == 100.0
    assert percents == sorted(percents)
    # The lines packed into 30 s windows: two, then.
    # (Reports inside a window add what it is doing: "transcribing segments 1-6: decoding ...".)
    messages = [m.split(":")[0] for _, m in reports if m.startswith("transcribing")]
    assert list(dict.fromkeys(messages)) == ["transcribing segments 1-6", "transcribing segments 7-9"]
    words = all_words(transcript)
    assert_words_in_order_within(words, len(song) / SAMPLE_RATE)
    assert_inside_spans(words, spans)
    assert max(w.start for w in words) > 40.0  # the second window's words are there too
    assert transcript.language == "en" and transcript.model == tiny.name
    assert not transcript.from_user_lyrics
    for segment in transcript.segments:
        assert segment.text == " ".join(w.text for w in segment.words)
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)


def test_window_times_map_back_to_the_audio() -> None:
    packed = windows([(2.0, 6.0), (8.0, 12.0), (14.0, 40.0)])
    assert [w.passages for w in packed] == [((2.0, 6.0), (8.0, 12.0)), ((14.0, 40.0),)]
    window = packed[0]  # 0.5 s of silence, 2-6 s, 0.5 s of silence, 8-12 s, 0.5 s of silence
    assert len(window.samples(np.ones(50 * SAMPLE_RATE, np.float32))) == 9.5 * SAMPLE_RATE
    assert window.audio_times(0.5, 1.0) == (2.0, 2.5)
    assert window.audio_times(6.0, 7.0) == (9.0, 10.0)  # in the second passage
    # A word heard in the silence before a passage starts with it, and ends in the passage it starts in.
    assert window.audio_times(0.2, 0.7) == (2.0, 2.2)
    assert window.audio_times(4.7, 5.5) == (8.0, 8.5)
    assert window.audio_times(4.0, 5.5) == (5.5, 6.0)
    assert window.audio_times(9.2, 9.4) == (12.0, 12.0)  # after the last passage


# The promise: progress at least this often, in seconds of compute.
PROGRESS_SECONDS = 2.0


def test_progress_comes_every_two_seconds_of_compute_on_a_slow_model(
    tmp_path: Path, vocals: np.ndarray
) -> None:
    """A random Whisper that computes like a small one writes garbage for as long as it may, and
    fails every check, so each window goes through its fallbacks: reports still come at least every
    2 s of this thread's compute (it does all of it: one torch thread), from the first to the end."""
    slow = load_transcriber(str(build_tiny_whisper(tmp_path / "slow", width=768, layers=6, max_length=448)))
    compute: list[float] = [time.thread_time()]
    transcript = slow.transcribe(vocals, "", lambda percent, message="": compute.append(time.thread_time()))
    compute.append(time.thread_time())
    assert compute[-1] - compute[0] > 3 * PROGRESS_SECONDS  # slow enough for the promise to matter
    gaps = np.diff(compute)
    assert gaps.max() <= PROGRESS_SECONDS, gaps.round(2).tolist()
    assert isinstance(transcript, common_pb2.Transcript)


def test_audio_without_singing_has_no_words(tiny: WhisperTranscriber) -> None:
    reports: list[tuple[float, str]] = []
    silence = np.zeros(5 * SAMPLE_RATE, np.float32)
    transcript = tiny.transcribe(silence, "", lambda percent, message="": reports.append((percent, message)))
    assert not transcript.segments
    assert reports[-1] == (100.0, "transcribed 0 segments")


def test_english_only_models_ignore_the_language(tiny: WhisperTranscriber) -> None:
    assert tiny.transcribe(noise(3.0), "de").language == "en"


def test_multilingual_models_take_or_detect_the_language(tmp_path: Path, vocals: np.ndarray) -> None:
    transcriber = load_transcriber(str(build_tiny_whisper(tmp_path / "multi", multilingual=True)), "cpu")
    assert isinstance(transcriber, WhisperTranscriber) and transcriber.multilingual
    first_line = vocals[: 7 * SAMPLE_RATE]
    assert transcriber.transcribe(first_line, "de").language == "de"
    detected = transcriber.transcribe(first_line, "").language
    assert re.fullmatch(r"[a-z]{2,3}", detected), detected
    with pytest.raises(BadInput, match="xx"):
        transcriber.transcribe(first_line, "xx")


@pytest.mark.parametrize("gain", [1.0, 0.01])
def test_prepare_audio_makes_16k_mono_at_one_level(gain: float) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * 44100) / 44100)
    stereo = gain * np.stack([0.6 * tone, 0.2 * tone]).astype(np.float32)
    prepared = prepare_audio(audio.encode(stereo, 44100, "wav"))

    assert prepared.dtype == np.float32 and prepared.shape == (2 * SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(prepared))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(prepared) - 440) < 2
    # Loud or 40 dB quieter, the stem comes out at the target level (a sine's RMS is its peak / √2).
    rms_db = 20 * np.log10(np.sqrt(np.mean(prepared**2)))
    assert abs(rms_db - vad.TARGET_LEVEL_DB) < 0.5


def test_undecodable_audio_is_bad_input() -> None:
    with pytest.raises(BadInput):
        prepare_audio(b"this is not audio" * 100)


@pytest.mark.parametrize("source", ["absent-dir", "roar-tests/no-such-whisper"])
def test_a_missing_model_fails_fast_naming_the_model_and_setting(tmp_path: Path, source: str) -> None:
    if source == "absent-dir":
        source = str(tmp_path / source)
    catalog = transcription_catalog(Settings(transcription_model=source))
    transcribers = ModelCache(lambda name, source: load_transcriber(source, "cpu", name), catalog)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="ROAR_TRANSCRIPTION_MODEL") as raised:
        transcribers.get()
    assert time.monotonic() - started < 15
    assert f"model {catalog.default!r}" in raised.value.message and str(tmp_path) not in raised.value.message


# The user's lyrics, timed by forced alignment


def test_lyrics_are_timed_by_forced_alignment(vocals: np.ndarray) -> None:
    truth = json.loads((SONG / "truth.json").read_text())
    reports: list[tuple[float, str]] = []

    def nothing_heard(progress: object) -> common_pb2.Transcript:
        return common_pb2.Transcript()  # no anchors: forced alignment alone

    transcript = transcript_from_lyrics(
        vocals, truth["lyrics"], "EN", nothing_heard, lambda p, m="": reports.append((p, m))
    )
    assert transcript.from_user_lyrics and transcript.model == ALIGNER_NAME and transcript.language == "en"
    assert [segment.text for segment in transcript.segments] == truth["lyrics"].splitlines()
    words = all_words(transcript)
    assert_words_in_order_within(words, len(vocals) / SAMPLE_RATE)
    onsets = [abs(w.start - t["start"]) for w, t in zip(words, truth["words"], strict=True)]
    assert np.median(onsets) < 0.08 and max(onsets) < 0.3
    assert reports[-1][0] == 100.0 and any("aligning lyrics" in m for _, m in reports)


def test_lyrics_the_aligner_cannot_place_are_spread_over_the_singing(
    tiny: WhisperTranscriber, vocals: np.ndarray
) -> None:
    """The aligner's en-us model has no pronunciation for Japanese script, so it places no word:
    the lyrics' lines stay, their words spread over the singing and marked as not heard."""
    reports: list[tuple[float, str]] = []
    transcript = transcript_from_lyrics(
        vocals,
        "夢を見る\n山は白い",
        "",
        lambda progress: tiny.transcribe(vocals, "", progress),
        lambda p, m="": reports.append((p, m)),
    )
    assert transcript.from_user_lyrics and transcript.model == ALIGNER_NAME
    assert [s.text for s in transcript.segments] == ["夢を見る", "山は白い"]
    words = all_words(transcript)
    assert_words_in_order_within(words, len(vocals) / SAMPLE_RATE)
    assert not any(w.heard for w in words) and all(w.confidence == 0.0 for w in words)
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert any(m.startswith("transcribing segment") for _, m in reports)


# Gemma 3n, with a tiny random Gemma 3n of the real architecture


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("gemma") / "tiny")


def test_gemma_transcribes_each_passage_with_aligned_word_times(
    tiny_gemma_dir: Path, vocals: np.ndarray
) -> None:
    transcriber = load_transcriber(str(tiny_gemma_dir), "cpu")
    assert isinstance(transcriber, GemmaTranscriber)
    reports: list[tuple[float, str]] = []
    transcript = transcriber.transcribe(vocals, "", lambda p, m="": reports.append((p, m)))

    assert {m for _, m in reports if m.startswith("transcribing")} == {"transcribing segments 1-3"}
    assert reports[-1][0] == 100.0
    words = all_words(transcript)
    assert_words_in_order_within(words, len(vocals) / SAMPLE_RATE)
    assert_inside_spans(words, speech_spans(vocals))
    assert any(w.heard for w in words)  # placed by the aligner, not only spread
    assert transcript.model == str(tiny_gemma_dir) and not transcript.from_user_lyrics


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
async def transcription_server(default_dir: Path, **other_dirs: Path) -> AsyncIterator[str]:
    """The service offering `default_dir` as "tiny" (the default) and each other dir by its
    keyword, on a loopback port: its address."""
    entries = (f"tiny={default_dir}", *(f"{name}={path}" for name, path in other_dirs.items()))
    catalog = transcription_catalog(Settings(transcription_model="tiny", transcription_models=entries))
    transcribers = ModelCache(lambda name, source: load_transcriber(source, "cpu", name), catalog)
    server = grpc.aio.server()
    transcription_pb2_grpc.add_TranscriptionServicer_to_server(TranscriptionServicer(transcribers), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@asynccontextmanager
async def transcription_stub(
    default_dir: Path, **other_dirs: Path
) -> AsyncIterator[transcription_pb2_grpc.TranscriptionStub]:
    """transcription_server with an asyncio client's stub for it."""
    async with (
        transcription_server(default_dir, **other_dirs) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield transcription_pb2_grpc.TranscriptionStub(channel)


def transcribe_requests(data: bytes, model: str = "", lyrics: str = "") -> object:
    options = transcription_pb2.TranscriptionOptions(model=model, language="en", lyrics=lyrics)
    return request_stream(transcription_pb2.TranscribeRequest, options, "audio", data)


async def transcribe_song(
    default_dir: Path, model: str = "", lyrics: str = "", **other_dirs: Path
) -> tuple[list[common_pb2.StageProgress], common_pb2.Transcript]:
    """The progress updates and the transcript for the committed song's vocals (a 44.1 kHz FLAC)."""
    data = (SONG / "vocals.flac").read_bytes()
    async with transcription_stub(default_dir, **other_dirs) as stub:
        responses = [r async for r in stub.Transcribe(transcribe_requests(data, model, lyrics))]
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[-1] == "transcript" and set(kinds[:-1]) <= {"progress", "passage"}
    passages = [r.passage for r in responses if r.HasField("passage")]
    assert [p.index for p in passages] == list(range(len(passages)))
    if not lyrics:  # each window's words as it was transcribed, then all of them in the transcript
        words = [(w.text, round(w.start, 3)) for p in passages for w in p.words]
        assert words == [(w.text, round(w.start, 3)) for w in all_words(responses[-1].transcript)]
    updates = [r.progress for r in responses if r.HasField("progress")]
    percents = [u.percent for u in updates]
    assert percents == sorted(percents) and percents[-1] == 100.0
    return updates, responses[-1].transcript


async def test_service_streams_progress_then_the_transcript(tiny_dir: Path, vocals: np.ndarray) -> None:
    updates, transcript = await transcribe_song(tiny_dir)
    assert any(u.message.startswith("transcribing segments 1-3 (") for u in updates)
    assert transcript.model == "tiny" and not transcript.from_user_lyrics
    assert_words_in_order_within(all_words(transcript), len(vocals) / SAMPLE_RATE)


async def test_service_times_the_users_lyrics(tiny_dir: Path) -> None:
    lyrics = (SONG / "lyrics.txt").read_text()
    updates, transcript = await transcribe_song(tiny_dir, lyrics=lyrics)
    assert any(u.message.startswith("aligning lyrics") for u in updates)
    assert transcript.from_user_lyrics and transcript.model == ALIGNER_NAME
    assert [s.text for s in transcript.segments] == lyrics.strip().splitlines()
    assert [w.text for w in all_words(transcript)] == lyrics.split()


async def test_service_transcribes_with_gemma(
    tiny_dir: Path, tiny_gemma_dir: Path, vocals: np.ndarray
) -> None:
    updates, transcript = await transcribe_song(tiny_dir, model="gemma", gemma=tiny_gemma_dir)
    assert any(u.message == "loading model gemma" for u in updates)
    assert transcript.model == "gemma"
    assert_words_in_order_within(all_words(transcript), len(vocals) / SAMPLE_RATE)


def no_samples() -> bytes:
    empty = io.BytesIO()
    sf.write(empty, np.zeros((0, 2), np.float32), 44100, format="WAV")
    return empty.getvalue()


@pytest.mark.parametrize(
    ("data", "details"),
    [
        (lambda: b"not audio" * 100, "not an audio file"),
        (no_samples, "no samples"),
        # Past the limit, refused from its header (the stage decodes block by block).
        (lambda: audio.encode(np.zeros((2, 44100 * 61), np.float32), 44100, "flac"), audio.LIMIT_SETTING),
    ],
)
async def test_service_rejects_audio_it_cannot_take(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, data: Callable[[], bytes], details: str
) -> None:
    monkeypatch.setenv("ROAR_MAX_AUDIO_MINUTES", "1")
    async with transcription_stub(tiny_dir) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [r async for r in stub.Transcribe(transcribe_requests(data()))]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details in (raised.value.details() or "")


async def test_service_reports_a_missing_model(tiny_dir: Path, tmp_path: Path) -> None:
    data = audio.encode(noise(2.0)[None], SAMPLE_RATE, "wav")
    async with transcription_stub(tiny_dir, absent=tmp_path / "absent") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [r async for r in stub.Transcribe(transcribe_requests(data, model="absent"))]
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = raised.value.details() or ""
    assert "model 'absent'" in details and "ROAR_TRANSCRIPTION_MODELS" in details
    assert str(tmp_path) not in details
