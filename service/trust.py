"""Which types a skops artifact may construct: an allow-list, plus what a publisher signed.

skops refuses by default every type it does not know to be safe and reports it by
name (``get_untrusted_types``); ``load(trusted=[...])`` then constructs those named
types, and a trusted *callable* is called with arguments from the file
(``ConstructorFromReduceNode``), so trusting ``timeit.timeit`` runs code. The rule here:

1. **Allowed without asking** (``allowed_by_default``): classes defined in
   scikit-learn, numpy and scipy that build estimators and arrays: any class in
   ``sklearn.*`` outside its testing, dataset and parallel helpers; numpy scalar,
   dtype, array (not ``memmap``) and random-generator classes; scipy.sparse matrix and
   array classes; numpy/scipy ufuncs. Never another function, nothing outside those
   three packages, and not the tree types skops flags (``needs_review``).
2. **Explicitly trusted**: a type the publisher named (``predictor publish --trust
   TYPE``), recorded in the manifest's ``trusted_types`` and covered by its signature.
   The loader honours that list only when the manifest's signature verified.
3. **Never trusted** (``never_trusted``), whatever a publisher or a manifest says:
   builtins, the standard library (but for a few value types), modules that load
   pickles or run commands (joblib, dill, cloudpickle, pandas, skops itself, ...),
   C-accelerator modules (``_pickle``), numpy/scipy file IO and build tools, and
   functions named like a loader or runner (``load``, ``system``, ``run``, ...).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from skops.io.exceptions import UNTRUSTED_TYPE_REASONS

_ALLOWED_PACKAGES = ("sklearn", "numpy", "scipy")

# Standard-library modules whose types may be trusted explicitly: plain values only.
_SAFE_STDLIB = frozenset({"collections", "datetime", "decimal", "fractions", "zoneinfo", "math"})

# Third-party modules that deserialise pickles, evaluate expressions or touch the system.
_DANGEROUS_MODULES = frozenset(
    {
        "joblib", "dill", "cloudpickle", "pandas", "skops", "torch", "numexpr", "yaml",
        "jinja2", "IPython", "pip", "setuptools", "pkg_resources", "distutils", "gunicorn",
        "flask", "werkzeug", "requests", "urllib3", "redis", "boto3", "botocore", "service",
        "tools", "onnx", "onnxruntime",
    }
)  # fmt: skip

# Parts of the allowed packages that read or write files, build code or run things.
_DANGEROUS_PREFIXES = (
    "numpy.testing",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.ctypeslib",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "numpy.lib._datasource",
    "numpy.lib.utils",
    "numpy.memmap",
    "numpy.core.memmap",
    "numpy._core.memmap",
    "numpy.rec.fromfile",
    "numpy.DataSource",
    "scipy.io",
    "scipy._lib",
    "scipy.datasets",
    "sklearn.utils._testing",
    "sklearn.utils.parallel",
    "sklearn.utils._joblib",
    "sklearn.utils._show_versions",
    "sklearn.externals",
    "sklearn.datasets",
)

# Callables named like these load, execute or write, wherever they live.
_DANGEROUS_NAMES = frozenset(
    {
        "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt",
        "genfromtxt", "fromfile", "tofile", "fromregex", "memmap", "open", "system",
        "popen", "spawn", "exec", "eval", "compile", "run", "call", "import_module",
        "__import__", "getattr", "setattr", "delattr", "globals", "locals", "vars",
        "timeit", "read_pickle", "unpickle", "execfile", "breakpoint", "input",
    }
)  # fmt: skip


def never_trusted(type_name: str) -> str | None:
    """Why ``type_name`` may never load, whoever trusts it; None when it may be trusted."""
    parts = type_name.split(".")
    top, last = parts[0], parts[-1]
    if len(parts) < 2 or any(not p for p in parts):
        return "not a dotted module.name"
    if top == "builtins":
        return "a builtin (skops already trusts the plain value types it needs)"
    if top.startswith("_"):
        return "an interpreter-internal module"
    if top in sys.stdlib_module_names and top not in _SAFE_STDLIB:
        return f"from the standard library module {top!r}, which no model needs"
    if top in _DANGEROUS_MODULES:
        return f"from {top!r}, which can load pickles or run code"
    for prefix in _DANGEROUS_PREFIXES:
        if type_name == prefix or type_name.startswith(prefix + "."):
            return f"from {prefix}, which reads or writes files or builds code"
    if last in _DANGEROUS_NAMES or last.startswith("__"):
        return f"{last!r} is a loader, runner or dunder"
    return None


def needs_review(type_name: str) -> bool:
    """scikit-learn state types skops itself flags as unsafe to load from a crafted file.

    ``sklearn.tree._tree.Tree`` (every tree model) holds raw node indices that
    scikit-learn follows unchecked: a crafted one crashes the process or reads memory
    out of bounds at predict. It loads only when a signed manifest trusts it.
    """
    return type_name in UNTRUSTED_TYPE_REASONS


def allowed_by_default(type_name: str) -> bool:
    """True for scikit-learn, numpy and scipy classes that construct estimators and arrays."""
    if type_name.split(".")[0] not in _ALLOWED_PACKAGES or never_trusted(type_name):
        return False
    return not needs_review(type_name) and _allowed_object(type_name)


@lru_cache(maxsize=4096)
def _allowed_object(type_name: str) -> bool:
    obj = _resolve(type_name)
    if obj is None:
        return False
    package = type_name.split(".")[0]
    if package == "sklearn":
        # Estimators and the state objects they hold (Tree, losses, binners, neighbours).
        return isinstance(obj, type) and obj.__module__.startswith("sklearn.")
    if package == "numpy":
        import numpy as np

        if isinstance(obj, np.ufunc):
            return True
        if not isinstance(obj, type) or issubclass(obj, np.memmap):
            return False
        random = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)
        return issubclass(obj, (np.generic, np.dtype, np.ndarray, *random)) or (
            obj is np.random.SeedSequence
        )
    import numpy as np
    import scipy.sparse as sparse

    if isinstance(obj, np.ufunc):  # scipy.special
        return True
    bases = tuple(b for b in (getattr(sparse, "sparray", None), sparse.spmatrix) if b)
    return isinstance(obj, type) and issubclass(obj, bases)


def _resolve(type_name: str) -> Any:
    """The object a skops type name refers to; only ever imports sklearn/numpy/scipy modules."""
    module_name, _, attr = type_name.rpartition(".")
    path: list[str] = []
    while module_name:
        if module_name.split(".")[0] not in _ALLOWED_PACKAGES:
            return None
        try:
            obj: Any = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            path.insert(0, outer)
    else:
        return None
    for part in [*path, attr]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def unexplained(found: Iterable[str], trusted: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split the untrusted types of a file into (never trusted, neither allowed nor trusted)."""
    trusted = set(trusted)
    refused, missing = [], []
    for name in sorted(set(found)):
        if never_trusted(name):
            refused.append(name)
        elif not allowed_by_default(name) and name not in trusted:
            missing.append(name)
    return refused, missing


def describe_refused(names: Iterable[str]) -> str:
    """One line naming each never-trusted type and why."""
    return "; ".join(f"{n} ({never_trusted(n)})" for n in names)
