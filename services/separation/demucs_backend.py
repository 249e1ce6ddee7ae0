"""Demucs behind the Separator interface: load a model once, then split songs chunk by chunk with
percent progress from demucs' per-chunk callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.pretrained import REMOTE_ROOT, _parse_remote_files, get_model

from roar.errors import ModelUnavailable
from roar.progress import ProgressCallback, stop_on_cancel

SETTING_HINT = (
    "set ROAR_SEPARATION_MODEL (or --model, or the request's model) to a demucs model name such as "
    "htdemucs (downloaded on first use, so it needs network access once), or to NAME@DIR for a local "
    "demucs repo (DIR holds NAME.yaml and the <sig>-<checksum>.th files it lists), or to a Spleeter "
    "model dir"
)
# demucs' apply_model shifts the input by up to half a second before splitting it.
MAX_SHIFT_SECONDS = 0.5


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


def load_demucs_model(model: str) -> Any:
    """Loads "NAME" (pretrained, from the model hub), "hf://NAME" or "NAME@DIR" (a local repo)."""
    name, at, repo = model.partition("@")
    if not name or (at and not repo):
        raise ModelUnavailable(f"malformed demucs model {model!r}; {SETTING_HINT}")
    repo_dir = Path(repo).expanduser() if repo else None
    if repo_dir is not None and not repo_dir.is_dir():
        raise ModelUnavailable(f"demucs repo {repo_dir} is not a directory; {SETTING_HINT}")
    if repo_dir is None and not is_pretrained(name):
        raise ModelUnavailable(
            f"unknown separation model {model!r}: not a demucs model ({', '.join(pretrained_names())}), "
            f"not NAME@DIR and not a Spleeter dir; {SETTING_HINT}"
        )
    try:
        return get_model(name, repo=repo_dir)
    # demucs reports a missing repo dir with sys.exit, network failures as URLError/OSError,
    # missing or corrupt files as ModelLoadingError/RuntimeError/pickle errors.
    except (Exception, SystemExit) as exc:
        raise ModelUnavailable(f"could not load demucs model {model!r} ({exc}); {SETTING_HINT}") from exc


def _chunks_per_pass(frames: int, segment_seconds: float, sample_rate: int, overlap: float) -> int:
    """How many segments apply_model's split cuts `frames` into (the same arithmetic as demucs)."""
    segment_length = int(sample_rate * segment_seconds)
    stride = int((1 - overlap) * segment_length)
    return len(range(0, frames, stride))


class DemucsSeparator:
    """A demucs model (or bag of models) kept on its device, separating one song per call."""

    def __init__(self, model: str, device: str, shifts: int = 1, overlap: float = 0.25) -> None:
        self.name = model
        self.device = device
        self.shifts = shifts
        self.overlap = overlap
        self.model = stop_on_cancel(load_demucs_model(model).to(device).eval())
        self.sample_rate: int = self.model.samplerate
        self.channels: int = self.model.audio_channels
        self.sources: list[str] = list(self.model.sources)

    def total_chunks(self, frames: int) -> int:
        """The chunks apply_model will compute for `frames` of audio: per model of the bag, per
        shift, one per segment. With shifts the input grows by a random amount up to half a
        second, so this is the upper bound (exact without shifts)."""
        members = self.model.models if isinstance(self.model, BagOfModels) else [self.model]
        shifted_frames = frames + (int(MAX_SHIFT_SECONDS * self.sample_rate) if self.shifts else 0)
        passes = max(self.shifts, 1)
        return sum(
            passes * _chunks_per_pass(shifted_frames, float(m.segment), self.sample_rate, self.overlap)
            for m in members
        )

    def separate(self, audio: np.ndarray, progress: ProgressCallback) -> dict[str, np.ndarray]:
        mix = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        total = self.total_chunks(mix.shape[-1])
        done = 0

        def on_chunk(state: dict[str, Any]) -> None:
            nonlocal done
            if state["state"] == "end":
                done += 1
                progress(100.0 * min(done, total) / total, f"separating: chunk {done}/{total}")

        # Normalise as demucs does: the models were trained on standardised mixes.
        ref = mix.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        out = apply_model(
            self.model,
            ((mix - mean) / std)[None],
            device=self.device,
            shifts=self.shifts,
            split=True,
            overlap=self.overlap,
            progress=False,
            callback=on_chunk,
        )[0]
        if done < total:  # a random shift needed one segment fewer than the bound
            progress(100.0, f"separating: chunk {done}/{done}")
        out = out * std + mean
        return {source: out[i].numpy() for i, source in enumerate(self.sources)}
