"""The browser front end: the web page and the Orchestrator service over grpc-web (sonora),
served from one origin, so no proxy and no CORS are needed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from sonora import protocol
from sonora.asgi import grpcASGI
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
_EMPTY = object()


# --- Workarounds for sonora 0.2.3's known bugs (see ../shared/README.md), all in this place. ---

_pack_trailers = protocol.pack_trailers


def _pack_text_trailers(trailers: list[tuple[Any, Any]]) -> bytes:
    # Unary responses pass bytes keys and values, which sonora formats as "b'grpc-status': b'0'"
    # (upstream #67/#68); browsers reject that trailer. Decode them first.
    return _pack_trailers([(_text(k), _text(v)) for k, v in trailers])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


protocol.pack_trailers = _pack_text_trailers


class GrpcWebApp(grpcASGI):
    """sonora's ASGI app, fixed for streams: an empty stream gets a trailers-only response
    instead of a crash, and an abort after the first message reaches the client as the
    trailer status (upstream #69) instead of breaking the response."""

    async def _do_streaming_response(self, rpc_method, receive, send, wrap_message, context, coroutine):
        first = await anext(coroutine, _EMPTY) if coroutine is not None else _EMPTY
        if first is _EMPTY:
            await self._do_grpc_error(send, context)
            return
        await super()._do_streaming_response(
            rpc_method, receive, send, wrap_message, context, _after_first(first, coroutine, context)
        )


async def _after_first(first: Any, rest: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    yield first
    try:
        async for message in rest:
            yield message
    except grpc.RpcError:
        pass  # context.abort() set the code and details; sonora sends them as trailers
    except Exception as exc:
        context.set_code(grpc.StatusCode.INTERNAL)
        context.set_details(f"internal error: {exc}")


# --- end of workarounds ---


def web_app() -> GrpcWebApp:
    """grpc-web for registered services, the static page for everything else."""
    page = Starlette(routes=[Mount("/", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False))])
    return GrpcWebApp(page, enable_cors=False)


class _QuietServer(uvicorn.Server):
    # The gRPC server owns SIGTERM/SIGINT; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def web_server(app: GrpcWebApp, host: str, port: int) -> uvicorn.Server:
    # Open grpc-web streams (browsers watching jobs) must not hold up a shutdown.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
    )
    return _QuietServer(config)
