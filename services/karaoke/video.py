"""karaoke.mp4: the lyrics' ASS file drawn by libass (through ffmpeg) over a plain background, with
the instrumental as the sound. ffmpeg is an optional system package: `video_available()` says
whether this machine can render at all."""

from __future__ import annotations

import functools
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from roar.errors import FailedPrecondition, RoarError
from roar.progress import ProgressCallback, check_cancelled

VIDEO_UNAVAILABLE = "karaoke video needs ffmpeg with libass on the karaoke service"
DEFAULT_SIZE = (1280, 720)
# Within what libx264 and players take: even sides, up to 4K.
MIN_SIDE, MAX_SIDE = 64, 3840
FRAME_RATE = 25
BACKGROUND = "0x101828"  # a dark blue-grey: the white and gold lyrics stand out on it
# How often the render looks for a cancel while ffmpeg says nothing.
CANCEL_POLL_SECONDS = 0.1


@functools.cache
def video_available() -> bool:
    """Whether ffmpeg is on PATH with the `ass` filter (libass) and the libx264 encoder."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return False
    try:
        filters = subprocess.run(
            [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        encoders = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    has_ass = any(line.split()[1:2] == ["ass"] for line in filters.splitlines())
    has_x264 = any(line.split()[1:2] == ["libx264"] for line in encoders.splitlines())
    return has_ass and has_x264


def render_video(
    ass_text: str,
    audio_path: Path,
    out_path: Path,
    duration: float,
    size: tuple[int, int],
    progress: ProgressCallback,
) -> None:
    """Writes out_path (H.264 + AAC in MP4, `duration` seconds) from the ASS text and the audio
    file. Progress comes from ffmpeg's `-progress` reports; a cancel (the progress callback or
    check_cancelled raising) kills ffmpeg within CANCEL_POLL_SECONDS. Raises FailedPrecondition
    without ffmpeg/libass, RoarError with ffmpeg's reason (no server path in it) when it fails."""
    if not video_available():
        raise FailedPrecondition(VIDEO_UNAVAILABLE)
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    width, height = size
    with tempfile.TemporaryDirectory(prefix="roar-video-") as work:
        # ffmpeg runs in the work directory and the filter names the ASS file relatively: a
        # path inside a filter graph would need escaping.
        Path(work, "lyrics.ass").write_text(ass_text, encoding="utf-8")
        command = [
            *(ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y"),
            *("-f", "lavfi", "-i", f"color=c={BACKGROUND}:s={width}x{height}:r={FRAME_RATE}"),
            *("-i", str(audio_path), "-map", "0:v", "-map", "1:a:0"),
            *("-vf", "ass=lyrics.ass", "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage"),
            *("-crf", "28", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "160k"),
            *("-t", f"{duration:.3f}", "-shortest", "-movflags", "+faststart"),
            *("-progress", "pipe:1", "-f", "mp4", str(out_path)),
        ]
        with Path(work, "stderr").open("w+b") as errors:
            process = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=errors)
            try:
                _follow(process, duration, progress)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                assert process.stdout is not None
                process.stdout.close()
            if process.returncode != 0:
                errors.seek(0)
                reason = errors.read().decode(errors="replace").strip().splitlines()
                message = reason[-1] if reason else f"exit status {process.returncode}"
                for path, name in ((str(audio_path), "the audio"), (str(out_path), "the video")):
                    message = message.replace(path, name)
                raise RoarError(f"ffmpeg could not render the karaoke video: {message}")
    progress(100.0, "karaoke video ready")


def _follow(process: subprocess.Popen[bytes], duration: float, progress: ProgressCallback) -> None:
    """Reports ffmpeg's `-progress` output (key=value lines; out_time_us is the output's time)
    until it exits; checks for a cancel between lines and while ffmpeg is silent."""
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="ffmpeg-progress").start()
    progress(0.0, "rendering the karaoke video")
    while True:
        check_cancelled()
        try:
            line = lines.get(timeout=CANCEL_POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            return
        key, _, value = line.decode(errors="replace").strip().partition("=")
        if key == "out_time_us" and value.isdecimal() and duration > 0:
            seconds = int(value) / 1e6
            progress(min(99.0, 100.0 * seconds / duration), "rendering the karaoke video")
