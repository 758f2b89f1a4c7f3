"""Which runtime serves a version: the setting, else a verified compiled one, else the estimator.

``auto`` tries the runtimes that declare ``auto`` in their capabilities,
compiled ones first (a verified graph is faster and never unpickles the
estimator), and records on the chosen runtime why the ones before it were
passed over. A runtime named in the settings serves or refuses the version:
there is no silent fallback from a forced choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArtifactRejected
from .base import AUTO, CompiledRuntime, Runtime, get, runtimes

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..settings import Settings


def build_runtime(version_dir: Path, manifest: Manifest, settings: Settings) -> Runtime:
    """Load the runtime ``settings`` choose for this version; raise ``ArtifactRejected``."""
    wanted = settings.runtime_for(manifest.name)
    if wanted != AUTO:
        cls = get(wanted)
        usable, why = fits(cls, manifest)
        if not usable:
            code = "no_compiled_graph" if issubclass(cls, CompiledRuntime) else "runtime_unusable"
            raise ArtifactRejected(code, f"runtime {wanted} forced, but {why}")
        runtime = cls.load(version_dir, manifest, settings)
        if not issubclass(cls, CompiledRuntime):
            runtime.reason = f"runtime {wanted} chosen by settings"
        return runtime
    passed_over: list[str] = []
    for cls in auto_order():
        usable, why = fits(cls, manifest)
        if usable:
            runtime = cls.load(version_dir, manifest, settings)
            runtime.reason = "; ".join(passed_over)
            return runtime
        passed_over.append(why)
    raise ArtifactRejected("no_runtime", f"no runtime can serve it: {'; '.join(passed_over)}")


def auto_order() -> list[type[Runtime]]:
    """The runtimes ``auto`` tries, in order: compiled first, then the rest."""
    candidates = [cls for cls in runtimes() if cls.capabilities.auto]
    return sorted(candidates, key=lambda cls: not issubclass(cls, CompiledRuntime))


def fits(cls: type[Runtime], manifest: Manifest) -> tuple[bool, str]:
    """Whether ``cls`` can serve ``manifest``: its declared capabilities, then its own check."""
    nullable = [f.name for f in manifest.features if getattr(f, "nullable", False)]
    if nullable and not cls.capabilities.missing_values:
        return False, (
            f"runtime {cls.name} does not accept missing values, "
            f"and {', '.join(nullable)} may be missing"
        )
    return cls.usable(manifest)
