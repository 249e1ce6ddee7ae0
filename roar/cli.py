"""The `roar` command: run the suite locally, process songs, follow and manage jobs."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC
from pathlib import Path

import grpc

from roar import audio, client
from roar.catalog import separation_catalog, transcription_catalog
from roar.config import Settings, port_of
from roar.service import is_serving
from roar.text import LANGUAGE_RULE, is_language_code
from roar.tls import suite_credentials
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

STAGE_LABELS = {
    pb.STAGE_UPLOAD: "upload",
    pb.STAGE_SEPARATION: "separation",
    pb.STAGE_TRANSCRIPTION: "transcription",
    pb.STAGE_KARAOKE: "karaoke",
    pb.STAGE_COMPLETE: "complete",
}
STATE_LABELS = {v: pb.JobState.Name(v).removeprefix("JOB_STATE_").lower() for v in pb.JobState.values()}
FORMATS = {name: common_pb2.AudioFormat.Value(f"AUDIO_FORMAT_{name.upper()}") for name in audio.FORMATS}
STARTUP_TIMEOUT_SECONDS = 900
# `roar up` restarts a service that died after 1, 2, 4 ... s, at most 30 s apart; once it has
# served this long, the next death counts as the first again.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_RESET_SECONDS = 60.0
SUPERVISE_INTERVAL_SECONDS = 0.3
# `roar up` lists where each service serves /metrics in this file of its data dir, in the format of
# Prometheus' file_sd_configs (re-read by Prometheus whenever it changes).
METRICS_TARGETS_FILE = "metrics-targets.json"
STAGE_SERVICES = ("separation", "transcription", "karaoke")


# roar up


def _service_commands(settings: Settings, metrics_ports: dict[str, int]) -> dict[str, list[str]]:
    """The command of each service; a stage with a port in `metrics_ports` serves /metrics on it."""
    python = sys.executable
    commands = {
        "separation": [
            python,
            "-m",
            "services.separation.server",
            "--port",
            str(port_of(settings.separation_addr)),
        ],
        "transcription": [
            python,
            "-m",
            "services.transcription.server",
            "--port",
            str(port_of(settings.transcription_addr)),
        ],
        "karaoke": [python, "-m", "services.karaoke.server", "--port", str(port_of(settings.karaoke_addr))],
        "orchestrator": [
            python,
            "-m",
            "orchestrator.server",
            "--port",
            str(settings.orchestrator_port),
            "--web-port",
            str(settings.web_port),
        ],
    }
    for name, port in metrics_ports.items():
        commands[name] += ["--metrics-port", str(port)]
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_metrics_targets(path: Path, targets: dict[str, str], tls: bool) -> None:
    """Writes `targets` (service -> host:port of its /metrics) as a Prometheus file_sd file, each
    target labelled `component` (`service` is a label of the metrics themselves)."""
    labels = {"__scheme__": "https"} if tls else {}
    groups = [
        {"targets": [address], "labels": {"component": name, **labels}} for name, address in targets.items()
    ]
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(groups, indent=2) + "\n")
    partial.replace(path)  # Prometheus never reads a half-written file


class Child:
    """One service `roar up` runs: restarted with doubling delays when it dies, the delay reset once
    it has served for RESTART_RESET_SECONDS."""

    def __init__(
        self,
        name: str,
        command: list[str],
        address: str,
        env: dict[str, str],
        health: grpc.ChannelCredentials | None,
    ) -> None:
        self.name = name
        self.address = address
        self._health = health  # TLS credentials for its health check, None for plaintext
        self._command = command
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.serving = False
        self._restart_at: float | None = None
        self._serving_since = 0.0
        self._deaths = 0  # since it last served for a while

    def start(self) -> None:
        self.process = subprocess.Popen(self._command, env=self._env, start_new_session=True)
        self.serving = False
        self._restart_at = None

    def check(self, now: float) -> None:
        """Restarts the child when it died (after its delay), notes when it serves again."""
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.start()
                print(f"roar: {self.name} restarted (restart {self._deaths})", flush=True)
            return
        assert self.process is not None
        if self.process.poll() is not None:
            if self.serving and now - self._serving_since >= RESTART_RESET_SECONDS:
                self._deaths = 0
            self._deaths += 1
            self.serving = False
            delay = min(RESTART_FIRST_DELAY * 2 ** (self._deaths - 1), RESTART_MAX_DELAY)
            self._restart_at = now + delay
            print(
                f"roar: {self.name} exited with code {self.process.returncode}; "
                f"restarting it in {delay:g} s (restart {self._deaths})",
                file=sys.stderr,
                flush=True,
            )
            return
        if not self.serving and is_serving(self.address, self._health):
            self.serving = True
            self._serving_since = now
            print(f"roar: {self.name} ready on {self.address}", flush=True)


def _stop_all(children: list[Child]) -> None:
    processes = [c.process for c in children if c.process is not None]
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_up(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    flags = {
        "ROAR_PORT": args.port,
        "ROAR_WEB_PORT": args.web_port,
        "ROAR_DATA_DIR": args.data_dir,
        "ROAR_SEPARATION_MODEL": args.separation_model,
        "ROAR_TRANSCRIPTION_MODEL": args.transcription_model,
    }
    env.update({k: str(v) for k, v in flags.items() if v is not None})
    os.environ.update(env)
    settings = Settings.from_env()
    # A malformed model setting stops `roar up` here, before it starts any service.
    separation_catalog(settings)
    transcription_catalog(settings)
    if settings.auth == "on" and not settings.stage_key:
        # ROAR_AUTH=on makes the stages demand a key: one for this run, shared by what starts here.
        env["ROAR_STAGE_KEY"] = secrets.token_urlsafe(32)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Stage services whose address was pointed elsewhere are not started here.
    local = {"separation", "transcription", "karaoke", "orchestrator"}
    for name, address in (
        ("separation", settings.separation_addr),
        ("transcription", settings.transcription_addr),
        ("karaoke", settings.karaoke_addr),
    ):
        if address.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
            local.discard(name)
    addresses = {
        "separation": settings.separation_addr,
        "transcription": settings.transcription_addr,
        "karaoke": settings.karaoke_addr,
        "orchestrator": f"127.0.0.1:{settings.orchestrator_port}",
    }
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    health = suite_credentials(settings, starts_stages=bool(local - {"orchestrator"}))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Each stage started here serves /metrics on a free port of its own; the orchestrator on its web port.
    metrics_ports = {name: _free_port() for name in STAGE_SERVICES if name in local}
    children = [
        Child(name, command, addresses[name], env, health)
        for name, command in _service_commands(settings, metrics_ports).items()
        if name in local
    ]
    metrics_targets = {name: f"127.0.0.1:{port}" for name, port in metrics_ports.items()}
    metrics_targets["orchestrator"] = f"127.0.0.1:{settings.web_port}"
    targets_file = settings.data_dir / METRICS_TARGETS_FILE
    _write_metrics_targets(targets_file, metrics_targets, tls=health is not None)
    for child in children:
        child.start()
    print(f"roar: starting {', '.join(c.name for c in children)} (data in {settings.data_dir})", flush=True)
    scheme = "https" if health else "http"
    listing = ", ".join(f"{name} {scheme}://{address}/metrics" for name, address in metrics_targets.items())
    print(f"roar: metrics: {listing} (Prometheus file_sd targets: {targets_file})", flush=True)
    try:
        # Until each child has served once; one that dies meanwhile is restarted like later on.
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        started: set[str] = set()
        while len(started) < len(children) and not stopping:
            for child in children:
                child.check(time.monotonic())
                if child.serving:
                    started.add(child.name)
            if time.monotonic() > deadline:
                waiting = sorted(c.name for c in children if c.name not in started)
                print(f"roar: {', '.join(waiting)} not healthy in time", file=sys.stderr)
                return 1
            time.sleep(SUPERVISE_INTERVAL_SECONDS)
        if not stopping:
            print(
                f"roar: up. gRPC on 127.0.0.1:{settings.orchestrator_port}, "
                f"web page on {'https' if health else 'http'}://127.0.0.1:{settings.web_port}/ "
                "(Ctrl-C stops)",
                flush=True,
            )
        while not stopping:
            for child in children:
                child.check(time.monotonic())
            time.sleep(SUPERVISE_INTERVAL_SECONDS)
        return 0
    finally:
        print("roar: stopping", flush=True)
        _stop_all(children)


# Client commands


class ProgressView:
    """One line per stage: a bar, percent, ETA and message; redrawn in place on a terminal."""

    def __init__(self, out=sys.stderr) -> None:
        self._out = out
        self._tty = out.isatty()
        self._lines: dict[int, str] = {}
        self._drawn = 0
        self._printed: dict[int, tuple[int, str]] = {}

    def update(self, event: pb.ProgressEvent) -> None:
        filled = int(event.stage_percent / 5)
        # The job's ETA, on the line of a stage still running (a finished stage has nothing left)
        # or of a queued job (its wait and run).
        running = event.stage != pb.STAGE_COMPLETE and event.stage_percent < 100.0 and not event.error.code
        running = running or event.state == pb.JOB_STATE_QUEUED
        eta = f"ETA {_clock(event.eta_seconds)}" if running and event.HasField("eta_seconds") else ""
        label = STAGE_LABELS.get(event.stage, "?")
        bar = "#" * filled + "-" * (20 - filled)
        # A failed stage's message repeats its error, which the job's summary prints once.
        message = f"failed ({event.error.code}, see below)" if event.error.code else event.message
        line = f"{label:<13} [{bar}] {event.stage_percent:5.1f}%  {eta:<10} {message}"
        self._lines[event.stage] = line
        if self._tty:
            if self._drawn:
                self._out.write(f"\x1b[{self._drawn}F")
            for text in self._lines.values():
                self._out.write("\x1b[2K" + text[:200] + "\n")
            self._drawn = len(self._lines)
        else:
            # Plain logs: a line per stage change, per 10 % step, per error, per place in line and
            # per change of state (paused, queued again, resumed).
            said = event.message if event.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_PAUSED) else ""
            key = (int(event.stage_percent // 10), event.error.code, said, event.state)
            if self._printed.get(event.stage) != key:
                self._printed[event.stage] = key
                self._out.write(line + "\n")
        self._out.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


async def _finish_job(stub: pb_grpc.OrchestratorStub, last: pb.ProgressEvent, out: Path | None) -> int:
    if out is not None and last.artifacts:
        out.mkdir(parents=True, exist_ok=True)
        for artifact in last.artifacts:
            await client.download(stub, last.job_id, artifact.name, out / artifact.name)
        print(f"wrote {len(last.artifacts)} files to {out}: {', '.join(a.name for a in last.artifacts)}")
        if (out / "lines.json").is_file():
            print_unsung_lines(out / "lines.json")
    shown: set[tuple[str, str]] = set()
    for error in last.errors:
        if (error.code, error.message) in shown:
            continue  # a stage's error that failed the job too is one error
        shown.add((error.code, error.message))
        print(
            f"error in {STAGE_LABELS.get(error.stage, '?')}: {error.code}: {error.message}", file=sys.stderr
        )
    state = STATE_LABELS[last.state]
    print(f"job {last.job_id} {state}")
    return 0 if last.state == pb.JOB_STATE_SUCCEEDED else 1


def print_unsung_lines(lines_json: Path) -> None:
    """Names the lines of the user's lyrics that the job found not sung (lines.json "sung": false)."""
    try:
        lines = json.loads(lines_json.read_text(encoding="utf-8"))
        unsung = [str(line["text"]) for line in lines if line.get("sung") is False]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return  # not the karaoke service's lines.json: nothing to say about it
    if unsung:
        print(f"{len(unsung)} of {len(lines)} lyric lines not sung (left out of the timed lyrics):")
        for text in unsung:
            print(f"  - {text}")


class UserError(Exception):
    """A mistake the user can fix, said in one line (no traceback); exit code 2."""


class Refused(Exception):
    """The server refused a job control for the job's state (like `roar cancel` of a finished
    job), said in one line; exit code 1."""


async def _show(
    events: AsyncIterator[pb.ProgressEvent],
    view: ProgressView,
    on_first: Callable[[pb.ProgressEvent], None] | None = None,
    still_paused: Callable[[str], Awaitable[bool]] | None = None,
) -> pb.ProgressEvent | None:
    """Shows the events until the job's last; with `still_paused`, stops at a pause the job is
    still in (its events go on only once it is resumed)."""
    last = None
    async for event in events:
        if last is None and on_first is not None:
            on_first(event)
        view.update(event)
        last = event
        if event.state != pb.JOB_STATE_PAUSED or still_paused is None:
            continue
        if await still_paused(event.job_id):
            break
    return last


def _paused_checker(stub: pb_grpc.OrchestratorStub) -> Callable[[str], Awaitable[bool]]:
    async def still_paused(job_id: str) -> bool:
        return (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).state == pb.JOB_STATE_PAUSED

    return still_paused


async def _follow_job(
    stub: pb_grpc.OrchestratorStub, job_id: str, after_seq: int, args: argparse.Namespace
) -> int:
    """`roar watch`, `roar resume`, `roar retry`: the job's progress until it ends (then its
    summary, and its files with --out) or is paused."""
    _started.update(job_id=job_id, hint=_watch_hint(job_id, args.server))
    events = client.follow(stub, job_id, after_seq)
    last = await _show(events, ProgressView(), still_paused=_paused_checker(stub))
    if last is None:
        return 1
    if last.state == pb.JOB_STATE_PAUSED:
        resume = _watch_hint(job_id, args.server, "resume")
        print(f"job {job_id} is paused: `{resume}` goes on from where it stopped")
        return 1
    return await _finish_job(stub, last, Path(args.out) if args.out else None)


def _read_lyrics(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"the lyrics file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read the lyrics file {path}: {exc.strerror or exc}") from None


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an audio file") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _watch_hint(job_id: str, server: str, command: str = "watch") -> str:
    """The command that follows the job again (or another command on it), naming the server unless
    it is the default."""
    return f"roar {command} {job_id}" + ("" if server == _default_server() else f" --server {server}")


def _default_server() -> str:
    return f"127.0.0.1:{Settings.from_env().orchestrator_port}"


def _refused_option(details: str, args: argparse.Namespace) -> str:
    """The server's reason for refusing the job's options, naming the flag that set a refused model
    (the server's message names the models it offers)."""
    for stage in ("separation", "transcription"):
        if details.startswith(f"unknown {stage} model"):
            return f"--{stage}-model {getattr(args, f'{stage}_model')}: {details}"
    return details


# The job `roar process` started or `roar watch` follows, for the hint printed on Ctrl-C.
_started: dict[str, str] = {}


async def cmd_process(args: argparse.Namespace) -> int:
    path = Path(args.file)
    _check_readable(path)
    if args.language and not is_language_code(args.language):
        raise UserError(f"--language {args.language}: {LANGUAGE_RULE}")
    options = pb.JobOptions(
        separation_model=args.separation_model or "",
        all_stems=args.all_stems,
        karaoke_video=args.video,
        audio_format=FORMATS[args.format],
        transcription_model=args.transcription_model or "",
        language=args.language or "",
        timeout_seconds=args.timeout or 0,
    )
    if args.lyrics:
        options.lyrics = _read_lyrics(Path(args.lyrics))
    out = Path(args.out) if args.out else Path(f"{path.stem}-karaoke")
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        stub = pb_grpc.OrchestratorStub(ch)

        def on_upload(done: int, total: int) -> None:
            sys.stderr.write(f"\rupload        {100 * done / total:5.1f}%  {done}/{total} bytes")
            if done == total:
                sys.stderr.write("\n")

        try:
            upload = await client.upload_file(stub, path, on_upload)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            # The server refused the file itself: name it as the user knows it.
            details = exc.details() or ""
            joined = " is " if details.startswith(audio.NOT_AUDIO) else ": "
            raise UserError(f"{path}{joined}{details}") from None

        def on_accepted(event: pb.ProgressEvent) -> None:
            _started["job_id"] = event.job_id
            _started["hint"] = _watch_hint(event.job_id, args.server)
            print(f"job {event.job_id} started (follow it again with: {_started['hint']})", flush=True)

        events = client.process(stub, upload.upload_id, options)
        try:
            last = await _show(events, ProgressView(), on_first=on_accepted)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or _started:
                raise
            raise UserError(_refused_option(exc.details() or "", args)) from None
        if last is None:
            print("roar: the server sent no events", file=sys.stderr)
            return 1
        return await _finish_job(stub, last, out)


async def cmd_watch(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        return await _follow_job(pb_grpc.OrchestratorStub(ch), args.job_id, 0, args)


async def cmd_jobs(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        stub = pb_grpc.OrchestratorStub(ch)
        reply = await stub.ListJobs(pb.ListJobsRequest(page_size=args.limit))
    print(format_jobs(reply.jobs), end="")
    return 0


def format_jobs(jobs: Iterable[pb.Job]) -> str:
    """`roar jobs`: a row per job with what tells songs of one name apart: when it was created
    (local time), the audio's length and how far it got."""
    lines = [f"{'JOB':<32}  {'CREATED':<14}  {'LENGTH':>6}  {'STATE':<10} {'DONE':>6}  FILE"]
    for job in jobs:
        created = job.created.ToDatetime(tzinfo=UTC).astimezone().strftime("%b %d %H:%M:%S")
        length = _clock(job.audio.duration_seconds) if job.audio.duration_seconds else "-"
        done = f"{job.last_event.overall_percent:5.1f}%"
        lines.append(
            f"{job.job_id:<32}  {created:<14}  {length:>6}  {STATE_LABELS[job.state]:<10} {done:>6}  "
            f"{job.filename}"
        )
    return "\n".join(lines) + "\n"


async def cmd_stats(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        stats = await pb_grpc.OrchestratorStub(ch).GetStats(pb.GetStatsRequest(days=args.days))
    print(format_stats(stats), end="")
    return 0


# The stages GetStats reports on, in Stage order.
STATS_STAGES = (pb.STAGE_SEPARATION, pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE)
DAY_BAR_WIDTH = 30


def format_stats(stats: pb.Stats) -> str:
    """`roar stats`: GetStats as text tables, a bar of jobs per day."""
    days = len(stats.days)
    whose = "every caller's jobs" if stats.all_callers else "your jobs"
    lines = [
        f"{days} days from {stats.since.ToDatetime():%Y-%m-%d} (UTC), {whose}",
        "",
        f"jobs {stats.jobs}  succeeded {stats.succeeded}  partial {stats.partial}  "
        f"failed {stats.failed}  cancelled {stats.cancelled}",
        "",
        f"{'STAGE':<13} {'RUNS':>6} {'OK':>6} {'SUCCESS':>8} {'MEAN S':>8} {'S/AUDIO MIN':>12}",
    ]
    for stage in stats.stages:
        lines.append(
            f"{STAGE_LABELS[stage.stage]:<13} {stage.runs:>6} {stage.succeeded:>6} "
            f"{_rate(stage.succeeded, stage.runs):>8} {stage.mean_seconds:>8.1f} "
            f"{stage.seconds_per_audio_minute:>12.1f}"
        )
    if not stats.stages:
        lines.append("(no stage ran)")
    stage_heads = " ".join(f"{STAGE_LABELS[s][:3].upper():>5}" for s in STATS_STAGES)
    lines += [
        "",
        "jobs created per day by how they ended; SEP, TRA, KAR: successful/all runs of each stage",
        f"{'DAY':<10} {'JOBS':>5} {'OK':>4} {'PART':>4} {'FAIL':>4} {'CANC':>4} {stage_heads}",
    ]
    busiest = max((day.jobs for day in stats.days), default=0)
    for day in stats.days:
        ran = {s.stage: f"{s.succeeded}/{s.runs}" for s in day.stages}
        runs = " ".join(f"{ran.get(s, '-'):>5}" for s in STATS_STAGES)
        bar = "#" * round(DAY_BAR_WIDTH * day.jobs / busiest) if busiest else ""
        lines.append(
            f"{day.day.ToDatetime():%Y-%m-%d} {day.jobs:>5} {day.succeeded:>4} {day.partial:>4} "
            f"{day.failed:>4} {day.cancelled:>4} {runs}  {bar}".rstrip()
        )
    lines += ["", "slowest jobs (seconds per second of audio)"]
    lines.append(f"{'JOB':<32}  {'STATE':<10} {'SECONDS':>8} {'AUDIO S':>8} {'S/S':>6}  FILE")
    for job in stats.slowest:
        lines.append(
            f"{job.job_id:<32}  {STATE_LABELS[job.state]:<10} {job.seconds:>8.1f} {job.audio_seconds:>8.1f} "
            f"{job.seconds / job.audio_seconds:>6.2f}  {job.filename}"
        )
    lines += ["", "failed jobs, newest first"]
    lines.append(f"{'JOB':<32}  {'STATE':<10} {'CREATED':<19}  FILE")
    for job in stats.failed_jobs:
        lines.append(
            f"{job.job_id:<32}  {STATE_LABELS[job.state]:<10} "
            f"{job.created.ToDatetime():%Y-%m-%d %H:%M:%S}  {job.filename}"
        )
        lines += [f"  {STAGE_LABELS.get(e.stage, '?')}: {e.code}: {e.message}" for e in job.errors]
    return "\n".join(lines) + "\n"


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        job = await pb_grpc.OrchestratorStub(ch).CancelJob(pb.CancelJobRequest(job_id=args.job_id))
    # CancelJob answers with the job as it was before the cancel: a final state means nothing changed.
    if job.state in client.TERMINAL_STATES:
        print(f"roar: job {job.job_id} already finished ({STATE_LABELS[job.state]})", file=sys.stderr)
        return 1
    print(f"job {job.job_id}: cancel requested")
    return 0


async def _refusable(call: Awaitable[pb.Job]) -> pb.Job:
    """A job control's answer; a refusal (the job is in the wrong state) is the user's to fix."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED):
            raise Refused(exc.details() or exc.code().name) from None
        raise


async def cmd_pause(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        job = await _refusable(pb_grpc.OrchestratorStub(ch).PauseJob(pb.PauseJobRequest(job_id=args.job_id)))
    if job.state != pb.JOB_STATE_PAUSED:  # it ended while the pause was asked
        print(f"roar: job {job.job_id} already finished ({STATE_LABELS[job.state]})", file=sys.stderr)
        return 1
    resume = _watch_hint(job.job_id, args.server, "resume")
    print(f"job {job.job_id} paused: `{resume}` goes on from here")
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        stub = pb_grpc.OrchestratorStub(ch)
        job = await _refusable(stub.ResumeJob(pb.ResumeJobRequest(job_id=args.job_id)))
        print(f"job {job.job_id} resumed", flush=True)
        return await _follow_job(stub, job.job_id, job.last_event.seq - 1, args)


async def cmd_retry(args: argparse.Namespace) -> int:
    async with client.channel(args.server, ca=args.ca, key=args.key) as ch:
        stub = pb_grpc.OrchestratorStub(ch)
        job = await _refusable(stub.RetryJob(pb.RetryJobRequest(job_id=args.job_id)))
        print(f"job {job.job_id}: {job.last_event.message}", flush=True)
        return await _follow_job(stub, job.job_id, job.last_event.seq - 1, args)


def _parser() -> argparse.ArgumentParser:
    settings = Settings.from_env()
    default_server = _default_server()
    parser = argparse.ArgumentParser(prog="roar", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole suite on localhost")
    up.add_argument("--port", type=int, help="orchestrator gRPC port (default 50051)")
    up.add_argument("--web-port", type=int, help="web page and grpc-web port (default 8080)")
    up.add_argument("--data-dir", help="jobs, uploads and the SQLite database (ROAR_DATA_DIR)")
    up.add_argument(
        "--separation-model",
        help="default separation model: a name from ROAR_SEPARATION_MODELS, or a demucs name, NAME@DIR "
        "or a Spleeter dir (ROAR_SEPARATION_MODEL)",
    )
    up.add_argument(
        "--transcription-model",
        help="default transcription model: a name from ROAR_TRANSCRIPTION_MODELS, a hub id or a local dir "
        "(ROAR_TRANSCRIPTION_MODEL)",
    )

    process = commands.add_parser("process", help="turn a song into karaoke")
    process.add_argument("file")
    process.add_argument("--lyrics", help="a text file with the song's lyrics, one line per karaoke line")
    process.add_argument("--out", help="output dir (default: <song>-karaoke)")
    process.add_argument("--all-stems", action="store_true", help="every stem, not only vocals/instrumental")
    process.add_argument(
        "--video", action="store_true", help="also karaoke.mp4, the instrumental with the lyrics drawn"
    )
    process.add_argument("--format", choices=sorted(FORMATS), default="wav", help="audio format of the stems")
    process.add_argument("--separation-model", help="a model the server offers (default: its default)")
    process.add_argument("--transcription-model", help="a model the server offers (default: its default)")
    process.add_argument("--language", help="ISO 639-1 code, e.g. en")
    process.add_argument("--timeout", type=float, help="fail the job after this many seconds")

    watch = commands.add_parser("watch", help="follow a job's progress")
    watch.add_argument("job_id")
    watch.add_argument("--out", help="download the artifacts here when done")

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")

    pause = commands.add_parser("pause", help="pause a job at its last checkpoint, freeing its worker")
    pause.add_argument("job_id")
    resume = commands.add_parser("resume", help="go on with a paused job, following it like `roar watch`")
    resume.add_argument("job_id")
    retry = commands.add_parser(
        "retry", help="run a failed, partial or cancelled job again: only the stages that did not succeed"
    )
    retry.add_argument("job_id")
    for sub in (resume, retry):
        sub.add_argument("--out", help="download the artifacts here when done")

    stats = commands.add_parser("stats", help="processing statistics: jobs per day, stage speeds, failures")
    stats.add_argument("--days", type=int, default=0, help="days back from today (default 30, at most 366)")

    for sub in (process, watch, jobs, cancel, pause, resume, retry, stats):
        sub.add_argument(
            "--server", default=default_server, help=f"orchestrator address (default {default_server})"
        )
        sub.add_argument(
            "--ca",
            default=settings.tls_ca,
            help="TLS: the CA that signed the orchestrator's certificate (ROAR_TLS_CA); default: plaintext",
        )
        sub.add_argument("--key", default=settings.api_key, help="API key to present (default: ROAR_API_KEY)")

    keys = commands.add_parser(
        "keys", help="manage API keys (on the orchestrator's machine; works while it runs)"
    )
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="make a key and print it (only this once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--admin", action="store_true", help="the key sees and cancels every job")
    listing = keys_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_commands.add_parser("revoke", help="revoke a key: refused from its next call on")
    revoke.add_argument("key_id", help="the ID column of `roar keys list`")
    for sub in (create, listing, revoke):
        sub.add_argument("--data-dir", help="the orchestrator's data dir (ROAR_DATA_DIR)")
    return parser


def cmd_keys(args: argparse.Namespace) -> int:
    # The keys live in the orchestrator's store: only where the orchestrator is installed (the
    # stage images ship without it).
    try:
        keys = importlib.import_module("orchestrator.keys")
    except ImportError:
        print("roar: `roar keys` runs where the orchestrator is installed", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else Settings.from_env().data_dir
    return keys.run(args, data_dir)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "up":
        sys.exit(cmd_up(args))
    if args.command == "keys":
        sys.exit(cmd_keys(args))
    command = {
        "process": cmd_process,
        "watch": cmd_watch,
        "jobs": cmd_jobs,
        "cancel": cmd_cancel,
        "pause": cmd_pause,
        "resume": cmd_resume,
        "retry": cmd_retry,
        "stats": cmd_stats,
    }[args.command]
    try:
        sys.exit(asyncio.run(command(args)))
    except UserError as exc:
        print(f"roar: {exc}", file=sys.stderr)
        sys.exit(2)
    except Refused as exc:
        print(f"roar: {exc}", file=sys.stderr)
        sys.exit(1)
    except grpc.aio.AioRpcError as exc:
        print(f"roar: {_rpc_error(exc, args.server, tls=bool(args.ca))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # The job runs on in the server; say how to find it again.
        if "hint" in _started:
            print(
                f"\nroar: interrupted; job {_started['job_id']} still running: {_started['hint']}",
                file=sys.stderr,
            )
        elif args.command == "process":
            print("\nroar: interrupted before a job started", file=sys.stderr)
        sys.exit(130)


def _rpc_error(exc: grpc.aio.AioRpcError, server: str, tls: bool) -> str:
    """A failed call in one line; a server that does not answer at all gets what to do about it."""
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
        # A server that speaks TLS to a plaintext client looks the same as no server at all.
        tls_hint = "" if tls else "; one that serves TLS needs --ca CA.pem (ROAR_TLS_CA)"
        return (
            f"no Roar server answers at {server}; start one with `roar up`, or point to a running one with "
            f"--server HOST:PORT (default: 127.0.0.1 and the port in ROAR_PORT){tls_hint}"
        )
    return f"{exc.code().name}: {details}"


if __name__ == "__main__":
    main()
