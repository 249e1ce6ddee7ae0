"""Stopping means stopping: a cancelled call or a passed deadline stops a stage's compute within 2 s,
even inside a model's forward pass or a Whisper generate, and frees the worker for the next call;
the karaoke stage's lyric alignment is banded (bounded time and memory) and cancellable too.

The services run as real subprocesses on loopback; their CPU time comes from /proc/<pid>/stat."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from roar import audio
from roar.channel_options import CHANNEL_OPTIONS
from roar.progress import check_cancelled, stop_on_cancel
from roar.service import is_serving, request_stream
from roar.v1 import common_pb2, separation_pb2, separation_pb2_grpc, transcription_pb2, transcription_pb2_grpc
from services.transcription import vad
from services.transcription.transcriber import load_transcriber, prepare_audio
from services.transcription.whisper import WhisperTranscriber
from services.transcription.windows import TranscriptionOptions, windows
from services.transcription.word_alignment import BAND_WORDS, _alignment_moves, align_words, alignment_band
from tests.support.processes import stop_process
from tests.support.stopping import stop_at_first_update
from tests.support.suite import free_port
from tests.support.tiny_demucs import HTDEMUCS_KWARGS, build_tiny_demucs
from tests.support.tiny_whisper import build_tiny_whisper

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT / "tests" / "data" / "songs" / "song_000"
# The promise: compute stops this soon after the call ends.
STOP_SECONDS = 2.0
# CPU a service may use in an idle second (gRPC's polling, the health service).
IDLE_CPU_SECONDS = 0.2
_STOPPED = re.compile(r"stopped at .*, (\d+\.\d+) s after its call ended")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As the services here run: other test processes share the cores, and torch's multi-threaded
    kernels then stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """A stage service as a subprocess, on a free loopback port, with one torch thread."""

    def __init__(self, module: str, model: str, log: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = log
        env = {**os.environ, "ROAR_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        port = self.address.rsplit(":", 1)[1]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, "--port", port, "--model", model],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while not is_serving(self.address):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{module} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    @property
    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop_latencies(self) -> list[float]:
        """Seconds from each call's end to its work stopping, as the service logged them."""
        return [float(seconds) for seconds in _STOPPED.findall(self.log.read_text())]

    def stop(self) -> None:
        stop_process(self.process, grace=10)


@pytest.fixture(scope="module")
def slow_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Whisper that computes like a small one and writes garbage as long as Whisper may:
    one window of the committed song's vocals takes it several seconds of decoding."""
    return build_tiny_whisper(tmp_path_factory.mktemp("slow-whisper"), width=768, layers=6, max_length=448)


@pytest.fixture
def transcription(slow_whisper: Path, tmp_path: Path) -> Iterator[Service]:
    service = Service("services.transcription.server", str(slow_whisper), tmp_path / "transcription.log")
    yield service
    service.stop()


def transcribe_call(
    service: Service, data: bytes, timeout: float | None = None
) -> tuple[grpc.Channel, Iterator[transcription_pb2.TranscribeResponse]]:
    channel = grpc.insecure_channel(service.address, options=CHANNEL_OPTIONS)
    options = transcription_pb2.TranscriptionOptions(language="en")
    requests = request_stream(transcription_pb2.TranscribeRequest, options, "audio", data)
    return channel, transcription_pb2_grpc.TranscriptionStub(channel).Transcribe(requests, timeout=timeout)


def read_until(responses: Iterator, started: Callable[[common_pb2.StageProgress], bool]) -> None:
    """Reads progress until the work reaches the stage `started` recognises."""
    for response in responses:
        if response.HasField("progress") and started(response.progress):
            return
    pytest.fail("the call ended before its work started")


def assert_compute_stops(service: Service, ended_at: float) -> None:
    """The service's CPU time grows no more (beyond idle) from STOP_SECONDS after the call ended,
    and the service logged its work stopping within STOP_SECONDS."""
    time.sleep(max(0.0, ended_at + STOP_SECONDS - time.monotonic()))
    before = service.cpu
    time.sleep(1.0)
    assert service.cpu - before <= IDLE_CPU_SECONDS, "the service kept computing after the call ended"
    latencies = service.stop_latencies()
    assert latencies and latencies[-1] <= STOP_SECONDS, latencies


def assert_next_call_served(service: Service) -> None:
    """A call after the stopped one gets a worker at once: silence has no singing, so its transcript
    comes back at once, with no wait in the queue."""
    silence = audio.encode(np.zeros((1, 16000 * 2), np.float32), 16000, "wav")
    channel, responses = transcribe_call(service, silence, timeout=30)
    with channel:
        answered = list(responses)
    assert not any(r.progress.message.startswith("queued") for r in answered if r.HasField("progress"))
    assert answered[-1].HasField("transcript") and not answered[-1].transcript.segments


def in_decoding(progress: common_pb2.StageProgress) -> bool:
    return progress.message.startswith("transcribing segment")


def test_a_cancelled_transcription_stops_inside_the_decoder(transcription: Service) -> None:
    channel, responses = transcribe_call(transcription, (SONG / "vocals.flac").read_bytes())
    with channel:
        read_until(responses, in_decoding)
        time.sleep(1.5)  # well inside the window's encoder and decoding steps
        working = transcription.cpu
        time.sleep(1.0)
        assert transcription.cpu - working > 2 * IDLE_CPU_SECONDS, "the service was not computing"
        responses.cancel()
        cancelled_at = time.monotonic()
    assert_compute_stops(transcription, cancelled_at)
    assert_next_call_served(transcription)


def test_a_transcription_past_its_deadline_stops(transcription: Service) -> None:
    timeout = 4.0
    channel, responses = transcribe_call(transcription, (SONG / "vocals.flac").read_bytes(), timeout=timeout)
    started = time.monotonic()
    with channel, pytest.raises(grpc.RpcError) as raised:
        read_until(responses, in_decoding)
        list(responses)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < timeout + 1.0
    assert_compute_stops(transcription, started + timeout)
    assert_next_call_served(transcription)


def test_a_cancelled_separation_stops_inside_a_segment(tmp_path: Path) -> None:
    """htdemucs' architecture (random weights, the real compute): one 7.8 s segment takes several
    seconds, and progress comes only between segments."""
    model = build_tiny_demucs(tmp_path / "demucs", name="htdemucs_random", kwargs=HTDEMUCS_KWARGS)
    service = Service("services.separation.server", model, tmp_path / "separation.log")
    try:
        rng = np.random.default_rng(0)
        song = audio.encode((0.1 * rng.standard_normal((2, 44100 * 30))).astype(np.float32), 44100, "flac")
        channel = grpc.insecure_channel(service.address, options=CHANNEL_OPTIONS)
        with channel:
            stub = separation_pb2_grpc.SeparationStub(channel)
            options = separation_pb2.SeparationOptions()
            responses = stub.Separate(request_stream(separation_pb2.SeparateRequest, options, "audio", song))
            read_until(responses, lambda p: p.message == "decoding the audio")
            time.sleep(2.0)  # inside the first segment
            responses.cancel()
            cancelled_at = time.monotonic()
        assert_compute_stops(service, cancelled_at)
    finally:
        service.stop()


def test_decoding_garbage_stays_within_each_windows_budget(tmp_path: Path) -> None:
    """A random Whisper allowed Whisper's full length writes garbage: greedy decoding, the cap on
    tokens per second of audio, each window's budget and the input's budget bound its decoder passes,
    fallbacks, halves and scoring passes included."""
    transcriber = load_transcriber(str(build_tiny_whisper(tmp_path / "whisper", max_length=448)))
    assert isinstance(transcriber, WhisperTranscriber)
    passes = []
    transcriber.pipe.model.get_decoder().register_forward_pre_hook(lambda *_: passes.append(1))
    vocals = prepare_audio((SONG / "vocals.flac").read_bytes())
    options = TranscriptionOptions()
    caps = [transcriber._max_new_tokens(w.samples(vocals)) for w in windows(vad.speech_regions(vocals))]
    transcriber.transcribe(vocals)
    input_budget = options.song_tokens_per_second * len(vocals) / vad.SAMPLE_RATE
    assert caps[0] < len(passes) <= sum(round(options.decoding_budget * cap) for cap in caps) + input_budget


async def test_a_hooked_model_stops_inside_its_forward_pass() -> None:
    """No progress call after the first: the forward pre-hooks alone stop the work."""
    model = stop_on_cancel(torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(64)]))

    def work(progress: Callable[..., None]) -> None:
        progress(0.0, "started")
        with torch.inference_mode():
            while True:
                model(torch.ones(64, 256))

    assert await stop_at_first_update(work) < STOP_SECONDS
    check_cancelled()  # outside a run: nothing to stop


# --- lyric alignment ---------------------------------------------------------------------------


def song_words(rng: random.Random, count: int) -> list[str]:
    vocabulary = ["".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(2, 7))) for _ in range(400)]
    return [rng.choice(vocabulary) for _ in range(count)]


def heard_version(rng: random.Random, lyrics: list[str]) -> list[str]:
    """What a transcription makes of sung lyrics: a verse left out, the chorus sung twice more,
    some words misheard (near misses or other words), a few made up."""
    verse = rng.randrange(0, len(lyrics) - 60)
    heard = lyrics[:verse] + lyrics[verse + 50 :]
    chorus = rng.randrange(0, len(heard) - 40)
    heard = heard[: chorus + 40] + heard[chorus : chorus + 40] * 2 + heard[chorus + 40 :]
    out = []
    for word in heard:
        roll = rng.random()
        if roll < 0.1:
            out.append(word[:-1] + "x" if len(word) > 2 else "zz")
        elif roll < 0.15:
            out += [word, rng.choice(["oh", "yeah", "na"])]
        elif roll > 0.95:
            continue
        else:
            out.append(word)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_the_banded_alignment_matches_the_full_one_on_songs(seed: int) -> None:
    rng = random.Random(seed)
    lyrics = song_words(rng, 700)
    heard = heard_version(rng, lyrics)
    everything = len(lyrics) + len(heard)
    band = alignment_band(len(lyrics), len(heard))
    assert sum(last - first + 1 for first, last in band) < 0.8 * (len(lyrics) + 1) * (len(heard) + 1)
    assert align_words(lyrics, heard) == align_words(lyrics, heard, band_words=everything)


def test_100k_characters_of_lyrics_align_in_linear_cells() -> None:
    rng = random.Random(0)
    lyrics = song_words(rng, 100_000 // 5)
    heard = song_words(rng, 2_000)
    band = alignment_band(len(lyrics), len(heard))
    moves = _alignment_moves(lyrics, heard, band)
    cells = sum(len(row) for row in moves)
    # The full table would be 40 M cells; the band keeps each row to its share of 2 * BAND_WORDS.
    assert cells == sum(last - first + 1 for first, last in band)
    assert cells <= (len(lyrics) + 1) * (2 * BAND_WORDS * len(heard) // len(lyrics) + 4)
    table_bytes = sum(sys.getsizeof(row) for row in moves)
    assert table_bytes < 4 * 2**20, f"{table_bytes / 2**20:.0f} MB"


async def test_a_long_lyric_alignment_stops_when_cancelled() -> None:
    rng = random.Random(1)
    lyrics = song_words(rng, 20_000)  # ~100k characters
    heard = song_words(rng, 4_000)

    def work(progress: Callable[..., None]) -> list[tuple[int, int]]:
        progress(0.0, "anchoring the lyrics")
        return align_words(lyrics, heard)

    assert await stop_at_first_update(work) < STOP_SECONDS
