"""A Python client of the Orchestrator: resumable upload, following a job across dropped
connections, downloads. The CLI and the tests use it."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from roar.auth import bearer_metadata
from roar.channel_options import CHANNEL_OPTIONS
from roar.tls import channel_credentials
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

TERMINAL_STATES = frozenset(
    {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_PARTIAL, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
)
# Connection trouble worth retrying; anything else is the server's answer and final.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)


def channel(address: str, *, ca: str = "", key: str = "") -> grpc.aio.Channel:
    """A channel to the orchestrator: over TLS, verifying its certificate against the CA file `ca`,
    when that is given; with `key`, every call on it presents that API key."""
    interceptors = _key_interceptors(key) if key else None
    if ca:
        credentials = channel_credentials(ca, "--ca (ROAR_TLS_CA)")
        return grpc.aio.secure_channel(
            address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)


def _key_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Adds `authorization: Bearer <key>` to every call; grpc.aio wants one interceptor per call
    shape."""
    metadata = bearer_metadata(key)

    def with_key(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()), *metadata))

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
            return await continuation(with_key(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
            return await continuation(with_key(details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[override]
            return await continuation(with_key(details), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[override]
            return await continuation(with_key(details), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


async def _retrying(call: Callable[[], object], attempts: int = 8) -> object:
    delay = 0.5
    for attempt in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


async def upload_file(
    stub: pb_grpc.OrchestratorStub, path: Path, on_progress: Callable[[int, int], None] | None = None
) -> pb.Upload:
    """Uploads in chunks; after a dropped call it asks what was committed and goes on from there."""
    data = path.read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    upload = await stub.StartUpload(
        pb.StartUploadRequest(filename=path.name, size=len(data), content_type=content_type)
    )
    committed = upload.committed
    while committed < len(data):
        piece = data[committed : committed + upload.max_chunk_bytes]
        try:
            state = await stub.UploadChunk(
                pb.UploadChunkRequest(upload_id=upload.upload_id, offset=committed, data=piece)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.5)
            state = await _retrying(lambda: stub.GetUpload(pb.GetUploadRequest(upload_id=upload.upload_id)))
        committed = state.committed
        if on_progress is not None:
            on_progress(committed, len(data))
    return await stub.FinishUpload(pb.FinishUploadRequest(upload_id=upload.upload_id))


async def follow(
    stub: pb_grpc.OrchestratorStub, job_id: str, after_seq: int = 0
) -> AsyncIterator[pb.ProgressEvent]:
    """Every event of the job after after_seq until its last, re-attaching with WatchJob when
    the stream breaks (server restart, network)."""
    delay = 0.5
    while True:
        try:
            # The server ends the stream after the job's last event (a retried job's earlier final
            # event is not its last).
            async for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq)):
                delay = 0.5
                after_seq = event.seq
                yield event
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def process(
    stub: pb_grpc.OrchestratorStub, upload_id: str, options: pb.JobOptions
) -> AsyncIterator[pb.ProgressEvent]:
    """Starts a job and yields its events, re-attaching if the Process stream breaks."""
    last: pb.ProgressEvent | None = None
    try:
        async for event in stub.Process(pb.ProcessRequest(upload_id=upload_id, options=options)):
            last = event
            yield event
            if event.state in TERMINAL_STATES:
                return
    except grpc.aio.AioRpcError as exc:
        if last is None or exc.code() not in RETRYABLE:
            raise
    if last is not None:
        async for event in follow(stub, last.job_id, last.seq):
            yield event


async def download(stub: pb_grpc.OrchestratorStub, job_id: str, name: str, target: Path) -> int:
    """Writes one artifact to target, resuming from what arrived if the stream breaks."""
    partial = target.with_name(target.name + ".part")
    received = 0
    with partial.open("wb") as f:
        while True:
            try:
                async for chunk in stub.Download(
                    pb.DownloadRequest(job_id=job_id, name=name, offset=received)
                ):
                    f.write(chunk.data)
                    received += len(chunk.data)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                await asyncio.sleep(0.5)
    partial.replace(target)
    return received
