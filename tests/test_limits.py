"""Resource bounds through real services: the longest song (ROAR_MAX_AUDIO_MINUTES) at FinishUpload
and in the stages, oversize stage requests that leave no memory behind, a full disk, and the
janitor that the orchestrator runs (ROAR_UPLOAD_TTL_HOURS)."""

from __future__ import annotations

import errno
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from orchestrator.artifacts import write_file
from orchestrator.stages import StageFailed
from roar import audio
from roar.errors import BadInput
from roar.service import CHUNK_BYTES, is_serving
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from roar.v1 import separation_pb2, separation_pb2_grpc, transcription_pb2, transcription_pb2_grpc
from tests.support.suite import Suite

LIMIT_MINUTES = 5
# Uploads in the short suite expire after about 7 s, so its janitor is seen at work.
SHORT_TTL_HOURS = 0.002
# A refused stage request may leave the service this much larger: allocator and gRPC caches,
# measured at 30-90 MiB after the first, a fixed cost rather than the request's size ...
RSS_TOLERANCE_BYTES = 128 * 2**20
# ... which further refused requests do not add to beyond this (measured: 2-22 MiB) ...
REPEAT_TOLERANCE_BYTES = 48 * 2**20
# ... and may make it grow this much while one arrives (the in-memory part of the spool and
# gRPC's buffers: measured 110-170 MiB on a loaded machine), far under the request's own size.
PEAK_TOLERANCE_BYTES = 240 * 2**20
SETTLE_STEP = 1.0
SETTLE_SECONDS = 15.0
SETTLED_BYTES = 4 * 2**20


def silent_flac(minutes: float, rate: int = 44100, channels: int = 2) -> bytes:
    """Minutes of silence: about 10 KB a minute, however long."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, "PCM_16", format="FLAC") as f:
        block = np.zeros((rate * 60, channels), np.float32)
        for _ in range(int(minutes)):
            f.write(block)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ten_minutes() -> bytes:
    return silent_flac(10)


@pytest.fixture(scope="module")
def short_suite(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Suite]:
    """A suite taking songs of at most LIMIT_MINUTES, whose uploads expire within seconds."""
    root = tmp_path_factory.mktemp("short-suite")
    env = {
        **tiny_models,
        "ROAR_MAX_AUDIO_MINUTES": str(LIMIT_MINUTES),
        "ROAR_UPLOAD_TTL_HOURS": str(SHORT_TTL_HOURS),
    }
    running = Suite(root / "data", env, root / "roar-up.log")
    running.start()
    yield running
    running.stop()


def orchestrator(suite: Suite) -> pb_grpc.OrchestratorStub:
    return pb_grpc.OrchestratorStub(grpc.insecure_channel(suite.address))


def upload(stub: pb_grpc.OrchestratorStub, data: bytes) -> pb.Upload:
    started = stub.StartUpload(pb.StartUploadRequest(filename="silence.flac", size=len(data)))
    for offset in range(0, len(data), started.max_chunk_bytes):
        piece = data[offset : offset + started.max_chunk_bytes]
        stub.UploadChunk(pb.UploadChunkRequest(upload_id=started.upload_id, offset=offset, data=piece))
    return started


def all_serving(suite: Suite) -> bool:
    return all(is_serving(a) for a in [suite.address, *suite.stage_addresses.values()])


def service_pid(suite: Suite, module: str) -> int:
    """The pid of the suite's process running `python -m module`."""
    assert suite.process is not None
    parents = {suite.process.pid}
    for _ in range(3):  # roar up's children (and theirs, should a supervisor sit between)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                if module.encode() in cmdline:
                    return int(entry.name)
                parents.add(int(entry.name))
    raise AssertionError(f"no {module} process under roar up")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def settled_memory(pid: int) -> dict[str, int]:
    """memory(pid) once the process is done with a call: its size read every SETTLE_STEP seconds
    until two readings agree within SETTLED_BYTES (a busy machine may leave the call's worker
    thread some seconds behind its refusal), at most SETTLE_SECONDS. A kept buffer never settles
    lower, so this does not hide one."""
    last = memory(pid)
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(SETTLE_STEP)
        reading = memory(pid)
        if abs(reading["VmRSS"] - last["VmRSS"]) < SETTLED_BYTES:
            return reading
        last = reading
    return last


def test_ten_minutes_are_refused_at_finish_upload_past_a_five_minute_limit(
    short_suite: Suite, ten_minutes: bytes
) -> None:
    stub = orchestrator(short_suite)
    started = upload(stub, ten_minutes)
    with pytest.raises(grpc.RpcError) as info:
        stub.FinishUpload(pb.FinishUploadRequest(upload_id=started.upload_id))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ROAR_MAX_AUDIO_MINUTES" in info.value.details()
    assert f"at most {LIMIT_MINUTES} minutes" in info.value.details()


def test_the_stages_check_the_limit_again_when_decoding(short_suite: Suite, ten_minutes: bytes) -> None:
    separation = separation_pb2_grpc.SeparationStub(
        grpc.insecure_channel(short_suite.stage_addresses["separation"])
    )
    requests = [
        separation_pb2.SeparateRequest(options=separation_pb2.SeparationOptions()),
        separation_pb2.SeparateRequest(audio=ten_minutes),
    ]
    with pytest.raises(grpc.RpcError) as info:
        list(separation.Separate(iter(requests), timeout=120))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ROAR_MAX_AUDIO_MINUTES" in info.value.details()
    assert all_serving(short_suite)


def test_ten_minutes_are_taken_with_the_default_limit_and_normalised(
    suite: Suite, ten_minutes: bytes
) -> None:
    stub = orchestrator(suite)
    finished = stub.FinishUpload(pb.FinishUploadRequest(upload_id=upload(stub, ten_minutes).upload_id))
    assert finished.finished
    assert finished.audio.duration_seconds == pytest.approx(600.0)
    normalised = sf.info(str(suite.data_dir / "uploads" / f"{finished.upload_id}.flac"))
    assert (normalised.format, normalised.channels, normalised.samplerate) == ("FLAC", 2, 44100)
    assert normalised.frames == 600 * 44100


def test_refused_oversize_stage_requests_leave_no_memory_behind(short_suite: Suite) -> None:
    """Three requests of 350+ MB each (in the 1 MiB chunks the orchestrator sends) to a
    transcription service that takes at most about 354 MB: each is refused, and the service stays
    within a fixed tolerance of its size before instead of growing by the request (one that kept
    the buffer would grow by more than 350 MB, and by as much again for each request). One refused
    request first warms the allocator of a process that holds a model (its arenas grow once by
    up to ~200 MiB, measured), then the peak is reset (/proc/PID/clear_refs)."""
    limit = audio.max_encoded_bytes(LIMIT_MINUTES * 60)
    chunks = limit // CHUNK_BYTES + 8  # past the limit, whatever arrives first
    assert chunks * CHUNK_BYTES > 300 * 10**6
    chunk = b"\0" * CHUNK_BYTES
    pid = service_pid(short_suite, "services.transcription.server")

    def requests() -> Iterator[transcription_pb2.TranscribeRequest]:
        yield transcription_pb2.TranscribeRequest(options=transcription_pb2.TranscriptionOptions())
        for _ in range(chunks):
            yield transcription_pb2.TranscribeRequest(audio=chunk)

    channel = grpc.insecure_channel(short_suite.stage_addresses["transcription"])
    transcription = transcription_pb2_grpc.TranscriptionStub(channel)
    with pytest.raises(grpc.RpcError):
        list(transcription.Transcribe(requests(), timeout=300))
    settled_memory(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = memory(pid)
    after_each = []
    for attempt in range(3):
        with pytest.raises(grpc.RpcError) as info:
            list(transcription.Transcribe(requests(), timeout=300))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ROAR_MAX_AUDIO_MINUTES" in info.value.details()
        after = settled_memory(pid)
        print(f"transcription after refused request {attempt + 1}: {after['VmRSS'] >> 20} MiB", end=" ")
        print(f"(before: {before['VmRSS'] >> 20} MiB; peak {after['VmHWM'] >> 20} MiB)")
        assert after["VmRSS"] - before["VmRSS"] < RSS_TOLERANCE_BYTES
        assert after["VmHWM"] - before["VmRSS"] < PEAK_TOLERANCE_BYTES
        after_each.append(after["VmRSS"])
    assert after_each[-1] - after_each[0] < REPEAT_TOLERANCE_BYTES
    assert all_serving(short_suite)


def test_unfinished_uploads_expire_while_the_orchestrator_runs(short_suite: Suite) -> None:
    stub = orchestrator(short_suite)
    started = stub.StartUpload(pb.StartUploadRequest(filename="left.wav", size=100))
    path = short_suite.data_dir / "uploads" / started.upload_id
    assert path.exists()
    deadline = time.monotonic() + 60
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not path.exists(), "the janitor did not delete an expired upload"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetUpload(pb.GetUploadRequest(upload_id=started.upload_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_refuses_the_chunk_and_keeps_serving(suite: Suite) -> None:
    """The kernel's own ENOSPC: the upload's file is replaced by /dev/full, where every write
    fails with it, so the server's real write path meets a real full disk."""
    stub = orchestrator(suite)
    started = stub.StartUpload(pb.StartUploadRequest(filename="full.wav", size=1000))
    path = suite.data_dir / "uploads" / started.upload_id
    path.unlink()
    path.symlink_to("/dev/full")
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadChunk(pb.UploadChunkRequest(upload_id=started.upload_id, offset=0, data=b"x" * 1000))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk is full" in info.value.details()
    assert stub.GetUpload(pb.GetUploadRequest(upload_id=started.upload_id)).committed == 0
    assert all_serving(suite)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_fails_an_artifact_write_with_resource_exhausted(tmp_path: Path) -> None:
    (tmp_path / ".vocals.wav.part").symlink_to("/dev/full")
    with pytest.raises(StageFailed) as info:
        write_file(tmp_path, "vocals.wav", b"x" * 100_000)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert not (tmp_path / "vocals.wav").exists() and not (tmp_path / ".vocals.wav.part").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_normalising_onto_a_full_disk_raises_the_disk_error(tmp_path: Path) -> None:
    """libsndfile writes through C callbacks that cannot carry an exception: the real ENOSPC
    must still come out (FinishUpload turns it into RESOURCE_EXHAUSTED)."""
    source = tmp_path / "song.flac"
    source.write_bytes(silent_flac(1))
    with pytest.raises(OSError) as info:
        audio.normalise(source, Path("/dev/full"), 600)
    assert info.value.errno == errno.ENOSPC


def test_decoding_is_refused_from_the_header_past_the_limit(ten_minutes: bytes) -> None:
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        audio.decode(ten_minutes, max_seconds=300)
    assert audio.decode(ten_minutes, max_seconds=600).duration == pytest.approx(600)


@pytest.mark.skipif(not os.path.exists("/usr/bin/ffmpeg"), reason="needs ffmpeg")
def test_ffmpeg_decoding_stops_past_the_limit(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(silent_flac(1))
    m4a = tmp_path / "song.m4a"
    os.system(f"ffmpeg -v error -y -i {song} -c:a aac {m4a}")
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        audio.decode(m4a.read_bytes(), max_seconds=30)
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        audio.normalise(m4a, tmp_path / "out.flac", max_seconds=30)
    info = audio.normalise(m4a, tmp_path / "out.flac", max_seconds=120)
    assert info.format == "FFMPEG" and info.duration_seconds == pytest.approx(60, abs=0.1)
    assert sf.info(str(tmp_path / "out.flac")).format == "FLAC"


def test_more_than_two_channels_are_mixed_down_to_mono(tmp_path: Path) -> None:
    frames = np.zeros((44100, 6), np.float32)
    frames[:, 2] = 0.6  # the centre channel of a 5.1 file
    sf.write(tmp_path / "surround.wav", frames, 44100, subtype="PCM_24")
    info = audio.normalise(tmp_path / "surround.wav", tmp_path / "out.flac", 600)
    assert (info.channels, info.sample_rate) == (6, 44100)
    mixed, rate = sf.read(tmp_path / "out.flac", always_2d=True)
    assert mixed.shape == (44100, 1) and rate == 44100
    assert sf.info(str(tmp_path / "out.flac")).subtype == "PCM_24"
    assert mixed[:, 0] == pytest.approx(0.1, abs=1e-4)
