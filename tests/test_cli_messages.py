"""What the `roar` command says when things go wrong or get interrupted: one plain line, the exit
code a script can test, never a traceback. Runs the real CLI as a subprocess against the suite."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from roar import audio
from roar.errors import BadInput
from roar.text import LANGUAGE_RULE, is_language_code
from tests.support.songs import write_song
from tests.support.suite import REPO, Suite, free_port

JOB_ID = re.compile(r"job ([0-9a-f]{32}) started")


def roar(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "roar.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the upload progress line."""
    return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("upload ")]


def test_ctrl_c_leaves_the_job_running_and_says_how_to_follow_it(suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 4.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "roar.cli", "process", str(song), "--server", suite.address],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()  # the job id comes first, before any progress of the job
        found = JOB_ID.match(first)
        assert found, first
        job_id = found.group(1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert f"still running: roar watch {job_id} --server {suite.address}" in err
    assert "succeeded" not in out  # interrupted before the end: the server finishes the job alone
    watched = roar("watch", job_id, "--server", suite.address)
    assert watched.returncode == 0 and f"job {job_id} succeeded" in watched.stdout


def test_missing_or_unreadable_files_are_one_line_and_exit_2(tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 1.0)
    nowhere = f"127.0.0.1:{free_port()}"  # never reached: files are checked first
    bad_lyrics = tmp_path / "latin1.txt"
    bad_lyrics.write_bytes("caf\xe9 au lait".encode("latin-1"))
    cases = [
        (("process", str(tmp_path / "absent.wav")), f"cannot read {tmp_path / 'absent.wav'}: No such file"),
        (("process", str(tmp_path)), f"{tmp_path} is a directory, not an audio file"),
        (
            ("process", str(song), "--lyrics", str(tmp_path / "absent.txt")),
            f"cannot read the lyrics file {tmp_path / 'absent.txt'}: No such file",
        ),
        (("process", str(song), "--lyrics", str(bad_lyrics)), f"the lyrics file {bad_lyrics} is not UTF-8"),
    ]
    for args, message in cases:
        result = roar(*args, "--server", nowhere)
        assert result.returncode == 2, (args, result.stderr)
        assert error_lines(result) == [error_lines(result)[0]] and message in result.stderr, result.stderr


def test_a_server_that_is_not_running_is_named_with_what_to_do(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    song = write_song(tmp_path / "song.wav", 1.0)
    for args in (("process", str(song)), ("jobs",), ("cancel", "0" * 32)):
        result = roar(*args, "--server", address)
        assert result.returncode == 1, result.stderr
        lines = error_lines(result)
        assert len(lines) == 1, lines
        assert f"no Roar server answers at {address}" in lines[0] and "`roar up`" in lines[0]
        assert "--server" in lines[0] and "UNAVAILABLE" not in lines[0]


def test_an_unknown_model_is_refused_once_with_the_offered_ones(suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 1.0)
    for flag, offered in (
        ("--separation-model", "tiny, tiny-again, broken"),
        ("--transcription-model", "whisper, whisper-again, broken"),
    ):
        result = roar("process", str(song), flag, "nope", "--server", suite.address)
        assert result.returncode == 2
        lines = error_lines(result)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"roar: {flag} nope: unknown") and offered in lines[0]
        assert "--model " not in result.stderr


def test_a_model_that_fails_shows_its_error_once_and_the_job_cannot_be_cancelled(
    suite: Suite, tmp_path: Path
) -> None:
    song = write_song(tmp_path / "song.wav", 1.0)
    result = roar("process", str(song), "--separation-model", "broken", "--server", suite.address)
    assert result.returncode == 1
    assert result.stderr.count("separation model 'broken' is unavailable") == 1, result.stderr
    job_id = JOB_ID.search(result.stdout).group(1)
    assert f"job {job_id} failed" in result.stdout

    cancelled = roar("cancel", job_id, "--server", suite.address)
    assert cancelled.returncode == 1
    assert error_lines(cancelled) == [f"roar: job {job_id} already finished (failed)"]


def test_a_file_that_is_not_audio_is_said_in_plain_words(suite: Suite, tmp_path: Path) -> None:
    notes = tmp_path / "notes.flac"
    notes.write_text("shopping list: eggs, milk\n" * 20)
    result = roar("process", str(notes), "--server", suite.address)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"roar: {notes} is not an audio file Roar can read ("), (
        lines
    )
    assert "pipe:" not in lines[0] and "Invalid data" not in lines[0]


def test_jobs_tell_songs_of_one_name_apart(suite: Suite, tmp_path: Path) -> None:
    # Two songs named alike, of different lengths; the broken model fails them at once.
    ids = {}
    for seconds in (2.0, 3.0):
        folder = tmp_path / f"{seconds:g}"
        folder.mkdir()
        song = write_song(folder / "mixture.flac", seconds, fmt="flac")
        ran = roar("process", str(song), "--separation-model", "broken", "--server", suite.address)
        ids[JOB_ID.search(ran.stdout).group(1)] = f"0:0{seconds:.0f}"
    zone = "Asia/Kolkata"  # UTC+05:30: a created time in UTC would be off by hours
    listed = roar("jobs", "--server", suite.address, env={"TZ": zone})
    assert listed.returncode == 0
    now = datetime.now(ZoneInfo(zone))
    for job_id, length in ids.items():
        row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id)).split()
        created = datetime.strptime(f"{now.year} {row[1]} {row[2]} {row[3]}", "%Y %b %d %H:%M:%S")
        assert abs(created - now.replace(tzinfo=None)) < timedelta(minutes=5), row
        assert row[4:] == [length, "failed", "0.0%", "mixture.flac"], row


def test_an_invalid_language_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 1.0)
    result = roar("process", str(song), "--language", "xx", "--server", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert error_lines(result) == [f"roar: --language xx: {LANGUAGE_RULE}"]


@pytest.mark.parametrize(
    ("language", "valid"),
    [
        *[("en", True), ("", True), ("pt-BR", True), ("haw", True), ("DE", True)],
        *[("xx", False), ("e", False), ("en; rm", False), ("x" * 40, False)],
    ],
)
def test_language_codes(language: str, valid: bool) -> None:
    assert is_language_code(language) is valid


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package) to make a video")
def test_a_video_without_sound_is_said_to_hold_no_audio(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    made = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5", str(video)]
    subprocess.run(made, check=True)
    for decode in (
        lambda: audio.decode(video.read_bytes()),
        lambda: audio.normalise(video, tmp_path / "out.flac", max_seconds=60),
    ):
        with pytest.raises(BadInput) as refused:
            decode()
        assert refused.value.message == f"{audio.NOT_AUDIO} (it holds no audio stream)"
