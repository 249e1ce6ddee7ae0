"""Demucs behind the Separator interface: load a model once, then separate one window per call."""

from __future__ import annotations

import logging
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any

import demucs.hf
import demucs.repo
import torch
from demucs.apply import BagOfModels, TensorChunk, apply_model
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.pretrained import REMOTE_ROOT, _parse_remote_files, get_model
from demucs.repo import ModelLoadingError, RemoteRepo
from demucs.states import load_model

from roar.errors import ModelUnavailable
from roar.progress import stop_on_cancel
from services.separation.separator import MixLevel, beat_on_every_layer

log = logging.getLogger("roar.separation")

SOURCES_HINT = (
    "a separation model's source is a demucs model name such as htdemucs (downloaded on first use, so it "
    "needs network access once), NAME@DIR for a local demucs repo (DIR holds NAME.yaml and the "
    "<sig>-<checksum>.th files it lists), or a Spleeter model dir"
)
# The longest window for models that take any length (HTDemucs windows are its training segment):
# a quarter of it overlaps, the rest (7.5 s, 2.6 MB of stereo float32) is one StemWindow per stem.
MAX_WINDOW_SECONDS = 10
# The classes a demucs model package may name, and the only globals its pickle may hold besides
# tensors and plain containers (HTDemucs' segment is a Fraction).
MODEL_CLASSES = (HTDemucs, HDemucs, Demucs)
PACKAGE_GLOBALS = [*MODEL_CLASSES, Fraction]
REFUSED = (
    "a file of it holds more than a demucs model's weights (pickled code or objects), so it was not "
    "loaded; re-save the package with plain training_args, or use the model hub's safetensors"
)


def load_package(path: Path | str) -> dict[str, Any]:
    """A demucs package ({'klass', 'args', 'kwargs', 'state', 'training_args'}) read with
    weights_only: any global but the demucs classes and Fraction is refused before it runs."""
    try:
        with torch.serialization.safe_globals(PACKAGE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        log.error("refused demucs model file %s: %s", path, exc)
        raise ModelUnavailable(REFUSED) from exc


def load_model_safely(path_or_package: Path | str | dict[str, Any]) -> Any:
    """demucs.states.load_model without unpickling anything but weights: builds the model from a
    package only when it names a demucs model class."""
    package = path_or_package if isinstance(path_or_package, dict) else load_package(path_or_package)
    if not isinstance(package, dict) or package.get("klass") not in MODEL_CLASSES:
        log.error("refused a demucs package that names no demucs model class: %.200r", package)
        raise ModelUnavailable(REFUSED)
    return load_model(package)


def _get_remote_model_safely(self: RemoteRepo, sig: str) -> Any:
    """RemoteRepo.get_model (the legacy download site), reading the download with weights_only."""
    if sig not in self._models:
        raise ModelLoadingError(f"Could not find a pre-trained model with signature {sig}.")
    with torch.serialization.safe_globals(PACKAGE_GLOBALS):
        try:
            package = torch.hub.load_state_dict_from_url(
                self._models[sig], map_location="cpu", check_hash=True, weights_only=True
            )
        except pickle.UnpicklingError as exc:
            log.error("refused demucs model %s: %s", sig, exc)
            raise ModelUnavailable(REFUSED) from exc
    return load_model_safely(package)


# demucs 4.1 unpickles model files with weights_only=False, so a model file could run any code.
# Every way get_model reaches a model goes through the name `load_model` that demucs.repo (local
# repos) and demucs.hf (hub safetensors, whose metadata names the class) import from
# demucs.states, or through RemoteRepo.get_model's own download: those three are replaced here,
# once for the process, by the versions above.
demucs.repo.load_model = load_model_safely
demucs.hf.load_model = load_model_safely
demucs.repo.RemoteRepo.get_model = _get_remote_model_safely


def pretrained_names() -> list[str]:
    """The named models (bags) the demucs package can fetch."""
    return sorted(path.stem for path in REMOTE_ROOT.glob("*.yaml"))


def is_pretrained(name: str) -> bool:
    """A bag name, a single model's signature, or an explicit hub name."""
    return (
        name.startswith("hf://")
        or name in pretrained_names()
        or name in _parse_remote_files(REMOTE_ROOT / "files.txt")
    )


def load_demucs_model(source: str) -> Any:
    """Loads "NAME" (pretrained, from the model hub), "hf://NAME" or "NAME@DIR" (a local repo).
    Messages never name the source: they reach clients."""
    name, at, repo = source.partition("@")
    if not name or (at and not repo):
        raise ModelUnavailable(f"its source is malformed; {SOURCES_HINT}")
    repo_dir = Path(repo).expanduser() if repo else None
    if repo_dir is not None and not repo_dir.is_dir():
        raise ModelUnavailable(f"its demucs repo is not a directory; {SOURCES_HINT}")
    if repo_dir is None and not is_pretrained(name):
        raise ModelUnavailable(f"its source is not a model this server knows how to load; {SOURCES_HINT}")
    try:
        return get_model(name, repo=repo_dir)
    except ModelUnavailable:
        raise
    # demucs reports a missing repo dir with sys.exit, network failures as URLError/OSError,
    # missing or corrupt files as ModelLoadingError/RuntimeError; their messages hold paths.
    except (Exception, SystemExit) as exc:
        log.error("demucs could not load %s: %s", source, exc)
        raise ModelUnavailable(
            f"demucs could not load it ({type(exc).__name__}: missing, corrupt or unreachable files; the "
            f"service log has the details); {SOURCES_HINT}"
        ) from exc


class DemucsSeparator:
    """A demucs model (or bag of models) kept on its device, separating one window per call the
    way apply_model separates one segment of its split: no random shifts, so a window's stems
    depend only on the song."""

    def __init__(self, model: str, device: str) -> None:
        self.name = model
        self.device = device
        self.model = beat_on_every_layer(stop_on_cancel(load_demucs_model(model).to(device).eval()))
        self.sample_rate: int = self.model.samplerate
        self.channels: int = self.model.audio_channels
        self.sources: list[str] = list(self.model.sources)
        members = self.model.models if isinstance(self.model, BagOfModels) else [self.model]
        # HTDemucs takes at most its training segment; the others any length, capped so that
        # windows stay small.
        self.segment = min(
            [m.segment for m in members if isinstance(m, HTDemucs)]
            + [min(Fraction(m.segment), Fraction(MAX_WINDOW_SECONDS)) for m in members]
        )
        self.window_frames = int(self.segment * self.sample_rate)

    def separate_window(self, audio: torch.Tensor, start: int, frames: int, level: MixLevel) -> torch.Tensor:
        # Standardised as demucs standardises the whole mix: the models were trained on that.
        mix = (audio - level.mean) / level.std
        with torch.inference_mode():
            out = apply_model(
                self.model,
                TensorChunk(mix[None], start, frames),
                shifts=0,
                split=False,
                segment=self.segment,
                device=self.device,
            )[0]
        return (out * level.std + level.mean).cpu()
