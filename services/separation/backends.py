"""Picks the separation backend a model source names."""

from __future__ import annotations

from pathlib import Path

from roar.errors import ModelUnavailable
from services.separation.demucs_backend import SOURCES_HINT, DemucsSeparator
from services.separation.separator import Separator

SPLEETER_FILES = ["vocals.safetensors", "accompaniment.safetensors"]


def load_separator(source: str, device: str) -> Separator:
    """A Spleeter dir (vocals.safetensors + accompaniment.safetensors), else a demucs model:
    "NAME" from the model hub or "NAME@DIR" from a local demucs repo. The source is the operator's
    (from the model catalog); messages never repeat it, as they reach clients."""
    source = source.strip()
    if not source:
        raise ModelUnavailable(f"its source is empty; {SOURCES_HINT}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not all((path / name).is_file() for name in SPLEETER_FILES):
            raise ModelUnavailable(
                f"its source is a directory without {' and '.join(SPLEETER_FILES)}, so not a Spleeter "
                f"model (a local demucs repo is given as NAME@DIR); {SOURCES_HINT}"
            )
        from services.separation.spleeter import SpleeterSeparator  # only Spleeter users pay its import

        separator: Separator = SpleeterSeparator(path, device)
    else:
        separator = DemucsSeparator(source, device)
    if "vocals" not in separator.sources:
        raise ModelUnavailable(
            f"it has no vocals source ({', '.join(separator.sources)}), so it cannot make karaoke"
        )
    return separator
