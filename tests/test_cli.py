"""The `roar` command against a running suite, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from roar.cli import print_unsung_lines
from roar.v1 import common_pb2
from services.karaoke import formats
from tests.support.songs import write_song
from tests.support.suite import REPO, Suite


def roar(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roar.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_process_writes_karaoke_files(suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.flac", 12.0, fmt="flac")
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("first line of the song\n\nsecond line here\n", encoding="utf-8")
    out = tmp_path / "out"
    result = roar("process", str(song), "--lyrics", str(lyrics), "--out", str(out), "--server", suite.address)
    assert result.returncode == 0, result.stderr
    for name in ("vocals.wav", "instrumental.wav", "words.json", "lyrics.lrc", "lyrics.ass", "lyrics.vtt"):
        assert (out / name).stat().st_size > 0, name
    assert sf.info(out / "instrumental.wav").duration == sf.info(song).duration
    words = json.loads((out / "words.json").read_text())
    assert [w["word"] for w in words] == ["first", "line", "of", "the", "song", "second", "line", "here"]
    lines = [
        line for line in (out / "lyrics.lrc").read_text().splitlines() if line.endswith(("song", "here"))
    ]
    assert [line.split("]", 1)[1] for line in lines] == ["first line of the song", "second line here"]
    # Progress went to stderr as it happened, one line per stage at least.
    for stage in ("separation", "transcription", "karaoke", "complete"):
        assert stage in result.stderr

    job_id = result.stdout.strip().splitlines()[-1].split()[1]
    listed = roar("jobs", "--server", suite.address)
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    watched = roar("watch", job_id, "--server", suite.address)
    assert watched.returncode == 0 and f"job {job_id} succeeded" in watched.stdout


def test_process_exits_non_zero_with_the_error(suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 3.0)
    result = roar(
        "process",
        str(song),
        "--separation-model",
        "broken",  # offered by the suite (conftest) but its files are missing
        "--out",
        str(tmp_path / "o"),
        "--server",
        suite.address,
    )
    assert result.returncode != 0
    assert "ROAR_SEPARATION_MODELS" in result.stderr and "failed" in result.stdout

    missing = roar("process", str(tmp_path / "absent.wav"), "--server", suite.address)
    assert missing.returncode == 2 and "No such file" in missing.stderr
    unknown = roar("cancel", "nope", "--server", suite.address)
    assert unknown.returncode != 0 and "NOT_FOUND" in unknown.stderr


def test_the_lines_not_sung_are_named_after_a_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sung = common_pb2.Segment(
        text="we sing", start=1.0, end=2.0, words=[common_pb2.Word(text="we", start=1.0, end=1.5, heard=True)]
    )
    unsung = common_pb2.Segment(text="never here", words=[common_pb2.Word(text="never")], not_sung=True)
    lines_json = tmp_path / "lines.json"
    lines_json.write_text(formats.lines_json([sung, unsung, sung]))
    print_unsung_lines(lines_json)
    assert (
        capsys.readouterr().out
        == "1 of 3 lyric lines not sung (left out of the timed lyrics):\n  - never here\n"
    )
    lines_json.write_text(formats.lines_json([sung]))  # every line sung, or a file of another kind: silence
    print_unsung_lines(lines_json)
    lines_json.write_text('{"not": "a list"}')
    print_unsung_lines(lines_json)
    assert capsys.readouterr().out == ""
