"""The models this process serves, and how a new version replaces an old one.

Each worker holds one ``LoadedModel`` per name (its current version), plus the
other versions the version policy allows (models/policy.py: warm versions
from settings, versions loaded through the admin API), loaded off the request path:
a request never loads a version. ``refresh`` notices a new ``current`` in
the store, loads it off the request path, verifies it and smoke-tests it on the
manifest's sample input, then swaps it in with one reference assignment; a
version that fails any step is refused, counted and logged, and the old one
keeps serving. Loading itself is loading.py; noticing a new version, watcher.py.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from .. import metrics, model_health
from ..canary import CanaryRouter
from ..errors import ArtifactRejected, PredictorError, not_found
from ..settings import Settings
from ..store import ModelStore
from .loading import LoadedModel, load_model
from .policy import WarmVersions, servable
from .watcher import ModelWatcher

log = logging.getLogger("predictor.registry")


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
        # Versions besides the current ones, as the policy allows: (name, version) -> model.
        self._pinned: dict[tuple[str, str], LoadedModel] = {}
        self._pin_refused: dict[tuple[str, str], tuple[Any, str]] = {}  # -> (stamp, reason)
        self._admin_pins: set[tuple[str, str]] = set()
        self._warm = WarmVersions.parse(settings.WARM_VERSIONS)
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
        self.canary = CanaryRouter(self)  # the share of unpinned requests a candidate gets

    # --- serving ---------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to answer with; never loads anything.

        404 when the model or version is unknown or the version is outside the policy
        (the message lists the servable versions), 503 when it may serve but does not
        (refused, unloaded, not loaded yet).
        """
        loaded = self._current.get(name)
        if version is None or (loaded is not None and loaded.version == version):
            if loaded is not None:
                return self.canary.pick(name, loaded) if version is None else loaded
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
        self.refresh()  # current versions, then the policy's others

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
        try:
            self.refresh_pinned()
        except Exception:
            log.exception("refreshing the policy's other versions failed")
        if self.publish_metrics:
            model_health.publish(self.store, self._refused)
        self.canary.refresh()

    # --- the version policy ------------------------------------------------
    def servable(self, name: str) -> list[str]:
        """The versions of ``name`` that may load (service/models/policy.py)."""
        return servable(
            name, self.store.versions(name), self.store.current(name), self._warm,
            self._admin_pins,
        )  # fmt: skip

    def refresh_pinned(self) -> None:
        """Load the warm and admin-pinned versions that are missing; drop the rest.

        A refused version is tried again only when its manifest changes (or an admin
        loads it), not on every poll.
        """
        if not (self._warm or self._admin_pins or self._pinned):
            return
        wanted: set[tuple[str, str]] = set()
        for name in self.store.names():
            if name in self._unloaded:
                continue
            current = self.store.current(name)
            wanted.update((name, v) for v in self.servable(name) if v != current)
        with self._lock:
            for key in set(self._pinned) - wanted:
                del self._pinned[key]
        for key in sorted(wanted - set(self._pinned)):
            self._load_pinned(*key)

    def pin(self, name: str, version: str) -> LoadedModel:
        """Admin: keep ``version`` of ``name`` loaded besides the current one; raises if refused."""
        self.store.manifest(name, version)  # 404s for an unknown model or version
        self._admin_pins.add((name, version))
        self._pin_refused.pop((name, version), None)  # an explicit load retries
        if version == self.store.current(name):
            return self.load(name)
        model = self._load_pinned(name, version)
        if model is None:
            reason = self._pin_refused[(name, version)][1]
            raise PredictorError(
                422, "model_refused", f"model {name} version {version} refused: {reason}"
            )
        return model

    def unpin(self, name: str, version: str) -> None:
        self._admin_pins.discard((name, version))
        with self._lock:
            self._pinned.pop((name, version), None)

    def admin_pins(self) -> set[tuple[str, str]]:
        return set(self._admin_pins)

    def _load_pinned(self, name: str, version: str) -> LoadedModel | None:
        key = (name, version)
        stamp = self._manifest_stamp(name, version)
        refused = self._pin_refused.get(key)
        if refused is not None and refused[0] == stamp:
            return None
        try:
            model = self.load_version(name, version)
        except Exception as exc:  # anything a broken artifact can throw
            rejected = exc if isinstance(exc, ArtifactRejected) else None
            reason = f"{rejected.reason}: {exc}" if rejected else f"load_error: {exc}"
            self._pin_refused[key] = (stamp, reason)
            metrics.MODEL_LOAD_FAILURES.labels(
                name, version, rejected.reason if rejected else "load_error"
            ).inc()
            log.error("model %s version %s refused (%s); not served", name, version, reason)
            return None
        with self._lock:
            self._pinned[key] = model
            self._pin_refused.pop(key, None)
        log.info("model %s version %s loaded besides the current one", name, version)
        return model

    def _manifest_stamp(self, name: str, version: str) -> Any:
        try:
            st = os.stat(self.store.version_dir(name, version) / "manifest.json")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

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
        model = self._pinned.get((name, version))
        if model is not None:
            return model
        self.store.manifest(name, version)  # 404s for unknown model or version
        allowed = self.servable(name)
        if version not in allowed:
            raise not_found(
                "version_not_served",
                f"model {name!r} version {version!r} is not served; servable versions: "
                f"{', '.join(allowed) or 'none'}",
            )
        if version == self.store.current(name):
            return self._not_loaded(name)  # the current version, refused or not swapped in yet
        refused = self._pin_refused.get((name, version))
        why = f"refused ({refused[1]})" if refused else "not loaded yet"
        raise PredictorError(503, "model_not_ready", f"model {name} version {version} is {why}")


def _info_labels(model: LoadedModel) -> tuple[str, str, str, str, str]:
    m = model.manifest
    return (m.name, m.version, m.sha256[:12], model.runtime.name, model.runtime_reason)


def _info_gauge(model: LoadedModel) -> Any:
    return metrics.MODEL_INFO.labels(*_info_labels(model))
