"""The memory and pipeline benchmarks' helpers (bench.memory, bench.pipeline): song making, the
peak-RSS reader, finding the suite's processes, the checks. No benchmark runs here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import memory
from bench.memory import Check, JobRun, SongResult
from bench.pipeline import (
    JobTimes,
    PipelineResult,
    TranscriptWatch,
    jobs_with_words,
    report,
    requests_from_file,
)
from orchestrator.store import Store
from roar.v1 import common_pb2, orchestrator_pb2, transcription_pb2

SEPARATION, TRANSCRIPTION = orchestrator_pb2.STAGE_SEPARATION, orchestrator_pb2.STAGE_TRANSCRIPTION
SOURCES = sorted((Path(__file__).parent / "data" / "songs").glob("*/mixture.flac"))


@pytest.mark.parametrize("seconds", [7.25, 61.0])
def test_long_song_is_exactly_as_long_as_asked(tmp_path: Path, seconds: float) -> None:
    path = memory.make_long_song(SOURCES, seconds, tmp_path / "song.flac")
    info = sf.info(path)
    assert info.format == "FLAC"
    assert (info.samplerate, info.channels) == (44_100, 2)
    assert info.frames == round(seconds * 44_100)
    assert not (tmp_path / "song.flac.part").exists()


def test_long_song_is_copies_of_the_sources_with_breaks(tmp_path: Path) -> None:
    # 61 s of two sources of 20.4 s and 24.4 s: every source at least once, silent breaks between.
    audio, rate = sf.read(memory.make_long_song(SOURCES, 61.0, tmp_path / "song.flac"), always_2d=True)
    frame_loud = np.abs(audio).max(axis=1) > 0
    breaks = np.flatnonzero(np.diff(frame_loud.astype(int)) == -1)  # music stops: a break starts
    long_breaks = [start for start in breaks if not frame_loud[start + 1 : start + 1 + rate].any()]
    assert len(long_breaks) >= 2
    first = sf.read(SOURCES[0], always_2d=True)[0]
    second = sf.read(SOURCES[1], always_2d=True)[0]
    starts = {len(first): first, len(second): second}
    # The first copy is one source at a level within LEVEL_DB.
    copy_length = next(n for n in starts if not frame_loud[n : n + rate // 2].any())
    source = starts[copy_length]
    gain = np.abs(audio[:copy_length]).max() / np.abs(source).max()
    low, high = (10 ** (db / 20) for db in memory.LEVEL_DB)
    assert low - 1e-3 <= gain <= high + 1e-3
    assert np.allclose(audio[:copy_length], source * gain, atol=2 / 32768)


def test_long_song_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    one = sf.read(memory.make_long_song(SOURCES, 30.0, tmp_path / "one.flac", seed=4))[0]
    two = sf.read(memory.make_long_song(SOURCES, 30.0, tmp_path / "two.flac", seed=4))[0]
    other = sf.read(memory.make_long_song(SOURCES, 30.0, tmp_path / "other.flac", seed=5))[0]
    assert np.array_equal(one, two)
    assert not np.array_equal(one, other)


def test_sources_of_other_rates_are_refused(tmp_path: Path) -> None:
    sf.write(tmp_path / "slow.flac", np.zeros((1000, 2), np.float32), 22_050)
    with pytest.raises(ValueError, match="rate"):
        memory.make_long_song([SOURCES[0], tmp_path / "slow.flac"], 5.0, tmp_path / "song.flac")


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def test_peak_rss_is_the_peak_not_the_current_size(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    # Touches 150 MB, frees it, then waits: the peak stays, the resident set falls.
    code = (
        "import pathlib, sys, time\n"
        "block = b'\\x01' * 150_000_000\n"
        "del block\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(ready)])
    try:
        _wait_for(ready, process)
        peak = memory.peak_rss_bytes(process.pid)
        status = Path(f"/proc/{process.pid}/status").read_text()
        current = (
            int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
        )
    finally:
        process.kill()
        process.wait()
    assert 150_000_000 <= peak < 400_000_000
    assert current < peak - 100_000_000


def test_peak_rss_of_no_such_process_raises() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(FileNotFoundError):
        memory.peak_rss_bytes(process.pid)


def test_suite_processes_are_found_by_module_among_the_children(tmp_path: Path) -> None:
    # Stand-ins whose argv names a service module, as `roar up`'s children's do; one that does not.
    sleep = "import time; time.sleep(60)"
    karaoke = subprocess.Popen([sys.executable, "-c", sleep, "-m", "services.karaoke.server"])
    other = subprocess.Popen([sys.executable, "-c", sleep, "services.karaoke"])
    try:
        deadline = time.monotonic() + 10
        while (found := memory.suite_processes(os.getpid())) != {"karaoke": karaoke.pid}:
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
        assert other.pid in memory.children(os.getpid())
    finally:
        for process in (karaoke, other):
            process.kill()
            process.wait()


def _result(minutes: float, model: str, **peaks: float) -> SongResult:
    return SongResult(minutes, model, JobRun("JOB_STATE_SUCCEEDED", 1.0, 0.5), peaks)


def test_checks_compare_the_longest_song_with_the_shortest_and_the_limits() -> None:
    results = [
        _result(5, "spleeter", separation=1_000, orchestrator=200),
        _result(20, "spleeter", separation=5_000, orchestrator=200),
        _result(60, "spleeter", separation=1_150, orchestrator=310),
    ]
    found = {c.what: c for c in memory.checks(results)}
    ratio = found["separation: 60-min peak / 5-min peak"]
    assert (ratio.value, ratio.met) == (1.15, True)
    assert not found["orchestrator: 60-min peak / 5-min peak"].met  # 1.55
    assert not found["separation, 20 min (spleeter): peak MB"].met  # over 2,000 MB
    assert found["orchestrator, 5 min (spleeter): peak MB"] == Check(
        "orchestrator, 5 min (spleeter): peak MB", 200, 300
    )
    assert not found["orchestrator, 60 min (spleeter): peak MB"].met


def test_htdemucs_separation_has_its_own_limit() -> None:
    found = {c.what: c for c in memory.checks([_result(60, "htdemucs", separation=2_500)])}
    assert found == {
        "separation, 60 min (htdemucs): peak MB": Check(
            "separation, 60 min (htdemucs): peak MB", 2_500, 3_000
        )
    }
    assert found["separation, 60 min (htdemucs): peak MB"].met


def test_requests_from_file_send_the_options_then_the_whole_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(memory.MB * 3 + 17)
    (tmp_path / "vocals.flac").write_bytes(data)
    options = transcription_pb2.TranscriptionOptions(language="en")
    requests = list(
        requests_from_file(transcription_pb2.TranscribeRequest, options, tmp_path / "vocals.flac")
    )
    assert requests[0].options == options
    assert all(r.WhichOneof("request") == "audio" for r in requests[1:])
    assert b"".join(r.audio for r in requests[1:]) == data


def test_jobs_with_words_are_read_from_the_passages_and_the_stages_done(tmp_path: Path) -> None:
    path = tmp_path / "roar.sqlite"
    store = Store(path)
    word = common_pb2.Word(text="la", start=1.0, end=1.2)
    store.add_passage("a", 0, transcription_pb2.Passage(index=0, words=[word]).SerializeToString())
    store.add_passage("b", 0, transcription_pb2.Passage(index=0).SerializeToString())  # no words yet
    store.finish_stage("c", TRANSCRIPTION)
    store.finish_stage("d", SEPARATION)
    store.close()
    assert jobs_with_words(path) == {"a", "c"}
    assert jobs_with_words(tmp_path / "absent.sqlite") == set()


def test_transcript_watch_notes_when_a_job_first_has_transcription_output(tmp_path: Path) -> None:
    store = tmp_path / "roar.sqlite"
    with TranscriptWatch(store, interval=0.02) as watch:
        time.sleep(0.1)  # no store yet
        writing = time.time()
        written = Store(store)
        written.finish_stage("j", TRANSCRIPTION)
        written.close()
        stored = time.time()
        deadline = time.monotonic() + 5
        while "j" not in watch.first_seen:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert writing <= watch.first_seen["j"] <= stored + 1.0


def test_pipeline_ratios_take_the_fastest_round_and_the_latest_first_word() -> None:
    result = PipelineResult(10, 1)
    result.jobs = [JobTimes(120.0, 60.0, 30.0), JobTimes(100.0, 50.0, 40.0)]
    result.separation_alone = [70.0, 66.0]
    result.separation_direct = [60.0, 64.0]
    result.transcription_alone = [60.0, 59.0]
    result.load = [1.0, 2.5]
    assert result.overlap_ratio == pytest.approx(100.0 / (66.0 + 59.0))
    assert result.first_word_ratio == pytest.approx(0.8)
    assert result.grpc_ratio == pytest.approx(1.1)
    text = report(result)
    assert "| job / (separation alone + transcription alone) | 0.80 | ≤ 0.8 | yes |" in text
    assert "| separation through gRPC / called directly | 1.10 | ≤ 1.1 | yes |" in text
    result.jobs.append(JobTimes(90.0, 45.0, None))  # its words came whole, at the end
    assert result.first_word_ratio is None
    assert "| first word stored / separation's end (from Process) | — | < 1 | no |" in report(result)
