"""Whole jobs through the gRPC API against `roar up` (four real processes on loopback) with small
random models of the real Demucs and Whisper architectures."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import grpc
import pytest
import soundfile as sf

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import Suite

STAGE_ORDER = [
    pb.STAGE_UPLOAD,
    pb.STAGE_SEPARATION,
    pb.STAGE_TRANSCRIPTION,
    pb.STAGE_KARAOKE,
    pb.STAGE_COMPLETE,
]
# Longer than two segments of the tiny test Demucs, so separation reports several chunks.
SONG_SECONDS = 20.0


@pytest.fixture
async def stub(suite: Suite):
    async with client.channel(suite.address) as channel:
        yield pb_grpc.OrchestratorStub(channel)


@pytest.fixture(scope="session")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("songs") / "song.wav", SONG_SECONDS)


async def run_job(stub, path: Path, **options) -> list[pb.ProgressEvent]:
    upload = await client.upload_file(stub, path)
    return [e async for e in client.process(stub, upload.upload_id, pb.JobOptions(**options))]


async def fetch(stub, job_id: str, name: str) -> bytes:
    return b"".join([c.data async for c in stub.Download(pb.DownloadRequest(job_id=job_id, name=name))])


def decoded_seconds(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


async def test_job_streams_ordered_progress_and_delivers_artifacts(stub, song: Path, suite: Suite) -> None:
    events = await run_job(stub, song)
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert final.stage == pb.STAGE_COMPLETE and final.overall_percent == 100.0

    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1))
    stages = [STAGE_ORDER.index(e.stage) for e in events]
    assert stages == sorted(stages), "stages went backwards"
    assert {pb.STAGE_SEPARATION, pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE} <= {e.stage for e in events}
    overall = [e.overall_percent for e in events if e.stage != pb.STAGE_UPLOAD]
    assert overall == sorted(overall), "overall percent went backwards"
    separation = [e.stage_percent for e in events if e.stage == pb.STAGE_SEPARATION]
    assert len(set(separation)) > 2, separation
    assert any(e.HasField("eta_seconds") for e in events if e.stage == pb.STAGE_SEPARATION)
    assert all(e.job_id == final.job_id and not e.error.code for e in events)

    names = {a.name for a in final.artifacts}
    expected = {"vocals.wav", "instrumental.wav", "words.json", "lines.json", "lyrics.lrc", "lyrics.elrc"}
    assert expected | {"lyrics.ass", "lyrics.vtt"} <= names
    for name in ("vocals.wav", "instrumental.wav"):
        data = await fetch(stub, final.job_id, name)
        assert len(data) == next(a.size for a in final.artifacts if a.name == name)
        assert decoded_seconds(data) == pytest.approx(SONG_SECONDS, abs=1e-3)
    words = json.loads(await fetch(stub, final.job_id, "words.json"))
    assert isinstance(words, list)
    for word in words:
        assert {"word", "start", "end"} <= word.keys()
        assert 0 <= word["start"] <= word["end"] <= SONG_SECONDS + 0.01
        # Without lyrics every word is one the model heard, and sung.
        assert word["heard"] and word["sung"] and word["source"] == "transcript"
    assert (await fetch(stub, final.job_id, "lyrics.vtt")).startswith(b"WEBVTT")
    # The separation's checkpoint files went once the stems were written.
    assert {p.name for p in (suite.data_dir / "jobs" / final.job_id).iterdir()} == names

    job = await stub.GetJob(pb.GetJobRequest(job_id=final.job_id))
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.last_event.seq == final.seq
    listed = await stub.ListJobs(pb.ListJobsRequest(page_size=100))
    assert final.job_id in {j.job_id for j in listed.jobs}


async def test_watch_replays_exactly_the_events_after_seq(stub, song: Path) -> None:
    events = await run_job(stub, song)
    job_id = events[-1].job_id
    for k in (0, 1, len(events) // 2, len(events) - 1, len(events)):
        replay = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=k))]
        assert [e.SerializeToString() for e in replay] == [e.SerializeToString() for e in events[k:]]


async def test_watch_while_running_sees_no_gaps_or_duplicates(stub, song: Path) -> None:
    upload = await client.upload_file(stub, song)
    process = stub.Process(pb.ProcessRequest(upload_id=upload.upload_id))
    first = await process.read()
    live = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=first.job_id, after_seq=1))]
    rest = []
    while (event := await process.read()) != grpc.aio.EOF:
        rest.append(event)
    assert [e.seq for e in live] == list(range(2, len(live) + 2))
    assert [e.SerializeToString() for e in live] == [e.SerializeToString() for e in rest]


async def test_all_stems_and_mp3(stub, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.mp3", 8.0, fmt="mp3")
    events = await run_job(stub, song, all_stems=True, audio_format=3)  # AUDIO_FORMAT_MP3
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    names = {a.name for a in final.artifacts}
    assert {"vocals.mp3", "instrumental.mp3", "drums.mp3", "bass.mp3", "other.mp3"} <= names
    data = await fetch(stub, final.job_id, "drums.mp3")
    assert decoded_seconds(data) == pytest.approx(8.0, abs=0.03)


async def test_cancel_stops_a_running_job(stub, tmp_path: Path, suite: Suite) -> None:
    song = write_song(tmp_path / "long.wav", 90.0)
    upload = await client.upload_file(stub, song)
    events = []
    async for event in client.process(stub, upload.upload_id, pb.JobOptions()):
        events.append(event)
        if event.stage == pb.STAGE_SEPARATION and 0 < event.stage_percent < 100 and len(events) < 100:
            job = await stub.CancelJob(pb.CancelJobRequest(job_id=event.job_id))
            assert job.job_id == event.job_id
            events.append(None)  # marks when cancel was asked
            break
    rest = [e async for e in client.follow(stub, events[0].job_id, events[-2].seq)]
    final = rest[-1]
    assert final.state == pb.JOB_STATE_CANCELLED
    assert final.error.code == "CANCELLED"
    assert not any(e.stage in (pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE) for e in rest)
    # The separation service stopped its model mid-song, not only the orchestrator its call.
    quick = await run_job(stub, write_song(tmp_path / "short.wav", 3.0))
    assert quick[-1].state == pb.JOB_STATE_SUCCEEDED
    stopped = re.findall(r"separation INFO roar.progress: stopped at ([\d.]+) %", suite.log())
    assert stopped and float(stopped[-1]) < 100.0


async def test_missing_separation_model_fails_with_the_setting_to_change(
    stub, song: Path, tiny_models: dict[str, str]
) -> None:
    # "broken" is offered (conftest's ROAR_SEPARATION_MODELS) but its repo dir does not exist.
    events = await asyncio.wait_for(run_job(stub, song, separation_model="broken"), 120)
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED
    assert final.error.code == "FAILED_PRECONDITION"
    assert "'broken'" in final.error.message and "ROAR_SEPARATION_MODELS" in final.error.message
    models_dir = str(Path(tiny_models["ROAR_TRANSCRIPTION_MODEL"]).parent)
    assert models_dir not in final.error.message
    assert any(e.error.code and e.stage == pb.STAGE_SEPARATION for e in events)


async def test_missing_transcription_model_still_delivers_stems(stub, song: Path) -> None:
    events = await asyncio.wait_for(run_job(stub, song, transcription_model="broken"), 120)
    final = events[-1]
    assert final.state == pb.JOB_STATE_PARTIAL
    assert [e.stage for e in final.errors] == [pb.STAGE_TRANSCRIPTION]
    assert "'broken'" in final.errors[0].message and "ROAR_TRANSCRIPTION_MODELS" in final.errors[0].message
    names = {a.name for a in final.artifacts}
    assert {"vocals.wav", "instrumental.wav"} <= names and "words.json" not in names


async def test_jobs_run_at_the_same_time(stub, tmp_path: Path) -> None:
    songs = [write_song(tmp_path / f"s{i}.flac", 6.0, fmt="flac", seed=i) for i in range(3)]
    results = await asyncio.gather(*(run_job(stub, s) for s in songs))
    assert [r[-1].state for r in results] == [pb.JOB_STATE_SUCCEEDED] * 3
    assert len({r[-1].job_id for r in results}) == 3


async def test_bad_requests_get_clear_statuses(stub, tmp_path: Path) -> None:
    async def status_of(call) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.details()
        return info.value.code()

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 100)
    upload = await stub.StartUpload(pb.StartUploadRequest(filename="junk.wav", size=junk.stat().st_size))
    await stub.UploadChunk(
        pb.UploadChunkRequest(upload_id=upload.upload_id, offset=0, data=junk.read_bytes())
    )
    assert await status_of(stub.FinishUpload(pb.FinishUploadRequest(upload_id=upload.upload_id))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    partial = await stub.StartUpload(pb.StartUploadRequest(filename="a.wav", size=100))
    far = pb.UploadChunkRequest(upload_id=partial.upload_id, offset=50, data=b"x")
    assert await status_of(stub.UploadChunk(far)) == grpc.StatusCode.FAILED_PRECONDITION
    past_end = pb.UploadChunkRequest(upload_id=partial.upload_id, offset=0, data=b"x" * 101)
    assert await status_of(stub.UploadChunk(past_end)) == grpc.StatusCode.INVALID_ARGUMENT
    unfinished = pb.ProcessRequest(upload_id=partial.upload_id)
    assert await status_of(stub.Process(unfinished).read()) == grpc.StatusCode.FAILED_PRECONDITION
    huge = pb.StartUploadRequest(filename="huge.wav", size=1 << 50)
    assert await status_of(stub.StartUpload(huge)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        await status_of(stub.StartUpload(pb.StartUploadRequest(filename="x")))
        == grpc.StatusCode.INVALID_ARGUMENT
    )

    assert (
        await status_of(stub.Process(pb.ProcessRequest(upload_id="nope")).read()) == grpc.StatusCode.NOT_FOUND
    )
    assert await status_of(stub.GetJob(pb.GetJobRequest(job_id="nope"))) == grpc.StatusCode.NOT_FOUND
    assert await status_of(stub.CancelJob(pb.CancelJobRequest(job_id="nope"))) == grpc.StatusCode.NOT_FOUND
    watch = stub.WatchJob(pb.WatchJobRequest(job_id="nope"))
    assert await status_of(watch.read()) == grpc.StatusCode.NOT_FOUND
    jobs = await stub.ListJobs(pb.ListJobsRequest(page_size=1))
    if jobs.jobs:
        missing = pb.DownloadRequest(job_id=jobs.jobs[0].job_id, name="../roar.sqlite")
        assert await status_of(stub.Download(missing).read()) == grpc.StatusCode.NOT_FOUND
    assert (
        await status_of(stub.ListJobs(pb.ListJobsRequest(page_token="x"))) == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_resent_chunks_are_harmless_and_upload_resumes(stub, song: Path, suite: Suite) -> None:
    data = song.read_bytes()
    upload = await stub.StartUpload(pb.StartUploadRequest(filename=song.name, size=len(data)))
    first = data[:100_000]
    await stub.UploadChunk(pb.UploadChunkRequest(upload_id=upload.upload_id, offset=0, data=first))
    # The client lost the reply, resends an overlapping chunk, then asks where to go on.
    again = pb.UploadChunkRequest(upload_id=upload.upload_id, offset=50_000, data=data[50_000:150_000])
    assert (await stub.UploadChunk(again)).committed == 150_000
    state = await stub.GetUpload(pb.GetUploadRequest(upload_id=upload.upload_id))
    rest = pb.UploadChunkRequest(
        upload_id=upload.upload_id, offset=state.committed, data=data[state.committed :]
    )
    await stub.UploadChunk(rest)
    finished = await stub.FinishUpload(pb.FinishUploadRequest(upload_id=upload.upload_id))
    assert finished.audio.duration_seconds == pytest.approx(SONG_SECONDS)
    assert (suite.data_dir / "uploads" / upload.upload_id).read_bytes() == data
