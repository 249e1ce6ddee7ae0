"""Does the pipeline overlap its stages, and what does gRPC cost separation? Ratios, same run.

    python -m bench.pipeline [--minutes 10] [--threads 1] [--repeats 2] [--label NAME] [--out bench/results]

With ROAR_TORCH_THREADS=1 for each model service, Spleeter 2-stem and Whisper tiny.en from
../shared/models, on a song-shaped song of --minutes (bench.memory's songs), one after another:

1. the job: the suite as `roar up` runs it (tests/support/suite.py), one job through the real client
   (upload, then Process with no lyrics; timed from Process to the last event); from its events,
   when separation ended, and from the orchestrator's store (TranscriptWatch), when transcription
   output was first stored; the job's vocals are downloaded;
2. separation alone: the separation service alone (a subprocess as `roar up` starts it, model loaded
   before the clock starts), one Separate call with the song streamed from disk, timed from the
   call to its last response;
3. separation called directly: the same separation code in this process (the same torch threads),
   on the same file, model loaded before the clock starts;
4. transcription alone: the transcription service alone, one Transcribe call on the job's vocals.

The four run --repeats times in turn, and the fastest of each counts: the machine is shared, and
the run least disturbed is the nearest to the truth. The load average is kept with the results.

Reported: job / (separation alone + transcription alone) (target at most OVERLAP_LIMIT), the first
word's time against separation's end (target: before it), separation through gRPC / called directly
(target at most GRPC_LIMIT). Writes OUT/pipeline[-LABEL].md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from bench.memory import MODELS, REPO, commit, song
from orchestrator.store import STORE_FILE
from roar import client
from roar.channel_options import CHANNEL_OPTIONS
from roar.service import CHUNK_BYTES, is_serving
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from roar.v1 import separation_pb2, separation_pb2_grpc, transcription_pb2, transcription_pb2_grpc
from services.separation.separator import Separator
from tests.support.processes import stop_process
from tests.support.suite import Suite, free_port

OVERLAP_LIMIT = 0.8
GRPC_LIMIT = 1.10
CALL_TIMEOUT_SECONDS = 6 * 3600
POLL_SECONDS = 0.2


@dataclass
class JobTimes:
    seconds: float  # Process to the last event
    separation_end: float  # seconds after Process: separation's last event
    # Seconds after Process: the store first held transcription output (see TranscriptWatch).
    first_word: float | None


async def run_job(suite: Suite, path: Path, vocals: Path) -> JobTimes:
    """One job on `path`; downloads its vocals stem to `vocals`."""
    with TranscriptWatch(suite.data_dir / STORE_FILE) as watch:
        return await _run_job(suite, path, vocals, watch)


async def _run_job(suite: Suite, path: Path, vocals: Path, watch: TranscriptWatch) -> JobTimes:
    async with client.channel(suite.address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, path)
        started = time.time()
        events = [e async for e in client.process(stub, upload.upload_id, pb.JobOptions())]
        seconds = time.time() - started
        last = events[-1]
        if last.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job ended {pb.JobState.Name(last.state)}: {last.message}")
        names = [a.name for a in last.artifacts if a.name.startswith("vocals.")]
        await client.download(stub, last.job_id, names[0], vocals)
    separation = [e.timestamp.ToMilliseconds() / 1000 for e in events if e.stage == pb.STAGE_SEPARATION]
    first_word = watch.first_seen.get(last.job_id)
    return JobTimes(
        seconds=seconds,
        separation_end=separation[-1] - started,
        first_word=None if first_word is None else first_word - started,
    )


class TranscriptWatch:
    """Notes when the orchestrator's store first holds transcription output of a job: a row with
    stage STAGE_TRANSCRIPTION in any table keyed by (job_id, stage) (a passage's checkpoint or the
    finished stage). Polls the store read-only from a thread while the job runs."""

    def __init__(self, store: Path, interval: float = POLL_SECONDS) -> None:
        self._store, self._interval = store, interval
        self._job_ids: set[str] = set()  # the jobs to watch: all of them until a job id is known
        self.first_seen: dict[str, float] = {}  # job id -> Unix time first seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TranscriptWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._store.exists():
                jobs = jobs_with_words(self._store)
                now = time.time()  # after the query: the rows were there by now, at most a poll late
                for job_id in jobs:
                    self.first_seen.setdefault(job_id, now)


def jobs_with_words(store: Path) -> set[str]:
    """Jobs whose transcribed words are in the store: a checkpointed passage with words (stored
    while the job runs, before separation ends when the stages overlap) or a finished
    transcription."""
    found: set[str] = set()
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1.0)) as db:
            for job_id, blob in db.execute("SELECT job_id, passage FROM passages"):
                if transcription_pb2.Passage.FromString(blob).words:
                    found.add(job_id)
            query = "SELECT job_id FROM stages_done WHERE stage = ?"
            found.update(row[0] for row in db.execute(query, (pb.STAGE_TRANSCRIPTION,)))
    except sqlite3.OperationalError:  # busy, being created, or its tables not made yet
        pass
    return found


class StageService:
    """One stage service alone, as `roar up` starts it (`python -m MODULE --port P`), on loopback."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module, self.log_path = module, log_path
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
        self.address = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StageService:
        command = [sys.executable, "-m", self.module, "--port", self.address.rsplit(":", 1)[1]]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while not is_serving(self.address):  # serving once its model is loaded and warmed up
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.module} did not start; see {self.log_path}")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def requests_from_file(request_type: type, options: object, path: Path) -> Iterator[object]:
    """The options, then the file in chunks as it is read."""
    yield request_type(options=options)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield request_type(audio=chunk)


def time_separation_service(address: str, path: Path) -> float:
    """Seconds of one Separate call on `path`, from the call to its last response."""
    options = separation_pb2.SeparationOptions()
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = separation_pb2_grpc.SeparationStub(channel)
        started = time.monotonic()
        stem_responses = 0  # anything but progress: the stems, however the protocol sends them
        for response in stub.Separate(
            requests_from_file(separation_pb2.SeparateRequest, options, path), timeout=CALL_TIMEOUT_SECONDS
        ):
            stem_responses += response.WhichOneof("response") != "progress"
        seconds = time.monotonic() - started
    if not stem_responses:
        raise RuntimeError("the separation service sent no stems")
    return seconds


def load_separator_here(model: Path, threads: int) -> Separator:
    """The separation service's model, loaded in this process with its torch threads."""
    import torch

    from services.separation.backends import load_separator

    torch.set_num_threads(threads)  # as the service does with ROAR_TORCH_THREADS
    return load_separator(str(model), "cpu")


def time_separation_direct(separator: Separator, path: Path) -> float:
    """Seconds of the separation service's own code (what its Separate runs, without the wire) called
    in this process on `path`, every window taken."""
    from roar.progress import no_progress
    from services.separation.separate import SongWindow, separate_song

    started = time.monotonic()
    windows = sum(
        isinstance(item, SongWindow) for item in separate_song(separator, path, progress=no_progress)
    )
    seconds = time.monotonic() - started
    if not windows:
        raise RuntimeError("separate_song yielded no windows")
    return seconds


def time_transcription_service(address: str, path: Path) -> float:
    """Seconds of one Transcribe call on `path`, from the call to the transcript."""
    options = transcription_pb2.TranscriptionOptions()
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        started = time.monotonic()
        responses = list(
            stub.Transcribe(
                requests_from_file(transcription_pb2.TranscribeRequest, options, path),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        )
        seconds = time.monotonic() - started
    if not responses[-1].HasField("transcript"):
        raise RuntimeError("the transcription service sent no transcript")
    return seconds


@dataclass
class PipelineResult:
    """Every round's figures (seconds); the fastest of each counts: the least disturbed by whatever
    else runs on the machine."""

    minutes: float
    threads: int
    jobs: list[JobTimes] = field(default_factory=list)
    separation_alone: list[float] = field(default_factory=list)
    separation_direct: list[float] = field(default_factory=list)
    transcription_alone: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average after each measurement

    @property
    def overlap_ratio(self) -> float:
        job = min(j.seconds for j in self.jobs)
        return job / (min(self.separation_alone) + min(self.transcription_alone))

    @property
    def first_word_ratio(self) -> float | None:
        """The latest first word of the jobs against its separation's end, both from Process; None
        when a job's store held no transcription output while it ran."""
        if any(j.first_word is None for j in self.jobs):
            return None
        return max(j.first_word / j.separation_end for j in self.jobs if j.first_word is not None)

    @property
    def grpc_ratio(self) -> float:
        return min(self.separation_alone) / min(self.separation_direct)


def measure(minutes: float, threads: int, repeats: int, work: Path) -> PipelineResult:
    """`repeats` rounds of: the job, separation alone and called directly, transcription alone (on
    the first job's vocals); interleaved, so that load from elsewhere weighs on all alike."""
    path = song(minutes)
    spleeter, whisper = MODELS / "spleeter-2stems", MODELS / "whisper-tiny.en"
    env = {
        "ROAR_SEPARATION_MODEL": str(spleeter),
        "ROAR_TRANSCRIPTION_MODEL": str(whisper),
        "ROAR_TORCH_THREADS": str(threads),
    }
    result = PipelineResult(minutes, threads)

    def note(what: str, seconds: float) -> None:
        result.load.append(os.getloadavg()[0])
        print(f"{what}: {seconds:.1f} s (load {result.load[-1]:.1f})", file=sys.stderr, flush=True)

    vocals = work / "vocals.flac"
    separator = load_separator_here(spleeter, threads)
    for round_ in range(repeats):
        suite = Suite(work / f"suite-{round_}", env, work / "suite.log")
        suite.start(timeout=600)
        try:
            job = asyncio.run(run_job(suite, path, vocals if round_ == 0 else work / "vocals-again.flac"))
        finally:
            suite.stop()
        result.jobs.append(job)
        note(
            f"job (separation ended at {job.separation_end:.1f} s, first words {job.first_word} s)",
            job.seconds,
        )
        with StageService("services.separation.server", env, work / "separation.log") as service:
            result.separation_alone.append(time_separation_service(service.address, path))
        note("separation alone", result.separation_alone[-1])
        result.separation_direct.append(time_separation_direct(separator, path))
        note("separation called directly", result.separation_direct[-1])
        with StageService("services.transcription.server", env, work / "transcription.log") as service:
            result.transcription_alone.append(time_transcription_service(service.address, vocals))
        note("transcription alone", result.transcription_alone[-1])
    return result


def report(result: PipelineResult) -> str:
    word = result.first_word_ratio
    rows = [
        ("job / (separation alone + transcription alone)", result.overlap_ratio, f"≤ {OVERLAP_LIMIT}"),
        ("first word stored / separation's end (from Process)", word, "< 1"),
        ("separation through gRPC / called directly", result.grpc_ratio, f"≤ {GRPC_LIMIT}"),
    ]
    met = [
        result.overlap_ratio <= OVERLAP_LIMIT,
        word is not None and word < 1,
        result.grpc_ratio <= GRPC_LIMIT,
    ]
    lines = ["| measure | ratio | target | met |", "| --- | ---: | ---: | --- |"]
    for (what, ratio, target), ok in zip(rows, met, strict=True):
        # None: the store held no transcription output while the job ran (the words came whole, at the end).
        cell = "—" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {what} | {cell} | {target} | {'yes' if ok else 'no'} |")
    lines += [
        "",
        f"Load (1-minute average) after each measurement: {min(result.load):.1f}-{max(result.load):.1f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the song's length (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="ROAR_TORCH_THREADS of each model service")
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of every measurement; the fastest counts (default 2)"
    )
    parser.add_argument("--label", default="", help="names the result files: pipeline-LABEL.md")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="roar-bench-pipeline-") as tmp:
        result = measure(args.minutes, args.threads, args.repeats, Path(tmp))
    text = (
        f"# Overlap and gRPC cost\n\nCommit {commit()}; a {args.minutes:g}-minute song, Spleeter + "
        f"whisper-tiny.en, ROAR_TORCH_THREADS={args.threads}.\n\n{report(result)}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"pipeline-{args.label}" if args.label else "pipeline"
    (args.out / f"{name}.md").write_text(text)
    data = {
        "commit": commit(),
        **asdict(result),
        "overlap_ratio": result.overlap_ratio,
        "first_word_ratio": result.first_word_ratio,
        "grpc_ratio": result.grpc_ratio,
    }
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
