"""Settings shared by the CLI and every service, read from ROAR_* environment variables.

`roar up` turns its flags into these variables for the processes it starts, so one name means
one setting everywhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    value = _env(name, str(default))
    try:
        return int(value)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from exc


def _env_float(name: str, default: float) -> float:
    value = _env(name, str(default))
    try:
        number = float(value)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number < 0:
        raise SystemExit(f"{name} must be a finite number, 0 or more, got {value!r}")
    return number


def _env_positive(name: str, default: float) -> float:
    number = _env_float(name, default)
    if number == 0:
        raise SystemExit(f"{name} must be more than 0")
    return number


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated setting as a tuple of its non-empty items."""
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


# ROAR_DATABASE_URL schemes that mean PostgreSQL.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _database_url() -> str:
    url = _env("ROAR_DATABASE_URL", "")
    if url and not url.startswith(POSTGRES_SCHEMES):
        # Never echo the value: it may hold a password.
        raise SystemExit("ROAR_DATABASE_URL must be a postgresql:// URL (unset: the embedded SQLite store)")
    return url


def port_of(address: str) -> int:
    """The port of a "host:port" address."""
    return int(address.rsplit(":", 1)[1])


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "roar"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    separation_model: str = "htdemucs"
    transcription_model: str = "openai/whisper-small"
    orchestrator_port: int = 50051
    web_port: int = 8080
    separation_addr: str = "127.0.0.1:50052"
    transcription_addr: str = "127.0.0.1:50053"
    karaoke_addr: str = "127.0.0.1:50054"
    # A stage service's HTTP port for Prometheus' /metrics (0: none). The orchestrator serves
    # /metrics on its web port instead; `roar up` gives each stage it starts a free port.
    metrics_port: int = 0
    # "auto" picks CUDA when present, else CPU.
    device: str = "auto"
    # CPU threads for torch in each model service; 0: all cores.
    torch_threads: int = 0
    # Jobs the orchestrator runs at once; more wait in its queue, up to max_queued_jobs.
    max_running_jobs: int = 2
    max_queued_jobs: int = 64
    max_upload_bytes: int = 1024 * 1024 * 1024
    # Seconds a job may take before it fails with DEADLINE_EXCEEDED.
    job_timeout_seconds: int = 3 * 3600

    # Models offered to clients: "name=source" entries (ROAR_SEPARATION_MODELS,
    # ROAR_TRANSCRIPTION_MODELS). A request names one of them or the default; never a path.
    separation_models: tuple[str, ...] = ()
    transcription_models: tuple[str, ...] = ()

    # API keys: "auto" requires them when the orchestrator listens beyond loopback, "on" always,
    # "off" never (beyond loopback only when set explicitly).
    auth: str = "auto"
    # A key accepted as admin without being in the store (a Kubernetes Secret).
    admin_key: str = ""
    # The shared secret the orchestrator presents to the stage services, and they require.
    stage_key: str = ""
    # This process's TLS certificate and key (PEM files): TLS on every port it serves.
    tls_cert: str = ""
    tls_key: str = ""
    # When set, servers require client certificates signed by this CA (mutual TLS).
    tls_client_ca: str = ""
    # The orchestrator's side of its calls to the stages: the CA that signed the stages'
    # certificates (TLS to the stages when set), and its own client certificate for mutual TLS.
    stage_tls_ca: str = ""
    stage_tls_cert: str = ""
    stage_tls_key: str = ""
    # grpc-web: origins other than the page's own that may call (empty: same origin only), and
    # the Host names the web port answers to (empty: loopback names and the listening host).
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    # Clients (the CLI): the key to send and the CA that signed the orchestrator's certificate.
    api_key: str = ""
    tls_ca: str = ""

    # Longest song accepted, checked at FinishUpload and again when decoding.
    max_audio_minutes: float = 120.0
    # Unfinished uploads are deleted after this many hours; finished jobs' files after this many
    # days (0: kept).
    upload_ttl_hours: float = 24.0
    retention_days: float = 0.0
    # How long the orchestrator keeps retrying a stage call that broke (a crashed or restarting
    # replica) before the stage fails.
    stage_retry_seconds: float = 60.0
    # The job store: empty, the embedded SQLite file in data_dir (one orchestrator); a
    # postgresql:// URL, a PostgreSQL database several orchestrators share (with one data_dir on
    # storage they all reach). A job is run by the orchestrator holding its lease, renewed every
    # third of lease_seconds; another takes the job over once it expires.
    database_url: str = ""
    lease_seconds: float = 15.0

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            data_dir=Path(_env("ROAR_DATA_DIR", str(d.data_dir))).expanduser(),
            separation_model=_env("ROAR_SEPARATION_MODEL", d.separation_model),
            transcription_model=_env("ROAR_TRANSCRIPTION_MODEL", d.transcription_model),
            orchestrator_port=_env_int("ROAR_PORT", d.orchestrator_port),
            web_port=_env_int("ROAR_WEB_PORT", d.web_port),
            separation_addr=_env("ROAR_SEPARATION_ADDR", d.separation_addr),
            transcription_addr=_env("ROAR_TRANSCRIPTION_ADDR", d.transcription_addr),
            karaoke_addr=_env("ROAR_KARAOKE_ADDR", d.karaoke_addr),
            metrics_port=_env_int("ROAR_METRICS_PORT", d.metrics_port),
            device=_env("ROAR_DEVICE", d.device),
            torch_threads=_env_int("ROAR_TORCH_THREADS", d.torch_threads),
            max_running_jobs=_env_int("ROAR_MAX_RUNNING_JOBS", d.max_running_jobs),
            max_queued_jobs=_env_int("ROAR_MAX_QUEUED_JOBS", d.max_queued_jobs),
            max_upload_bytes=_env_int("ROAR_MAX_UPLOAD_MB", d.max_upload_bytes // 2**20) * 2**20,
            job_timeout_seconds=_env_int("ROAR_JOB_TIMEOUT", d.job_timeout_seconds),
            separation_models=_env_list("ROAR_SEPARATION_MODELS"),
            transcription_models=_env_list("ROAR_TRANSCRIPTION_MODELS"),
            auth=_env("ROAR_AUTH", d.auth).lower(),
            admin_key=_env("ROAR_ADMIN_KEY", d.admin_key),
            stage_key=_env("ROAR_STAGE_KEY", d.stage_key),
            tls_cert=_env("ROAR_TLS_CERT", d.tls_cert),
            tls_key=_env("ROAR_TLS_KEY", d.tls_key),
            tls_client_ca=_env("ROAR_TLS_CLIENT_CA", d.tls_client_ca),
            stage_tls_ca=_env("ROAR_STAGE_TLS_CA", d.stage_tls_ca),
            stage_tls_cert=_env("ROAR_STAGE_TLS_CERT", d.stage_tls_cert),
            stage_tls_key=_env("ROAR_STAGE_TLS_KEY", d.stage_tls_key),
            cors_origins=_env_list("ROAR_CORS_ORIGINS"),
            allowed_hosts=_env_list("ROAR_ALLOWED_HOSTS"),
            api_key=_env("ROAR_API_KEY", d.api_key),
            tls_ca=_env("ROAR_TLS_CA", d.tls_ca),
            max_audio_minutes=_env_float("ROAR_MAX_AUDIO_MINUTES", d.max_audio_minutes),
            upload_ttl_hours=_env_float("ROAR_UPLOAD_TTL_HOURS", d.upload_ttl_hours),
            retention_days=_env_float("ROAR_RETENTION_DAYS", d.retention_days),
            stage_retry_seconds=_env_float("ROAR_STAGE_RETRY_SECONDS", d.stage_retry_seconds),
            database_url=_database_url(),
            lease_seconds=_env_positive("ROAR_LEASE_SECONDS", d.lease_seconds),
        )


def torch_device(settings: Settings) -> str:
    """The torch device for model services, configuring CPU threads as a side effect."""
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device
