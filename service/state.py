"""What one running app holds: settings, store, registry, prediction core."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from .core import Prediction, PredictionCore
from .errors import not_found
from .models.registry import ModelRegistry
from .settings import Settings
from .store import ModelStore

EXTENSION = "predictor"


@dataclass
class ServiceState:
    settings: Settings
    store: ModelStore
    registry: ModelRegistry
    core: PredictionCore
    draining: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def is_draining(self) -> bool:
        """True once shutdown began: set in-process, or by the gunicorn master's flag file."""
        if self.draining:
            return True
        flag = os.environ.get("PREDICTOR_DRAIN_FLAG")
        return bool(flag) and os.path.exists(flag)

    def answer_headers(self, result: Prediction) -> dict[str, str]:
        headers = {"X-Model-Name": result.model.name, "X-Model-Version": result.model.version}
        if self.core.cache is not None:
            headers["X-Cache"] = result.cache_status
        return headers

    def store_problems(self, name: str) -> list[dict[str, str]]:
        """What is broken in the store for ``name``: its pointer, its versions' manifests."""
        out = []
        problem = self.store.problem(name)
        if problem is not None:
            out.append({"part": "current", "reason": problem.message})
        for version, reason in self.store.broken_versions(name).items():
            out.append({"part": "manifest", "version": version, "reason": reason})
        return out

    def describe_model(self, name: str, strict: bool = False) -> dict[str, Any]:
        """Everything a client wants to know about a model: versions, schema, labels, metrics."""
        versions = self.store.versions(name)
        if strict and not versions:
            known = ", ".join(self.store.names()) or "none"
            raise not_found("model_not_found", f"model {name!r} not found; available: {known}")
        current = self.store.current(name)
        loaded = self.registry.serving(name)
        serving = loaded.manifest if loaded else None
        manifests = []
        for v in versions:
            try:
                manifests.append(self.store.manifest(name, v))
            except Exception:  # an unreadable manifest is listed, not fatal
                continue
        described = serving or next((m for m in manifests if m.version == current), None)
        refused = self.registry.refused(name)
        out: dict[str, Any] = {
            "name": name,
            "ready": loaded is not None,
            "current_version": current,
            "serving_version": loaded.version if loaded else None,
            "runtime": loaded.runtime.name if loaded else None,
            "runtime_reason": loaded.runtime_reason if loaded else None,
            "versions": [
                {
                    "version": m.version,
                    "current": m.version == current,
                    "created": m.created.isoformat(),
                    "estimator": m.estimator,
                    "metrics": m.metrics,
                    "sklearn_version": m.sklearn_version,  # trained with (in the artifact)
                    "serving_sklearn_version": _serving_sklearn(),
                    "compiled": m.compiled.model_dump(exclude_unset=True) if m.compiled else None,
                }
                for m in manifests
            ],
        }
        if refused:
            out["refused"] = {"version": refused[0], "reason": refused[1]}
        problems = self.store_problems(name)
        if problems:
            out["problems"] = problems
        if described is not None:
            out.update(
                task=described.task,
                estimator=described.estimator,
                features=[f.model_dump(exclude_none=True) for f in described.features],
                sklearn_version=described.sklearn_version,
                serving_sklearn_version=_serving_sklearn(),
                classes=described.classes,  # what predictions answer
                output_labels=described.output_labels,  # display names, in classes order
                metrics=described.metrics,
                sample_input=described.sample_input,
                description=described.description,
            )
        return out


def _serving_sklearn() -> str:
    import sklearn

    return sklearn.__version__


def state(app: Flask) -> ServiceState:
    return app.extensions[EXTENSION]
