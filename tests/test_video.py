"""karaoke.mp4: the karaoke service's RenderVideo (ffmpeg + libass, real processes) checked with
ffprobe and by the colours of a frame at a known word time; its refusal without ffmpeg; jobs with
karaoke_video through a real suite, with and without ffmpeg."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from roar import client
from roar.service import FileAssembler, chunked
from roar.v1 import common_pb2, karaoke_pb2
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from services.karaoke import video
from tests.support.songs import write_song
from tests.support.suite import Suite
from tests.test_karaoke import karaoke_stub, line

needs_ffmpeg = pytest.mark.skipif(
    not (video.video_available() and shutil.which("ffprobe")),
    reason="karaoke video needs ffmpeg with libass and libx264, and ffprobe (Debian package ffmpeg)",
)

SONG_SECONDS = 4.0
RATE = 44_100
SIZE = (640, 360)
# One line, sung from 0.5 s: "one two" by 1.5 s, then a rest until "three four" from 2.4 s.
WORDS = [("one", 0.5, 1.0), ("two", 1.0, 1.5), ("three", 2.4, 2.9), ("four", 2.9, 3.4)]
BETWEEN_WORDS = 1.9  # "one two" sung, "three four" not yet


def song(path: Path) -> Path:
    """A 4-s stereo tone: the instrumental."""
    t = np.arange(int(SONG_SECONDS * RATE)) / RATE
    tone = 0.2 * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([tone, tone], axis=1), RATE, subtype="PCM_16")
    return path


def video_options() -> karaoke_pb2.VideoOptions:
    transcript = common_pb2.Transcript(language="en", segments=[line(*WORDS)])
    return karaoke_pb2.VideoOptions(
        karaoke=karaoke_pb2.KaraokeOptions(
            transcript=transcript, title="Test", duration_seconds=SONG_SECONDS
        ),
        width=SIZE[0],
        height=SIZE[1],
    )


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return json.loads(out)


def frame_at(path: Path, seconds: float) -> np.ndarray:
    """The frame shown at `seconds` as (height, width, 3) RGB bytes."""
    raw = subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-ss", f"{seconds}", "-i", str(path), "-frames:v", "1"),
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"),
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(SIZE[1], SIZE[0], 3)


def sung_and_unsung_columns(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns holding the highlight colour (gold, the sung part) and white (the unsung part)."""
    r, g, b = (frame[..., k].astype(int) for k in range(3))
    gold = (r > 200) & (g > 150) & (g < 240) & (b < 90)
    white = (r > 225) & (g > 225) & (b > 225)
    return np.nonzero(gold.any(axis=0))[0], np.nonzero(white.any(axis=0))[0]


async def render(
    stub, audio: Path, options: karaoke_pb2.VideoOptions | None = None
) -> tuple[dict[str, bytes], list[float]]:
    """A RenderVideo call as the orchestrator makes it: the options, then (once the service has
    accepted them with a first progress message) the audio, then the responses to the end."""
    files, percents = FileAssembler(), []
    call = stub.RenderVideo()
    await call.write(karaoke_pb2.RenderVideoRequest(options=options or video_options()))
    accepted = await call.read()
    if accepted is grpc.aio.EOF:
        await call  # raises the refusal's status
    percents.append(accepted.progress.percent)
    for piece in chunked(audio.read_bytes()):
        await call.write(karaoke_pb2.RenderVideoRequest(audio=piece))
    await call.done_writing()
    while (response := await call.read()) is not grpc.aio.EOF:
        if response.HasField("progress"):
            percents.append(response.progress.percent)
        else:
            files.add(response.file)
    return files.files, percents


@needs_ffmpeg
async def test_render_video_draws_the_sweep_over_the_instrumental(tmp_path: Path):
    async with karaoke_stub() as stub:
        files, percents = await render(stub, song(tmp_path / "instrumental.wav"))

    assert list(files) == ["karaoke.mp4"]
    assert percents[-1] == 100.0 and percents == sorted(percents)
    mp4 = tmp_path / "karaoke.mp4"
    mp4.write_bytes(files["karaoke.mp4"])
    info = probe(mp4)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in info["streams"])
    assert kinds == [("audio", "aac"), ("video", "h264")]
    picture = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (picture["width"], picture["height"]) == SIZE
    assert float(info["format"]["duration"]) == pytest.approx(SONG_SECONDS, abs=0.15)

    # Between the words: the sung words left in gold, the rest of the line right of them in white.
    gold, white = sung_and_unsung_columns(frame_at(mp4, BETWEEN_WORDS))
    assert gold.size > 10 and white.size > 10
    assert gold.max() < white.min()
    # Before the line starts: its preview (grey, neither white nor gold) and the countdown's last
    # dot (gold, small, centred); near its end most of it is gold.
    early_gold, early_white = sung_and_unsung_columns(frame_at(mp4, 0.2))
    assert early_white.size == 0
    assert 0 < early_gold.size < 30 and abs(early_gold.mean() - SIZE[0] / 2) < 5
    last_gold, last_white = sung_and_unsung_columns(frame_at(mp4, 3.3))
    assert last_gold.size > gold.size and last_white.size < white.size


async def test_render_video_is_refused_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on it
    video.video_available.cache_clear()
    try:
        async with karaoke_stub() as stub:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await render(stub, song(tmp_path / "instrumental.wav"))
    finally:
        monkeypatch.undo()
        video.video_available.cache_clear()

    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == video.VIDEO_UNAVAILABLE


@needs_ffmpeg
@pytest.mark.parametrize(("width", "height"), [(641, 360), (32, 32), (8000, 720)])
async def test_render_video_refuses_odd_or_huge_frames(tmp_path: Path, width: int, height: int):
    options = video_options()
    options.width, options.height = width, height
    async with karaoke_stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await render(stub, song(tmp_path / "a.wav"), options)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "even pixel counts" in error.value.details()


def ffmpeg_children() -> list[int]:
    """Process ids of the ffmpeg processes this test process started (the in-process service's)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name == "ffmpeg" and int(rest.split()[1]) == os.getpid():  # comm, then state, then ppid
            found.append(int(stat.parent.name))
    return found


@needs_ffmpeg
async def test_cancelling_the_call_stops_ffmpeg_promptly(tmp_path: Path):
    # Five minutes of quiet mono: far longer to render than the test waits.
    long_song = tmp_path / "long.wav"
    sf.write(long_song, np.zeros(300 * 8000, np.float32), 8000, subtype="PCM_16")
    async with karaoke_stub() as stub:
        call = stub.RenderVideo()
        await call.write(karaoke_pb2.RenderVideoRequest(options=video_options()))
        await call.read()  # accepted
        for piece in chunked(long_song.read_bytes()):
            await call.write(karaoke_pb2.RenderVideoRequest(audio=piece))
        await call.done_writing()
        while (response := await call.read()) is not grpc.aio.EOF and response.progress.percent <= 0:
            pass
        assert ffmpeg_children(), "ffmpeg is not rendering"
        call.cancel()
        stopped_by = time.monotonic() + 2.0
        while ffmpeg_children() and time.monotonic() < stopped_by:
            await asyncio.sleep(0.05)
        assert not ffmpeg_children(), "ffmpeg still runs 2 s after the call was cancelled"


# The orchestrator's side: jobs through `roar up` (real processes on loopback, tiny models).
JOB_SONG_SECONDS = 6.0
LYRICS = "one two three four\nfive six seven eight"


async def video_job(address: str, song_path: Path) -> tuple[list[pb.ProgressEvent], bytes | None]:
    """Runs a job with karaoke_video; its events and karaoke.mp4 (None when it has none)."""
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song_path)
        options = pb.JobOptions(karaoke_video=True, lyrics=LYRICS)
        events = [e async for e in client.process(stub, upload.upload_id, options)]
        if "karaoke.mp4" not in {a.name for a in events[-1].artifacts}:
            return events, None
        request = pb.DownloadRequest(job_id=events[-1].job_id, name="karaoke.mp4")
        return events, b"".join([c.data async for c in stub.Download(request)])


@needs_ffmpeg
async def test_job_with_karaoke_video_delivers_karaoke_mp4(suite: Suite, tmp_path: Path):
    events, mp4 = await video_job(suite.address, write_song(tmp_path / "song.wav", JOB_SONG_SECONDS))

    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    artifact = next(a for a in final.artifacts if a.name == "karaoke.mp4")
    assert (artifact.kind, artifact.content_type) == ("video", "video/mp4")
    assert {"lyrics.ass", "instrumental.wav"} <= {a.name for a in final.artifacts}
    assert mp4 is not None and len(mp4) == artifact.size
    (tmp_path / "karaoke.mp4").write_bytes(mp4)
    info = probe(tmp_path / "karaoke.mp4")
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert float(info["format"]["duration"]) == pytest.approx(JOB_SONG_SECONDS, abs=0.15)
    # The video's progress is part of the karaoke stage's: it rises to 100 with the video's messages.
    karaoke = [e for e in events if e.stage == pb.STAGE_KARAOKE]
    assert any(e.message == "rendering the karaoke video" for e in karaoke)
    percents = [e.stage_percent for e in karaoke]
    assert percents == sorted(percents) and percents[-1] == 100.0


async def test_job_without_ffmpeg_keeps_the_lyrics_and_says_why_there_is_no_video(
    tiny_models: dict[str, str], tmp_path: Path
):
    # No ffmpeg on the suite's PATH (its processes start from sys.executable, wav needs no ffmpeg).
    running = Suite(tmp_path / "data", {**tiny_models, "PATH": str(tmp_path)}, tmp_path / "roar-up.log")
    running.start()
    try:
        events, mp4 = await video_job(running.address, write_song(tmp_path / "song.wav", JOB_SONG_SECONDS))
    finally:
        running.stop()

    final = events[-1]
    assert final.state == pb.JOB_STATE_PARTIAL, final
    assert mp4 is None
    assert {"lyrics.ass", "lyrics.lrc", "instrumental.wav"} <= {a.name for a in final.artifacts}, final.errors
    [error] = final.errors
    assert error.code == "FAILED_PRECONDITION" and error.stage == pb.STAGE_KARAOKE
    assert error.message == f"karaoke video failed: {video.VIDEO_UNAVAILABLE}"
