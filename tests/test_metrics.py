"""Prometheus metrics: a real Prometheus scraping a real suite (`roar up`) gets a job's stage
durations and counts back through PromQL; in-process, the web port's /metrics, /healthz and
/readyz answer, and each metric moves when the thing it counts happens."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.events import Events
from orchestrator.stages import StageClients, StageFailed
from orchestrator.store import Store
from orchestrator.uploads import Uploads
from orchestrator.web import web_app, web_server
from roar import client, metrics
from roar.catalog import ModelCatalog
from roar.cli import METRICS_TARGETS_FILE
from roar.config import Settings
from roar.models import ModelCache
from roar.service import RefusingUndecodable
from roar.v1 import karaoke_pb2, karaoke_pb2_grpc
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from services.karaoke.server import KaraokeServicer
from tests.support.certs import issue, make_ca
from tests.support.prometheus import Prometheus
from tests.support.songs import write_song
from tests.support.suite import Suite, free_port

SERVICES = ("orchestrator", "separation", "transcription", "karaoke")
SONG_SECONDS = 8.0
# How far a stage's duration in the histogram may be from the span of its "starting" and "done"
# events: both clocks start and stop within a few statements of those events.
STAGE_TIME_TOLERANCE_SECONDS = 0.5


def sample(metric: object, labels: dict[str, str] | None = None, suffix: str = "") -> float:
    """A metric's sample in this process (0 when it has none yet): `suffix` picks a histogram's
    _count or _sum, or a counter's _total."""
    for family in metric.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            if s.name == family.name + suffix and s.labels == (labels or {}):
                return s.value
    return 0.0


# --- a real Prometheus against a real suite ---


@pytest.fixture(scope="module")
def metrics_suite(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Suite]:
    root = tmp_path_factory.mktemp("metrics")
    running = Suite(root / "data", tiny_models, root / "roar-up.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, metrics_suite: Suite) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path_factory.mktemp("prometheus"), [metrics_suite.data_dir / METRICS_TARGETS_FILE]
    )
    server.start()
    yield server
    server.stop()


def test_prometheus_scrapes_all_four_services(prometheus: Prometheus, metrics_suite: Suite) -> None:
    up = prometheus.wait_for("up", lambda r: len(r) == len(SERVICES) and all(s["value"][1] == "1" for s in r))
    assert sorted(s["metric"]["component"] for s in up) == sorted(SERVICES)
    # `roar up` says where each service's /metrics is.
    assert "roar: metrics: separation http://127.0.0.1:" in metrics_suite.log()
    # Each model service reports its default model loaded, and how long the load took.
    for service in ("separation", "transcription"):
        prometheus.value(f'sum(roar_model_loaded{{service="{service}"}})', lambda v: v == 1)
        prometheus.value(f'sum(roar_model_load_seconds_count{{service="{service}"}})', lambda v: v == 1)


async def test_a_jobs_stage_durations_and_counts_reach_prometheus(
    prometheus: Prometheus, metrics_suite: Suite, tmp_path: Path
) -> None:
    song = write_song(tmp_path / "song.wav", SONG_SECONDS)
    async with client.channel(metrics_suite.address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        events = [e async for e in client.process(stub, upload.upload_id, pb.JobOptions())]
        final = events[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final
        job = await stub.GetJob(pb.GetJobRequest(job_id=final.job_id))
        instrumental = next(a for a in final.artifacts if a.name == "instrumental.wav")
        downloaded = [
            c async for c in stub.Download(pb.DownloadRequest(job_id=final.job_id, name=instrumental.name))
        ]
    assert sum(len(c.data) for c in downloaded) == instrumental.size

    def seconds(stamp) -> float:
        return stamp.ToNanoseconds() / 1e9

    for stage, name in (
        (pb.STAGE_SEPARATION, "separation"),
        (pb.STAGE_TRANSCRIPTION, "transcription"),
        (pb.STAGE_KARAOKE, "karaoke"),
    ):
        started = next(e for e in events if e.stage == stage and e.message == f"{name} starting")
        done = next(e for e in events if e.stage == stage and e.message.startswith(f"{name} done"))
        span = seconds(done.timestamp) - seconds(started.timestamp)
        selector = f'{{stage="{name}"}}'
        prometheus.value(f"roar_stage_duration_seconds_count{selector}", lambda v: v == 1)
        took = prometheus.value(f"roar_stage_duration_seconds_sum{selector}", lambda v: v > 0)
        assert abs(took - span) < STAGE_TIME_TOLERANCE_SECONDS, (name, took, span)
        speed = prometheus.value(f"roar_stage_seconds_per_audio_second_sum{selector}", lambda v: v > 0)
        assert speed == pytest.approx(took / SONG_SECONDS, rel=0.01)
        prometheus.value(f'roar_stage_results_total{{stage="{name}",code="OK"}}', lambda v: v == 1)
        prometheus.value(f"roar_stage_retries_total{selector}", lambda v: v == 0)

    prometheus.value('roar_jobs_total{state="succeeded"}', lambda v: v == 1)
    prometheus.value('roar_jobs_total{state="failed"}', lambda v: v == 0)
    job_took = prometheus.value('roar_job_duration_seconds_sum{state="succeeded"}', lambda v: v > 0)
    assert abs(job_took - (seconds(final.timestamp) - seconds(job.created))) < STAGE_TIME_TOLERANCE_SECONDS
    prometheus.value("roar_jobs_running", lambda v: v == 0)
    prometheus.value("roar_jobs_queued", lambda v: v == 0)
    prometheus.value("roar_jobs_paused", lambda v: v == 0)
    prometheus.value("roar_upload_bytes_total", lambda v: v == song.stat().st_size)
    prometheus.value("roar_download_bytes_total", lambda v: v == instrumental.size)
    # Process watched the job live: every event after the first ones was delivered while it waited.
    prometheus.value("roar_event_delivery_lag_seconds_count", lambda v: 0 < v < len(events))
    prometheus.value('roar_windows_processed_total{service="separation"}', lambda v: v >= 1)
    for service, method in (
        ("separation", "Separate"),
        ("transcription", "Transcribe"),
        ("karaoke", "Build"),
    ):
        labels = f'service="{service}",method="{method}"'
        prometheus.value(f'roar_requests_total{{{labels},code="OK"}}', lambda v: v == 1)
        prometheus.value(f"roar_request_duration_seconds_count{{{labels}}}", lambda v: v == 1)
    prometheus.value(
        'roar_requests_total{service="orchestrator",method="Process",code="OK"}', lambda v: v == 1
    )


# --- in process ---


@pytest.fixture
async def web_port() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """The orchestrator's web port (page, grpc-web, probes) served in this process; readiness
    follows the event it yields."""
    metrics.export("orchestrator")
    taking_jobs = asyncio.Event()

    async def ready() -> bool:
        return taking_jobs.is_set()

    port = free_port()
    server = web_server(web_app(), "127.0.0.1", port, Settings(), ready)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield port, taking_jobs
    server.should_exit = True
    await task


async def get(port: int, path: str, method: str = "GET", host: str = "") -> tuple[int, str, str]:
    """(status, content type, body) of one HTTP request, made off the event loop."""

    def request() -> tuple[int, str, str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request(method, path, headers={"Host": host or f"127.0.0.1:{port}"})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        return response.status, response.getheader("content-type", ""), body

    return await asyncio.to_thread(request)


async def test_web_port_answers_health_readiness_and_metrics(web_port: tuple[int, asyncio.Event]) -> None:
    port, taking_jobs = web_port
    assert (await get(port, "/healthz"))[0] == 200
    assert (await get(port, "/healthz", method="HEAD"))[0] == 200
    status, _, body = await get(port, "/readyz")
    assert status == 503 and "not ready" in body
    taking_jobs.set()
    assert (await get(port, "/readyz"))[0] == 200
    taking_jobs.clear()  # shutting down
    assert (await get(port, "/readyz"))[0] == 503

    metrics.UPLOAD_BYTES.inc(7)
    status, content_type, body = await get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    # Read back as Prometheus reads it: a large count is written 1.058495e+06.
    exposed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert exposed[("roar_upload_bytes_total", ())] == sample(metrics.UPLOAD_BYTES, suffix="_total")
    assert 'roar_jobs_total{state="succeeded"}' in body  # known series start at 0
    assert "# TYPE roar_stage_duration_seconds histogram" in body
    # Scrapers and probes reach a pod by its IP: a Host the page refuses still gets them.
    assert (await get(port, "/metrics", host="10.1.2.3:8080"))[0] == 200
    assert (await get(port, "/", host="10.1.2.3:8080"))[0] == 421
    assert (await get(port, "/metrics", method="POST"))[0] == 405


async def test_grpc_calls_are_counted_by_method_and_status() -> None:
    metrics.export("karaoke")
    server = grpc.aio.server(interceptors=[metrics.RequestMetrics("karaoke")])
    karaoke_pb2_grpc.add_KaraokeServicer_to_server(
        KaraokeServicer(asyncio.Semaphore(1)), RefusingUndecodable(server)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    refused = {"service": "karaoke", "method": "Build", "code": "INVALID_ARGUMENT"}
    built = {**refused, "code": "OK"}
    before = sample(metrics.REQUESTS, refused, "_total"), sample(metrics.REQUESTS, built, "_total")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = karaoke_pb2_grpc.KaraokeStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Build(karaoke_pb2.BuildRequest()):
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            options = karaoke_pb2.KaraokeOptions(duration_seconds=3.0)
            assert [r async for r in stub.Build(karaoke_pb2.BuildRequest(options=options))]
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(None)
    assert sample(metrics.REQUESTS, refused, "_total") == before[0] + 1
    assert sample(metrics.REQUESTS, built, "_total") == before[1] + 1
    assert not any(
        s.labels.get("method") == "Check" for f in metrics.REQUESTS.collect() for s in f.samples
    ), "health checks are not counted"


async def test_only_live_events_count_for_delivery_lag(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    try:
        events = Events(store)
        job = pb.Job(job_id="j1", state=pb.JOB_STATE_RUNNING)
        store.put_job("u1", job)
        events.emit(job, pb.STAGE_UPLOAD, 100.0, "stored before anyone watched")
        count = sample(metrics.EVENT_DELIVERY_LAG, suffix="_count")
        stream = events.watch("j1", 0)
        assert (await anext(stream)).seq == 1
        assert sample(metrics.EVENT_DELIVERY_LAG, suffix="_count") == count  # a replay is not a delivery lag
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)  # the watcher waits for the next event
        job.state = pb.JOB_STATE_SUCCEEDED
        events.emit(job, pb.STAGE_COMPLETE, 100.0, "done", final=True)
        assert (await waiting).seq == 2
        assert sample(metrics.EVENT_DELIVERY_LAG, suffix="_count") == count + 1
        assert sample(metrics.EVENT_DELIVERY_LAG, suffix="_sum") < 1.0  # well under a second here
    finally:
        store.close()


async def test_queued_and_running_jobs_are_gauged() -> None:
    slots = asyncio.Semaphore(1)
    release = asyncio.Event()

    async def job() -> None:
        async with metrics.job_slot(slots):
            await release.wait()

    running, queued = sample(metrics.JOBS_RUNNING), sample(metrics.JOBS_QUEUED)
    first, second = asyncio.create_task(job()), asyncio.create_task(job())
    await asyncio.sleep(0.05)
    assert (sample(metrics.JOBS_RUNNING), sample(metrics.JOBS_QUEUED)) == (running + 1, queued + 1)
    second.cancel()  # a queued job cancelled leaves the queue
    await asyncio.sleep(0.05)
    assert sample(metrics.JOBS_QUEUED) == queued
    release.set()
    await asyncio.gather(first, second, return_exceptions=True)
    assert (sample(metrics.JOBS_RUNNING), sample(metrics.JOBS_QUEUED)) == (running, queued)
    assert not slots.locked()


def test_model_loads_are_timed_and_evictions_unload() -> None:
    catalog = ModelCatalog(
        stage="separation",
        default="a",
        sources={"a": "src-a", "b": "src-b", "c": "src-c"},
        list_setting="ROAR_SEPARATION_MODELS",
        default_setting="ROAR_SEPARATION_MODEL",
    )

    def load(name: str, source: str) -> str:
        time.sleep(0.05)
        return source

    cache = ModelCache(load, catalog, max_models=2)
    a, b = {"service": "separation", "model": "a"}, {"service": "separation", "model": "b"}
    loads = sample(metrics.MODEL_LOAD, a, "_count")
    cache.get("a")
    cache.get("a")  # warm: not loaded again
    assert sample(metrics.MODEL_LOAD, a, "_count") == loads + 1
    assert sample(metrics.MODEL_LOAD, a, "_sum") >= 0.05
    cache.get("b")
    assert sample(metrics.MODEL_LOADED, a) == sample(metrics.MODEL_LOADED, b) == 1
    cache.get("c")  # evicts b, the oldest that is not the default
    assert sample(metrics.MODEL_LOADED, b) == 0 and sample(metrics.MODEL_LOADED, a) == 1


def test_upload_bytes_count_what_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    try:
        uploads = Uploads(store, tmp_path / "uploads", 1 << 20, 60.0)
        upload = uploads.start("song.wav", 10, "audio/wav")
        before = sample(metrics.UPLOAD_BYTES, suffix="_total")
        uploads.add_chunk(upload.upload_id, 0, b"01234")
        uploads.add_chunk(upload.upload_id, 3, b"3456789")  # resends 2 bytes
        assert sample(metrics.UPLOAD_BYTES, suffix="_total") == before + 10
    finally:
        store.close()


async def test_a_stage_that_stays_down_counts_retries_not_failovers() -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    clients = StageClients(down, down, down, retry_seconds=1.0)
    labels = {"stage": "karaoke"}
    retries, failovers = (
        sample(metrics.STAGE_RETRIES, labels, "_total"),
        sample(metrics.STAGE_FAILOVERS, labels, "_total"),
    )

    class Files:
        def start_try(self) -> None: ...

        async def receive(self, response: object) -> None: ...

        def kept(self) -> int:
            return 0

        def retry_note(self) -> str:
            return ""

    async def on_progress(update: object) -> None: ...

    try:
        with pytest.raises(StageFailed) as failed:
            await clients.build_karaoke(karaoke_pb2.KaraokeOptions(), Files(), on_progress, timeout=30.0)
    finally:
        await clients.close()
    assert failed.value.code == "UNAVAILABLE"
    assert sample(metrics.STAGE_RETRIES, labels, "_total") > retries
    assert sample(metrics.STAGE_FAILOVERS, labels, "_total") == failovers  # it never answered


def test_stage_metrics_are_served_over_mutual_tls_when_the_service_has_a_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    stage, scraper = issue(ca, tmp_path, "stage"), issue(ca, tmp_path, "scraper")
    settings = Settings(tls_cert=str(stage.cert), tls_key=str(stage.key), tls_client_ca=str(ca.cert))
    port = free_port()
    server = metrics.serve_metrics(settings, "127.0.0.1", port)
    try:
        trusted = ssl.create_default_context(cafile=ca.cert)
        trusted.load_cert_chain(scraper.cert, scraper.key)
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/metrics", context=trusted, timeout=10
        ) as reply:
            assert reply.status == 200 and b"# TYPE " in reply.read()
        anonymous = ssl.create_default_context(cafile=ca.cert)  # no client certificate
        with pytest.raises(OSError):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=anonymous, timeout=10).read()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()  # plaintext
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_metrics_port_is_logged_with_the_setting_named_and_serves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with caplog.at_level(logging.ERROR, logger="roar"):
            assert metrics.serve_metrics(Settings(), "127.0.0.1", taken.getsockname()[1]) is None
    assert "ROAR_METRICS_PORT" in caplog.text
