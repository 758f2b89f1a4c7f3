"""The models this process serves, and how a new version replaces an old one.

Each worker holds one ``LoadedModel`` per name (its current version), plus a
few pinned versions loaded on demand. ``refresh`` notices a new ``current`` in
the store, loads it off the request path, verifies it and smoke-tests it on the
manifest's sample input, then swaps it in with one reference assignment; a
version that fails any step is refused, counted and logged, and the old one
keeps serving. Loading itself is loading.py; noticing a new version, watcher.py.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .. import metrics, model_health
from ..errors import ArtifactRejected, PredictorError, not_found
from ..settings import Settings
from ..store import ModelStore
from .loading import LoadedModel, load_model
from .watcher import ModelWatcher

log = logging.getLogger("predictor.registry")

PINNED_VERSIONS_KEPT = 4


@dataclass
class ModelStatus:
    """What the repository index reports for a model name."""

    name: str
    version: str | None
    state: str  # READY | UNAVAILABLE | LOADING
    reason: str = ""


class ModelRegistry:
    """Loads, serves and hot-swaps the versions of every model in one store."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._current: dict[str, LoadedModel] = {}
        self._pinned: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._refused: dict[str, tuple[str, str]] = {}  # name -> (version, reason)
        self._unloaded: set[str] = set()
        self._lock = threading.RLock()
        self.watcher = ModelWatcher(
            self.refresh,
            settings.POLL_INTERVAL_SECONDS,
            settings.REDIS_URL,
            settings.redis_password,
        )
        self.publish_metrics = False  # True in serving workers (set by start_watcher)

    # --- serving ---------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to answer with; 404 when unknown, 503 when known but not loaded."""
        loaded = self._current.get(name)
        if version is None or (loaded is not None and loaded.version == version):
            if loaded is not None:
                return loaded
            return self._not_loaded(name)
        return self._pinned_version(name, version)

    def names(self) -> list[str]:
        return sorted(self._current)

    def serving(self, name: str) -> LoadedModel | None:
        """The version of ``name`` this worker serves now, if any."""
        return self._current.get(name)

    def loaded(self) -> list[LoadedModel]:
        return [self._current[n] for n in sorted(self._current)]

    def ready(self) -> bool:
        """Ready when a model serves and every promoted model that can serve is loaded.

        A model that cannot serve (broken ``current``, refused version with no
        last-known-good) is listed by ``status`` but never holds the others back.
        """
        if not self._current:
            return False
        return all(
            name in self._current or name in self._unloaded or name in self._refused
            for name in self.store.names()
            if self.store.current(name)
        )

    def status(self) -> list[ModelStatus]:
        out = []
        for name in self.store.names():
            loaded = self._current.get(name)
            problem = self.store.problem(name)
            refused = self._refused.get(name)
            if loaded is not None:
                reason = problem.message if problem else ""
                if refused and not reason:
                    reason = f"version {refused[0]} refused ({refused[1]})"
                out.append(ModelStatus(name, loaded.version, "READY", reason))
            elif name in self._unloaded:
                out.append(ModelStatus(name, self.store.current(name), "UNAVAILABLE", "unloaded"))
            elif problem is not None:
                out.append(ModelStatus(name, None, "UNAVAILABLE", problem.message))
            else:
                version, reason = refused or (self.store.current(name), "")
                out.append(
                    ModelStatus(name, version, "UNAVAILABLE", reason or "no current version")
                )
        return out

    def refused(self, name: str) -> tuple[str, str] | None:
        return self._refused.get(name)

    # --- loading ---------------------------------------------------------
    def load_version(self, name: str, version: str) -> LoadedModel:
        """Verify, deserialise and smoke-test one version; raises ArtifactRejected."""
        return load_model(self.store, name, version, self.settings)

    def load_all(self) -> None:
        """Load the current version of every model in the store (at start)."""
        self.refresh()

    def refresh(self) -> None:
        """Swap in any model whose ``current`` changed; called by the watcher.

        Each model on its own: one broken model never stops the others' promotions.
        """
        for name in self.store.names():
            if name in self._unloaded:
                continue
            try:
                self.refresh_model(name)
            except Exception:
                log.exception("model %s: refresh failed; other models unaffected", name)
        if self.publish_metrics:
            model_health.publish(self.store, self._refused)

    def refresh_model(self, name: str, force: bool = False) -> bool:
        """Load the store's current version of ``name`` if it is not serving; True if swapped."""
        wanted = self.store.current(name)
        loaded = self._current.get(name)
        if wanted is None and loaded is None and name not in self._refused:
            problem = self.store.problem(name)
            if problem is not None:  # a broken pointer at start: last-known-good, tried once
                self._refused[name] = ("", problem.message)
                metrics.MODEL_LOAD_FAILURES.labels(name, "", problem.kind).inc()
                good = self._last_known_good(name, "", None)
                if good is not None:
                    with self._lock:
                        self._current[name] = good
                    return True
        if wanted is None or (loaded is not None and loaded.version == wanted and not force):
            return False
        if not force and self._refused.get(name, ("", ""))[0] == wanted:
            return False  # already refused this version; wait for the next promotion
        with self._lock:
            try:
                model = self.load_version(name, wanted)
            except ArtifactRejected as exc:
                self._refuse(name, wanted, exc, serving=loaded)
                model = self._last_known_good(name, wanted, loaded)
            except Exception as exc:  # anything else a broken artifact can throw
                self._refuse(name, wanted, ArtifactRejected("load_error", str(exc)), loaded)
                model = self._last_known_good(name, wanted, loaded)
            if model is None:
                return False
            self._current[name] = model
            if model.version == wanted:
                self._refused.pop(name, None)
                self.store.mark_verified(name, wanted)
            self._unloaded.discard(name)
        wanted = model.version
        metrics.MODEL_LOADS.labels(name, wanted).inc()
        if self.publish_metrics:
            if loaded is not None:  # multiprocess files keep old series: zero it, don't drop it
                _info_gauge(loaded).set(0)
            _info_gauge(model).set(1)
        log.info(
            "model %s version %s serving (runtime %s, pid %d)%s",
            name, wanted, model.runtime.name, os.getpid(),
            f", replacing version {loaded.version}" if loaded else "",
        )  # fmt: skip
        return True

    def unload(self, name: str) -> None:
        if name not in self.store.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        with self._lock:
            loaded = self._current.pop(name, None)
            self._unloaded.add(name)
        if loaded is not None and self.publish_metrics:
            _info_gauge(loaded).set(0)

    def load(self, name: str) -> LoadedModel:
        """Load (or reload) the current version of ``name``; raises when refused."""
        if name not in self.store.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        if not self.store.current(name):
            raise PredictorError(
                409, "no_current_version", f"model {name!r} has no current version"
            )
        self._unloaded.discard(name)
        self._refused.pop(name, None)
        self.refresh_model(name, force=name not in self._current)
        if name not in self._current:
            version, reason = self._refused.get(name, ("?", "unknown"))
            raise PredictorError(
                422, "model_refused", f"model {name} version {version} refused: {reason}"
            )
        return self._current[name]

    # --- background ------------------------------------------------------
    def start_watcher(self) -> None:
        """Publish this worker's model gauges and start watching the store (after fork)."""
        self.publish_metrics = True
        for model in self._current.values():
            _info_gauge(model).set(1)
        self.watcher.start()

    def stop_watcher(self) -> None:
        self.watcher.stop()

    # --- internals -------------------------------------------------------
    def _last_known_good(
        self, name: str, refused: str, serving: LoadedModel | None
    ) -> LoadedModel | None:
        """After a refusal with nothing serving (a restart), the store's verified version."""
        if serving is not None:
            return None  # the version already serving keeps serving
        good = self.store.verified(name)
        if good is None or good == refused:
            return None
        try:
            model = self.load_version(name, good)
        except Exception as exc:
            log.error("model %s: last-known-good version %s refused too (%s)", name, good, exc)
            return None
        log.warning("model %s: serving last-known-good version %s instead", name, good)
        return model

    def _refuse(
        self, name: str, version: str, exc: ArtifactRejected, serving: LoadedModel | None
    ) -> None:
        self._refused[name] = (version, f"{exc.reason}: {exc}")
        metrics.MODEL_LOAD_FAILURES.labels(name, version, exc.reason).inc()
        log.error(
            "model %s version %s refused (%s: %s); %s",
            name, version, exc.reason, exc,
            f"version {serving.version} keeps serving" if serving else "nothing serves it",
        )  # fmt: skip

    def _not_loaded(self, name: str) -> LoadedModel:
        if name not in self.store.names():
            known = ", ".join(self.names()) or "none"
            raise not_found("model_not_found", f"model {name!r} not found; available: {known}")
        refused = self._refused.get(name)
        reason = f": version {refused[0]} refused ({refused[1]})" if refused else ""
        if name in self._unloaded:
            reason = ": it was unloaded"
        raise PredictorError(503, "model_not_ready", f"model {name!r} is not loaded{reason}")

    def _pinned_version(self, name: str, version: str) -> LoadedModel:
        key = (name, version)
        with self._lock:
            model = self._pinned.get(key)
            if model is not None:
                self._pinned.move_to_end(key)
                return model
        self.store.manifest(name, version)  # 404s for unknown model or version
        try:
            model = self.load_version(name, version)
        except ArtifactRejected as exc:
            raise PredictorError(
                503, "model_not_ready", f"model {name} version {version} refused: {exc}"
            ) from exc
        with self._lock:
            self._pinned[key] = model
            while len(self._pinned) > PINNED_VERSIONS_KEPT:
                self._pinned.popitem(last=False)
        return model


def _info_labels(model: LoadedModel) -> tuple[str, str, str, str, str]:
    m = model.manifest
    return (m.name, m.version, m.sha256[:12], model.runtime.name, model.runtime_reason)


def _info_gauge(model: LoadedModel) -> Any:
    return metrics.MODEL_INFO.labels(*_info_labels(model))
