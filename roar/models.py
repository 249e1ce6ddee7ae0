"""Models load once and stay warm: a per-process cache of the catalog's models, keyed by name."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from roar import metrics
from roar.catalog import ModelCatalog
from roar.errors import ModelUnavailable
from roar.progress import ProgressCallback, no_progress

M = TypeVar("M")
log = logging.getLogger("roar.models")


class ModelCache(Generic[M]):
    """Loads each offered model on first use and keeps it; loading is serialised so two jobs never
    load the same model twice. Failures are not cached: a later job tries again (the network or
    the files may be back).

    `loader(name, source)` loads one model. Its errors reach clients as ModelUnavailable naming the
    model's name and the setting to change; the source (a path, often) goes only to the log."""

    def __init__(self, loader: Callable[[str, str], M], catalog: ModelCatalog, max_models: int = 2) -> None:
        self._loader = loader
        self.catalog = catalog
        self._max_models = max_models
        self._models: dict[str, M] = {}
        self._lock = threading.Lock()

    @property
    def default(self) -> str:
        return self.catalog.default

    def get(self, name: str = "", progress: ProgressCallback = no_progress) -> M:
        """The named model (the default when empty), loaded first if need be (reported through
        progress). A name the catalog does not offer raises BadInput."""
        name = self.catalog.name_for(name)
        with self._lock:
            if name not in self._models:
                progress(0.0, f"loading model {name}")
                if len(self._models) >= self._max_models:
                    # Evict the oldest non-default model to bound memory.
                    victim = next((n for n in self._models if n != self.default), None)
                    if victim is not None:
                        del self._models[victim]
                        metrics.model_unloaded(self.catalog.stage, victim)
                source = self.catalog.source_of(name)
                log.info("loading model %s from %s", name, source)
                hint = f"set {self.catalog.setting_of(name)} to a model that loads"
                try:
                    with metrics.model_loading(self.catalog.stage, name):
                        self._models[name] = self._loader(name, source)
                except ModelUnavailable as exc:  # its message is written for clients: no paths
                    log.error("model %s (%s) unavailable: %s", name, source, exc.message)
                    raise ModelUnavailable(
                        f"{self.catalog.stage} model {name!r} is unavailable: {exc.message}; {hint}"
                    ) from exc
                except (Exception, SystemExit) as exc:  # some loaders sys.exit() on a missing repo
                    # Library messages often hold paths: the details stay in the log.
                    log.exception("model %s (%s) failed to load", name, source)
                    raise ModelUnavailable(
                        f"{self.catalog.stage} model {name!r} failed to load ({type(exc).__name__}; the "
                        f"service log has the details); {hint}"
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
