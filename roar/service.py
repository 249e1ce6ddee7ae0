"""What every Roar gRPC server shares: start-up with health checking and reflection, graceful
shutdown, errors as statuses, and files as streams of chunks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from roar.errors import RoarError
from roar.progress import StageRun
from roar.v1 import common_pb2

CHUNK_BYTES = 1 << 20
# Stage services receive whole songs as streams of chunks; single messages stay small.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # gRPC's default reconnect backoff grows to 120 s: a service back after a minute down would
    # then wait ~15 s more for the channel to try again (measured); 2 s keeps recovery prompt.
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# Songs larger than this are refused by the stage services with RESOURCE_EXHAUSTED.
MAX_STAGE_INPUT_BYTES = 2 * 1024 * 1024 * 1024

log = logging.getLogger("roar")


def is_serving(address: str) -> bool:
    """Whether the gRPC server at address answers its health check with SERVING."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def setup_logging(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")


async def abort_with(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Ends the RPC with the status that matches a domain error (INTERNAL for anything else)."""
    if isinstance(error, RoarError):
        await context.abort(getattr(grpc.StatusCode, error.code), error.message)
    log.exception("unexpected error", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {error}")


async def read_options_and_data(
    requests: AsyncIterable[Any],
    context: grpc.aio.ServicerContext,
    options_field: str,
    data_field: str,
    max_bytes: int = MAX_STAGE_INPUT_BYTES,
) -> tuple[Any, bytes]:
    """Reads a stage call's request stream: options first, then the chunks of one file."""
    options = None
    data = bytearray()
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == options_field:
            if options is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "options were sent twice")
            options = getattr(request, options_field)
        elif kind == data_field:
            if options is None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the first message must hold the options"
                )
            data += getattr(request, data_field)
            if len(data) > max_bytes:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"input is larger than {max_bytes} bytes"
                )
    if options is None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no options were sent")
    if not data:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no {data_field} bytes were sent")
    return options, bytes(data)


async def progress_responses(
    run: StageRun[Any], context: grpc.aio.ServicerContext, response_type: type
) -> AsyncIterator[Any]:
    """A stage call's progress as `response_type(progress=...)` messages while `run` works; ends
    the call with the matching status if the work failed. Then `run.result()` holds the output."""
    try:
        async for update in run:
            yield response_type(progress=update)
        run.result()
    except Exception as exc:
        await abort_with(context, exc)


def chunked(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def file_chunks(name: str, data: bytes) -> Iterator[common_pb2.FileChunk]:
    """A file as FileChunks, the last with eof set (an empty file is one empty eof chunk)."""
    pieces = list(chunked(data)) or [b""]
    for i, piece in enumerate(pieces):
        yield common_pb2.FileChunk(name=name, data=piece, eof=i == len(pieces) - 1)


class FileAssembler:
    """Collects FileChunks back into whole files."""

    def __init__(self) -> None:
        self._partial: dict[str, bytearray] = {}
        self.files: dict[str, bytes] = {}

    def add(self, chunk: common_pb2.FileChunk) -> None:
        self._partial.setdefault(chunk.name, bytearray()).extend(chunk.data)
        if chunk.eof:
            self.files[chunk.name] = bytes(self._partial.pop(chunk.name))


def request_stream(request_type: type, options: Any, data_field: str, data: bytes) -> Iterator[Any]:
    """The request stream of a stage call: the options, then the file in chunks."""
    yield request_type(options=options)
    for piece in chunked(data):
        yield request_type(**{data_field: piece})


async def serve(
    name: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    warm_up: Callable[[], Awaitable[None]] | None = None,
    host: str = "127.0.0.1",
    running: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> None:
    """Runs a gRPC server until SIGTERM/SIGINT, then drains it.

    Health reports NOT_SERVING until `warm_up` (model loading) has finished, then SERVING.
    `running()` is entered once the server serves and left before it stops (the orchestrator
    runs its web front end and its jobs inside it).
    """
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"{name}: cannot listen on {host}:{port}")

    async def set_status(status: int) -> None:
        for service in ["", *service_names]:
            await health_servicer.set(service, status)

    await set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info("%s listening on %s:%d", name, host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if warm_up is not None:
        await warm_up()
    async with running() if running is not None else contextlib.nullcontext():
        await set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info("%s ready", name)
        await stop.wait()
        log.info("%s shutting down", name)
        await set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace=5)
