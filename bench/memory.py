"""Peak memory of every process of the suite for long songs: does it grow with the song?

    python -m bench.memory [--minutes 5 20 60] [--threads 1] [--label NAME] [--out bench/results]
    python -m bench.memory --separation-only [--minutes 60]     # htdemucs, random weights

The suite runs as `roar up` does (tests/support/suite.py: every service a subprocess on free loopback
ports, ROAR_TORCH_THREADS per model service), with Spleeter 2-stem and Whisper tiny.en from
../shared/models, and is started afresh for each song, so that each peak belongs to one song. One
job per song goes through the real client (upload, Process, no lyrics); when it has ended, the peak
resident set (VmHWM in /proc/PID/status) of the separation, transcription and karaoke services and
the orchestrator is read. Model loading counts: it is part of what a pod needs.

`--separation-only` measures the pretrained htdemucs' architecture with random weights (the same
compute and memory as htdemucs; no pretrained Demucs weights can be had here) on the 60-minute song:
the job is cancelled as soon as separation has finished, and only the separation service's and the
orchestrator's peaks count.

The songs are song-shaped (bench.synth: an intro, verses, choruses, an instrumental break, an outro;
sung words over drums, bass and chords), made once into bench/data/memory/ as FLAC: three synthetic
songs of about two minutes are laid end to end, each copy at its own level and followed by a short
silent break, until the length asked for. Writes OUT/memory[-LABEL].md and .json.

Checks: the 60-minute peaks within RATIO_LIMIT times the 5-minute peaks, each model service at most
2,000 MB with Spleeter (3,000 MB with htdemucs), karaoke and the orchestrator at most 300 MB
(MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.suite import Suite

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO.parent / "shared" / "models"
DATA = REPO / "bench" / "data" / "memory"
MB = 1_000_000

# The processes measured: name -> the module `roar up` runs it as.
PROCESSES = {
    "separation": "services.separation.server",
    "transcription": "services.transcription.server",
    "karaoke": "services.karaoke.server",
    "orchestrator": "orchestrator.server",
}
MODEL_SERVICES = ("separation", "transcription")
LIMIT_MB = {"spleeter": 2_000, "htdemucs": 3_000, "small": 300}
SMALL_PROCESSES = ("karaoke", "orchestrator")
RATIO_LIMIT = 1.2  # longest song's peak against the shortest's

SOURCE_SEEDS = "901"  # bench.synth --seed: the songs laid end to end
SOURCE_COUNT = 3
SOURCE_MAX_SECONDS = 120.0
LEVEL_DB = (-4.0, 0.0)  # each copy's gain, drawn from this range
BREAK_SECONDS = (1.0, 4.0)  # silence after each copy, drawn from this range
SONG_SEED = 9
JOB_TIMEOUT_SECONDS = 12 * 3600  # a 60-minute song on one thread per model takes hours on old code


# --- songs ---


def source_songs(directory: Path) -> list[Path]:
    """The synthetic song-shaped songs the long ones are made of (bench.synth, made once)."""
    paths = [directory / f"song_{i:03d}" / "mixture.flac" for i in range(SOURCE_COUNT)]
    if not all(path.is_file() for path in paths):
        command = [sys.executable, "-m", "bench.synth", str(directory), "--count", str(SOURCE_COUNT)]
        command += ["--seed", SOURCE_SEEDS, "--max-seconds", str(SOURCE_MAX_SECONDS)]
        command += ["--format", "flac", "--stems", "mixture"]
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return paths


def make_long_song(sources: Sequence[Path], seconds: float, out: Path, seed: int = SONG_SEED) -> Path:
    """Writes a FLAC of exactly `seconds` (at the sources' rate): the sources end to end in an order
    drawn per round, each copy at a level drawn from LEVEL_DB and followed by a silent break drawn
    from BREAK_SECONDS; the last copy is cut off at the length. Written piece by piece."""
    pieces = [sf.read(path, dtype="float32", always_2d=True) for path in sources]
    rates = {rate for _, rate in pieces}
    channels = {audio.shape[1] for audio, _ in pieces}
    if len(rates) != 1 or len(channels) != 1:
        raise ValueError(f"sources differ in rate or channels: {sorted(rates)}, {sorted(channels)}")
    rate, channel_count = rates.pop(), channels.pop()
    total = round(seconds * rate)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    written = 0
    with sf.SoundFile(partial, "w", rate, channel_count, subtype="PCM_16", format="FLAC") as f:
        while written < total:
            for index in rng.permutation(len(pieces)):
                gain = 10 ** (rng.uniform(*LEVEL_DB) / 20)
                silence = np.zeros((round(rng.uniform(*BREAK_SECONDS) * rate), channel_count), np.float32)
                for block in (pieces[index][0] * gain, silence):
                    block = block[: total - written]
                    f.write(block)
                    written += len(block)
                if written >= total:
                    break
    partial.replace(out)
    return out


def song(minutes: float, directory: Path = DATA) -> Path:
    """The song of `minutes`, made when it is not there yet."""
    path = directory / f"song_{minutes:g}min.flac"
    if not path.is_file():
        make_long_song(source_songs(directory / "sources"), minutes * 60, path)
    return path


# --- processes ---


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmHWM in {unit!r}")
            return int(value) * 1024
    raise ValueError(f"no VmHWM for process {pid}")


def children(pid: int) -> list[int]:
    """The direct children of a process (from /proc/*/stat: the parent is the field after the state)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def suite_processes(root: int) -> dict[str, int]:
    """name in PROCESSES -> pid, among the children of `roar up` (process `root`)."""
    found = {}
    for pid in children(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for name, module in PROCESSES.items():
            if module.encode() in argv:
                found[name] = pid
    return found


# --- jobs ---


@dataclass
class JobRun:
    state: str
    seconds: float  # from Process to the last event
    separation_seconds: float  # from the first separation event to its last


def separation_done(event: pb.ProgressEvent) -> bool:
    """The orchestrator's own "separation done" event (the service's 100 % comes before the stems are
    stored)."""
    return (
        event.stage == pb.STAGE_SEPARATION
        and event.stage_percent >= 100.0
        and "done" in event.message
        and not event.error.code
    )


async def run_job(address: str, path: Path, separation_only: bool = False) -> JobRun:
    """Uploads `path` and runs one job to its end; with separation_only, cancels it once separation
    has finished."""
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, path)
        options = pb.JobOptions(timeout_seconds=JOB_TIMEOUT_SECONDS)
        started = time.monotonic()
        events = []
        cancelled = False
        async for event in client.process(stub, upload.upload_id, options):
            events.append(event)
            if separation_only and not cancelled and separation_done(event):
                await stub.CancelJob(pb.CancelJobRequest(job_id=event.job_id))
                cancelled = True
    stamps = [e.timestamp.ToMilliseconds() / 1000 for e in events if e.stage == pb.STAGE_SEPARATION]
    return JobRun(
        state=pb.JobState.Name(events[-1].state),
        seconds=time.monotonic() - started,
        separation_seconds=stamps[-1] - stamps[0] if stamps else 0.0,
    )


@dataclass
class SongResult:
    minutes: float
    model: str
    job: JobRun
    peak_mb: dict[str, float]  # process name -> peak RSS


def measure_song(
    minutes: float, separation_model: str, model_label: str, threads: int, separation_only: bool, work: Path
) -> SongResult:
    path = song(minutes)
    env = {
        "ROAR_SEPARATION_MODEL": separation_model,
        "ROAR_TRANSCRIPTION_MODEL": str(MODELS / "whisper-tiny.en"),
        "ROAR_TORCH_THREADS": str(threads),
        "ROAR_JOB_TIMEOUT": str(JOB_TIMEOUT_SECONDS),
    }
    label = f"{model_label}-{minutes:g}min"
    suite = Suite(work / label, env, work / f"{label}.log")
    suite.start(timeout=600)
    try:
        assert suite.process is not None
        pids = suite_processes(suite.process.pid)
        missing = set(PROCESSES) - set(pids)
        if missing:
            raise RuntimeError(f"roar up runs no {', '.join(sorted(missing))}")
        job = asyncio.run(run_job(suite.address, path, separation_only))
        if suite_processes(suite.process.pid) != pids:  # a restarted service's peak would be its new one
            raise RuntimeError(f"a service was restarted during the job; see {suite.log_path}")
        peaks = {name: round(peak_rss_bytes(pid) / MB) for name, pid in pids.items()}
    finally:
        suite.stop()
    expected = "JOB_STATE_CANCELLED" if separation_only else "JOB_STATE_SUCCEEDED"
    if job.state != expected:
        raise RuntimeError(f"{label}: job ended {job.state}; see {suite.log_path}")
    if separation_only:  # the stages after separation were cut off: their peaks mean nothing
        peaks = {name: peaks[name] for name in ("separation", "orchestrator")}
    print(f"{label}: {peaks} (job {job.seconds:.0f} s)", file=sys.stderr, flush=True)
    return SongResult(minutes, model_label, job, peaks)


# --- report ---


@dataclass
class Check:
    what: str
    value: float
    limit: float

    @property
    def met(self) -> bool:
        return self.value <= self.limit


def checks(results: Sequence[SongResult]) -> list[Check]:
    """The issue's targets, for what was measured."""
    found = []
    by_minutes = sorted(results, key=lambda r: r.minutes)
    shortest, longest = by_minutes[0], by_minutes[-1]
    if longest.minutes > shortest.minutes:
        for name, peak in longest.peak_mb.items():
            if name in shortest.peak_mb:
                what = f"{name}: {longest.minutes:g}-min peak / {shortest.minutes:g}-min peak"
                found.append(Check(what, round(peak / shortest.peak_mb[name], 2), RATIO_LIMIT))
    for result in results:
        for name, peak in result.peak_mb.items():
            limit = LIMIT_MB["small"] if name in SMALL_PROCESSES else LIMIT_MB[result.model]
            found.append(Check(f"{name}, {result.minutes:g} min ({result.model}): peak MB", peak, limit))
    return found


def table(results: Sequence[SongResult]) -> str:
    names = [name for name in PROCESSES if any(name in r.peak_mb for r in results)]
    lines = [
        f"| song | model | job | {' | '.join(names)} |",
        f"| --- | --- | ---: | {' | '.join('---:' for _ in names)} |",
    ]
    for r in results:
        cells = " | ".join(f"{r.peak_mb[n]:,} MB" if n in r.peak_mb else "—" for n in names)
        job = f"{r.job.separation_seconds:.0f} s (separation)" if r.job.state.endswith("CANCELLED") else ""
        job = job or f"{r.job.seconds:.0f} s"
        lines.append(f"| {r.minutes:g} min | {r.model} | {job} | {cells} |")
    lines += ["", "| check | value | limit | met |", "| --- | ---: | ---: | --- |"]
    for check in checks(results):
        lines.append(f"| {check.what} | {check.value:g} | {check.limit:g} | {'yes' if check.met else 'no'} |")
    return "\n".join(lines)


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, nargs="+", help="song lengths (default 5 20 60; 60 with --separation-only)"
    )
    parser.add_argument(
        "--separation-only", action="store_true", help="htdemucs (random weights), separation"
    )
    parser.add_argument("--threads", type=int, default=1, help="ROAR_TORCH_THREADS of each model service")
    parser.add_argument("--label", default="", help="names the result files: memory-LABEL.md")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    args = parser.parse_args(argv)
    minutes = args.minutes or ([60.0] if args.separation_only else [5.0, 20.0, 60.0])
    spleeter, whisper = MODELS / "spleeter-2stems", MODELS / "whisper-tiny.en"
    for path in (spleeter, whisper):
        if not path.is_dir():
            raise SystemExit(f"no model dir at {path}")
    results = []
    with tempfile.TemporaryDirectory(prefix="roar-bench-memory-") as tmp:
        work = Path(tmp)
        if args.separation_only:
            from tests.support.tiny_demucs import HTDEMUCS_KWARGS, build_tiny_demucs

            model, model_label = (
                build_tiny_demucs(work / "demucs", "htdemucs_random", HTDEMUCS_KWARGS),
                "htdemucs",
            )
        else:
            model, model_label = str(spleeter), "spleeter"
        for length in minutes:
            results.append(measure_song(length, model, model_label, args.threads, args.separation_only, work))
    name = f"memory-{args.label}" if args.label else "memory"
    what = "separation only, job cancelled after it" if args.separation_only else "whole job, no lyrics"
    report = (
        f"# Peak memory (VmHWM) per process\n\nCommit {commit()}; {model_label} + whisper-tiny.en, "
        f"ROAR_TORCH_THREADS={args.threads}; {what}; MB = 10^6 bytes.\n\n{table(results)}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(report)
    data = {
        "commit": commit(),
        "threads": args.threads,
        "separation_only": args.separation_only,
        "songs": [asdict(r) for r in results],
        "checks": [{**asdict(c), "met": c.met} for c in checks(results)],
    }
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(report)


if __name__ == "__main__":
    main()
