"""Models load once and stay warm: a per-process cache keyed by model name."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from roar.errors import ModelUnavailable
from roar.progress import ProgressCallback, no_progress

M = TypeVar("M")
log = logging.getLogger("roar.models")


class ModelCache(Generic[M]):
    """Loads each named model on first use and keeps it; loading is serialised so two jobs never
    load the same model twice. Failures are not cached: a later job tries again (the network or
    the files may be back)."""

    def __init__(self, loader: Callable[[str], M], default: str, setting: str, max_models: int = 2) -> None:
        self._loader = loader
        self.default = default
        self._setting = setting  # the environment variable that chooses the model
        self._max_models = max_models
        self._models: dict[str, M] = {}
        self._lock = threading.Lock()

    def get(self, name: str = "", progress: ProgressCallback = no_progress) -> M:
        """The model, loaded first if need be (reported through progress)."""
        name = name or self.default
        with self._lock:
            if name not in self._models:
                progress(0.0, f"loading model {name}")
                if len(self._models) >= self._max_models:
                    # Evict the oldest non-default model to bound memory.
                    victim = next((n for n in self._models if n != self.default), None)
                    if victim is not None:
                        del self._models[victim]
                log.info("loading model %s", name)
                try:
                    self._models[name] = self._loader(name)
                except ModelUnavailable:
                    raise
                except (Exception, SystemExit) as exc:  # some loaders sys.exit() on a missing repo
                    raise ModelUnavailable(
                        f"could not load model {name!r} ({exc}); set {self._setting} to one that loads"
                    ) from exc
                log.info("model %s ready", name)
            return self._models[name]

    def warm_up(self) -> None:
        """Loads the default model, logging (not raising) a failure: the service still starts
        and each job reports the error."""
        try:
            self.get(self.default)
        except ModelUnavailable as exc:
            log.error("default model unavailable: %s", exc.message)
