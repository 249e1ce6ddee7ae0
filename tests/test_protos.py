"""The committed stubs in roar/v1 are exactly what `make protos` generates from protos/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roar.v1 import common_pb2, karaoke_pb2, orchestrator_pb2, separation_pb2, transcription_pb2

REPO = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_protos.py"), str(tmp_path)], check=True)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "roar" / "v1").glob("*_pb2*.py*")}
    committed = {p.name: p.read_bytes() for p in (REPO / "roar" / "v1").glob("*_pb2*.py*")}
    assert fresh, "the generator wrote nothing"
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"stubs differ from protos/: {stale}; run `make protos`"


def _buf() -> str | None:
    """The buf binary: on PATH, or the one `npm ci` puts in web/node_modules (a devDependency)."""
    local = REPO / "web" / "node_modules" / ".bin" / "buf"
    return shutil.which("buf") or (str(local) if local.exists() else None)


def test_buf_lint_is_clean() -> None:
    buf = _buf()
    if buf is None:
        pytest.skip("buf is not installed: `cd web && npm ci` brings it (@bufbuild/buf), or put buf on PATH")
    # buf.yaml at the repo root: STANDARD rules, each exception listed there with its reason.
    result = subprocess.run([buf, "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"buf lint:\n{result.stdout}{result.stderr}"


def test_every_proto_names_its_package_for_each_language() -> None:
    # protoc-gen-go refuses a file without go_package; the others fall back to names clash-prone in
    # their languages (Java's outer class, C#'s lower-case namespace). All files share one package.
    shared = (
        "csharp_namespace",
        "go_package",
        "java_package",
        "objc_class_prefix",
        "php_namespace",
        "ruby_package",
    )
    values = {}
    for stub in (common_pb2, karaoke_pb2, orchestrator_pb2, separation_pb2, transcription_pb2):
        options = stub.DESCRIPTOR.GetOptions()
        values[stub.DESCRIPTOR.name] = tuple(getattr(options, name) for name in shared)
        assert all(values[stub.DESCRIPTOR.name]), f"{stub.DESCRIPTOR.name}: {options}"
        assert options.java_multiple_files and options.java_outer_classname.endswith("Proto")
    assert len(set(values.values())) == 1, values
    assert orchestrator_pb2.DESCRIPTOR.GetOptions().go_package.endswith("/roar/v1;roarv1")
