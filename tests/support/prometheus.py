"""A real Prometheus server (Debian's `prometheus` package) for tests: unprivileged, in a temp dir,
on a free loopback port, scraping the targets listed in Prometheus file_sd files every second, and
queried over its HTTP API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import stop_process
from tests.support.suite import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
SCRAPE_INTERVAL_SECONDS = 1
START_TIMEOUT_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 5.0


class Prometheus:
    """`prometheus` scraping the file_sd target files `targets_files`; its config, database and log
    live under `root`."""

    def __init__(self, root: Path, targets_files: list[Path]) -> None:
        if not PROMETHEUS.exists():
            pytest.skip(f"needs {PROMETHEUS} (Debian package `prometheus`; the Makefile's system-deps)")
        self.root = root
        self.port = free_port()
        self.log_path = root / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            },
            "scrape_configs": [
                {"job_name": "roar", "file_sd_configs": [{"files": [str(f) for f in targets_files]}]}
            ],
        }
        # JSON is YAML: no YAML writer needed.
        self.config_path = root / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.root,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready after {START_TIMEOUT_SECONDS} s:\n{self.log()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=HTTP_TIMEOUT_SECONDS) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def query(self, promql: str) -> list[dict]:
        """The instant vector of `promql` now: [{"metric": {labels}, "value": [time, "number"]}]."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return body["data"]["result"]

    def wait_for(self, promql: str, check: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
        """Queries `promql` until `check` accepts its result (the scrape has caught up), at most
        `timeout` seconds; then fails showing the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if check(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql} gave {result} after {timeout} s")
            time.sleep(SCRAPE_INTERVAL_SECONDS / 2)

    def value(self, promql: str, expected: Callable[[float], bool], timeout: float = 30.0) -> float:
        """The one value of `promql` once `expected` accepts it (see wait_for)."""
        result = self.wait_for(promql, lambda r: len(r) == 1 and expected(float(r[0]["value"][1])), timeout)
        return float(result[0]["value"][1])


def scraped_value(url: str, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the metrics page at `url` (what Prometheus would scrape), None when absent."""
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None
