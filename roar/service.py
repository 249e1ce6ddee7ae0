"""What every Roar gRPC server shares: start-up with health checking and reflection, graceful
shutdown, errors as statuses, and files as streams of chunks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from roar import audio, metrics
from roar.channel_options import CHANNEL_OPTIONS
from roar.config import Settings
from roar.errors import RoarError, internal_message, is_disk_full
from roar.progress import StageRun
from roar.tls import server_credentials
from roar.v1 import common_pb2

CHUNK_BYTES = 1 << 20
# A stage input is held in memory up to this size while it arrives, on disk beyond.
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024
# How long a server that got SIGTERM lets running calls go on (new calls are refused at once).
STOP_GRACE_SECONDS = 5.0

log = logging.getLogger("roar")
T = TypeVar("T")


def is_serving(address: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    """Whether the gRPC server at address answers its health check with SERVING (over TLS when
    credentials are given)."""
    try:
        with (
            grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        ) as channel:
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
    await context.abort(grpc.StatusCode.INTERNAL, internal_message(error))


async def read_options_and_data(
    requests: AsyncIterable[Any],
    context: grpc.aio.ServicerContext,
    options_field: str,
    data_field: str,
) -> tuple[Any, bytes]:
    """Reads a stage call's request stream: options first, then the chunks of one file, which
    comes back as bytes.

    The file goes to a temporary file (in memory while small, on disk beyond), and the call is
    refused with RESOURCE_EXHAUSTED as soon as it passes the most an accepted song can take
    (from ROAR_MAX_AUDIO_MINUTES), so a refused request leaves nothing behind in memory."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        options = await _receive_file(requests, context, options_field, data_field, spool)
        spool.seek(0)
        return options, spool.read()


@contextlib.asynccontextmanager
async def options_and_file(
    requests: AsyncIterable[Any],
    context: grpc.aio.ServicerContext,
    options_field: str,
    data_field: str,
) -> AsyncIterator[tuple[Any, Path]]:
    """read_options_and_data for stages that read their input in pieces: the file is spooled to
    a temporary directory on disk, whose path the caller gets; both go when the block ends. Files
    the caller makes beside it go with them."""
    with tempfile.TemporaryDirectory(prefix="roar-input-") as directory:
        path = Path(directory) / "input"
        with path.open("wb") as spool:
            options = await _receive_file(requests, context, options_field, data_field, spool)
        yield options, path


async def _receive_file(
    requests: AsyncIterable[Any],
    context: grpc.aio.ServicerContext,
    options_field: str,
    data_field: str,
    spool: IO[bytes],
) -> Any:
    """Writes the file of a stage call's request stream to `spool`; returns its options."""
    limit = audio.max_encoded_bytes(audio.max_audio_seconds())
    options = None
    received = 0
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
            piece = getattr(request, data_field)
            received += len(piece)
            if received > limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the {data_field} file is larger than {limit} bytes, more than any song "
                    f"this service takes ({audio.LIMIT_SETTING})",
                )
            try:
                spool.write(piece)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the service's disk is full")
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a request holds neither options nor data")
    if options is None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no options were sent")
    if not received:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no {data_field} bytes were sent")
    return options


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


async def with_first(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """A request stream whose first message was already read (to check the options) made whole
    again, for a reader that wants the stream from its start."""
    yield first
    async for request in rest:
        yield request


async def file_request_stream(
    request_type: type, options: Any, data_field: str, path: Path, size: int = CHUNK_BYTES
) -> AsyncIterator[Any]:
    """request_stream for a file on disk: each chunk is read (off the event loop) only when gRPC
    asks for the next message, so a file of any length costs one chunk of memory."""
    yield request_type(options=options)
    with path.open("rb") as file:
        while piece := await asyncio.to_thread(file.read, size):
            yield request_type(**{data_field: piece})


class _Undecodable:
    """What a guarded request deserializer returns for bytes that are not a valid message (a
    string field holding invalid UTF-8, a truncated field): the method then answers
    INVALID_ARGUMENT instead of gRPC's UNKNOWN."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


async def _refuse_undecodable(request: Any, context: Any) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message ({request.error})"
        )


async def _checked_requests(requests: AsyncIterable[Any], context: Any) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse_undecodable(request, context)
        yield request


def _guarded(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler with a deserializer that never raises and behaviour that refuses what it
    could not parse. Stream responses must come from async generators (as in every servicer here)."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    changes: dict[str, Any] = {"request_deserializer": parse}
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def guarded_unary_unary(request: Any, context: Any) -> Any:
            await _refuse_undecodable(request, context)
            return await unary_unary(request, context)

        changes["unary_unary"] = guarded_unary_unary
    elif handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def guarded_unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await _refuse_undecodable(request, context)
            async for response in unary_stream(request, context):
                yield response

        changes["unary_stream"] = guarded_unary_stream
    elif handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def guarded_stream_unary(requests: AsyncIterable[Any], context: Any) -> Any:
            return await stream_unary(_checked_requests(requests, context), context)

        changes["stream_unary"] = guarded_stream_unary
    elif handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        async def guarded_stream_stream(requests: AsyncIterable[Any], context: Any) -> AsyncIterator[Any]:
            async for response in stream_stream(_checked_requests(requests, context), context):
                yield response

        changes["stream_stream"] = guarded_stream_stream
    return handler._replace(**changes)  # type: ignore[attr-defined]


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._guarded: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._guarded:
            handler = self._inner.service(handler_call_details)
            self._guarded[method] = None if handler is None else _guarded(handler)
        return self._guarded[method]


class RefusingUndecodable:
    """A server (gRPC or grpc-web) seen through this registers servicers whose methods answer
    INVALID_ARGUMENT to requests that do not parse; pass it to the generated add_*_to_server."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGenericHandler(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(service, {m: _guarded(h) for m, h in handlers.items()})


async def serve(
    name: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    warm_up: Callable[[], Awaitable[None]] | None = None,
    host: str = "127.0.0.1",
    running: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    stopping: asyncio.Event | None = None,
    grace: float = STOP_GRACE_SECONDS,
    metrics_port: int = 0,
) -> None:
    """Runs a gRPC server until SIGTERM/SIGINT, then drains it: health turns NOT_SERVING, new
    calls are refused, `stopping` is set (calls that work in steps watch it, finish their current
    step and end with UNAVAILABLE so that their caller resumes elsewhere) and running calls get
    `grace` seconds before they are cancelled.

    Health reports NOT_SERVING until `warm_up` (model loading) has finished, then SERVING.
    `running()` is entered once the server serves and left before it stops (the orchestrator
    runs its web front end and its jobs inside it). `interceptors` see every call first (the stage
    services' key check, roar.auth), after the one that counts calls (roar.metrics). `metrics_port`
    (0: none): where the process's metrics are served over HTTP, from start-up on.
    """
    metrics.export(name)
    server = grpc.aio.server(
        options=CHANNEL_OPTIONS, interceptors=[metrics.RequestMetrics(name), *interceptors]
    )
    register(RefusingUndecodable(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    settings = Settings.from_env()
    credentials = server_credentials(settings)
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise SystemExit(f"{name}: cannot listen on {host}:{port}")

    async def set_status(status: int) -> None:
        for service in ["", *service_names]:
            await health_servicer.set(service, status)

    await set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info("%s listening on %s:%d%s", name, host, bound, " (TLS)" if credentials else "")
    if metrics_port and metrics.serve_metrics(settings, host, metrics_port) is not None:
        scheme = "https" if credentials else "http"
        log.info("%s metrics on %s://%s:%d/metrics", name, scheme, host, metrics_port)
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
    if stopping is not None:
        stopping.set()
    await server.stop(grace=grace)
