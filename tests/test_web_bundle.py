"""The committed web page in orchestrator/static must be built from the current web/ sources.

Users without Node get the page from the Python package, so a change to web/src, the lockfile, the
build script or the protos without `make web` would ship a stale page. The hashing mirrors
web/build.mjs: sorted repo-relative paths, each file's sha256 with CRLF read as LF, then the sha256 of
"<hash>  <path>\\n" lines.
"""

import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
STATIC = ROOT / "orchestrator" / "static"
WEB_CONFIG = ("package.json", "package-lock.json", "build.mjs", "tsconfig.json")


def _files_under(folder: Path, skip: Path | None = None) -> list[Path]:
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path == skip:
            continue
        found.extend(_files_under(path, skip) if path.is_dir() else [path])
    return found


def _file_sha256(path: Path) -> str:
    # CRLF is read as LF so that a Windows checkout hashes the same.
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _input_hashes() -> dict[str, str]:
    paths = [
        *_files_under(WEB / "src", skip=WEB / "src" / "gen"),
        *(WEB / name for name in WEB_CONFIG),
        *(ROOT / "protos" / "roar" / "v1").glob("*.proto"),
    ]
    return {path.relative_to(ROOT).as_posix(): _file_sha256(path) for path in paths}


def _sources_sha256(hashes: dict[str, str]) -> str:
    lines = "".join(f"{hashes[path]}  {path}\n" for path in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_bundle_is_built_from_current_sources() -> None:
    build_info = json.loads((STATIC / "build-info.json").read_text())
    hashes = _input_hashes()
    built = build_info["inputs"]
    changed = sorted(path for path in hashes.keys() | built.keys() if hashes.get(path) != built.get(path))
    assert _sources_sha256(hashes) == build_info["sources_sha256"], (
        f"orchestrator/static is stale (changed since the last build: {', '.join(changed) or 'unknown'}); "
        "run `make web` and commit orchestrator/static"
    )


def test_index_references_existing_bundle() -> None:
    index = (STATIC / "index.html").read_text()
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', index)
    styles = re.findall(r'<link[^>]*\brel="stylesheet"[^>]*\bhref="([^"]+)"', index)
    assert scripts == ["app.js"]
    assert styles == ["app.css"]
    for name in [*scripts, *styles]:
        path = STATIC / name
        assert path.is_file(), f"orchestrator/static/{name} is missing; run `make web`"
        assert path.stat().st_size > 0, f"orchestrator/static/{name} is empty; run `make web`"
