"""The orchestrator's gRPC servicer (native gRPC and grpc-web) and its entry point."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.jobs import Jobs
from orchestrator.stages import StageClients
from orchestrator.store import Store
from orchestrator.uploads import MAX_CHUNK_BYTES, Uploads
from orchestrator.web import web_app, web_server
from roar import __version__
from roar.config import Settings
from roar.errors import OutOfRange, RoarError
from roar.service import abort_with, serve, setup_logging
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

log = logging.getLogger("roar.orchestrator")
DOWNLOAD_CHUNK_BYTES = 256 * 1024
DEMUCS_MODELS = ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra"]
WHISPER_MODELS = [
    "openai/whisper-tiny",
    "openai/whisper-base",
    "openai/whisper-small",
    "openai/whisper-medium",
    "openai/whisper-large-v3-turbo",
]


def _unary(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turns domain errors into gRPC statuses."""

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except RoarError as exc:
            await abort_with(context, exc)

    return call


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for response in method(self, request, context):
                yield response
        except RoarError as exc:
            await abort_with(context, exc)

    return call


def _offered(default: str, known: list[str]) -> list[str]:
    return [default, *(m for m in known if m != default)]


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    def __init__(self, settings: Settings, uploads: Uploads, jobs: Jobs) -> None:
        self._settings = settings
        self._uploads = uploads
        self._jobs = jobs

    @_unary
    async def StartUpload(self, request: pb.StartUploadRequest, context: Any) -> pb.Upload:
        return self._uploads.start(request.filename, request.size, request.content_type)

    @_unary
    async def UploadChunk(self, request: pb.UploadChunkRequest, context: Any) -> pb.Upload:
        return self._uploads.add_chunk(request.upload_id, request.offset, request.data)

    @_unary
    async def GetUpload(self, request: pb.GetUploadRequest, context: Any) -> pb.Upload:
        return self._uploads.get(request.upload_id)

    @_unary
    async def FinishUpload(self, request: pb.FinishUploadRequest, context: Any) -> pb.Upload:
        return await self._uploads.finish(request.upload_id)

    @_streaming
    async def Process(self, request: pb.ProcessRequest, context: Any) -> AsyncIterator[pb.ProgressEvent]:
        job = self._jobs.submit(request.upload_id, request.options)
        async for event in self._jobs.watch(job.job_id, 0):
            yield event

    @_streaming
    async def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> AsyncIterator[pb.ProgressEvent]:
        async for event in self._jobs.watch(request.job_id, request.after_seq):
            yield event

    @_unary
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        return self._jobs.get(request.job_id)

    @_unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        return self._jobs.list(request.page_size, request.page_token)

    @_unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        return self._jobs.cancel(request.job_id)

    @_streaming
    async def Download(self, request: pb.DownloadRequest, context: Any) -> AsyncIterator[pb.DownloadChunk]:
        path = self._jobs.artifact_path(request.job_id, request.name)
        size = path.stat().st_size
        if not 0 <= request.offset <= size:
            raise OutOfRange(f"offset {request.offset} is outside the file's {size} bytes")
        with path.open("rb") as f:
            f.seek(request.offset)
            offset = request.offset
            while data := f.read(DOWNLOAD_CHUNK_BYTES):
                yield pb.DownloadChunk(data=data, offset=offset, total_size=size)
                offset += len(data)

    @_unary
    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Any) -> pb.ServerInfo:
        s = self._settings
        return pb.ServerInfo(
            version=__version__,
            default_separation_model=s.separation_model,
            separation_models=_offered(s.separation_model, DEMUCS_MODELS),
            default_transcription_model=s.transcription_model,
            transcription_models=_offered(s.transcription_model, WHISPER_MODELS),
            max_upload_bytes=s.max_upload_bytes,
            max_chunk_bytes=MAX_CHUNK_BYTES,
        )


async def run(settings: Settings, host: str) -> None:
    store = Store(settings.data_dir / "roar.sqlite")
    uploads = Uploads(store, settings.data_dir / "uploads", settings.max_upload_bytes)
    clients = StageClients(
        settings.separation_addr,
        settings.transcription_addr,
        settings.karaoke_addr,
        retry_seconds=settings.stage_retry_seconds,
    )
    jobs = Jobs(settings, store, uploads, clients)
    servicer = OrchestratorServicer(settings, uploads, jobs)
    app = web_app()
    pb_grpc.add_OrchestratorServicer_to_server(servicer, app)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        web = web_server(app, host, settings.web_port)
        web_task = asyncio.create_task(web.serve())
        jobs.resume_unfinished()
        log.info("web page and grpc-web on http://%s:%d/", host, settings.web_port)
        try:
            yield
        finally:
            web.should_exit = True
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
