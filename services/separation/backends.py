"""Picks the separation backend a model string names."""

from __future__ import annotations

from pathlib import Path

from roar.errors import ModelUnavailable
from services.separation.demucs_backend import SETTING_HINT, DemucsSeparator
from services.separation.separator import Separator

SPLEETER_FILES = ["vocals.safetensors", "accompaniment.safetensors"]


def load_separator(model: str, device: str) -> Separator:
    """A Spleeter dir (vocals.safetensors + accompaniment.safetensors), else a demucs model:
    "NAME" from the model hub or "NAME@DIR" from a local demucs repo."""
    model = model.strip()
    if not model:
        raise ModelUnavailable(f"no separation model given; {SETTING_HINT}")
    path = Path(model).expanduser()
    if path.is_dir():
        if not all((path / name).is_file() for name in SPLEETER_FILES):
            raise ModelUnavailable(
                f"{path} is a directory without {' and '.join(SPLEETER_FILES)}, so not a Spleeter "
                f"model (a local demucs repo is given as NAME@DIR); {SETTING_HINT}"
            )
        from services.separation.spleeter import SpleeterSeparator  # only Spleeter users pay its import

        separator: Separator = SpleeterSeparator(path, device)
    else:
        separator = DemucsSeparator(model, device)
    if "vocals" not in separator.sources:
        raise ModelUnavailable(
            f"model {model!r} has no vocals source ({', '.join(separator.sources)}), so it cannot make "
            f"karaoke; {SETTING_HINT}"
        )
    return separator
