"""Every Prometheus metric Roar exports, defined here and nowhere else, with the small helpers the
services record them through.

Each process exports its own (prometheus-client's default registry is per process): the
orchestrator on its web port at /metrics (orchestrator/web.py), each stage service on its own
HTTP port when ROAR_METRICS_PORT (or --metrics-port) names one. Label values are few and fixed
(stage and service names, job states, gRPC status names, model names from the catalog), never
ids or paths, so the number of series stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_asgi_app,
    start_http_server,
)

from roar.config import Settings

log = logging.getLogger("roar")

# Counters export only `_total`, not a `_created` series beside each one.
disable_created_metrics()

STAGES = ("separation", "transcription", "karaoke")
# The stage services that load models.
MODEL_SERVICES = ("separation", "transcription")
# A job's final states, as its `state` label spells them.
JOB_END_STATES = ("succeeded", "partial", "failed", "cancelled")
# The code label of a stage run or call that ended well; others are gRPC status names.
OK = "OK"
# gRPC methods under this prefix (health checks, reflection) are left out of roar_requests_total.
INFRASTRUCTURE_METHOD_PREFIX = "/grpc."

# Songs run from seconds to hours (ROAR_JOB_TIMEOUT is 3 h by default).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 10800)
# htdemucs on 2 CPU threads needs ~0.75 s per second of audio; a GPU or Spleeter far less.
SPEED_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MODEL_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Calls run from a millisecond (GetJob) to a whole stage (Separate, hours).
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1200, 3600, 10800)

# --- the orchestrator ---

JOB_DURATION = Histogram(
    "roar_job_duration_seconds",
    "Time from a job's submission to its last event, by the state it ended in",
    ["state"],
    buckets=DURATION_BUCKETS,
    registry=None,
)
JOBS = Counter("roar_jobs", "Jobs that ended, by the state they ended in", ["state"], registry=None)
JOBS_RUNNING = Gauge(
    "roar_jobs_running",
    "Jobs this orchestrator is running now (ROAR_MAX_RUNNING_JOBS at most)",
    registry=None,
)
JOBS_QUEUED = Gauge(
    "roar_jobs_queued", "Jobs this orchestrator holds waiting for a free worker", registry=None
)
JOBS_PAUSED = Gauge(
    "roar_jobs_paused",
    "Jobs paused (PauseJob) in the store, waiting for ResumeJob (every orchestrator's on a shared store)",
    registry=None,
)

STAGE_DURATION = Histogram(
    "roar_stage_duration_seconds",
    "Time a stage run took, from its start to its result, for stage runs that completed",
    ["stage"],
    buckets=DURATION_BUCKETS,
    registry=None,
)
STAGE_SPEED = Histogram(
    "roar_stage_seconds_per_audio_second",
    "Seconds a completed stage run took per second of the audio it processed",
    ["stage"],
    buckets=SPEED_BUCKETS,
    registry=None,
)
STAGE_RESULTS = Counter(
    "roar_stage_results",
    "Stage runs that ended, by stage and code: OK when it completed, else the gRPC status name",
    ["stage", "code"],
    registry=None,
)
STAGE_RETRIES = Counter(
    "roar_stage_retries",
    "Stage calls made again because the call broke (the service down or restarting)",
    ["stage"],
    registry=None,
)
STAGE_FAILOVERS = Counter(
    "roar_stage_failovers",
    "Retries of a stage call that broke after the stage had answered: the work goes on from its "
    "checkpoint on another replica (or the restarted one)",
    ["stage"],
    registry=None,
)
EVENT_DELIVERY_LAG = Histogram(
    "roar_event_delivery_lag_seconds",
    "From a live progress event's timestamp to when a watcher's stream yields it",
    buckets=LAG_BUCKETS,
    registry=None,
)
UPLOAD_BYTES = Counter(
    "roar_upload_bytes", "Bytes of uploads stored (resent bytes are not counted again)", registry=None
)
DOWNLOAD_BYTES = Counter("roar_download_bytes", "Bytes of artifacts sent to clients", registry=None)

# --- the stage services (and every gRPC server: roar_requests_*) ---

WINDOWS_PROCESSED = Counter(
    "roar_windows_processed",
    "Pieces of work a stage service finished: separation windows, transcription passages",
    ["service"],
    registry=None,
)
MODEL_LOAD = Histogram(
    "roar_model_load_seconds",
    "Time a model took to load",
    ["service", "model"],
    buckets=MODEL_LOAD_BUCKETS,
    registry=None,
)
MODEL_LOADED = Gauge(
    "roar_model_loaded",
    "1 while the model is loaded in this process, else 0",
    ["service", "model"],
    registry=None,
)
REQUESTS = Counter(
    "roar_requests",
    "gRPC calls served, by method and status code",
    ["service", "method", "code"],
    registry=None,
)
REQUEST_DURATION = Histogram(
    "roar_request_duration_seconds",
    "Time gRPC calls took, from the call's start to its status",
    ["service", "method"],
    buckets=REQUEST_BUCKETS,
    registry=None,
)

ORCHESTRATOR_METRICS = (
    JOB_DURATION,
    JOBS,
    JOBS_RUNNING,
    JOBS_QUEUED,
    JOBS_PAUSED,
    STAGE_DURATION,
    STAGE_SPEED,
    STAGE_RESULTS,
    STAGE_RETRIES,
    STAGE_FAILOVERS,
    EVENT_DELIVERY_LAG,
    UPLOAD_BYTES,
    DOWNLOAD_BYTES,
)
MODEL_SERVICE_METRICS = (WINDOWS_PROCESSED, MODEL_LOAD, MODEL_LOADED)
# What each service exports beside roar_requests_* (and the client library's process_* and python_*).
SERVICE_METRICS = {
    "orchestrator": ORCHESTRATOR_METRICS,
    "separation": MODEL_SERVICE_METRICS,
    "transcription": MODEL_SERVICE_METRICS,
    "karaoke": (),
}
# The services and the metrics this process exports (a test process may run several services).
_exported: set[str] = set()
_registered: set[Any] = set()


def export(service: str) -> None:
    """Puts the metrics `service` records in this process's registry (once), their known series
    at 0 so that a rate or an increase sees their first event."""
    if service in _exported:
        return
    _exported.add(service)
    for metric in (*SERVICE_METRICS.get(service, ()), REQUESTS, REQUEST_DURATION):
        if metric not in _registered:
            REGISTRY.register(metric)
            _registered.add(metric)
    if service == "orchestrator":
        for state in JOB_END_STATES:
            JOBS.labels(state)
            JOB_DURATION.labels(state)
        for stage in STAGES:
            for metric in (STAGE_DURATION, STAGE_SPEED, STAGE_RETRIES, STAGE_FAILOVERS):
                metric.labels(stage)
            STAGE_RESULTS.labels(stage, OK)
    elif service in MODEL_SERVICES:
        WINDOWS_PROCESSED.labels(service)


# --- recording ---


def job_ended(state: str, seconds: float) -> None:
    """A job's last event: `state` its JobState name (JOB_STATE_SUCCEEDED: label "succeeded"),
    `seconds` since it was submitted."""
    label = state.removeprefix("JOB_STATE_").lower()
    JOBS.labels(label).inc()
    JOB_DURATION.labels(label).observe(max(seconds, 0.0))


def stage_completed(stage: str, seconds: float, audio_seconds: float) -> None:
    """A stage run that completed, having processed `audio_seconds` of the song."""
    STAGE_DURATION.labels(stage).observe(seconds)
    if audio_seconds > 0:
        STAGE_SPEED.labels(stage).observe(seconds / audio_seconds)


def stage_retried(stage: str, failover: bool) -> None:
    """A stage call made again; `failover` when the broken try had been answered."""
    STAGE_RETRIES.labels(stage).inc()
    if failover:
        STAGE_FAILOVERS.labels(stage).inc()


def event_delivered(timestamp_seconds: float) -> None:
    """A live event a watcher's stream yields now; `timestamp_seconds` is when it was made."""
    EVENT_DELIVERY_LAG.observe(max(time.time() - timestamp_seconds, 0.0))


@contextlib.asynccontextmanager
async def job_slot(slots: asyncio.Semaphore) -> AsyncIterator[None]:
    """`async with slots`, counting the job in roar_jobs_queued while it waits for the slot and
    in roar_jobs_running while it holds it."""
    with JOBS_QUEUED.track_inprogress():
        await slots.acquire()
    try:
        with JOBS_RUNNING.track_inprogress():
            yield
    finally:
        slots.release()


@contextlib.contextmanager
def model_loading(service: str, model: str) -> Any:
    """Times the loading of `model` in the block; it counts as loaded when the block succeeds."""
    with MODEL_LOAD.labels(service, model).time():
        yield
    MODEL_LOADED.labels(service, model).set(1)


def model_unloaded(service: str, model: str) -> None:
    MODEL_LOADED.labels(service, model).set(0)


# --- exposing ---


def metrics_app() -> Callable[..., Awaitable[None]]:
    """An ASGI app answering with this process's metrics in the text exposition format."""
    return make_asgi_app()


def serve_metrics(settings: Settings, host: str, port: int) -> WSGIServer | None:
    """Serves this process's metrics over HTTP on host:port (any path), on a thread of its own,
    over TLS with the process's certificate when it has one (client certificates required when
    ROAR_TLS_CLIENT_CA is set, as on the gRPC port). Returns the server (for shutdown()), or None
    when the port cannot be had: the error is logged and the service goes on without /metrics,
    since a scrape target that is down is seen (`up` 0), while a stage that will not start stops
    every job."""
    tls: dict[str, Any] = {}
    if settings.tls_cert and settings.tls_key:
        tls = {"certfile": settings.tls_cert, "keyfile": settings.tls_key}
        if settings.tls_client_ca:
            tls |= {"client_cafile": settings.tls_client_ca, "client_auth_required": True}
    try:
        server, _ = start_http_server(port, addr=host, **tls)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d (ROAR_METRICS_PORT): %s", host, port, exc.strerror)
        return None
    return server


class RequestMetrics(grpc.aio.ServerInterceptor):
    """Counts and times every roar.v1 call a gRPC server serves (roar_requests_total,
    roar_request_duration_seconds), by method and the status it ended with."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(INFRASTRUCTURE_METHOD_PREFIX):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        kind = next(
            k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k)
        )
        behaviour = getattr(handler, kind)
        if inspect.isasyncgenfunction(behaviour):
            wrapped: Callable[..., Any] = self._streaming(behaviour, method)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = self._unary(behaviour, method)
        else:
            return handler  # a plain function: the server runs it in a thread; not metered
        return handler._replace(**{kind: wrapped})  # type: ignore[attr-defined]

    def _unary(self, behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def metered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), OK
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                code = _status_name(exc, context)
                raise
            finally:
                self._record(method, code, started, context)

        return metered

    def _streaming(
        self, behaviour: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def metered(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, code = time.perf_counter(), OK
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException as exc:
                code = _status_name(exc, context)
                raise
            finally:
                self._record(method, code, started, context)

        return metered

    def _record(self, method: str, code: str, started: float, context: grpc.aio.ServicerContext) -> None:
        if code == OK:
            # A method may end its call with set_code() instead of raising.
            set_code = context.code()
            code = set_code.name if isinstance(set_code, grpc.StatusCode) else OK
        REQUESTS.labels(self._service, method, code).inc()
        REQUEST_DURATION.labels(self._service, method).observe(time.perf_counter() - started)


def _status_name(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status a call that raised `exc` ends with."""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name  # the client went away or its deadline passed
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
        return code.name  # context.abort() set it
    return grpc.StatusCode.UNKNOWN.name
