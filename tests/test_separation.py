"""Separation: the demucs backend, the job function and the gRPC servicer, with a tiny randomly
initialised HTDemucs (real architecture and code paths; its stems are noise, not music)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from roar.audio import decode, encode
from roar.catalog import separation_catalog
from roar.config import Settings
from roar.errors import BadInput, Cancelled, ModelUnavailable
from roar.models import ModelCache
from roar.service import CHANNEL_OPTIONS, FileAssembler, request_stream
from roar.v1 import common_pb2, separation_pb2, separation_pb2_grpc
from roar.v1.common_pb2 import AudioInfo
from services.separation.backends import load_separator
from services.separation.demucs_backend import DemucsSeparator
from services.separation.separate import separate_song
from services.separation.server import SeparationServicer
from tests.support.tiny_demucs import SEGMENT_SECONDS, build_tiny_demucs

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPLEETER_DIR = SHARED / "models" / "spleeter-2stems"
# 16-bit PCM: each decoded stem is within half a step of its float value.
PCM16_STEP = 1 / 32768


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # The tiny model's tensors are too small for threads to pay off; on a busy machine two
    # threads made it several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_demucs(tmp_path_factory.mktemp("demucs-repo"))


@pytest.fixture(scope="module")
def separator(tiny_model: str) -> DemucsSeparator:
    # No random shift: the same input gives the same chunks every time.
    return DemucsSeparator(tiny_model, "cpu", shifts=0)


def song(seconds: float, sample_rate: int = 44100, channels: int = 2) -> np.ndarray:
    """A quiet two-tone chord with noise (quiet so that no stem clips when encoded)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(0).standard_normal((2, t.size)) * 0.02
    chord = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 55 * t)
    return (chord + noise)[:channels].astype(np.float32)


def song_file(seconds: float, sample_rate: int = 44100, channels: int = 2, fmt: str = "flac") -> bytes:
    return encode(song(seconds, sample_rate, channels), sample_rate, fmt)


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[float, str]] = []

    def __call__(self, percent: float, message: str = "") -> None:
        self.updates.append((percent, message))

    @property
    def percents(self) -> list[float]:
        return [percent for percent, _ in self.updates]


def test_progress_rises_chunk_by_chunk_to_100(separator: DemucsSeparator) -> None:
    seconds = 5 * SEGMENT_SECONDS
    progress = Recorder()
    separate_song(separator, song_file(seconds), all_stems=False, fmt="wav", progress=progress)

    percents = progress.percents
    assert all(a < b for a, b in pairwise(percents)), percents
    assert percents[0] == 0.0
    assert percents[-1] == 100.0
    chunks = [message for _, message in progress.updates if message.startswith("separating: chunk")]
    # 4 s segments with a 3 s stride over 20 s: a chunk starting every 3 s.
    assert separator.total_chunks(seconds * 44100) == 7
    assert chunks == [f"separating: chunk {i}/7" for i in range(1, 8)]


def test_shifted_separation_reports_every_chunk_and_ends_at_100(tiny_model: str) -> None:
    shifted = load_separator(tiny_model, "cpu")
    assert isinstance(shifted, DemucsSeparator) and shifted.shifts == 1
    audio = song(3 * SEGMENT_SECONDS)
    progress = Recorder()
    sources = shifted.separate(audio, progress)

    assert set(sources) == {"drums", "bass", "other", "vocals"}
    assert all(stem.shape == audio.shape for stem in sources.values())
    percents = progress.percents
    assert all(a < b for a, b in pairwise(percents)), percents
    assert percents[-1] == 100.0
    assert len(percents) > 2


def test_an_exception_in_progress_cancels_the_separation(separator: DemucsSeparator) -> None:
    calls = 0

    def cancel(percent: float, message: str = "") -> None:
        nonlocal calls
        calls += 1
        raise Cancelled()

    with pytest.raises(Cancelled):
        separator.separate(song(5 * SEGMENT_SECONDS), cancel)
    # Had demucs swallowed the exception, every later chunk would have reported again.
    assert calls == 1


def test_all_stems_last_as_long_as_the_input_and_the_instrumental_is_the_rest(
    separator: DemucsSeparator,
) -> None:
    audio = song(6.0)
    data = encode(audio, 44100, "wav")
    output = separate_song(separator, data, all_stems=True, fmt="wav", progress=Recorder())

    assert list(output.stems) == ["vocals.wav", "instrumental.wav", "drums.wav", "bass.wav", "other.wav"]
    assert output.input == AudioInfo(duration_seconds=6.0, sample_rate=44100, channels=2, format="WAV")
    stems = {name.removesuffix(".wav"): decode(data) for name, data in output.stems.items()}
    for stem in stems.values():
        assert stem.sample_rate == 44100
        assert stem.audio.shape == audio.shape
    rest = stems["drums"].audio + stems["bass"].audio + stems["other"].audio
    assert np.abs(rest).max() > 100 * PCM16_STEP  # not trivially silent
    np.testing.assert_allclose(stems["instrumental"].audio, rest, atol=2 * PCM16_STEP)
    assert not np.allclose(stems["vocals"].audio, stems["instrumental"].audio, atol=10 * PCM16_STEP)


def test_mono_22khz_input_gives_two_stems_of_its_duration(separator: DemucsSeparator) -> None:
    data = song_file(3.0, sample_rate=22050, channels=1, fmt="flac")
    progress = Recorder()
    output = separate_song(separator, data, all_stems=False, fmt="flac", progress=progress)

    assert list(output.stems) == ["vocals.flac", "instrumental.flac"]
    assert output.input == AudioInfo(duration_seconds=3.0, sample_rate=22050, channels=1, format="FLAC")
    for data in output.stems.values():
        stem = decode(data)
        # The model's rate and channels, the input's duration.
        assert (stem.sample_rate, stem.channels, stem.audio.shape[1]) == (44100, 2, 3 * 44100)
    assert any("resampling 22050 Hz to 44100 Hz" in message for _, message in progress.updates)


def test_undecodable_audio_is_bad_input(separator: DemucsSeparator) -> None:
    with pytest.raises(BadInput):
        separate_song(separator, b"not a song " * 1000, all_stems=False, fmt="wav", progress=Recorder())


def test_unknown_output_format_is_refused_before_separating(separator: DemucsSeparator) -> None:
    progress = Recorder()
    with pytest.raises(BadInput, match="ogg"):
        separate_song(separator, song_file(1.0), all_stems=False, fmt="ogg", progress=progress)
    assert progress.updates == []


@pytest.mark.parametrize(
    "source",
    ["no_such_model", "tiny@/no/such/dir", "@", "other_name@{repo}", "{repo}"],
    ids=["unknown-name", "missing-repo", "malformed", "name-not-in-repo", "dir-not-spleeter"],
)
def test_a_bad_model_source_names_the_model_and_setting_not_the_path(source: str, tiny_model: str) -> None:
    repo = tiny_model.partition("@")[2]
    settings = Settings(separation_models=(f"broken={source.format(repo=repo)}",))
    separators = ModelCache(lambda name, source: load_separator(source, "cpu"), separation_catalog(settings))
    with pytest.raises(ModelUnavailable, match=r"model 'broken' .*ROAR_SEPARATION_MODELS") as raised:
        separators.get("broken")
    assert repo not in raised.value.message and "/no/such" not in raised.value.message


@pytest.mark.shared
@pytest.mark.skipif(not SPLEETER_DIR.is_dir(), reason=f"needs the Spleeter weights in {SPLEETER_DIR}")
def test_a_spleeter_dir_loads_the_spleeter_backend() -> None:
    spleeter = load_separator(str(SPLEETER_DIR), "cpu")
    assert type(spleeter).__name__ == "SpleeterSeparator"
    assert spleeter.sources == ["vocals", "accompaniment"]


@asynccontextmanager
async def separation_server(default_model: str) -> AsyncIterator[separation_pb2_grpc.SeparationStub]:
    catalog = separation_catalog(Settings(separation_model=default_model))
    separators = ModelCache(lambda name, source: load_separator(source, "cpu"), catalog)
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    separation_pb2_grpc.add_SeparationServicer_to_server(SeparationServicer(separators), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            yield separation_pb2_grpc.SeparationStub(channel)
    finally:
        await server.stop(grace=None)


async def call(stub: separation_pb2_grpc.SeparationStub, requests: Iterator) -> list:
    return [response async for response in stub.Separate(requests)]


def separate_requests(data: bytes, **options: object) -> Iterator[separation_pb2.SeparateRequest]:
    return request_stream(
        separation_pb2.SeparateRequest, separation_pb2.SeparationOptions(**options), "audio", data
    )


async def test_server_streams_progress_then_stems_then_the_result(tiny_model: str) -> None:
    async with separation_server(tiny_model) as stub:
        responses = await call(stub, separate_requests(song_file(10.0), format=common_pb2.AUDIO_FORMAT_FLAC))

    kinds = [response.WhichOneof("response") for response in responses]
    first_stem, last_progress = kinds.index("stem"), len(kinds) - 1 - kinds[::-1].index("progress")
    assert last_progress < first_stem and kinds[-1] == "result" and kinds.count("result") == 1
    progress = [response.progress for response in responses if response.HasField("progress")]
    percents = [p.percent for p in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert sum(p.message.startswith("separating: chunk") for p in progress) == 4

    files = FileAssembler()
    for response in responses:
        if response.HasField("stem"):
            files.add(response.stem)
    result = responses[-1].result
    assert result.model == "tiny"  # the offered name, not the source
    assert list(result.stems) == ["vocals.flac", "instrumental.flac"] == list(files.files)
    assert result.input == AudioInfo(duration_seconds=10.0, sample_rate=44100, channels=2, format="FLAC")
    for data in files.files.values():
        assert decode(data).audio.shape == (2, 10 * 44100)


async def test_server_runs_one_separation_at_a_time(tiny_model: str) -> None:
    async with separation_server(tiny_model) as stub:
        data = song_file(10.0)
        both = await asyncio.gather(call(stub, separate_requests(data)), call(stub, separate_requests(data)))

    queued = [
        any(r.progress.message.startswith("queued") for r in responses if r.HasField("progress"))
        for responses in both
    ]
    assert sorted(queued) == [False, True]
    assert all(responses[-1].HasField("result") for responses in both)


async def test_server_refuses_bad_requests_with_their_status(tiny_model: str) -> None:
    without_options = iter([separation_pb2.SeparateRequest(audio=song_file(1.0))])
    cases = [
        (separate_requests(b"not a song " * 1000), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (without_options, grpc.StatusCode.INVALID_ARGUMENT, "options"),
        (separate_requests(song_file(1.0), model="no_such"), grpc.StatusCode.INVALID_ARGUMENT, "offers tiny"),
        (separate_requests(song_file(1.0), format=17), grpc.StatusCode.INVALID_ARGUMENT, "format"),
    ]
    async with separation_server(tiny_model) as stub:
        for requests, code, detail in cases:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(stub, requests)
            assert error.value.code() == code
            assert detail in error.value.details()
