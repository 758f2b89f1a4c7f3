"""What is broken in the store, per model, as a gauge the watcher refreshes each poll.

One model's broken pointer, manifest or artifact is reported here (and in the
model listings) instead of failing anything shared: operators alert on
``predictor_model_broken > 0`` and every other model keeps serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import metrics
from .store import ModelStore

PARTS = ("current", "manifest", "artifact")


def broken_parts(store: ModelStore, refused: Mapping[str, Any], name: str) -> dict[str, int]:
    """How many of each part of ``name`` are broken (0 when fine)."""
    return {
        "current": int(store.problem(name) is not None),
        "manifest": len(store.broken_versions(name)),
        "artifact": int(name in refused and bool(refused[name][0])),
    }


def publish(store: ModelStore, refused: Mapping[str, Any]) -> None:
    """Set the gauge for every model in the store (names come only from the store)."""
    for name in store.names():
        for part, count in broken_parts(store, refused, name).items():
            metrics.MODEL_BROKEN.labels(name, part).set(count)
