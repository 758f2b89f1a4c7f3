"""Runtimes: one module (or package) each, found by name; the interface is in base.py.

``selection.build_runtime`` picks and loads the runtime a version serves with;
nothing outside this package names an implementation.
"""

from .base import (
    AUTO,
    Capabilities,
    CompiledRuntime,
    Runtime,
    choices,
    compiled_runtimes,
    get,
    names,
    register,
    runtimes,
)

__all__ = [
    "AUTO",
    "Capabilities",
    "CompiledRuntime",
    "Runtime",
    "choices",
    "compiled_runtimes",
    "get",
    "names",
    "register",
    "runtimes",
]
