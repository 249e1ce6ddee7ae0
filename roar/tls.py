"""TLS credentials from the PEM files the settings name, built in one place: a missing, unreadable
or mismatched file stops start-up with a message naming the setting, not a trace."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from roar.config import Settings


def read_pem(path: str, setting: str) -> bytes:
    """The bytes of a PEM file, or SystemExit naming the setting that points at it."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SystemExit(f"{setting}={path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise SystemExit(f"{setting}={path} is not a PEM file")
    return data


def _check_ca(path: str, setting: str) -> bytes:
    data = read_pem(path, setting)
    try:
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise SystemExit(f"{setting}={path} holds no usable CA certificate ({exc})") from None
    return data


def _key_pair(
    cert_path: str, key_path: str, cert_setting: str, key_setting: str
) -> tuple[bytes, bytes] | None:
    """(key, cert) from two settings that go together, None when neither is set."""
    if not cert_path and not key_path:
        return None
    if not key_path:
        raise SystemExit(f"{cert_setting} is set but {key_setting} is not: the certificate needs its key")
    if not cert_path:
        raise SystemExit(f"{key_setting} is set but {cert_setting} is not: the key needs its certificate")
    cert, key = read_pem(cert_path, cert_setting), read_pem(key_path, key_setting)
    try:
        # An encrypted key gets an empty password (and fails) instead of a prompt on the terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path, password=lambda: b"")
    except ssl.SSLError as exc:
        raise SystemExit(
            f"{cert_setting}={cert_path} and {key_setting}={key_path} are not a certificate and its "
            f"unencrypted key ({exc.reason})"
        ) from None
    return key, cert


def _server_pair(settings: Settings) -> tuple[bytes, bytes] | None:
    pair = _key_pair(settings.tls_cert, settings.tls_key, "ROAR_TLS_CERT", "ROAR_TLS_KEY")
    if settings.tls_client_ca and pair is None:
        raise SystemExit(
            "ROAR_TLS_CLIENT_CA needs ROAR_TLS_CERT and ROAR_TLS_KEY: client certificates need TLS"
        )
    return pair


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for a gRPC server (mutual when tls_client_ca is set); None for plaintext."""
    pair = _server_pair(settings)
    if pair is None:
        return None
    client_ca = _check_ca(settings.tls_client_ca, "ROAR_TLS_CLIENT_CA") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=bool(client_ca)
    )


def web_ssl_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config arguments for TLS on the web port, the same files as the gRPC port's."""
    if _server_pair(settings) is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    if settings.tls_client_ca:
        _check_ca(settings.tls_client_ca, "ROAR_TLS_CLIENT_CA")
        options |= {"ssl_ca_certs": settings.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def channel_credentials(
    ca: str, ca_setting: str, cert: str = "", key: str = "", cert_setting: str = "", key_setting: str = ""
) -> grpc.ChannelCredentials:
    """TLS for a channel that verifies the server against the CA in the file `ca`, presenting the
    client certificate `cert`/`key` when given (mutual TLS)."""
    pair = _key_pair(cert, key, cert_setting, key_setting)
    return grpc.ssl_channel_credentials(
        root_certificates=_check_ca(ca, ca_setting),
        private_key=pair[0] if pair else None,
        certificate_chain=pair[1] if pair else None,
    )


def stage_channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """The orchestrator's TLS to the stages: None (plaintext) unless stage_tls_ca is set."""
    if not settings.stage_tls_ca:
        if settings.stage_tls_cert or settings.stage_tls_key:
            raise SystemExit("ROAR_STAGE_TLS_CERT/KEY need ROAR_STAGE_TLS_CA: client certificates need TLS")
        return None
    return channel_credentials(
        settings.stage_tls_ca,
        "ROAR_STAGE_TLS_CA",
        settings.stage_tls_cert,
        settings.stage_tls_key,
        "ROAR_STAGE_TLS_CERT",
        "ROAR_STAGE_TLS_KEY",
    )


def suite_credentials(settings: Settings, starts_stages: bool) -> grpc.ChannelCredentials | None:
    """How `roar up` health-checks what it starts. Its processes share ROAR_TLS_CERT, so the CA
    and client certificate the orchestrator uses for the stages verify every one of them."""
    if _server_pair(settings) is None:
        return None
    if starts_stages and not settings.stage_tls_ca:
        raise SystemExit(
            "ROAR_TLS_CERT makes the stages started here serve TLS: set ROAR_STAGE_TLS_CA to the CA "
            "that signed it, so the orchestrator can verify them"
        )
    if settings.tls_client_ca and not settings.stage_tls_cert:
        raise SystemExit(
            "ROAR_TLS_CLIENT_CA makes every service require a client certificate: set "
            "ROAR_STAGE_TLS_CERT and ROAR_STAGE_TLS_KEY to one it signed"
        )
    ca, setting = (
        (settings.stage_tls_ca, "ROAR_STAGE_TLS_CA")
        if settings.stage_tls_ca
        else (settings.tls_ca, "ROAR_TLS_CA")
    )
    if not ca:
        raise SystemExit(
            "ROAR_TLS_CERT is set: set ROAR_TLS_CA to the CA that signed it, to check the services"
        )
    return channel_credentials(
        ca,
        setting,
        settings.stage_tls_cert,
        settings.stage_tls_key,
        "ROAR_STAGE_TLS_CERT",
        "ROAR_STAGE_TLS_KEY",
    )
