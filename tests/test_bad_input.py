"""Bad requests to every service of one running suite, each answered with its exact status code,
no server path in the message, and every service still SERVING afterwards."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from roar.service import is_serving
from roar.v1 import (
    common_pb2,
    karaoke_pb2,
    karaoke_pb2_grpc,
    separation_pb2,
    separation_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import make_song
from tests.support.suite import REPO, Suite

Code = grpc.StatusCode
CALL_TIMEOUT = 120.0
SONG_SECONDS = 2.0
# Past the default ROAR_MAX_AUDIO_MINUTES (120): 8 kHz mono silence keeps the file small.
LONG_MINUTES = 121


def wav(audio: np.ndarray, rate: int = 44100) -> bytes:
    """(channels, frames) float audio as 16-bit WAV bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def silent_flac(minutes: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, "PCM_16", format="FLAC") as f:
        block = np.zeros(rate * 60, np.float32)
        for _ in range(int(minutes)):
            f.write(block)
    return buffer.getvalue()


@dataclass
class World:
    suite: Suite
    channels: dict[str, grpc.Channel]
    finished_upload: str
    partial_upload: str
    job_id: str  # a succeeded job whose vocals.wav was then deleted on disk
    song: bytes
    long_flac: bytes

    @property
    def orchestrator(self) -> pb_grpc.OrchestratorStub:
        return pb_grpc.OrchestratorStub(self.channels["orchestrator"])

    def raw_unary(self, method: str, request: bytes) -> bytes:
        """A call with hand-made request bytes (what no generated stub can send)."""
        return self.channels["orchestrator"].unary_unary(f"/roar.v1.Orchestrator/{method}")(
            request, timeout=CALL_TIMEOUT
        )

    def raw_stream(self, path: str, requests: list[bytes]) -> list[bytes]:
        call = self.channels[path.split(".")[2].split("/")[0].lower()].stream_stream(path)
        return list(call(iter(requests), timeout=CALL_TIMEOUT))

    def upload(self, data: bytes, name: str = "song.wav") -> pb.Upload:
        """A started upload with all of data committed (not finished)."""
        upload = self.orchestrator.StartUpload(pb.StartUploadRequest(filename=name, size=len(data)))
        self.orchestrator.UploadChunk(pb.UploadChunkRequest(upload_id=upload.upload_id, offset=0, data=data))
        return upload

    def finish(self, data: bytes) -> pb.Upload:
        upload = self.upload(data)
        return self.orchestrator.FinishUpload(pb.FinishUploadRequest(upload_id=upload.upload_id))

    def process(self, upload_id: str | None = None, **options: object) -> list[pb.ProgressEvent]:
        request = pb.ProcessRequest(
            upload_id=self.finished_upload if upload_id is None else upload_id,
            options=pb.JobOptions(**options),
        )
        return list(self.orchestrator.Process(request, timeout=CALL_TIMEOUT))

    def list_jobs(self, page_size: int = 0, page_token: str = "") -> pb.ListJobsResponse:
        return self.orchestrator.ListJobs(pb.ListJobsRequest(page_size=page_size, page_token=page_token))

    def download(self, name: str, job_id: str | None = None, offset: int = 0) -> list[pb.DownloadChunk]:
        request = pb.DownloadRequest(
            job_id=self.job_id if job_id is None else job_id, name=name, offset=offset
        )
        return list(self.orchestrator.Download(request, timeout=CALL_TIMEOUT))

    def separate(self, requests: Iterable[separation_pb2.SeparateRequest]) -> list[object]:
        stub = separation_pb2_grpc.SeparationStub(self.channels["separation"])
        return list(stub.Separate(iter(requests), timeout=CALL_TIMEOUT))

    def transcribe(self, requests: Iterable[transcription_pb2.TranscribeRequest]) -> list[object]:
        stub = transcription_pb2_grpc.TranscriptionStub(self.channels["transcription"])
        return list(stub.Transcribe(iter(requests), timeout=CALL_TIMEOUT))

    def build(self, request: karaoke_pb2.BuildRequest) -> list[object]:
        stub = karaoke_pb2_grpc.KaraokeStub(self.channels["karaoke"])
        return list(stub.Build(request, timeout=CALL_TIMEOUT))

    def raw_build(self, request: bytes) -> list[bytes]:
        """Karaoke's Build with hand-made request bytes."""
        call = self.channels["karaoke"].unary_stream("/roar.v1.Karaoke/Build")
        return list(call(request, timeout=CALL_TIMEOUT))


@pytest.fixture(scope="module")
def world(suite: Suite) -> Iterable[World]:
    # Plain channels: no client-side size limit, so the servers' own limits answer.
    channels = {
        "orchestrator": grpc.insecure_channel(suite.address),
        **{name: grpc.insecure_channel(address) for name, address in suite.stage_addresses.items()},
    }
    song = wav(make_song(SONG_SECONDS))
    partial = pb_grpc.OrchestratorStub(channels["orchestrator"]).StartUpload(
        pb.StartUploadRequest(filename="partial.wav", size=1000)
    )
    world = World(suite, channels, "", partial.upload_id, "", song, silent_flac(LONG_MINUTES))
    world.finished_upload = world.finish(song).upload_id
    # The job for the Download cases runs on an 8-channel file: FinishUpload mixes it down, so
    # the stages get audio they take and the job succeeds.
    eight = world.finish(wav(np.tile(make_song(SONG_SECONDS), (4, 1)) * 0.5))
    assert eight.audio.channels == 8
    events = world.process(eight.upload_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    world.job_id = events[-1].job_id
    (suite.data_dir / "jobs" / world.job_id / "vocals.wav").unlink()
    yield world
    for channel in channels.values():
        channel.close()


def options() -> separation_pb2.SeparateRequest:
    return separation_pb2.SeparateRequest(options=separation_pb2.SeparationOptions())


def audio_chunk(data: bytes) -> separation_pb2.SeparateRequest:
    return separation_pb2.SeparateRequest(audio=data)


def transcription(data: bytes | None, language: str = "", with_options: int = 1) -> list[object]:
    requests = [
        transcription_pb2.TranscribeRequest(options=transcription_pb2.TranscriptionOptions(language=language))
    ]
    requests *= with_options
    if data is not None:
        requests.append(transcription_pb2.TranscribeRequest(audio=data))
    return requests


def word_times(start: float, end: float) -> common_pb2.Transcript:
    word = common_pb2.Word(text="la", start=start, end=end, confidence=1.0)
    return common_pb2.Transcript(segments=[common_pb2.Segment(text="la", start=0.0, end=1.0, words=[word])])


def karaoke(**fields: object) -> karaoke_pb2.BuildRequest:
    return karaoke_pb2.BuildRequest(options=karaoke_pb2.KaraokeOptions(**fields))


def message(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payload shorter than 128 bytes)."""
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


NOT_UTF8 = b"\xff\xfe.wav"
ZERO_FRAMES = wav(np.zeros((2, 0), np.float32))
JUNK = b"this is not audio" * 100


def eight_channels(seconds: float = 1.0) -> bytes:
    return wav(np.zeros((8, int(seconds * 44100)), np.float32))


def at_4_khz() -> bytes:
    return wav(np.zeros((1, 4000), np.float32), rate=4000)


# (id, call, expected code). Every call must fail with exactly that code.
CASES: list[tuple[str, Callable[[World], object], grpc.StatusCode]] = [
    # Uploads.
    (
        "upload size 0",
        lambda w: w.orchestrator.StartUpload(pb.StartUploadRequest(filename="a.wav")),
        Code.INVALID_ARGUMENT,
    ),
    (
        "upload size negative",
        lambda w: w.orchestrator.StartUpload(pb.StartUploadRequest(filename="a", size=-5)),
        Code.INVALID_ARGUMENT,
    ),
    (
        "upload size 1 PB",
        lambda w: w.orchestrator.StartUpload(pb.StartUploadRequest(filename="a", size=1 << 50)),
        Code.RESOURCE_EXHAUSTED,
    ),
    ("filename of 256 bytes", lambda w: w.upload(b"x", name="é" * 128), Code.INVALID_ARGUMENT),
    ("filename of 9 MB", lambda w: w.upload(b"x", name="a" * 9_000_000), Code.INVALID_ARGUMENT),
    ("request over 16 MB", lambda w: w.upload(b"x", name="a" * 17_000_000), Code.RESOURCE_EXHAUSTED),
    (
        "content_type of 1000 bytes",
        lambda w: w.orchestrator.StartUpload(
            pb.StartUploadRequest(filename="a", size=1, content_type="a/" + "b" * 998)
        ),
        Code.INVALID_ARGUMENT,
    ),
    (
        "filename not UTF-8",
        lambda w: w.raw_unary("StartUpload", message(1, NOT_UTF8) + b"\x10\x64"),
        Code.INVALID_ARGUMENT,
    ),
    (
        "chunk to unknown upload",
        lambda w: w.orchestrator.UploadChunk(pb.UploadChunkRequest(upload_id="nope", data=b"x")),
        Code.NOT_FOUND,
    ),
    (
        "chunk past committed",
        lambda w: w.orchestrator.UploadChunk(
            pb.UploadChunkRequest(upload_id=w.partial_upload, offset=50, data=b"x")
        ),
        Code.FAILED_PRECONDITION,
    ),
    (
        "chunk at negative offset",
        lambda w: w.orchestrator.UploadChunk(
            pb.UploadChunkRequest(upload_id=w.partial_upload, offset=-1, data=b"x")
        ),
        Code.FAILED_PRECONDITION,
    ),
    (
        "chunk past declared size",
        lambda w: w.orchestrator.UploadChunk(
            pb.UploadChunkRequest(upload_id=w.partial_upload, data=b"x" * 1001)
        ),
        Code.INVALID_ARGUMENT,
    ),
    (
        "chunk over 4 MB",
        lambda w: w.orchestrator.UploadChunk(
            pb.UploadChunkRequest(upload_id=w.partial_upload, data=b"x" * (4 << 20 | 1))
        ),
        Code.RESOURCE_EXHAUSTED,
    ),
    (
        "chunk to finished upload",
        lambda w: w.orchestrator.UploadChunk(pb.UploadChunkRequest(upload_id=w.finished_upload, data=b"x")),
        Code.FAILED_PRECONDITION,
    ),
    (
        "get unknown upload",
        lambda w: w.orchestrator.GetUpload(pb.GetUploadRequest(upload_id="nope")),
        Code.NOT_FOUND,
    ),
    (
        "finish unknown upload",
        lambda w: w.orchestrator.FinishUpload(pb.FinishUploadRequest(upload_id="nope")),
        Code.NOT_FOUND,
    ),
    (
        "finish incomplete upload",
        lambda w: w.orchestrator.FinishUpload(pb.FinishUploadRequest(upload_id=w.partial_upload)),
        Code.FAILED_PRECONDITION,
    ),
    ("finish junk bytes", lambda w: w.finish(JUNK), Code.INVALID_ARGUMENT),
    ("finish 0-frame wav", lambda w: w.finish(ZERO_FRAMES), Code.INVALID_ARGUMENT),
    ("finish 4 kHz wav", lambda w: w.finish(at_4_khz()), Code.INVALID_ARGUMENT),
    ("finish 121 minutes", lambda w: w.finish(w.long_flac), Code.INVALID_ARGUMENT),
    # Jobs.
    ("process unknown upload", lambda w: w.process("nope"), Code.NOT_FOUND),
    ("process unfinished upload", lambda w: w.process(w.partial_upload), Code.FAILED_PRECONDITION),
    ("timeout NaN", lambda w: w.process(timeout_seconds=float("nan")), Code.INVALID_ARGUMENT),
    ("timeout inf", lambda w: w.process(timeout_seconds=float("inf")), Code.INVALID_ARGUMENT),
    ("timeout 1e300", lambda w: w.process(timeout_seconds=1e300), Code.INVALID_ARGUMENT),
    ("timeout negative", lambda w: w.process(timeout_seconds=-1.0), Code.INVALID_ARGUMENT),
    (
        "lyrics format UNSPECIFIED",
        lambda w: w.process(lyrics_formats=[common_pb2.LYRICS_FORMAT_UNSPECIFIED]),
        Code.INVALID_ARGUMENT,
    ),
    ("lyrics format 99", lambda w: w.process(lyrics_formats=[99]), Code.INVALID_ARGUMENT),
    ("audio format 99", lambda w: w.process(audio_format=99), Code.INVALID_ARGUMENT),
    ("lyrics over 100k chars", lambda w: w.process(lyrics="a" * 100_001), Code.INVALID_ARGUMENT),
    ("language of 100 chars", lambda w: w.process(language="x" * 100), Code.INVALID_ARGUMENT),
    ("language with a command", lambda w: w.process(language="en; rm -rf /"), Code.INVALID_ARGUMENT),
    ("get unknown job", lambda w: w.orchestrator.GetJob(pb.GetJobRequest(job_id="nope")), Code.NOT_FOUND),
    ("job_id not UTF-8", lambda w: w.raw_unary("GetJob", message(1, b"\xff\xfe")), Code.INVALID_ARGUMENT),
    ("truncated request", lambda w: w.raw_unary("CancelJob", b"\x0a\x05ab"), Code.INVALID_ARGUMENT),
    (
        "cancel unknown job",
        lambda w: w.orchestrator.CancelJob(pb.CancelJobRequest(job_id="nope")),
        Code.NOT_FOUND,
    ),
    (
        "watch unknown job",
        lambda w: list(w.orchestrator.WatchJob(pb.WatchJobRequest(job_id="nope"))),
        Code.NOT_FOUND,
    ),
    ("page_token junk", lambda w: w.list_jobs(page_token="x"), Code.INVALID_ARGUMENT),
    ("page_token overflow", lambda w: w.list_jobs(page_token="99999999999999999999"), Code.INVALID_ARGUMENT),
    ("page_token negative", lambda w: w.list_jobs(page_token="-5"), Code.INVALID_ARGUMENT),
    ("page_size negative", lambda w: w.list_jobs(page_size=-1), Code.INVALID_ARGUMENT),
    ("download unknown job", lambda w: w.download("vocals.wav", job_id="nope"), Code.NOT_FOUND),
    ("download path traversal", lambda w: w.download("../roar.sqlite"), Code.NOT_FOUND),
    ("download artifact missing on disk", lambda w: w.download("vocals.wav"), Code.NOT_FOUND),
    ("download past the end", lambda w: w.download("instrumental.wav", offset=1 << 40), Code.OUT_OF_RANGE),
    # Separation, called directly.
    ("separation without options", lambda w: w.separate([audio_chunk(w.song)]), Code.INVALID_ARGUMENT),
    (
        "separation options twice",
        lambda w: w.separate([options(), options(), audio_chunk(w.song)]),
        Code.INVALID_ARGUMENT,
    ),
    ("separation without audio", lambda w: w.separate([options()]), Code.INVALID_ARGUMENT),
    (
        "separation empty request",
        lambda w: w.separate([options(), separation_pb2.SeparateRequest()]),
        Code.INVALID_ARGUMENT,
    ),
    (
        "separation undecodable audio",
        lambda w: w.separate([options(), audio_chunk(JUNK)]),
        Code.INVALID_ARGUMENT,
    ),
    (
        "separation first_window past the song",
        lambda w: w.separate(
            [
                separation_pb2.SeparateRequest(options=separation_pb2.SeparationOptions(first_window=99)),
                audio_chunk(w.song),
            ]
        ),
        Code.INVALID_ARGUMENT,
    ),
    (
        "separation 8 channels",
        lambda w: w.separate([options(), audio_chunk(eight_channels())]),
        Code.INVALID_ARGUMENT,
    ),
    ("separation 4 kHz", lambda w: w.separate([options(), audio_chunk(at_4_khz())]), Code.INVALID_ARGUMENT),
    (
        "separation 121 minutes",
        lambda w: w.separate([options(), audio_chunk(w.long_flac)]),
        Code.INVALID_ARGUMENT,
    ),
    (
        "separation chunk over 16 MB",
        lambda w: w.separate([options(), audio_chunk(b"\0" * (17 << 20))]),
        Code.RESOURCE_EXHAUSTED,
    ),
    (
        "separation model not UTF-8",
        lambda w: w.raw_stream(
            "/roar.v1.Separation/Separate",
            [message(1, message(1, NOT_UTF8)), audio_chunk(w.song).SerializeToString()],
        ),
        Code.INVALID_ARGUMENT,
    ),
    # Transcription, called directly.
    (
        "transcription without options",
        lambda w: w.transcribe(transcription(w.song)[1:]),
        Code.INVALID_ARGUMENT,
    ),
    (
        "transcription options twice",
        lambda w: w.transcribe(transcription(w.song, with_options=2)),
        Code.INVALID_ARGUMENT,
    ),
    ("transcription without audio", lambda w: w.transcribe(transcription(None)), Code.INVALID_ARGUMENT),
    ("transcription undecodable audio", lambda w: w.transcribe(transcription(JUNK)), Code.INVALID_ARGUMENT),
    ("transcription 0-frame wav", lambda w: w.transcribe(transcription(ZERO_FRAMES)), Code.INVALID_ARGUMENT),
    (
        "transcription bad language",
        lambda w: w.transcribe(transcription(w.song, language="<script>")),
        Code.INVALID_ARGUMENT,
    ),
    ("transcription 121 minutes", lambda w: w.transcribe(transcription(w.long_flac)), Code.INVALID_ARGUMENT),
    (
        "transcription language not UTF-8",
        lambda w: w.raw_stream(
            "/roar.v1.Transcription/Transcribe",
            [message(1, message(2, b"\xc3")), transcription(w.song)[1].SerializeToString()],
        ),
        Code.INVALID_ARGUMENT,
    ),
    # Karaoke, called directly.
    ("karaoke without options", lambda w: w.build(karaoke_pb2.BuildRequest()), Code.INVALID_ARGUMENT),
    (
        "karaoke NaN duration",
        lambda w: w.build(karaoke(duration_seconds=float("nan"))),
        Code.INVALID_ARGUMENT,
    ),
    ("karaoke negative duration", lambda w: w.build(karaoke(duration_seconds=-1.0)), Code.INVALID_ARGUMENT),
    (
        "karaoke infinite duration",
        lambda w: w.build(karaoke(duration_seconds=float("inf"))),
        Code.INVALID_ARGUMENT,
    ),
    ("karaoke duration of a year", lambda w: w.build(karaoke(duration_seconds=3.2e7)), Code.INVALID_ARGUMENT),
    ("karaoke lyrics format UNSPECIFIED", lambda w: w.build(karaoke(formats=[0])), Code.INVALID_ARGUMENT),
    ("karaoke lyrics format 99", lambda w: w.build(karaoke(formats=[99])), Code.INVALID_ARGUMENT),
    (
        "karaoke NaN word time",
        lambda w: w.build(karaoke(transcript=word_times(float("nan"), 1.0))),
        Code.INVALID_ARGUMENT,
    ),
    (
        "karaoke inf word end",
        lambda w: w.build(karaoke(transcript=word_times(0.0, float("inf")))),
        Code.INVALID_ARGUMENT,
    ),
    (
        "karaoke negative word start",
        lambda w: w.build(karaoke(transcript=word_times(-3.0, 1.0))),
        Code.INVALID_ARGUMENT,
    ),
    ("karaoke 20 MB title", lambda w: w.build(karaoke(title="x" * (20 << 20))), Code.RESOURCE_EXHAUSTED),
    (
        "karaoke title not UTF-8",
        lambda w: w.raw_build(message(1, message(5, NOT_UTF8))),
        Code.INVALID_ARGUMENT,
    ),
]


@pytest.mark.parametrize(("call", "expected"), [pytest.param(c, e, id=name) for name, c, e in CASES])
def test_bad_request_gets_its_status(
    world: World, call: Callable[[World], object], expected: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(world)
    error = info.value
    assert error.code() == expected, error.details()
    details = error.details() or ""
    assert details, "a status without a message"
    for path in (str(world.suite.data_dir), str(REPO), str(Path.home())):
        assert path not in details, details
    addresses = [world.suite.address, *world.suite.stage_addresses.values()]
    assert all(is_serving(address) for address in addresses), "a service stopped serving"


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({name for name, _, _ in CASES}) == len(CASES)
