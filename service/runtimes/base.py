"""The runtime interface, and the registry that finds runtimes by name.

A runtime is whatever executes a published model version: it loads from the
version directory and its manifest, then turns the validated 2-D array into
raw predictions (and class probabilities on request). The prediction core
only ever calls ``run``; model loading only ever calls ``load`` through
``service.runtimes.selection``; neither names an implementation.

One module (or package) of ``service/runtimes/`` is one runtime. It defines a
subclass of ``Runtime`` (or ``CompiledRuntime``) decorated with ``@register``;
the registry imports every module of the package the first time it is asked,
so a new runtime is a new file and nothing else (docs/extending.md).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..manifest import CompiledRecord, Feature, Manifest
    from ..settings import Settings

AUTO = "auto"
"""The setting that lets selection choose: a verified compiled runtime first."""

# Modules of this package that are not runtimes.
_NOT_RUNTIMES = frozenset({"base", "selection"})


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can do, declared once on its class."""

    probabilities: bool
    """It can answer class probabilities (a model may still lack them: ``has_proba``)."""
    missing_values: bool
    """It passes NaN through to the model, so it may serve nullable features."""
    needs_estimator: bool
    """It deserialises the published estimator (skops / signed pickle) to serve."""
    auto: bool = False
    """``PREDICTOR_RUNTIME=auto`` may choose it (compiled runtimes are tried first)."""


class Runtime(ABC):
    """One loaded model version, behind the call the prediction core makes.

    >>> runtime = SomeRuntime.load(version_dir, manifest, settings)
    >>> predictions, proba = runtime.run(rows, with_proba=True)
    """

    name: ClassVar[str]
    """The name settings, metrics and ``GET /v1/models/{name}`` use."""
    capabilities: ClassVar[Capabilities]

    has_proba: bool = False
    """This model answers class probabilities (a classifier that has them)."""
    reason: str = ""
    """Why no compiled runtime serves instead; empty when none was passed over."""

    @classmethod
    def usable(cls, manifest: Manifest) -> tuple[bool, str]:
        """Whether this runtime can serve ``manifest``'s version, and if not, why.

        Called before ``load``, from the manifest alone (nothing is read or
        unpickled), so that ``auto`` can pass over a runtime cheaply.
        """
        return True, ""

    @classmethod
    @abstractmethod
    def load(cls, version_dir: Path, manifest: Manifest, settings: Settings) -> Runtime:
        """Verify and load the artifact this runtime needs; raise ``ArtifactRejected``."""

    @abstractmethod
    def run(self, rows: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for each validated row, and class probabilities when asked and
        available (``None`` otherwise)."""


class CompiledRuntime(Runtime):
    """A runtime that serves an artifact built from the estimator at publish time.

    ``compile`` writes the artifact into the staging directory and returns the
    record the manifest keeps under ``compiled``; ``usable`` reads that record
    back at load time. Only a record with ``ok`` (verified equal to the
    estimator) may serve.
    """

    @classmethod
    @abstractmethod
    def compile(
        cls,
        estimator: Any,
        features: list[Feature],
        *,
        task: str,
        sample_rows: list[list[Any]],
        held_out: Any,
        directory: Path,
        rows_by_source: dict[str, np.ndarray] | None = None,
    ) -> CompiledRecord:
        """Build and verify the artifact in ``directory``; never raise for a model that
        cannot compile (the record's ``reason`` says why, and no artifact is written).

        ``rows_by_source``: rows to verify on, from the user's data and its
        distribution (publish_model); without them rows come from ranges."""

    @classmethod
    @abstractmethod
    def verify(
        cls, artifact: bytes, estimator: Any, features: list[Feature], task: str, rows: Any
    ) -> CompiledRecord:
        """Compare the artifact's answers with the estimator's on ``rows``."""


R = TypeVar("R", bound=type[Runtime])

_registry: dict[str, type[Runtime]] = {}
_discovered = False
_lock = threading.Lock()


def register(cls: R) -> R:
    """Class decorator: make ``cls`` selectable by its ``name``."""
    if not getattr(cls, "name", None) or not isinstance(
        getattr(cls, "capabilities", None), Capabilities
    ):
        raise TypeError(f"{cls.__name__} must declare name and capabilities")
    if cls.name == AUTO:
        raise ValueError(f"{AUTO!r} is reserved for selection")
    known = _registry.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"runtime {cls.name!r} is already registered by {known.__module__}")
    _registry[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a runtime (tests that register their own)."""
    _registry.pop(name, None)


def _discover() -> None:
    """Import every runtime module of this package once; each registers itself."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        package = __name__.rpartition(".")[0]
        path = importlib.import_module(package).__path__
        for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if module.name not in _NOT_RUNTIMES and not module.name.startswith("_"):
                importlib.import_module(f"{package}.{module.name}")
        _discovered = True


def runtimes() -> list[type[Runtime]]:
    """Every registered runtime, in name order."""
    _discover()
    return [_registry[name] for name in sorted(_registry)]


def names() -> list[str]:
    """The names of every registered runtime, in order."""
    return [cls.name for cls in runtimes()]


def choices() -> list[str]:
    """What ``PREDICTOR_RUNTIME`` accepts: ``auto`` and every runtime's name."""
    return [AUTO, *names()]


def get(name: str) -> type[Runtime]:
    """The runtime called ``name``; ``KeyError`` naming the registered ones."""
    _discover()
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}: expected one of {', '.join(names())}") from None


def compiled_runtimes() -> list[type[CompiledRuntime]]:
    """The runtimes publish compiles for (in name order)."""
    return [cls for cls in runtimes() if issubclass(cls, CompiledRuntime)]
