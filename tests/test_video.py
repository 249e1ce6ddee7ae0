"""karaoke.mp4: the karaoke service's RenderVideo (ffmpeg + libass, real processes) checked with
ffprobe and by the colours of a frame at a known word time; its refusal without ffmpeg."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from roar.service import FileAssembler, chunked
from roar.v1 import common_pb2, karaoke_pb2
from services.karaoke import video
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
