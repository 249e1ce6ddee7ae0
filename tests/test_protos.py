"""The committed stubs in roar/v1 are exactly what `make protos` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_protos.py"), str(tmp_path)], check=True)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "roar" / "v1").glob("*_pb2*.py*")}
    committed = {p.name: p.read_bytes() for p in (REPO / "roar" / "v1").glob("*_pb2*.py*")}
    assert fresh, "the generator wrote nothing"
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"stubs differ from protos/: {stale}; run `make protos`"
