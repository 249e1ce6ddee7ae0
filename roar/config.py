"""Settings shared by the CLI and every service, read from ROAR_* environment variables.

`roar up` turns its flags into these variables for the processes it starts, so one name means
one setting everywhere.
"""

from __future__ import annotations

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
            device=_env("ROAR_DEVICE", d.device),
            torch_threads=_env_int("ROAR_TORCH_THREADS", d.torch_threads),
            max_running_jobs=_env_int("ROAR_MAX_RUNNING_JOBS", d.max_running_jobs),
            max_queued_jobs=_env_int("ROAR_MAX_QUEUED_JOBS", d.max_queued_jobs),
            max_upload_bytes=_env_int("ROAR_MAX_UPLOAD_MB", d.max_upload_bytes // 2**20) * 2**20,
            job_timeout_seconds=_env_int("ROAR_JOB_TIMEOUT", d.job_timeout_seconds),
        )


def torch_device(settings: Settings) -> str:
    """The torch device for model services, configuring CPU threads as a side effect."""
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device
