"""Canary rollouts: a share of the requests that name no version goes to a candidate.

The state lives in the store beside ``current`` (``<name>/canary``: JSON with
version, percent and sticky), so every worker of every instance sees it the same
way it sees a promotion: the watcher's poll or the Redis notice. A worker loads
the canary version through the same verifying, smoke-testing path as a promotion
before it sends it a single request; a version it cannot load is refused and
logged, and that worker keeps answering from ``current``.

The split is per request (random) or, with ``sticky``, per API key (a hash of
the key id, so one client sees one version). ``promote`` of the canary version
ends the canary; so does ``predictor canary NAME --off``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import metrics, request_scope
from .errors import ArtifactRejected, PredictorError

if TYPE_CHECKING:
    from .models.loading import LoadedModel
    from .models.registry import ModelRegistry

log = logging.getLogger("predictor.canary")

CANARY_FILE = "canary"
ROLES = ("current", "canary")


@dataclass(frozen=True)
class CanaryState:
    """What the store says about a model's canary."""

    version: str
    percent: float
    sticky: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CanaryState:
        data = json.loads(text)
        return cls(str(data["version"]), float(data["percent"]), bool(data.get("sticky", False)))


# --- the state in the store --------------------------------------------------
def read_state(store: Any, name: str) -> CanaryState | None:
    """The canary of ``name`` (None when there is none or the file is unreadable)."""
    try:  # a file, or an object beside `current` on S3
        text = store.read_text(name, CANARY_FILE)
    except PredictorError as exc:  # a FIFO, a symlink out of the store, bad UTF-8
        log.error("canary state of %s is unreadable (%s); no canary", name, exc)
        return None
    if not text or not text.strip():
        return None
    try:
        return CanaryState.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("canary state of %s is unreadable (%s); no canary", name, exc)
        return None


def write_state(store: Any, name: str, state: CanaryState | None) -> None:
    """Write (or remove, with None) the canary of ``name``, atomically."""
    text = state.to_json() if state is not None else None
    store.write_text(name, CANARY_FILE, text)


def start(
    store: Any, settings: Any, name: str, version: str, percent: float, sticky: bool = False
) -> CanaryState:
    """Verify and smoke-test ``version`` as a worker would, then publish the canary state."""
    if not 0 < percent < 100:
        raise PredictorError(
            400,
            "invalid_percent",
            f"--percent {percent:g}: expected a share above 0 and below 100 "
            "(100% is a promotion: predictor promote)",
        )
    store.manifest(name, version)  # 404 for an unknown model or version
    current = store.current(name)
    if current is None:
        raise PredictorError(409, "no_current_version", f"model {name!r} has no current version")
    if version == current:
        raise PredictorError(
            409, "canary_is_current", f"{name} version {version} is already the current version"
        )
    from .models.registry import ModelRegistry

    try:
        ModelRegistry(store, settings).load_version(name, version)
    except ArtifactRejected as exc:
        raise PredictorError(
            422, "canary_refused", f"{name} version {version} cannot serve: {exc.reason}: {exc}"
        ) from exc
    state = CanaryState(version, float(percent), sticky)
    write_state(store, name, state)
    return state


def stop(store: Any, name: str) -> CanaryState | None:
    """End the canary of ``name``; returns the state it had."""
    state = read_state(store, name)
    write_state(store, name, None)
    return state


def promote(store: Any, name: str, version: str) -> bool:
    """``store.promote``, ending the canary when it names ``version``; True if it did."""
    store.promote(name, version)
    state = read_state(store, name)
    if state is not None and state.version == version:
        write_state(store, name, None)
        return True
    return False


# --- inside a serving worker -------------------------------------------------
class CanaryRouter:
    """One worker's view of the canaries: the loaded canary version and its share."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._active: dict[str, tuple[CanaryState, LoadedModel]] = {}
        self._refused: dict[str, CanaryState] = {}

    def active(self, name: str) -> CanaryState | None:
        entry = self._active.get(name)
        return entry[0] if entry else None

    def pick(self, name: str, current: LoadedModel) -> LoadedModel:
        """The model that answers a request naming no version: canary or current."""
        entry = self._active.get(name)
        if entry is None:
            note(current, "current")
            return current
        state, model = entry
        if model.version == current.version:  # promoted: the canary is over
            note(current, "current")
            return current
        if _draw(name, state) < state.percent:
            note(model, "canary")
            return model
        note(current, "current")
        return current

    def refresh(self) -> None:
        """Follow the store's canary state; called by the watcher after each refresh."""
        store = self.registry.store
        for name in store.names():
            state = read_state(store, name)
            self._follow(name, state)
        for name in list(self._active):
            if name not in store.names():
                self._drop(name)

    def _follow(self, name: str, state: CanaryState | None) -> None:
        entry = self._active.get(name)
        serving = self.registry.serving(name)
        if state is None or (serving is not None and serving.version == state.version):
            if entry is not None:
                self._drop(name)
            self._refused.pop(name, None)
            return
        if entry is not None and entry[1].version == state.version:
            if entry[0] != state:  # a new share for the same version
                self._active[name] = (state, entry[1])
                self._gauge(name, state)
                log.info("canary %s version %s now takes %g%%", name, state.version, state.percent)
            return
        if self._refused.get(name) == state:
            return
        try:
            model = self.registry.load_version(name, state.version)
        except Exception as exc:  # ArtifactRejected or anything a broken artifact throws
            reason = getattr(exc, "reason", "load_error")
            self._refused[name] = state
            metrics.MODEL_LOAD_FAILURES.labels(name, state.version, reason).inc()
            log.error("canary %s version %s refused (%s: %s); current keeps all traffic",
                      name, state.version, reason, exc)  # fmt: skip
            if entry is not None:
                self._drop(name)
            return
        if entry is not None:
            self._drop(name)
        self._active[name] = (state, model)
        self._gauge(name, state)
        sticky = " (sticky per API key)" if state.sticky else ""
        log.info("canary %s version %s loaded: %g%% of unpinned requests%s",
                 name, state.version, state.percent, sticky)  # fmt: skip

    def _drop(self, name: str) -> None:
        state, _ = self._active.pop(name)
        metrics.CANARY_PERCENT.labels(name, state.version).set(0)
        log.info("canary %s version %s ended", name, state.version)

    def _gauge(self, name: str, state: CanaryState) -> None:
        if self.registry.publish_metrics:
            metrics.CANARY_PERCENT.labels(name, state.version).set(state.percent)


def _draw(name: str, state: CanaryState) -> float:
    """A number in [0, 100): random per request, or fixed per API key when sticky."""
    if state.sticky:
        key_id = _api_key_id()
        if key_id:
            digest = hashlib.sha256(f"{name}\0{state.version}\0{key_id}".encode()).digest()
            return int.from_bytes(digest[:8], "big") / 2**64 * 100
    return random.random() * 100


def _api_key_id() -> str | None:
    scope = request_scope.current()
    return scope.api_key_id if scope is not None else None


# --- per-version request metrics -----------------------------------------------
def note(model: LoadedModel, role: str) -> None:
    """Remember which version (and in which role) answers this request, for its metrics."""
    scope = request_scope.current()
    if scope is not None:
        scope.served_by = (model.name, model.version, role)


def record(status: int, scope: request_scope.Scope) -> None:
    """Count the finished prediction request under the version that answered it."""
    served = scope.served_by
    if served is None:
        return
    # A 5xx, or a valid request the model itself could not predict (422), is the version's fault.
    failed = status >= 500 or status == 422
    bound = _bound.get(served)
    if bound is None:  # bind once per version and role: .labels() per request is not free
        name, version, role = served
        # Both outcomes exist from the first request: an error ratio is a number, never
        # missing data.
        bound = _bound[served] = (
            metrics.VERSION_REQUESTS.labels(name, version, role, "ok"),
            metrics.VERSION_REQUESTS.labels(name, version, role, "error"),
            metrics.VERSION_DURATION.labels(name, version, role),
        )
    bound[1 if failed else 0].inc()
    bound[2].observe(time.perf_counter() - scope.start)


# (model, version, role) -> bound children of the per-version metrics.
_bound: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
