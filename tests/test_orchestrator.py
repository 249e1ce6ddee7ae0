"""The orchestrator in this process with its stages faked at the gRPC boundary: fake Separation
and Transcription servicers (and the real karaoke servicer, wrapped) on a loopback port, each
driven by a script of how its next calls behave (send N windows or passages then break; hang; wait
for the test; answer slowly; answer an error). Covers checkpoints and resume from every stage,
every window and passage, the overlap of separation and transcription, retries, deadlines, the
queue limit, PARTIAL, ListJobs paging and Download offsets."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from orchestrator import checkpoints
from orchestrator.artifacts import StemCheckpoints
from orchestrator.auth import authenticator
from orchestrator.jobs import Jobs
from orchestrator.server import OrchestratorServicer
from orchestrator.stages import StageClients, StageFailed
from orchestrator.store import Store
from orchestrator.uploads import Uploads
from roar import client
from roar.config import Settings
from roar.v1 import (
    common_pb2,
    karaoke_pb2_grpc,
    separation_pb2,
    separation_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from services.karaoke.server import KaraokeServicer
from tests.support.songs import write_song

# The fake separation's song: 7 windows of 4,000 frames, the last one 1,600.
RATE = 8000
CHANNELS = 2
WINDOW_FRAMES = 4000
FRAMES = 25_600
WINDOW_COUNT = 7
STEMS = ["vocals", "instrumental"]
ALL_STEMS = [*STEMS, "drums", "bass"]
SONG_SECONDS = 3.0
# The fake transcription's passages: one per 6,000 frames of vocals it has received, the last one
# shorter (5 passages); the first needs 2 windows of vocals.
PASSAGE_FRAMES = 6000
PASSAGE_COUNT = 5
FRAME_BYTES = CHANNELS * 4
Code = grpc.StatusCode


def window_pcm(index: int, stem: str) -> np.ndarray:
    """The same samples for the same window and stem in every call (a deterministic separation)."""
    frames = min(WINDOW_FRAMES, FRAMES - index * WINDOW_FRAMES)
    rng = np.random.default_rng([index, ALL_STEMS.index(stem)])
    return rng.uniform(-0.9, 0.9, (frames, CHANNELS)).astype("<f4")


def vocals_pcm() -> bytes:
    return b"".join(window_pcm(k, "vocals").tobytes() for k in range(WINDOW_COUNT))


@dataclass
class Behaviour:
    """How a fake stage answers one call. `stop_after`: StemWindows (separation) or Passages
    (transcription) sent before stopping; `code`: the status it stops with (None: it hangs until
    cancelled); `delay`: seconds before each response; `hold_at`: StemWindows sent before the
    separation waits for `hold` to be set."""

    stop_after: int | None = None
    code: Code | None = Code.UNAVAILABLE
    delay: float = 0.0
    hold_at: int | None = None
    hold: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Script:
    behaviours: list[Behaviour] = field(default_factory=list)
    calls: list[object] = field(default_factory=list)  # what each call received
    sent: list[int] = field(default_factory=list)  # StemWindows each call sent

    def next(self) -> Behaviour:
        return self.behaviours.pop(0) if self.behaviours else Behaviour()


async def _stop(behaviour: Behaviour, context: grpc.aio.ServicerContext) -> None:
    if behaviour.code is None:
        await asyncio.sleep(3600)  # hangs: the caller cancels, or the test ends
    await context.abort(behaviour.code, f"scripted {behaviour.code.name}")


async def _read(requests: AsyncIterator, options_field: str) -> tuple[object, int]:
    options, received = None, 0
    async for request in requests:
        if request.HasField(options_field):
            options = getattr(request, options_field)
        else:
            received += len(request.audio)
    return options, received


class FakeSeparation(separation_pb2_grpc.SeparationServicer):
    def __init__(self) -> None:
        self.script = Script()

    async def Separate(self, request_iterator, context):
        options, received = await _read(request_iterator, "options")
        self.script.calls.append((options, received))
        behaviour = self.script.next()
        stems = ALL_STEMS if options.all_stems else STEMS
        sent = 0
        self.script.sent.append(0)
        if behaviour.stop_after == -1:  # before anything
            await _stop(behaviour, context)
        yield separation_pb2.SeparateResponse(
            progress=common_pb2.StageProgress(percent=1.0, message="decoded")
        )
        yield separation_pb2.SeparateResponse(
            result=separation_pb2.SeparationResult(
                model="fake",
                stems=stems,
                sample_rate=RATE,
                channels=CHANNELS,
                frames=FRAMES,
                window_count=WINDOW_COUNT,
            )
        )
        for index in range(options.first_window, WINDOW_COUNT):
            for stem in stems:
                if sent == behaviour.hold_at:
                    await behaviour.hold.wait()
                if sent == behaviour.stop_after:
                    await _stop(behaviour, context)
                await asyncio.sleep(behaviour.delay)
                window = separation_pb2.StemWindow(
                    index=index,
                    stem=stem,
                    start_frame=index * WINDOW_FRAMES,
                    pcm=window_pcm(index, stem).tobytes(),
                )
                yield separation_pb2.SeparateResponse(window=window)
                sent += 1
                self.script.sent[-1] = sent
            percent = 100.0 * (index + 1) / WINDOW_COUNT
            yield separation_pb2.SeparateResponse(
                progress=common_pb2.StageProgress(percent=percent, message="separating")
            )
        if behaviour.stop_after == sent:  # every window sent, the call not ended
            await _stop(behaviour, context)


def passage(index: int) -> transcription_pb2.Passage:
    start = index * PASSAGE_FRAMES / RATE
    end = min((index + 1) * PASSAGE_FRAMES, FRAMES) / RATE
    word = common_pb2.Word(
        text=f"word{index}", start=start, end=start + 0.1, heard=True, from_transcript=True
    )
    return transcription_pb2.Passage(
        index=index, start=start, end=end, words=[word], state=bytes([index]) * 3
    )


def transcript_of(passages: list[transcription_pb2.Passage]) -> common_pb2.Transcript:
    """The fake's transcript: one segment per passage, from the passages it was given as done and
    those it transcribed."""
    segments = [
        common_pb2.Segment(text=" ".join(w.text for w in p.words), start=p.start, end=p.end, words=p.words)
        for p in passages
    ]
    return common_pb2.Transcript(language="en", segments=segments)


@dataclass
class TranscribeCall:
    """What one Transcribe call received and did."""

    options: transcription_pb2.TranscriptionOptions | None = None
    audio: bytearray = field(default_factory=bytearray)
    sent: list[int] = field(default_factory=list)  # passage indexes sent
    # StemWindows the fake separation had sent, in all, when the first audio came.
    stem_windows_at_first_audio: int | None = None
    ended: bool = False
    cut: bool = True  # it ended before its transcript was sent (cancelled, aborted)


class FakeTranscription(transcription_pb2_grpc.TranscriptionServicer):
    """Transcribes a passage as soon as its frames are in (the protocol's overlap): passage k once
    (k + 1) * PASSAGE_FRAMES frames came, the last one at the end of the stream; passages given
    as options.done are not sent again and count in the transcript."""

    def __init__(self, separation: FakeSeparation) -> None:
        self.script = Script()
        self.separation = separation
        self.calls: list[TranscribeCall] = []

    async def Transcribe(self, request_iterator, context):
        call = TranscribeCall()
        self.calls.append(call)
        self.script.calls.append(call)
        behaviour = self.script.next()
        passages: list[transcription_pb2.Passage] = []
        try:
            async for request in request_iterator:
                if request.HasField("options"):
                    call.options = request.options
                    passages = list(request.options.done)
                    continue
                if call.stem_windows_at_first_audio is None:
                    call.stem_windows_at_first_audio = sum(self.separation.script.sent)
                call.audio += request.audio
                while (len(passages) + 1) * PASSAGE_FRAMES <= len(call.audio) // FRAME_BYTES:
                    yield await self._passage(behaviour, call, passages, context)
            while len(passages) * PASSAGE_FRAMES < len(call.audio) // FRAME_BYTES:
                yield await self._passage(behaviour, call, passages, context)
            if behaviour.stop_after is not None:
                await _stop(behaviour, context)
            yield transcription_pb2.TranscribeResponse(transcript=transcript_of(passages))
            call.cut = False
        finally:
            call.ended = True

    @staticmethod
    async def _passage(
        behaviour: Behaviour, call: TranscribeCall, passages: list[transcription_pb2.Passage], context
    ) -> transcription_pb2.TranscribeResponse:
        if behaviour.stop_after == len(call.sent):
            await _stop(behaviour, context)
        await asyncio.sleep(behaviour.delay)
        passages.append(passage(len(passages)))
        call.sent.append(passages[-1].index)
        return transcription_pb2.TranscribeResponse(passage=passages[-1])


class ScriptedKaraoke(KaraokeServicer):
    """The real karaoke servicer, with scripted failures and a record of its requests."""

    def __init__(self) -> None:
        super().__init__(asyncio.Semaphore(2))
        self.script = Script()

    async def Build(self, request, context):
        self.script.calls.append(request)
        behaviour = self.script.next()
        await asyncio.sleep(behaviour.delay)
        if behaviour.stop_after is not None:
            await _stop(behaviour, context)
        async for response in super().Build(request, context):
            yield response


class Rig:
    """Fake stages on one loopback port, and the orchestrator (store, uploads, jobs, its gRPC
    servicer) in this process on another; restart() stops and starts the orchestrator on the same
    data dir, as a restart of its process would."""

    def __init__(self, data_dir: Path, **settings: float) -> None:
        self.data_dir = data_dir
        self.settings_overrides = settings
        self.separation = FakeSeparation()
        self.transcription = FakeTranscription(self.separation)
        self.karaoke = ScriptedKaraoke()

    async def start(self) -> None:
        self.stages = grpc.aio.server()
        separation_pb2_grpc.add_SeparationServicer_to_server(self.separation, self.stages)
        transcription_pb2_grpc.add_TranscriptionServicer_to_server(self.transcription, self.stages)
        karaoke_pb2_grpc.add_KaraokeServicer_to_server(self.karaoke, self.stages)
        stage_address = f"127.0.0.1:{self.stages.add_insecure_port('127.0.0.1:0')}"
        await self.stages.start()
        self.settings = Settings(
            data_dir=self.data_dir,
            separation_addr=stage_address,
            transcription_addr=stage_address,
            karaoke_addr=stage_address,
            **{"stage_retry_seconds": 10.0, **self.settings_overrides},
        )
        await self._start_orchestrator()

    async def _start_orchestrator(self) -> None:
        s = self.settings
        self.store = Store(s.data_dir / "roar.sqlite")
        uploads = Uploads(self.store, s.data_dir / "uploads", s.max_upload_bytes, s.max_audio_minutes * 60)
        self.clients = StageClients(
            s.separation_addr, s.transcription_addr, s.karaoke_addr, retry_seconds=s.stage_retry_seconds
        )
        self.jobs = Jobs(s, self.store, uploads, self.clients)
        servicer = OrchestratorServicer(
            s, self.store, uploads, self.jobs, authenticator(s, self.store, "127.0.0.1")
        )
        self.server = grpc.aio.server()
        pb_grpc.add_OrchestratorServicer_to_server(servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"  # for a `roar` command run against it
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = pb_grpc.OrchestratorStub(self.channel)

    async def stop_orchestrator(self) -> None:
        await self.jobs.shutdown()
        await self.channel.close()
        await self.server.stop(grace=None)
        await self.clients.close()
        self.store.close()

    async def restart(self) -> None:
        await self.stop_orchestrator()
        await self.start_orchestrator()

    async def start_orchestrator(self) -> None:
        """Starts a stopped orchestrator, which resumes its unfinished jobs."""
        await self._start_orchestrator()
        self.jobs.resume_unfinished()

    async def stop(self) -> None:
        await self.stop_orchestrator()
        await self.stages.stop(grace=None)

    async def upload(self, song: Path) -> str:
        return (await client.upload_file(self.stub, song)).upload_id

    async def submit(self, song: Path) -> pb.ProgressEvent:
        """Uploads the song and starts its job; returns the job's first event (not waiting for more)."""
        return await self.stub.Process(pb.ProcessRequest(upload_id=await self.upload(song))).read()

    async def run_job(self, song: Path, **options) -> list[pb.ProgressEvent]:
        upload_id = await self.upload(song)
        events = client.process(self.stub, upload_id, pb.JobOptions(**options))
        return await asyncio.wait_for(_collect(events), 60)

    async def follow(self, job_id: str) -> list[pb.ProgressEvent]:
        events = self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id))
        return await asyncio.wait_for(_collect(events), 60)

    async def fetch(self, job_id: str, name: str, offset: int = 0) -> list[pb.DownloadChunk]:
        request = pb.DownloadRequest(job_id=job_id, name=name, offset=offset)
        return [chunk async for chunk in self.stub.Download(request)]

    async def file(self, job_id: str, name: str) -> bytes:
        return b"".join(chunk.data for chunk in await self.fetch(job_id, name))

    async def wait_for(self, condition, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting"
            await asyncio.sleep(0.02)


async def _collect(events) -> list[pb.ProgressEvent]:
    return [e async for e in events]


# A separation call that hangs after its first progress, until its job is paused or cancelled.
HANGS = Behaviour(stop_after=0, code=None)


@asynccontextmanager
async def running_rig(data_dir: Path, **settings: float) -> AsyncIterator[Rig]:
    rig = Rig(data_dir, **settings)
    await rig.start()
    try:
        yield rig
    finally:
        await rig.stop()


async def separating(rig: Rig, job_id: str, calls: int) -> None:
    """Waits until the job runs and the fake separation has its call, the `calls`-th: it takes its
    behaviour once the whole song is in, so a job cancelled or paused before that would leave its
    HANGS to the next job."""
    await rig.wait_for(lambda: rig.store.get_job(job_id).state == pb.JOB_STATE_RUNNING)
    await rig.wait_for(lambda: len(rig.separation.script.calls) >= calls)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path / "data") as running:
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


async def unbroken_stems(tmp_path: Path, song: Path) -> dict[str, bytes]:
    """The stem files of a job no call of which broke."""
    rig = Rig(tmp_path / "unbroken")
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final
        return {name: await rig.file(final.job_id, name) for name in ("vocals.wav", "instrumental.wav")}
    finally:
        await rig.stop()


def job_files(rig: Rig, job_id: str) -> set[str]:
    return {p.name for p in (rig.data_dir / "jobs" / job_id).iterdir()}


# --- the data path ------------------------------------------------------------------------------


async def test_windows_become_stem_files_and_every_stage_gets_its_input_streamed(
    rig: Rig, song: Path
) -> None:
    events = await rig.run_job(song)
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    job_id = final.job_id
    names = {a.name for a in final.artifacts}
    assert {"vocals.wav", "instrumental.wav", "lyrics.lrc", "lyrics.vtt", "words.json"} <= names
    # Only the files: no checkpoint, no partial write, no marker left, and no state in the store.
    assert job_files(rig, job_id) == names
    assert rig.store.stages_done(job_id) == {} and rig.store.checkpoint(job_id, pb.STAGE_SEPARATION) is None

    for stem in STEMS:
        decoded, rate = sf.read(io.BytesIO(await rig.file(job_id, f"{stem}.wav")), dtype="float32")
        expected = np.concatenate([window_pcm(k, stem) for k in range(WINDOW_COUNT)])
        assert rate == RATE and decoded.shape == (FRAMES, CHANNELS)
        np.testing.assert_allclose(decoded, expected, atol=1 / 32768 + 1e-6)  # 16-bit WAV

    [(options, received)] = rig.separation.script.calls
    normalised = rig.data_dir / "uploads" / f"{rig.store.upload_of(job_id)}.flac"
    assert options.first_window == 0 and received == normalised.stat().st_size
    [call] = rig.transcription.calls
    assert call.audio == vocals_pcm()  # the vocals' samples as separated, bit-exact
    assert (call.options.pcm.sample_rate, call.options.pcm.channels) == (RATE, CHANNELS)
    assert call.sent == list(range(PASSAGE_COUNT)) and not call.options.done
    [build] = rig.karaoke.script.calls
    assert build.options.duration_seconds == pytest.approx(SONG_SECONDS)
    assert build.options.transcript == transcript_of([passage(k) for k in range(PASSAGE_COUNT)])
    messages = [e.message for e in events]
    assert "separation starting" in messages and not any("resuming" in m for m in messages)


async def test_all_stems_in_mp3_are_encoded_from_the_windows(rig: Rig, song: Path) -> None:
    final = (await rig.run_job(song, all_stems=True, audio_format=common_pb2.AUDIO_FORMAT_MP3))[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    names = {a.name for a in final.artifacts}
    assert {f"{stem}.mp3" for stem in ALL_STEMS} <= names
    info = sf.info(io.BytesIO(await rig.file(final.job_id, "drums.mp3")))
    assert info.format == "MP3" and info.frames / info.samplerate == pytest.approx(FRAMES / RATE, abs=0.03)


# --- checkpoints: a broken call resumes where it broke ------------------------------------------


@pytest.mark.parametrize("stop_after", [0, 1, 2, 5, 6, 13, 14], ids=lambda n: f"after-{n}-stem-windows")
async def test_a_broken_separation_resumes_from_its_checkpoint_with_the_same_stems(
    tmp_path: Path, song: Path, stop_after: int
) -> None:
    """stop_after counts StemWindows (two per window): odd numbers break inside a window."""
    expected = await unbroken_stems(tmp_path, song)
    rig = Rig(tmp_path / "broken")
    rig.separation.script.behaviours = [Behaviour(stop_after=stop_after)]
    await rig.start()
    try:
        events = await rig.run_job(song)
        final = events[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final
        stems = {name: await rig.file(final.job_id, name) for name in expected}
    finally:
        await rig.stop()
    kept = stop_after // len(STEMS)
    assert [options.first_window for options, _ in rig.separation.script.calls] == [0, kept]
    assert stems == expected  # bit-exact
    # Only the window under way when the call broke is sent again.
    assert sum(rig.separation.script.sent) == WINDOW_COUNT * len(STEMS) + stop_after % len(STEMS)
    [retry] = [e for e in events if "retrying (attempt 2)" in e.message]
    assert retry.message == (
        "separation: the service restarted; retrying (attempt 2), "
        f"resuming from window {kept} of {WINDOW_COUNT}"
    )
    assert retry.stage == pb.STAGE_SEPARATION


async def test_tries_that_keep_windows_do_not_use_up_the_retry_window(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data", stage_retry_seconds=0.4)
    # Each try breaks after one more window: 5 breaks take longer than the retry window.
    rig.separation.script.behaviours = [Behaviour(stop_after=2) for _ in range(5)]
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert [o.first_window for o, _ in rig.separation.script.calls] == [0, 1, 2, 3, 4, 5]


# --- resume after a restart: from every stage and every checkpoint ------------------------------


@pytest.mark.parametrize("windows", [0, 3, WINDOW_COUNT], ids=lambda n: f"{n}-windows-kept")
async def test_a_restart_mid_separation_resumes_from_the_checkpoint(
    tmp_path: Path, song: Path, windows: int
) -> None:
    expected = await unbroken_stems(tmp_path, song)
    rig = Rig(tmp_path / "data")
    rig.separation.script.behaviours = [Behaviour(stop_after=windows * len(STEMS), code=None)]
    await rig.start()
    try:
        job = await rig.submit(song)

        def kept() -> bool:
            checkpoint = rig.store.checkpoint(job.job_id, pb.STAGE_SEPARATION)
            return checkpoint is not None and checkpoint.windows_done == windows

        await rig.wait_for(kept)
        await rig.restart()
        events = await rig.follow(job.job_id)
        final = events[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final
        stems = {name: await rig.file(final.job_id, name) for name in expected}
    finally:
        await rig.stop()
    calls = [o.first_window for o, _ in rig.separation.script.calls]
    # Every window in: the stems are encoded from the checkpoint without calling again.
    assert calls == ([0] if windows == WINDOW_COUNT else [0, windows])
    assert stems == expected
    messages = [e.message for e in events]
    assert "resuming after a restart" in messages
    assert f"separation resuming from window {windows} of {WINDOW_COUNT}" in messages


@pytest.mark.parametrize("stage", ["transcription", "karaoke"])
async def test_a_restart_in_a_later_stage_redoes_only_that_stage(
    tmp_path: Path, song: Path, stage: str
) -> None:
    rig = Rig(tmp_path / "data")
    fake = rig.transcription if stage == "transcription" else rig.karaoke
    fake.script.behaviours = [Behaviour(stop_after=0, code=None)]
    await rig.start()
    try:
        job = await rig.submit(song)
        await rig.wait_for(lambda: len(fake.script.calls) == 1)
        # Transcription overlaps separation: restart once separation is done.
        await rig.wait_for(lambda: pb.STAGE_SEPARATION in rig.store.stages_done(job.job_id))
        await rig.restart()
        final = (await rig.follow(job.job_id))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert len(rig.separation.script.calls) == 1
    assert len(rig.transcription.script.calls) == (2 if stage == "transcription" else 1)
    assert len(rig.karaoke.script.calls) == (2 if stage == "karaoke" else 1)
    assert "lyrics.lrc" in {a.name for a in final.artifacts}


# --- overlap: transcription streams the vocals while separation makes them ----------------------


async def test_transcription_streams_the_vocals_while_separation_makes_them(rig: Rig, song: Path) -> None:
    # The separation holds before its last window until the test has seen a passage stored.
    hold = Behaviour(hold_at=(WINDOW_COUNT - 1) * len(STEMS))
    rig.separation.script.behaviours = [hold]
    job = await rig.submit(song)
    await rig.wait_for(lambda: len(rig.store.passages(job.job_id)) >= 1)
    checkpoint = rig.store.checkpoint(job.job_id, pb.STAGE_SEPARATION)
    assert checkpoint is not None and checkpoint.windows_done < WINDOW_COUNT  # separation still runs
    hold.hold.set()
    events = await rig.follow(job.job_id)
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final

    [call] = rig.transcription.calls
    assert call.stem_windows_at_first_audio is not None
    assert call.stem_windows_at_first_audio < WINDOW_COUNT * len(STEMS)
    assert call.audio == vocals_pcm()
    assert (call.options.pcm.sample_rate, call.options.pcm.channels) == (RATE, CHANNELS)
    [build] = rig.karaoke.script.calls
    assert build.options.transcript == transcript_of([passage(k) for k in range(PASSAGE_COUNT)])
    # Both stages' events while they overlap: transcription started before separation ended.
    stages = [e.stage for e in events]
    separation_done = next(
        i
        for i, e in enumerate(events)
        if e.stage == pb.STAGE_SEPARATION and e.message.startswith("separation done")
    )
    assert pb.STAGE_TRANSCRIPTION in stages[:separation_done]
    started = [e for e in events if e.message == "transcription starting"]
    assert started and started[0].seq < events[separation_done].seq
    overall = [e.overall_percent for e in events]
    assert overall == sorted(overall) and overall[-1] == 100.0
    assert all(e.eta_seconds > 0 for e in events if e.message == "transcription starting")
    assert rig.store.passages(job.job_id) == []  # the checkpoint went with the finished job


async def test_a_broken_transcription_retries_with_the_passages_it_kept(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data")
    kept = 2
    rig.transcription.script.behaviours = [Behaviour(stop_after=kept)]
    await rig.start()
    try:
        events = await rig.run_job(song)
    finally:
        await rig.stop()
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    first, second = rig.transcription.calls
    assert first.sent == list(range(kept))
    assert list(second.options.done) == [passage(k) for k in range(kept)]  # state bytes included
    assert second.sent == list(range(kept, PASSAGE_COUNT))
    assert second.audio == vocals_pcm()  # streamed again from the start
    [build] = rig.karaoke.script.calls
    assert build.options.transcript == transcript_of([passage(k) for k in range(PASSAGE_COUNT)])
    [retry] = [e for e in events if "retrying (attempt 2)" in e.message]
    assert retry.stage == pb.STAGE_TRANSCRIPTION
    assert retry.message.endswith(f"resuming after passage {kept}")
    assert len(rig.separation.script.calls) == 1


async def test_passages_past_the_checkpoint_limit_are_transcribed_again(
    tmp_path: Path, song: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for two passages and a half: the third is not committed, nor any after it.
    room = passage(0).ByteSize() + passage(1).ByteSize() + passage(2).ByteSize() // 2
    monkeypatch.setattr(checkpoints, "MAX_PASSAGE_BYTES", room)
    rig = Rig(tmp_path / "data")
    rig.transcription.script.behaviours = [Behaviour(stop_after=4)]
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    first, second = rig.transcription.calls
    assert first.sent == [0, 1, 2, 3]
    assert list(second.options.done) == [passage(0), passage(1)]
    assert second.sent == [2, 3, 4]
    [build] = rig.karaoke.script.calls
    assert build.options.transcript == transcript_of([passage(k) for k in range(PASSAGE_COUNT)])


async def test_a_restart_during_the_overlap_resumes_both_stages_from_their_checkpoints(
    tmp_path: Path, song: Path
) -> None:
    expected = await unbroken_stems(tmp_path, song)
    rig = Rig(tmp_path / "data")
    windows = 4  # 16,000 frames: passages 0 and 1 are transcribed, passage 2 waits for more vocals
    rig.separation.script.behaviours = [Behaviour(stop_after=windows * len(STEMS), code=None)]
    await rig.start()
    try:
        job = await rig.submit(song)

        def both_kept() -> bool:
            checkpoint = rig.store.checkpoint(job.job_id, pb.STAGE_SEPARATION)
            windows_kept = checkpoint is not None and checkpoint.windows_done == windows
            return windows_kept and len(rig.store.passages(job.job_id)) == 2

        await rig.wait_for(both_kept)
        await rig.restart()
        events = await rig.follow(job.job_id)
        final = events[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final
        stems = {name: await rig.file(final.job_id, name) for name in expected}
    finally:
        await rig.stop()
    assert stems == expected
    assert [o.first_window for o, _ in rig.separation.script.calls] == [0, windows]
    first, second = rig.transcription.calls
    # The passages committed before the restart (2; on a loaded machine the first call sometimes
    # got a third out before it was cancelled) are not transcribed again.
    kept = len(second.options.done)
    assert first.ended and first.cut and kept >= 2 and first.sent[:kept] == list(range(kept))
    assert list(second.options.done) == [passage(k) for k in range(kept)]
    assert second.sent == list(range(kept, PASSAGE_COUNT)) and second.audio == vocals_pcm()
    [build] = rig.karaoke.script.calls
    assert build.options.transcript == transcript_of([passage(k) for k in range(PASSAGE_COUNT)])
    messages = [e.message for e in events]
    assert f"separation resuming from window {windows} of {WINDOW_COUNT}" in messages
    assert f"transcription resuming after passage {kept}" in messages


async def test_a_restart_after_separation_streams_the_vocals_from_their_checkpoint_file(
    tmp_path: Path, song: Path
) -> None:
    rig = Rig(tmp_path / "data")
    rig.transcription.script.behaviours = [Behaviour(stop_after=1, code=None)]
    await rig.start()
    try:
        job = await rig.submit(song)
        await rig.wait_for(lambda: pb.STAGE_SEPARATION in rig.store.stages_done(job.job_id))
        await rig.wait_for(lambda: len(rig.store.passages(job.job_id)) == 1)
        # Only the vocals' checkpoint file is kept once the stems are encoded.
        assert {p for p in job_files(rig, job.job_id) if p.endswith(".f32")} == {".vocals.f32"}
        await rig.restart()
        final = (await rig.follow(job.job_id))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert len(rig.separation.script.calls) == 1
    _, second = rig.transcription.calls
    assert list(second.options.done) == [passage(0)]
    assert second.audio == vocals_pcm() and second.options.pcm.sample_rate == RATE
    assert not any(name.startswith(".") for name in job_files(rig, final.job_id))


async def test_a_job_an_older_orchestrator_separated_streams_the_encoded_vocals(
    tmp_path: Path, song: Path
) -> None:
    """Its store holds no layout for the finished separation and it has no vocals' checkpoint
    file: transcription gets the vocals' file (options.pcm unset), as before the overlap."""
    rig = Rig(tmp_path / "data")
    rig.transcription.script.behaviours = [Behaviour(stop_after=0, code=None)]
    await rig.start()
    try:
        job = await rig.submit(song)
        await rig.wait_for(lambda: pb.STAGE_SEPARATION in rig.store.stages_done(job.job_id))
        await rig.stop_orchestrator()
        rig.store = Store(rig.data_dir / "roar.sqlite")
        rig.store.finish_stage(job.job_id, pb.STAGE_SEPARATION, None)
        rig.store.close()
        (rig.data_dir / "jobs" / job.job_id / ".vocals.f32").unlink()
        await rig.start_orchestrator()
        final = (await rig.follow(job.job_id))[-1]
        vocals_file = await rig.file(final.job_id, "vocals.wav")
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    _, second = rig.transcription.calls
    assert not second.options.HasField("pcm") and second.audio == vocals_file


async def test_separation_failing_cancels_the_transcription(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data")
    failing = Behaviour(stop_after=3 * len(STEMS), hold_at=3 * len(STEMS), code=Code.INVALID_ARGUMENT)
    rig.separation.script.behaviours = [failing]
    await rig.start()
    try:
        job = await rig.submit(song)
        # Transcription has every committed window before separation fails.
        await rig.wait_for(
            lambda: (
                bool(rig.transcription.calls)
                and len(rig.transcription.calls[0].audio) == 3 * WINDOW_FRAMES * FRAME_BYTES
            )
        )
        failing.hold.set()
        final = (await rig.follow(job.job_id))[-1]
        await rig.wait_for(lambda: rig.transcription.calls[0].ended)
        assert rig.store.passages(final.job_id) == []
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_FAILED
    assert [(e.code, e.stage) for e in final.errors] == [("INVALID_ARGUMENT", pb.STAGE_SEPARATION)]
    assert final.error.stage == pb.STAGE_SEPARATION
    [call] = rig.transcription.calls
    assert call.cut and call.sent == [0, 1]
    assert rig.karaoke.script.calls == []
    assert not job_files(rig, final.job_id)


# --- failures: deadlines, retries, final answers, PARTIAL -----------------------------------------


async def test_a_slow_stage_fails_at_the_jobs_deadline(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data")
    rig.separation.script.behaviours = [Behaviour(delay=0.5)]
    await rig.start()
    try:
        started = time.monotonic()
        final = (await rig.run_job(song, timeout_seconds=1.5))[-1]
        took = time.monotonic() - started
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_FAILED
    assert (final.error.code, final.error.stage) == ("DEADLINE_EXCEEDED", pb.STAGE_SEPARATION)
    assert "time limit" in final.error.message
    # Transcription, streaming the vocals alongside, may hit the same deadline at the same moment.
    assert {e.code for e in final.errors} == {"DEADLINE_EXCEEDED"}
    assert took < 5.0


async def test_a_stage_that_stays_down_fails_after_the_retry_window(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data", stage_retry_seconds=1.0)
    rig.separation.script.behaviours = [Behaviour(stop_after=-1) for _ in range(50)]
    await rig.start()
    try:
        events = await rig.run_job(song)
    finally:
        await rig.stop()
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED
    [error] = final.errors
    assert error.code == "UNAVAILABLE" and "ROAR_STAGE_RETRY_SECONDS" in error.message
    assert "ROAR_SEPARATION_ADDR" in error.message
    assert 2 <= len(rig.separation.script.calls) <= 5
    assert not (rig.data_dir / "jobs" / final.job_id).exists() or not job_files(rig, final.job_id)


async def test_a_stages_own_error_is_final(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data")
    rig.separation.script.behaviours = [Behaviour(stop_after=3, code=Code.INVALID_ARGUMENT)]
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_FAILED
    assert [(e.code, e.stage) for e in final.errors] == [("INVALID_ARGUMENT", pb.STAGE_SEPARATION)]
    assert len(rig.separation.script.calls) == 1
    assert not job_files(rig, final.job_id)  # the checkpoint files went with the job


async def test_windows_out_of_order_fail_the_stage_without_a_retry(
    tmp_path: Path, song: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeSeparation, "Separate", _separate_skipping_a_window)
    rig = Rig(tmp_path / "data")
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_FAILED
    [error] = final.errors
    assert error.code == "INTERNAL" and "window 2 where window 1 was due" in error.message


async def _separate_skipping_a_window(self, request_iterator, context):
    await _read(request_iterator, "options")
    yield separation_pb2.SeparateResponse(
        result=separation_pb2.SeparationResult(
            stems=STEMS, sample_rate=RATE, channels=CHANNELS, frames=FRAMES, window_count=WINDOW_COUNT
        )
    )
    for index in (0, 2):
        for stem in STEMS:
            pcm = window_pcm(index, stem).tobytes()
            window = separation_pb2.StemWindow(
                index=index, stem=stem, start_frame=index * WINDOW_FRAMES, pcm=pcm
            )
            yield separation_pb2.SeparateResponse(window=window)


@pytest.mark.parametrize("stage", ["transcription", "karaoke"])
async def test_a_later_stage_failing_leaves_a_partial_job_with_the_stems(
    tmp_path: Path, song: Path, stage: str
) -> None:
    rig = Rig(tmp_path / "data")
    fake = rig.transcription if stage == "transcription" else rig.karaoke
    fake.script.behaviours = [Behaviour(stop_after=0, code=Code.INVALID_ARGUMENT)]
    await rig.start()
    try:
        events = await rig.run_job(song)
    finally:
        await rig.stop()
    final = events[-1]
    assert final.state == pb.JOB_STATE_PARTIAL
    stage_id = pb.STAGE_TRANSCRIPTION if stage == "transcription" else pb.STAGE_KARAOKE
    assert [(e.code, e.stage) for e in final.errors] == [("INVALID_ARGUMENT", stage_id)]
    names = {a.name for a in final.artifacts}
    assert {"vocals.wav", "instrumental.wav"} <= names and not any(n.startswith("lyrics.") for n in names)
    if stage == "transcription":
        assert "karaoke skipped: transcription did not complete" in [e.message for e in events]
        assert rig.karaoke.script.calls == []


async def test_the_queue_limit_refuses_more_jobs(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data", max_running_jobs=1, max_queued_jobs=1)
    rig.separation.script.behaviours = [Behaviour(stop_after=0, code=None)]
    await rig.start()
    try:
        first = await rig.submit(song)
        second = await rig.submit(song)
        third = rig.stub.Process(pb.ProcessRequest(upload_id=await rig.upload(song)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await third.read()
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert "2 jobs are running or queued" in info.value.details()
        queued = await rig.stub.GetJob(pb.GetJobRequest(job_id=second.job_id))
        assert queued.state == pb.JOB_STATE_QUEUED
        for job in (first, second):
            await rig.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))
            assert (await rig.follow(job.job_id))[-1].state == pb.JOB_STATE_CANCELLED
    finally:
        await rig.stop()


# --- ListJobs paging and Download offsets --------------------------------------------------------


async def test_list_jobs_pages_newest_first(rig: Rig, song: Path) -> None:
    job_ids = [(await rig.run_job(song))[-1].job_id for _ in range(5)]
    listed, token, sizes = [], "", []
    while True:
        page = await rig.stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token))
        listed += [job.job_id for job in page.jobs]
        sizes.append(len(page.jobs))
        token = page.next_page_token
        if not token:
            break
    assert listed == list(reversed(job_ids)) and sizes == [2, 2, 1]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.stub.ListJobs(pb.ListJobsRequest(page_token="x"))
    assert info.value.code() == Code.INVALID_ARGUMENT


async def test_download_goes_on_from_any_offset(rig: Rig, song: Path) -> None:
    final = (await rig.run_job(song))[-1]
    whole = await rig.file(final.job_id, "vocals.wav")
    size = len(whole)
    assert size == next(a.size for a in final.artifacts if a.name == "vocals.wav")
    for offset in (0, 1, 44, size // 2, size - 1):
        chunks = await rig.fetch(final.job_id, "vocals.wav", offset)
        assert b"".join(c.data for c in chunks) == whole[offset:]
        assert [c.offset for c in chunks] == [
            offset + sum(len(c.data) for c in chunks[:k]) for k in range(len(chunks))
        ]
        assert {c.total_size for c in chunks} == {size}
    assert await rig.fetch(final.job_id, "vocals.wav", size) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.fetch(final.job_id, "vocals.wav", size + 1)
    assert info.value.code() == Code.OUT_OF_RANGE
    for name in ("../roar.sqlite", ".vocals.f32", "nothing.wav"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rig.fetch(final.job_id, name)
        assert info.value.code() == Code.NOT_FOUND
        assert str(rig.data_dir) not in info.value.details()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_fails_checkpoints_and_stem_files_with_resource_exhausted(tmp_path: Path) -> None:
    """The kernel's own ENOSPC, where a window is appended and where a stem file is encoded."""
    checkpoints = StemCheckpoints(tmp_path, STEMS, CHANNELS)
    checkpoints.truncate(0)
    checkpoints.append("vocals", window_pcm(0, "vocals").tobytes())
    (tmp_path / ".vocals.wav.part").symlink_to("/dev/full")
    with pytest.raises(StageFailed) as info:
        checkpoints.encode("vocals", tmp_path / "vocals.wav", "wav", RATE)
    assert info.value.code == "RESOURCE_EXHAUSTED" and "disk is full" in info.value.message
    assert not (tmp_path / "vocals.wav").exists() and not (tmp_path / ".vocals.wav.part").exists()

    checkpoints.path("instrumental").unlink()
    checkpoints.path("instrumental").symlink_to("/dev/full")
    with pytest.raises(StageFailed) as info:
        checkpoints.append("instrumental", window_pcm(0, "instrumental").tobytes())
    assert info.value.code == "RESOURCE_EXHAUSTED"
