"""The models a server offers, by name: clients choose among the operator's models, never a path.

Each stage has a catalog built from two settings: ROAR_<STAGE>_MODELS ("name=source" entries) and
ROAR_<STAGE>_MODEL (the default: a name from that list, or a source offered under a name derived
from it). A source is what the stage loads (a demucs name, NAME@DIR, a Spleeter dir, a Whisper dir
or hub id); it never leaves the server. The orchestrator and each stage build the same catalog
from the same settings, so both refuse an unknown name before anything is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

from roar.config import Settings
from roar.errors import BadInput

# Offered when the operator lists no separation models: the demucs package's pretrained models,
# fetched from its model hub on first use.
DEMUCS_MODELS = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra")
# Offered when the operator lists no transcription models: Whisper on the Hugging Face hub.
WHISPER_MODELS = (
    "openai/whisper-tiny",
    "openai/whisper-base",
    "openai/whisper-small",
    "openai/whisper-medium",
    "openai/whisper-large-v3-turbo",
)
# Names are looked up, never opened, but they show in listings and logs: keep them plain.
_NAME = re.compile(r"^\w[\w.:/+-]{0,99}$")


@dataclass(frozen=True)
class ModelCatalog:
    """One stage's offered models: name -> source, the default first."""

    stage: str  # "separation" or "transcription", for messages
    default: str
    sources: Mapping[str, str]
    list_setting: str  # ROAR_<STAGE>_MODELS
    default_setting: str  # ROAR_<STAGE>_MODEL

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def name_for(self, requested: str) -> str:
        """The offered name a request means: its own, or the default when empty. Anything else is
        refused with the same message whatever it is, so a caller learns nothing about the
        server's files from it (and the message never repeats what was asked)."""
        name = requested.strip() or self.default
        if name not in self.sources:
            raise BadInput(
                f"unknown {self.stage} model: this server offers {', '.join(self.names)} (an empty name "
                f"means the default, {self.default}); its operator lists them in {self.list_setting}"
            )
        return name

    def source_of(self, name: str) -> str:
        return self.sources[name]

    def setting_of(self, name: str) -> str:
        """The setting an operator changes to fix the named model."""
        return self.default_setting if name == self.default else self.list_setting


def derived_name(source: str) -> str:
    """The name a default given as a source is offered under: NAME for a demucs "NAME@DIR", the
    last component of a path, anything else (a hub id, a demucs name) as itself. Worked out from
    the text alone, so the orchestrator and a stage on another host agree on it."""
    name, at, _ = source.partition("@")
    if at:
        return name
    if source.startswith(("/", ".", "~")):
        return PurePath(source).name
    return source


def build_catalog(
    stage: str,
    entries: tuple[str, ...],
    default: str,
    builtin: tuple[str, ...],
    list_setting: str,
    default_setting: str,
) -> ModelCatalog:
    """The catalog from the settings' values; a malformed value stops the process naming its
    setting. Without entries the built-in names (each its own source) are offered."""
    sources: dict[str, str] = {}
    for entry in entries:
        name, eq, source = (part.strip() for part in entry.partition("="))
        if not eq or not source or not _NAME.match(name):
            raise SystemExit(
                f"{list_setting}: malformed entry {entry!r}: each entry is name=source, the name made of "
                "letters, digits and . _ - : / + (at most 100)"
            )
        if name in sources:
            raise SystemExit(f"{list_setting}: the name {name!r} is listed twice")
        sources[name] = source
    listed = bool(sources)
    if not listed:
        sources = {name: name for name in builtin}
    if default in sources:
        default_name = default
    else:
        default_name = derived_name(default)
        if not _NAME.match(default_name):
            raise SystemExit(
                f"{default_setting}: cannot derive a model name from {default!r}; list it in "
                f"{list_setting} as name=source and set {default_setting} to that name"
            )
        if listed and sources.get(default_name, default) != default:
            raise SystemExit(
                f"{default_setting}: its derived name {default_name!r} is already in {list_setting} for "
                f"another source; set {default_setting} to that name, or list the model under another name"
            )
        # An operator's default replaces a built-in of the same name (e.g. htdemucs@DIR).
        sources[default_name] = default
    ordered = {default_name: sources.pop(default_name), **sources}
    return ModelCatalog(stage, default_name, ordered, list_setting, default_setting)


def separation_catalog(settings: Settings, default: str = "") -> ModelCatalog:
    """The separation models; `default` (a --model flag) replaces ROAR_SEPARATION_MODEL."""
    return build_catalog(
        "separation",
        settings.separation_models,
        default or settings.separation_model,
        DEMUCS_MODELS,
        "ROAR_SEPARATION_MODELS",
        "ROAR_SEPARATION_MODEL",
    )


def transcription_catalog(settings: Settings, default: str = "") -> ModelCatalog:
    """The transcription models; `default` (a --model flag) replaces ROAR_TRANSCRIPTION_MODEL."""
    return build_catalog(
        "transcription",
        settings.transcription_models,
        default or settings.transcription_model,
        WHISPER_MODELS,
        "ROAR_TRANSCRIPTION_MODELS",
        "ROAR_TRANSCRIPTION_MODEL",
    )
