"""A tiny randomly initialised HTDemucs saved as a local demucs repo, for tests without network.

Same architecture and code paths as htdemucs (STFT + time branches, cross-transformer), with few
channels so that 20 s of audio separates in a couple of seconds on two CPU cores.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum

SOURCES = ["drums", "bass", "other", "vocals"]
SEGMENT_SECONDS = 4
SAMPLE_RATE = 44100


TINY_KWARGS = {
    "sources": SOURCES,
    "audio_channels": 2,
    "samplerate": SAMPLE_RATE,
    "segment": SEGMENT_SECONDS,
    # depth 4 as in htdemucs: the transformer then sees 8 frequency rows, not thousands.
    "channels": 8,
    "depth": 4,
    "t_layers": 1,
    "t_heads": 2,
}
# The pretrained htdemucs' architecture (42 M parameters): random weights, the real compute.
HTDEMUCS_KWARGS = {
    "sources": SOURCES,
    "audio_channels": 2,
    "samplerate": SAMPLE_RATE,
    "segment": Fraction(39, 5),
    "bottom_channels": 512,
    "dconv_mode": 3,
    "t_layers": 5,
}


def build_tiny_demucs(repo_dir: Path, name: str = "tiny", kwargs: dict | None = None) -> str:
    """Writes `<sig>-<checksum>.th` and `NAME.yaml` into repo_dir; returns the model string
    "NAME@DIR" that demucs' get_model(NAME, repo=DIR) loads. `kwargs=HTDEMUCS_KWARGS` makes a
    full-size model instead of the tiny one."""
    kwargs = TINY_KWARGS if kwargs is None else kwargs
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HTDemucs(**kwargs)
    package = {
        "klass": HTDemucs,
        "args": (),
        "kwargs": kwargs,
        "state": get_state(model, quantizer=None),
        "training_args": {},
    }
    repo_dir.mkdir(parents=True, exist_ok=True)
    sig = f"{name}_htdemucs"
    save_with_checksum(package, repo_dir / f"{sig}.th")
    (repo_dir / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
    return f"{name}@{repo_dir}"
