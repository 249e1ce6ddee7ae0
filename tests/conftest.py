"""Shared fixtures: tiny models of the real architectures built at test time, and a running suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.suite import Suite

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# No test may reach the network, and model hubs must fail fast rather than retry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (real weights/audio from ../shared, absent in a plain clone)")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """ROAR_* model settings pointing at small random HTDemucs and Whisper models. The servers offer
    each under two names (the defaults "tiny" and "whisper", derived from their sources, and
    "tiny-again" / "whisper-again"), and "broken" for a listed model whose files are missing."""
    from tests.support.tiny_demucs import build_tiny_demucs
    from tests.support.tiny_whisper import build_tiny_whisper

    root = tmp_path_factory.mktemp("models")
    demucs = build_tiny_demucs(root / "demucs")
    whisper = build_tiny_whisper(root / "whisper")
    return {
        "ROAR_SEPARATION_MODEL": demucs,
        "ROAR_SEPARATION_MODELS": f"tiny-again={demucs},broken=broken@{root / 'absent'}",
        "ROAR_TRANSCRIPTION_MODEL": str(whisper),
        "ROAR_TRANSCRIPTION_MODELS": f"whisper-again={whisper},broken={root / 'absent'}",
    }


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Suite]:
    """The whole suite via `roar up`, shared by the tests of a session."""
    root = tmp_path_factory.mktemp("suite")
    running = Suite(root / "data", tiny_models, root / "roar-up.log")
    running.start()
    yield running
    running.stop()


# The keyed suite's ROAR_ADMIN_KEY.
KEYED_ADMIN_KEY = "browser-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_suite(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Suite]:
    """A suite whose every call needs an API key (ROAR_AUTH=on)."""
    root = tmp_path_factory.mktemp("keyed")
    env = {**tiny_models, "ROAR_AUTH": "on", "ROAR_ADMIN_KEY": KEYED_ADMIN_KEY}
    running = Suite(root / "data", env, root / "roar-up.log")
    running.start()
    yield running
    running.stop()
