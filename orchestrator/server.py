"""The orchestrator's gRPC servicer (native gRPC and grpc-web) and its entry point."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.auth import Authenticator, Caller, authenticator
from orchestrator.files_http import FilesHttp
from orchestrator.janitor import Janitor
from orchestrator.jobs import Jobs
from orchestrator.stages import StageClients
from orchestrator.stats import stats
from orchestrator.store import Store, store_location
from orchestrator.uploads import MAX_CHUNK_BYTES, Uploads
from orchestrator.web import web_app, web_server
from roar import __version__, metrics
from roar.config import Settings
from roar.errors import RoarError
from roar.service import RefusingUndecodable, abort_with, serve, setup_logging
from roar.tls import stage_channel_credentials
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

log = logging.getLogger("roar.orchestrator")


def _unary(method: Callable[..., Any]) -> Callable[..., Any]:
    """Finds the caller from its API key (orchestrator/auth.py) and hands it to the method as its
    last argument; turns domain errors, a refused key included, into gRPC statuses."""

    @functools.wraps(method)
    async def call(self: OrchestratorServicer, request: Any, context: Any) -> Any:
        try:
            caller = self.auth.caller(context.invocation_metadata())
            return await method(self, request, context, caller)
        except RoarError as exc:
            await abort_with(context, exc)

    return call


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """_unary for server-streaming methods."""

    @functools.wraps(method)
    async def call(self: OrchestratorServicer, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            caller = self.auth.caller(context.invocation_metadata())
            async for response in method(self, request, context, caller):
                yield response
        except RoarError as exc:
            await abort_with(context, exc)

    return call


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    def __init__(
        self, settings: Settings, store: Store, uploads: Uploads, jobs: Jobs, auth: Authenticator
    ) -> None:
        self._settings = settings
        self._store = store
        self._uploads = uploads
        self._jobs = jobs
        self.auth = auth

    @_unary
    async def StartUpload(self, request: pb.StartUploadRequest, context: Any, caller: Caller) -> pb.Upload:
        return self._uploads.start(request.filename, request.size, request.content_type, caller.owner)

    @_unary
    async def UploadChunk(self, request: pb.UploadChunkRequest, context: Any, caller: Caller) -> pb.Upload:
        self.auth.check_upload(caller, request.upload_id)
        return self._uploads.add_chunk(request.upload_id, request.offset, request.data)

    @_unary
    async def GetUpload(self, request: pb.GetUploadRequest, context: Any, caller: Caller) -> pb.Upload:
        self.auth.check_upload(caller, request.upload_id)
        return self._uploads.get(request.upload_id)

    @_unary
    async def FinishUpload(self, request: pb.FinishUploadRequest, context: Any, caller: Caller) -> pb.Upload:
        self.auth.check_upload(caller, request.upload_id)
        return await self._uploads.finish(request.upload_id)

    @_streaming
    async def Process(
        self, request: pb.ProcessRequest, context: Any, caller: Caller
    ) -> AsyncIterator[pb.ProgressEvent]:
        self.auth.check_upload(caller, request.upload_id)
        job = self._jobs.submit(request.upload_id, request.options, caller.owner)
        async for event in self._jobs.watch(job.job_id, 0):
            yield event

    @_streaming
    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Any, caller: Caller
    ) -> AsyncIterator[pb.ProgressEvent]:
        self.auth.check_job(caller, request.job_id)
        async for event in self._jobs.watch(request.job_id, request.after_seq):
            yield event

    @_unary
    async def GetJob(self, request: pb.GetJobRequest, context: Any, caller: Caller) -> pb.Job:
        self.auth.check_job(caller, request.job_id)
        return self._jobs.get(request.job_id)

    @_unary
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: Any, caller: Caller
    ) -> pb.ListJobsResponse:
        return self._jobs.list(request.page_size, request.page_token, caller.listed_owner)

    @_unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any, caller: Caller) -> pb.Job:
        self.auth.check_job(caller, request.job_id)
        return self._jobs.cancel(request.job_id)

    @_streaming
    async def Download(
        self, request: pb.DownloadRequest, context: Any, caller: Caller
    ) -> AsyncIterator[pb.DownloadChunk]:
        self.auth.check_job(caller, request.job_id)
        for chunk in self._jobs.download(request.job_id, request.name, request.offset):
            metrics.DOWNLOAD_BYTES.inc(len(chunk.data))
            yield chunk

    @_unary
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: Any, caller: Caller
    ) -> pb.ServerInfo:
        s = self._settings
        separation, transcription = self._jobs.separation_models, self._jobs.transcription_models
        return pb.ServerInfo(
            version=__version__,
            default_separation_model=separation.default,
            separation_models=separation.names,
            default_transcription_model=transcription.default,
            transcription_models=transcription.names,
            max_upload_bytes=s.max_upload_bytes,
            max_chunk_bytes=MAX_CHUNK_BYTES,
        )

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Any, caller: Caller) -> pb.Stats:
        return stats(self._store, self.auth.counted_owner(caller), request.days, time.time())


async def run(settings: Settings, host: str) -> None:
    store = Store(store_location(settings.database_url, settings.data_dir))
    auth = authenticator(settings, store, host)  # exits, before anything listens, if keys are missing
    uploads = Uploads(
        store, settings.data_dir / "uploads", settings.max_upload_bytes, settings.max_audio_minutes * 60
    )
    clients = StageClients(
        settings.separation_addr,
        settings.transcription_addr,
        settings.karaoke_addr,
        stage_channel_credentials(settings),
        settings.stage_key,
        retry_seconds=settings.stage_retry_seconds,
    )
    jobs = Jobs(settings, store, uploads, clients)
    janitor = Janitor(settings, store, uploads, jobs.directory)
    servicer = OrchestratorServicer(settings, store, uploads, jobs, auth)
    app = web_app()
    pb_grpc.add_OrchestratorServicer_to_server(servicer, RefusingUndecodable(app))

    taking_jobs = asyncio.Event()  # from when unfinished jobs are resumed until shutdown begins

    async def ready() -> bool:
        """Readiness (/readyz): the orchestrator takes jobs and its store answers."""
        if not taking_jobs.is_set():
            return False
        try:
            store.last_seq("")
        except Exception:
            log.warning("readiness: the store does not answer", exc_info=True)
            return False
        return True

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        web = web_server(app, host, settings.web_port, settings, ready, FilesHttp(jobs, auth))
        web_task = asyncio.create_task(web.serve())
        jobs.resume_unfinished()
        taking_jobs.set()
        janitor_task = asyncio.create_task(janitor.run())
        # Several orchestrators share a PostgreSQL store: leases, take-overs, others' events.
        coordinating = asyncio.create_task(jobs.coordinate()) if store.shared else None
        scheme = "https" if settings.tls_cert else "http"
        log.info("web page and grpc-web on %s://%s:%d/", scheme, host, settings.web_port)
        try:
            yield
        finally:
            taking_jobs.clear()
            web.should_exit = True
            janitor_task.cancel()
            if coordinating is not None:  # no job taken over while stopping
                coordinating.cancel()
                await asyncio.gather(coordinating, return_exceptions=True)
            await jobs.shutdown()
            await web_task
            await clients.close()
            store.close()

    await serve(
        "orchestrator",
        settings.orchestrator_port,
        lambda server: pb_grpc.add_OrchestratorServicer_to_server(servicer, server),
        [pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name],
        host=host,
        running=running,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Roar orchestrator: uploads, jobs, progress, web page")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="gRPC port (ROAR_PORT)")
    parser.add_argument("--web-port", type=int, help="web page and grpc-web port (ROAR_WEB_PORT)")
    args = parser.parse_args(argv)
    setup_logging("orchestrator")
    settings = Settings.from_env()
    overrides = {
        k: v for k, v in {"orchestrator_port": args.port, "web_port": args.web_port}.items() if v is not None
    }
    settings = dataclasses.replace(settings, **overrides)
    asyncio.run(run(settings, args.host))


if __name__ == "__main__":
    main()
