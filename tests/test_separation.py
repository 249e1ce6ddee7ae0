"""Separation: the window loop, the demucs backend and the gRPC servicer, with a tiny randomly
initialised HTDemucs (real architecture and code paths; its stems are noise, not music)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import torch
from demucs.apply import apply_model
from demucs.htdemucs import HTDemucs
from safetensors.torch import save_file

from roar.audio import encode, resample, resample_blocks
from roar.catalog import separation_catalog
from roar.channel_options import CHANNEL_OPTIONS
from roar.config import Settings
from roar.errors import BadInput, Cancelled, ModelUnavailable
from roar.models import ModelCache
from roar.service import is_serving, request_stream
from roar.v1 import separation_pb2, separation_pb2_grpc
from roar.v1.common_pb2 import AudioInfo
from services.separation import separate
from services.separation.backends import load_separator
from services.separation.demucs_backend import DemucsSeparator
from services.separation.separate import SongPlan, SongWindow, separate_audio, separate_song
from services.separation.server import SeparationServicer
from services.separation.spleeter import SOURCES as SPLEETER_SOURCES
from services.separation.spleeter import UNet
from tests.support.suite import free_port
from tests.support.tiny_demucs import SEGMENT_SECONDS, build_tiny_demucs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPLEETER_DIR = SHARED / "models" / "spleeter-2stems"
RATE = 44100
# The tiny model's windows: 4 s model windows overlapping by a quarter, so a window every 3 s.
STRIDE = int(0.75 * SEGMENT_SECONDS * RATE)


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
    return DemucsSeparator(tiny_model, "cpu")


def song(seconds: float, sample_rate: int = RATE, channels: int = 2) -> np.ndarray:
    """A quiet two-tone chord with noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(0).standard_normal((2, t.size)) * 0.02
    chord = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 55 * t)
    return (chord + noise)[:channels].astype(np.float32)


def song_file(
    directory: Path, seconds: float, sample_rate: int = RATE, channels: int = 2, fmt: str = "flac"
) -> Path:
    path = directory / f"song-{seconds}-{sample_rate}-{channels}.{fmt}"
    path.write_bytes(encode(song(seconds, sample_rate, channels), sample_rate, fmt))
    return path


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[float, str]] = []

    def __call__(self, percent: float, message: str = "") -> None:
        self.updates.append((percent, message))


def separated(separator: DemucsSeparator, path: Path, **options: object) -> tuple[SongPlan, list[SongWindow]]:
    plan, *windows = separate_song(separator, path, **options)  # type: ignore[arg-type]
    assert isinstance(plan, SongPlan) and all(isinstance(w, SongWindow) for w in windows)
    return plan, windows  # type: ignore[return-value]


def joined(windows: list[SongWindow], stem: str) -> np.ndarray:
    return np.concatenate([w.stems[stem] for w in windows], axis=1)


def test_windows_tile_the_song_and_the_instrumental_is_the_rest(
    separator: DemucsSeparator, tmp_path: Path
) -> None:
    frames = 10 * STRIDE + 1234  # a short last window
    path = tmp_path / "song.wav"
    path.write_bytes(encode(song(frames / RATE), RATE, "wav"))
    plan, windows = separated(separator, path, all_stems=True)

    assert plan.stems == ["vocals", "instrumental", "drums", "bass", "other"]
    assert plan.input == AudioInfo(duration_seconds=frames / RATE, sample_rate=RATE, channels=2, format="WAV")
    assert (plan.sample_rate, plan.channels, plan.frames, plan.window_count) == (RATE, 2, frames, 11)
    assert [w.index for w in windows] == list(range(11))
    assert [w.start_frame for w in windows] == [i * STRIDE for i in range(11)]
    for window in windows:
        assert list(window.stems) == plan.stems
        end = min(window.start_frame + STRIDE, frames)
        for audio in window.stems.values():
            assert audio.dtype == np.float32 and audio.shape == (2, end - window.start_frame)
    rest = joined(windows, "drums") + joined(windows, "bass") + joined(windows, "other")
    assert np.abs(rest).max() > 1e-3  # not trivially silent
    np.testing.assert_allclose(joined(windows, "instrumental"), rest, atol=1e-6)
    assert not np.allclose(joined(windows, "vocals"), rest, atol=1e-3)


def test_windows_equal_demucs_own_split_of_the_whole_song(separator: DemucsSeparator, tmp_path: Path) -> None:
    """The old code path: apply_model over the whole tensor (split, overlap 0.25, no shifts)."""
    path = song_file(tmp_path, 20.5)
    _, windows = separated(separator, path, all_stems=True)

    mix = torch.from_numpy(sf.read(path, dtype="float32", always_2d=True)[0].T.copy())
    reference = mix.mean(0)
    mean, std = reference.mean(), reference.std() + 1e-8
    whole = apply_model(separator.model, ((mix - mean) / std)[None], shifts=0, split=True, overlap=0.25)[0]
    whole = (whole * std + mean).numpy()
    for i, source in enumerate(separator.sources):
        # The level is summed in float64 block by block, demucs' in float32 at once.
        np.testing.assert_allclose(joined(windows, source), whole[i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("first_window", [1, 4, 6, 7])
def test_a_resumed_call_yields_the_same_windows_bit_for_bit(
    separator: DemucsSeparator, tmp_path: Path, first_window: int
) -> None:
    path = song_file(tmp_path, 20.0)
    plan, whole = separated(separator, path)
    resumed_plan, resumed = separated(separator, path, first_window=first_window)

    assert resumed_plan == plan and plan.window_count == 7
    assert len(resumed) == 7 - first_window
    for expected, got in zip(whole[first_window:], resumed, strict=True):
        assert (got.index, got.start_frame) == (expected.index, expected.start_frame)
        for stem, audio in expected.stems.items():
            assert audio.tobytes() == got.stems[stem].tobytes()


def test_a_first_window_past_the_song_is_bad_input(separator: DemucsSeparator, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="first_window 8"):
        list(separate_song(separator, song_file(tmp_path, 20.0), first_window=8))


def test_mono_22khz_input_is_resampled_to_the_models_rate_and_channels(
    separator: DemucsSeparator, tmp_path: Path
) -> None:
    progress = Recorder()
    plan, windows = separated(separator, song_file(tmp_path, 7.0, 22050, 1), progress=progress)

    assert plan.input == AudioInfo(duration_seconds=7.0, sample_rate=22050, channels=1, format="FLAC")
    assert (plan.sample_rate, plan.channels, plan.frames) == (RATE, 2, 7 * RATE)
    assert joined(windows, "vocals").shape == (2, 7 * RATE)
    assert progress.updates[0] == (0.0, "decoding the audio")


def test_progress_rises_window_by_window_to_100(
    separator: DemucsSeparator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(separate, "HEARTBEAT_SECONDS", float("inf"))  # window ends only
    progress = Recorder()
    separated(separator, song_file(tmp_path, 20.0), progress=progress)

    percents = [percent for percent, _ in progress.updates]
    assert all(a <= b for a, b in pairwise(percents)) and percents[-1] == 100.0
    windows = [message for _, message in progress.updates if message.startswith("separating")]
    assert windows == [f"separating: window {i}/7" for i in range(1, 8)]


def test_progress_shows_within_a_model_window(
    separator: DemucsSeparator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window of htdemucs takes seconds: its layers report progress in between (here at every
    layer call, where the service waits HEARTBEAT_SECONDS between reports)."""
    monkeypatch.setattr(separate, "HEARTBEAT_SECONDS", 0.0)
    progress = Recorder()
    separated(separator, song_file(tmp_path, 20.0), progress=progress)

    percents = [percent for percent, _ in progress.updates]
    assert all(a <= b for a, b in pairwise(percents)) and percents[-1] == 100.0
    second = [p for p, message in progress.updates if message == "separating: window 2/7"]
    # Within the second window, guessed from the first window's layer calls, then its end.
    assert len(second) > 10 and len(set(second)) > 10
    assert second[-1] == pytest.approx(separate.DECODED_PERCENT + (100 - separate.DECODED_PERCENT) * 2 / 7)


def test_an_exception_in_progress_stops_the_model(separator: DemucsSeparator, tmp_path: Path) -> None:
    calls: list[int] = []
    htdemucs = next(module for module in separator.model.modules() if isinstance(module, HTDemucs))
    hook = htdemucs.register_forward_pre_hook(lambda *_: calls.append(1))

    def cancel_at_second_window(percent: float, message: str = "") -> None:
        if message == "separating: window 2/7":
            raise Cancelled()

    try:
        with pytest.raises(Cancelled):
            list(separate_song(separator, song_file(tmp_path, 20.0), progress=cancel_at_second_window))
    finally:
        hook.remove()
    assert len(calls) == 2  # two model windows, none after


@pytest.mark.parametrize("data", [b"not a song " * 1000, b""], ids=["garbage", "empty"])
def test_undecodable_audio_is_bad_input_without_server_paths(
    separator: DemucsSeparator, tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "input"
    path.write_bytes(data)
    with pytest.raises(BadInput, match="not an audio file") as raised:
        list(separate_song(separator, path))
    assert "/" not in raised.value.message


def test_a_song_past_the_limit_is_refused_before_separating(
    separator: DemucsSeparator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROAR_MAX_AUDIO_MINUTES", "0.1")
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        list(separate_song(separator, song_file(tmp_path, 7.0)))


@pytest.mark.skipif(not os.path.exists("/usr/bin/ffmpeg"), reason="needs ffmpeg")
def test_formats_soundfile_cannot_read_go_through_ffmpeg(separator: DemucsSeparator, tmp_path: Path) -> None:
    m4a = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(song_file(tmp_path, 4.0)), str(m4a)], check=True)
    plan, windows = separated(separator, m4a)
    assert plan.input.format == "FFMPEG" and plan.input.duration_seconds == pytest.approx(4.0, abs=0.05)
    assert joined(windows, "vocals").shape == (2, plan.frames)
    assert sorted(tmp_path.iterdir()) == sorted([m4a, tmp_path / "song-4.0-44100-2.flac"])  # nothing beside


def test_separate_audio_is_the_window_loop_in_memory(separator: DemucsSeparator, tmp_path: Path) -> None:
    path = song_file(tmp_path, 9.0)
    _, windows = separated(separator, path, all_stems=True)
    sources = separate_audio(separator, sf.read(path, dtype="float32", always_2d=True)[0].T)
    for source, audio in sources.items():
        np.testing.assert_allclose(audio, joined(windows, source), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("from_rate", "to_rate"), [(48000, 44100), (22050, 44100), (192000, 44100), (8000, 44100), (44100, 16000)]
)
def test_block_resampling_equals_resampling_the_whole_signal(from_rate: int, to_rate: int) -> None:
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, 300_007))).astype(np.float32)
    blocks = [audio[:, start : start + 70_001] for start in range(0, audio.shape[1], 70_001)]
    pieces = list(resample_blocks(blocks, from_rate, to_rate))
    assert len(pieces) > 1  # it does stream
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), resample(audio, from_rate, to_rate))


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


# --- memory ------------------------------------------------------------------------------------

PEAK_RSS_SCRIPT = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from services.separation.backends import load_separator
from services.separation.separate import separate_song
separator = load_separator(sys.argv[1], "cpu")
for _ in separate_song(separator, Path(sys.argv[2]), all_stems=True):
    pass
status = Path("/proc/self/status").read_text()
print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")))
"""


def noise_file(path: Path, minutes: int) -> Path:
    """Stereo noise, written ten seconds at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16", format="FLAC") as out:
        for _ in range(minutes * 6):
            out.write((0.1 * rng.standard_normal((10 * RATE, 2))).astype(np.float32))
    return path


def peak_rss_kib(model: str, path: Path) -> int:
    env = {**os.environ, "ROAR_TORCH_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, model, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_the_songs_length(tiny_model: str, tmp_path: Path) -> None:
    """A direct separation of 1 and of 10 minutes, in fresh processes, with the tiny demucs and a
    random Spleeter of the real architecture: the peak RSS (VmHWM) stays within 15 %."""
    spleeter_dir = tmp_path / "spleeter"
    spleeter_dir.mkdir()
    torch.manual_seed(0)
    for source in SPLEETER_SOURCES:
        save_file(UNet().state_dict(), spleeter_dir / f"{source}.safetensors")
    one, ten = noise_file(tmp_path / "one.flac", 1), noise_file(tmp_path / "ten.flac", 10)
    for model in (tiny_model, str(spleeter_dir)):
        short, long = peak_rss_kib(model, one), peak_rss_kib(model, ten)
        print(f"{model}: peak RSS {short // 1024} MB for 1 min, {long // 1024} MB for 10 min")
        assert long < 1.15 * short, (model, short, long)


# --- the gRPC service --------------------------------------------------------------------------


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


def separate_requests(path: Path, **options: object) -> Iterator[separation_pb2.SeparateRequest]:
    return request_stream(
        separation_pb2.SeparateRequest,
        separation_pb2.SeparationOptions(**options),
        "audio",
        path.read_bytes(),
    )


def same_windows(received: list[separation_pb2.StemWindow], direct: list[SongWindow]) -> bool:
    """Whether the StemWindows carry the direct call's windows, stem by stem in order, as
    float32 little-endian PCM with the channels interleaved."""
    expected = [(w.index, stem, w.start_frame, audio) for w in direct for stem, audio in w.stems.items()]
    return len(received) == len(expected) and all(
        (got.index, got.stem, got.start_frame) == (index, stem, start)
        and np.array_equal(np.frombuffer(got.pcm, "<f4").reshape(-1, audio.shape[0]).T, audio)
        for got, (index, stem, start, audio) in zip(received, expected, strict=True)
    )


async def test_server_streams_progress_then_the_result_then_the_windows(
    tiny_model: str, separator: DemucsSeparator, tmp_path: Path
) -> None:
    path = song_file(tmp_path, 10.0)
    async with separation_server(tiny_model) as stub:
        responses = await call(stub, separate_requests(path, all_stems=True))

    kinds = [response.WhichOneof("response") for response in responses]
    assert kinds.count("result") == 1 and kinds.index("result") < kinds.index("window")
    percents = [r.progress.percent for r in responses if r.HasField("progress")]
    assert percents == sorted(percents) and percents[-1] == 100.0
    result = next(r.result for r in responses if r.HasField("result"))
    assert result.model == "tiny"  # the offered name, not the source
    assert list(result.stems) == ["vocals", "instrumental", "drums", "bass", "other"]
    assert result.input == AudioInfo(duration_seconds=10.0, sample_rate=RATE, channels=2, format="FLAC")
    assert (result.sample_rate, result.channels, result.frames, result.window_count) == (
        RATE,
        2,
        10 * RATE,
        4,
    )

    # Window by window, every stem in the result's order, the same PCM as the direct call.
    windows = [r.window for r in responses if r.HasField("window")]
    _, direct = separated(separator, path, all_stems=True)
    assert same_windows(windows, direct)


async def test_server_resumes_from_first_window(tiny_model: str, tmp_path: Path) -> None:
    path = song_file(tmp_path, 10.0)
    async with separation_server(tiny_model) as stub:
        whole = await call(stub, separate_requests(path))
        resumed = await call(stub, separate_requests(path, first_window=2))
        nothing_left = await call(stub, separate_requests(path, first_window=4))

    def windows(responses: list) -> list[bytes]:
        return [r.window.SerializeToString() for r in responses if r.HasField("window")]

    assert windows(resumed) == windows(whole)[2 * 2 :]  # two stems a window
    assert windows(nothing_left) == [] and any(r.HasField("result") for r in nothing_left)


async def test_server_runs_one_separation_at_a_time(tiny_model: str, tmp_path: Path) -> None:
    path = song_file(tmp_path, 10.0)
    async with separation_server(tiny_model) as stub:
        both = await asyncio.gather(call(stub, separate_requests(path)), call(stub, separate_requests(path)))

    queued = [
        any(r.progress.message.startswith("queued") for r in responses if r.HasField("progress"))
        for responses in both
    ]
    assert sorted(queued) == [False, True]
    assert all(sum(r.HasField("window") for r in responses) == 4 * 2 for responses in both)


async def test_server_refuses_bad_requests_with_their_status(tiny_model: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a song " * 1000)
    one_second = song_file(tmp_path, 1.0)
    without_options = iter([separation_pb2.SeparateRequest(audio=one_second.read_bytes())])
    cases = [
        (separate_requests(junk), grpc.StatusCode.INVALID_ARGUMENT, "not an audio file"),
        (without_options, grpc.StatusCode.INVALID_ARGUMENT, "options"),
        (separate_requests(one_second, model="no_such"), grpc.StatusCode.INVALID_ARGUMENT, "offers tiny"),
        (separate_requests(one_second, first_window=2), grpc.StatusCode.INVALID_ARGUMENT, "first_window"),
    ]
    async with separation_server(tiny_model) as stub:
        for requests, code, detail in cases:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(stub, requests)
            assert error.value.code() == code
            assert detail in error.value.details()


def test_sigterm_ends_a_call_after_a_whole_window_with_unavailable(
    tiny_model: str, separator: DemucsSeparator, tmp_path: Path
) -> None:
    """The service as a subprocess: SIGTERM mid-song. The call gets the window under way whole,
    then UNAVAILABLE naming the window to resume from; the process exits; the windows sent
    equal an uninterrupted call's."""
    path = song_file(tmp_path, 60.0)
    port = free_port()
    log = (tmp_path / "separation.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.separation.server", "--port", str(port), "--model", tiny_model],
        cwd=ROOT,
        env={**os.environ, "ROAR_TORCH_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not is_serving(f"127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        received: list[separation_pb2.StemWindow] = []
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            responses = separation_pb2_grpc.SeparationStub(channel).Separate(separate_requests(path))
            with pytest.raises(grpc.RpcError) as raised:
                for response in responses:
                    if response.HasField("window"):
                        received.append(response.window)
                        if len(received) == 3:  # mid-window 1: its vocals are in, its instrumental not
                            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    sent = len(received) // 2
    assert raised.value.details() == f"the service is stopping; retry from window {sent}"
    assert 2 <= sent < 20 and len(received) == 2 * sent  # whole windows only, not the whole song
    _, direct = separated(separator, path)
    assert same_windows(received, direct[:sent])
