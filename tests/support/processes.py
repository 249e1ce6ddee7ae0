"""Stopping the server processes tests and benchmarks start."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, grace: float = 30.0) -> int:
    """SIGTERM, then SIGKILL when it has not exited within `grace` seconds; its exit code."""
    process.terminate()
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
