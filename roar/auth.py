"""Who may call: the ROAR_AUTH decision every server makes from where it listens, Bearer keys in
call metadata, and the stage key that guards the stage services.

gRPC and grpc-web (sonora) both hand a servicer its request headers as (name, value) pairs from
`context.invocation_metadata()`, lower-case names, so one reader serves both.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from roar.config import Settings

AUTH_MODES = ("auto", "on", "off")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})
# Shorter configured secrets (ROAR_ADMIN_KEY, ROAR_STAGE_KEY) are refused: they could be guessed.
MIN_SECRET_CHARS = 16
# Orchestrators and load balancers must reach health checks without a key.
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"

log = logging.getLogger("roar")


class KeyPolicy(enum.Enum):
    OFF = "off"  # keys are ignored: every caller is the same anonymous one
    OPTIONAL = "optional"  # no key needed, but a key that is sent must be good
    REQUIRED = "required"


def is_loopback(host: str) -> bool:
    return host.strip().lower() in LOOPBACK_HOSTS


def key_policy(settings: Settings, service: str, host: str) -> KeyPolicy:
    """The one place ROAR_AUTH is read: "auto" requires keys beyond loopback only, "on" always,
    "off" never (with a loud warning beyond loopback). Exits with a message on a bad setting."""
    if settings.auth not in AUTH_MODES:
        raise SystemExit(
            f"{service}: ROAR_AUTH must be one of {', '.join(AUTH_MODES)}, got {settings.auth!r}"
        )
    for name, secret in (("ROAR_ADMIN_KEY", settings.admin_key), ("ROAR_STAGE_KEY", settings.stage_key)):
        if secret and len(secret) < MIN_SECRET_CHARS:
            raise SystemExit(
                f"{service}: {name} is too short ({len(secret)} characters, at least {MIN_SECRET_CHARS}): "
                "use a random one, e.g. `openssl rand -hex 32`"
            )
    if settings.auth == "off":
        if not is_loopback(host):
            log.warning(
                "%s: ROAR_AUTH=off while listening on %s: ANYONE WHO CAN REACH THIS PORT can use it, "
                "see and cancel every job. Use ROAR_AUTH=auto with keys unless a trusted proxy checks "
                "callers.",
                service,
                host,
            )
        return KeyPolicy.OFF
    if settings.auth == "on" or not is_loopback(host):
        return KeyPolicy.REQUIRED
    return KeyPolicy.OPTIONAL


def bearer_key(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The key of an `authorization: Bearer <key>` header: None when there is no such header, ""
    when there is one that holds no Bearer key (a bad key, not a missing one)."""
    for name, value in metadata or ():
        if name.lower() == "authorization":
            scheme, _, key = str(value).strip().partition(" ")
            return key.strip() if scheme.lower() == "bearer" else ""
    return None


def same_secret(given: str, expected: str) -> bool:
    """Compares in constant time, so response times do not reveal how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `key` (empty when there is no key)."""
    return (("authorization", f"Bearer {key}"),) if key else ()


# --- the stage services ---


def stage_interceptors(settings: Settings, service: str, host: str) -> list[grpc.aio.ServerInterceptor]:
    """What guards a stage service: the stage key whenever one is set (ROAR_AUTH=off aside).
    Without one it refuses to start where keys are required, unless mutual TLS checks callers."""
    policy = key_policy(settings, service, host)
    if policy is KeyPolicy.OFF:
        return []
    if settings.stage_key:
        return [StageKeyInterceptor(settings.stage_key)]
    if policy is KeyPolicy.REQUIRED and not settings.tls_client_ca:
        raise SystemExit(
            f"{service}: listening on {host} needs a stage key: set ROAR_STAGE_KEY here and the same on "
            "the orchestrator (or configure mutual TLS with ROAR_TLS_CLIENT_CA, or set ROAR_AUTH=off "
            "if something else keeps strangers out)"
        )
    return []


class StageKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call but health checks that does not present the stage key."""

    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        given = bearer_key(details.invocation_metadata)
        if given and same_secret(given, self._key):
            return handler
        return _refusing(handler, "missing or wrong stage key (ROAR_STAGE_KEY must match the orchestrator's)")


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED, unread."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
