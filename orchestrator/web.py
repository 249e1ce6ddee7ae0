"""The browser front end: the web page, the Orchestrator service over grpc-web (sonora) and the
job files over HTTP (orchestrator/files_http.py), served from one origin, so no proxy is needed,
behind a guard against strangers' pages: Host check (DNS rebinding), origin allow-list with CORS
preflights, grpc-web content types only (CSRF)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import uvicorn
from google.protobuf.message import DecodeError
from sonora import protocol
from sonora.asgi import grpcASGI
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from orchestrator.files_http import is_files_path
from roar.channel_options import CHANNEL_OPTIONS
from roar.config import Settings
from roar.errors import internal_message
from roar.metrics import metrics_app
from roar.tls import web_ssl_options

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("roar.web")
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
    trailer status (upstream #69) instead of breaking the response. Its answers name the codec
    they are in as their Content-Type: sonora echoes the request's Accept header instead (any
    text a caller sends, "*/*" from curl)."""

    def _create_context(self, scope: Scope) -> Any:
        context = super()._create_context(scope)
        content_type = Headers(scope=scope).get("content-type", "")
        context._response_headers = [
            (b"Content-Type", response_content_type(content_type).encode("ascii")),
            *(h for h in context._response_headers if h[0].lower() != b"content-type"),
        ]
        return context

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
        log.exception("unexpected error in a grpc-web stream", exc_info=exc)
        context.set_code(grpc.StatusCode.INTERNAL)
        context.set_details(internal_message(exc))


# --- end of workarounds ---


def web_app() -> GrpcWebApp:
    """grpc-web for registered services, the static page for everything else."""
    page = Starlette(routes=[Mount("/", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False))])
    return GrpcWebApp(page, enable_cors=False)


# Browsers send text/plain, form and multipart POSTs to any site without asking first; the grpc-web
# types need a CORS preflight, which a foreign origin fails. These are the ones sonora reads right.
GRPC_WEB_TEXT = "application/grpc-web-text"
GRPC_WEB_PROTO = "application/grpc-web+proto"
GRPC_WEB_CONTENT_TYPES = frozenset({"application/grpc-web", GRPC_WEB_PROTO, GRPC_WEB_TEXT})
# grpc-web's JSON codec: answered UNIMPLEMENTED (a grpc-web status the client can read), the
# protobuf codec being the one served.
GRPC_WEB_JSON_CONTENT_TYPES = frozenset({"application/grpc-web+json", "application/grpc-web-text+json"})
JSON_CODEC_REFUSAL = (
    f"the JSON codec is not supported: send binary protobuf messages as {GRPC_WEB_PROTO} "
    f"(or base64 as {GRPC_WEB_TEXT})"
)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = {"http": 80, "https": 443}
CORS_ALLOW_HEADERS = b"content-type, x-grpc-web, x-user-agent, authorization, grpc-timeout"
CORS_EXPOSE_HEADERS = b"grpc-status, grpc-message"
PREFLIGHT_MAX_AGE_SECONDS = b"600"
FRAME_HEADER_BYTES = 5
# A request body holds one message of at most the gRPC port's size, base64 in grpc-web-text.
MAX_BODY_BYTES = dict(CHANNEL_OPTIONS)["grpc.max_receive_message_length"] * 4 // 3 + 2 * FRAME_HEADER_BYTES
# The gRPC wire format of a timeout: at most 8 digits and a unit.
GRPC_TIMEOUT = re.compile(rb"[0-9]{1,8}[HMSmun]")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def _split_host(host: str) -> tuple[str, str]:
    """(name, port) of a Host header or allow-list entry; port is "" when absent."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":")
    name, _, port = host.partition(":")
    return name, port


def allowed_host_entries(
    configured: tuple[str, ...], listening_host: str
) -> tuple[frozenset[str], frozenset[str]]:
    """The (names, name:port pairs) the web port answers to: an entry without a port allows the
    name on any port. Unconfigured: the loopback names and the listening host."""
    entries = list(configured)
    if not entries:
        wildcard = listening_host in ("", "0.0.0.0", "::")
        listening = f"[{listening_host}]" if ":" in listening_host else listening_host
        entries = [*LOOPBACK_HOSTS, *([] if wildcard else [listening])]
    names, pairs = set(), set()
    for entry in entries:
        name, port = _split_host(entry)
        if port:
            pairs.add(f"{name}:{port}")
        else:
            names.add(name)
    return frozenset(names), frozenset(pairs)


def _origin(value: str) -> str:
    """An origin as browsers serialise it: lower case, no default port, no trailing slash."""
    scheme, _, host = value.strip().rstrip("/").lower().partition("://")
    name, port = _split_host(host)
    if port.isdigit() and DEFAULT_PORTS.get(scheme) == int(port):
        port = ""
    return f"{scheme}://{name}{':' + port if port else ''}"


class WebGuard:
    """ASGI middleware in front of the page and grpc-web. Nothing behind it runs for a request to a
    Host name it does not serve, from a foreign page's Origin, or POSTed with a non-grpc-web content
    type; allowed origins get CORS answers. grpc-web requests with malformed metadata or bodies, or
    bodies over MAX_BODY_BYTES, get a grpc-web status, never an HTTP 500."""

    def __init__(
        self,
        app: Asgi,
        hosts: tuple[frozenset[str], frozenset[str]],
        origins: tuple[str, ...],
        files: Asgi | None = None,
    ) -> None:
        self._app = app
        self._files = files
        self._host_names, self._host_pairs = hosts
        self._origins = frozenset(_origin(o) for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # No websockets here; lifespan is off.
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not host:
            await _plain(send, 400, b"a Host header is required")
            return
        name, port = _split_host(host)
        if name not in self._host_names and f"{name}:{port}" not in self._host_pairs:
            await _plain(send, 421, b"this server does not answer to that Host name")
            return
        origin = headers.get("origin")
        cross_origin = origin is not None and _origin(origin) != _origin(f"{scope['scheme']}://{host}")
        if cross_origin and _origin(origin) not in self._origins:
            await _plain(send, 403, b"requests from this origin are not allowed")
            return
        if self._files is not None and is_files_path(scope["path"]):
            # Job files and the key cookie are for this server's own page: no CORS, even for listed
            # origins (another site's page reads files through grpc-web with its own key).
            if cross_origin:
                await _plain(send, 403, b"job files are served to this server's own page only")
            else:
                await self._files(scope, receive, send)
            return
        cors = (
            [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", CORS_EXPOSE_HEADERS),
                (b"vary", b"Origin"),
            ]
            if cross_origin
            else []
        )
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            preflight = [
                (b"access-control-allow-methods", b"POST"),
                (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE_SECONDS),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": [*cors, *preflight]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] != "POST":
            await self._app(scope, receive, _with_headers(send, cors) if cors else send)
            return
        content_type = headers.get("content-type", "").strip()
        if _media_type(content_type) in GRPC_WEB_JSON_CONTENT_TYPES:
            # A content type browsers preflight, like the accepted ones: no CSRF path.
            await _grpc_web_error(send, grpc.StatusCode.UNIMPLEMENTED, JSON_CODEC_REFUSAL, cors, content_type)
            return
        if content_type not in GRPC_WEB_CONTENT_TYPES:
            await _plain(send, 415, b"grpc-web requests only (application/grpc-web+proto)")
            return
        try:
            scope = {**scope, "headers": _checked_metadata(scope["headers"])}
            body = await _whole_body(receive, headers)
            _check_frames(_decoded(body, content_type))
        except Refused as refusal:
            await _grpc_web_error(send, refusal.code, str(refusal), cors, content_type)
            return
        await self._call_grpc(scope, _replay(body, receive), send, cors)

    async def _call_grpc(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        started = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except DecodeError:
            # sonora parses the request outside its error handling (an HTTP 500).
            if started:
                raise
            message = "the request is not a valid message for this method"
            content_type = Headers(scope=scope).get("content-type", "")
            await _grpc_web_error(send, grpc.StatusCode.INVALID_ARGUMENT, message, cors, content_type)


class Refused(Exception):
    """A grpc-web request answered with a status before anything behind the guard runs."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


async def _whole_body(receive: Receive, headers: Headers) -> bytes:
    """The request body, up to MAX_BODY_BYTES. sonora would buffer any size, and it decodes
    grpc-web-text piece by piece, which fails where a piece is not whole base64."""
    too_large = Refused(
        f"the request is larger than {MAX_BODY_BYTES} bytes", grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Refused("the client went away", grpc.StatusCode.CANCELLED)
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise too_large
        if not message.get("more_body"):
            return bytes(body)


def _decoded(body: bytes, content_type: str) -> bytes:
    if content_type != GRPC_WEB_TEXT:
        return body
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise Refused("the body is not base64") from None


def _check_frames(body: bytes) -> None:
    """Refuses a body that is not whole uncompressed grpc-web message frames (sonora would run
    the method with an empty request for a truncated one)."""
    while body:
        if len(body) < FRAME_HEADER_BYTES:
            raise Refused("the body ends inside a frame header")
        flags, length = struct.unpack(">BI", body[:FRAME_HEADER_BYTES])
        if flags:
            raise Refused("only uncompressed message frames are accepted")
        if len(body) < FRAME_HEADER_BYTES + length:
            raise Refused("the body ends inside a message")
        body = body[FRAME_HEADER_BYTES + length :]


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body again in one piece; after it, the client's own events (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receiving() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return receiving


def _checked_metadata(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers as sonora can read them (ASCII, valid base64 in -bin values, padded as it needs,
    a well-formed grpc-timeout), or Refused saying which one is not."""
    checked = []
    for key, value in headers:
        name = key.decode("latin-1")
        if not value.isascii():
            raise Refused(f"metadata {name!r} is not ASCII")
        if key.endswith(b"-bin"):
            # gRPC allows unpadded base64; sonora's decoder needs the padding.
            value = value.strip() + b"=" * (-len(value.strip()) % 4)
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:
                raise Refused(f"metadata {name!r} is not base64") from None
        elif key == b"grpc-timeout" and not GRPC_TIMEOUT.fullmatch(value):
            raise Refused("grpc-timeout is malformed")
        checked.append((key, value))
    return checked


async def _plain(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _media_type(content_type: str) -> str:
    """A Content-Type without its parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


def response_content_type(request_content_type: str) -> str:
    """The Content-Type of a grpc-web answer to a request of this type: base64 frames answer
    base64 (grpc-web-text), everything else binary protobuf frames."""
    return GRPC_WEB_TEXT if _media_type(request_content_type).startswith(GRPC_WEB_TEXT) else GRPC_WEB_PROTO


async def _grpc_web_error(
    send: Send,
    code: grpc.StatusCode,
    message: str,
    headers: list[tuple[bytes, bytes]],
    request_content_type: str,
) -> None:
    """A trailers-only grpc-web answer: the status in the HTTP headers, no body."""
    status = [
        (b"content-type", response_content_type(request_content_type).encode("ascii")),
        (b"grpc-status", str(code.value[0]).encode()),
        (b"grpc-message", quote(message).encode("ascii")),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": [*status, *headers]})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


# The operator's endpoints (Kubernetes probes, Prometheus): the process runs; it takes jobs; its metrics.
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
PROBE_METHODS = ("GET", "HEAD")


class Probes:
    """ASGI middleware answering /healthz (200 while the process runs), /readyz (200 when `ready()`
    says it takes jobs, else 503) and /metrics (Prometheus' text format) before WebGuard, whose
    Host check would refuse them: probes and scrapers address a pod by its IP. They only read, run
    nothing a caller chooses, and show counts, never jobs, files or keys."""

    def __init__(self, app: Asgi, ready: Callable[[], Awaitable[bool]]) -> None:
        self._app = app
        self._ready = ready
        self._metrics = metrics_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (HEALTH_PATH, READY_PATH, METRICS_PATH):
            await self._app(scope, receive, send)
        elif scope["method"] not in PROBE_METHODS:
            await _plain(send, 405, b"GET only", [(b"allow", ", ".join(PROBE_METHODS).encode())])
        elif path == METRICS_PATH:
            await self._metrics(scope, receive, send)
        elif path == HEALTH_PATH:
            await _plain(send, 200, b"ok\n")
        elif await self._ready():
            await _plain(send, 200, b"ready\n")
        else:
            await _plain(send, 503, b"not ready: starting, stopping, or its store does not answer\n")


class _QuietServer(uvicorn.Server):
    # The gRPC server owns SIGTERM/SIGINT; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def web_server(
    app: GrpcWebApp,
    host: str,
    port: int,
    settings: Settings,
    ready: Callable[[], Awaitable[bool]],
    files: Asgi | None = None,
) -> uvicorn.Server:
    """The web port: the page, grpc-web and the job files over HTTP (`files`, see
    orchestrator/files_http.py) behind WebGuard, and the Probes (readiness from `ready`), over TLS
    when settings name a certificate."""
    hosts = allowed_host_entries(settings.allowed_hosts, host)
    guarded = WebGuard(app, hosts, settings.cors_origins, files)
    # Open grpc-web streams (browsers watching jobs) must not hold up a shutdown.
    config = uvicorn.Config(
        Probes(guarded, ready),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
        **web_ssl_options(settings),
    )
    return _QuietServer(config)
