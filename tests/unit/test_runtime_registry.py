"""The runtime registry: runtimes found by name, settings choices derived from it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from service import runtimes
from service.manifest import CompiledRecord, Manifest
from service.runtimes import selection
from service.runtimes.onnx import OnnxRuntime
from service.runtimes.sklearn import SklearnRuntime
from service.settings import Settings


def test_registry_lists_sklearn_and_onnx() -> None:
    assert runtimes.get("sklearn") is SklearnRuntime
    assert runtimes.get("onnx") is OnnxRuntime
    assert {"sklearn", "onnx"} <= set(runtimes.names())
    assert runtimes.choices()[0] == "auto"
    assert OnnxRuntime in runtimes.compiled_runtimes()
    assert SklearnRuntime not in runtimes.compiled_runtimes()


def test_capabilities_are_declared() -> None:
    assert SklearnRuntime.capabilities.needs_estimator
    assert not OnnxRuntime.capabilities.needs_estimator
    assert OnnxRuntime.capabilities.probabilities and SklearnRuntime.capabilities.probabilities
    # auto tries the verified graph before unpickling anything.
    assert selection.auto_order()[:2] == [OnnxRuntime, SklearnRuntime]


def test_unknown_runtime_names_the_registered_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(RUNTIME="fast")
    message = str(caught.value)
    assert "unknown runtime 'fast'" in message
    assert "expected auto|onnx|sklearn" in message
    with pytest.raises(ValidationError, match=r"'iris=fast': expected model=auto\|onnx\|sklearn"):
        Settings(RUNTIME_OVERRIDES="iris=fast")
    with pytest.raises(KeyError, match="expected one of onnx, sklearn"):
        runtimes.get("fast")


def test_settings_description_lists_the_runtimes() -> None:
    description = Settings.model_fields["RUNTIME"].description
    assert "onnx" in description and "sklearn" in description


def test_registering_twice_under_one_name_is_refused() -> None:
    class Impostor(SklearnRuntime):
        name = "onnx"

    with pytest.raises(ValueError, match="already registered"):
        runtimes.register(Impostor)
    assert runtimes.get("onnx") is OnnxRuntime
    with pytest.raises(ValueError, match="reserved"):
        runtimes.register(type("Auto", (SklearnRuntime,), {"name": "auto"}))


def _manifest(compiled: dict | None) -> Manifest:
    return Manifest(
        name="m", version="1", format="skops", artifact="model.skops", sha256="0" * 64,
        sklearn_version="1", estimator="LogisticRegression", task="classification",
        features=[{"name": "x"}], classes=[0, 1], sample_input=[[0.0]], compiled=compiled,
    )  # fmt: skip


def test_onnx_usable_only_with_a_verified_record_of_this_onnxruntime() -> None:
    from service.runtimes.onnx.verify import runtime_version

    assert OnnxRuntime.usable(_manifest(None)) == (False, "no compiled graph was published")
    failed = _manifest({"ok": False, "reason": "3 of 9 rows differ", "rows_checked": 9})
    assert OnnxRuntime.usable(failed) == (
        False, "the graph failed verification at publish: 3 of 9 rows differ"
    )  # fmt: skip
    ok = {"ok": True, "sha256": "ab" * 32, "artifact": "model.onnx"}
    older = _manifest({**ok, "runtime_version": "onnxruntime 0.1"})
    assert not OnnxRuntime.usable(older)[0]
    assert "verified with onnxruntime 0.1" in OnnxRuntime.usable(older)[1]
    assert OnnxRuntime.usable(_manifest({**ok, "runtime_version": runtime_version()})) == (
        True, ""
    )  # fmt: skip
    # Never compiled (no data given at publish): the reason is said as it is.
    unverified = _manifest({"ok": False, "reason": "unverified: no data given"})
    assert OnnxRuntime.usable(unverified) == (False, "unverified: no data given")


def test_compiled_record_keeps_old_and_unknown_keys() -> None:
    """Manifests written before the typed record (a plain dict) still load, extras kept."""
    old = {"ok": True, "runtime": "onnx", "rows_checked": 5, "mismatches": 0,
           "max_abs_diff": None, "sha256": "cd" * 32, "artifact": "model.onnx",
           "future_field": 1}  # fmt: skip
    manifest = _manifest(old)
    assert isinstance(manifest.compiled, CompiledRecord)
    assert manifest.compiled.sha256 == "cd" * 32
    assert manifest.compiled.model_dump(exclude_unset=True) == old
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again.compiled == manifest.compiled
    # The graph's record is signed with the rest of the manifest.
    assert b'"sha256":"' + ("cd" * 32).encode() + b'"' in manifest.signed_fields()
    # A dict assigned later (older publishing code) is typed too.
    manifest.compiled = {"ok": False, "reason": "no"}
    assert isinstance(manifest.compiled, CompiledRecord) and not manifest.compiled.ok


def test_a_runtime_without_missing_values_is_passed_over_for_nullable_features() -> None:
    class NoGaps(SklearnRuntime):
        name = "no-gaps"
        capabilities = dataclasses.replace(SklearnRuntime.capabilities, missing_values=False)

    manifest = SimpleNamespace(features=[SimpleNamespace(name="age", nullable=True)], compiled=None)
    usable, why = selection.fits(NoGaps, manifest)
    assert (
        not usable
        and why == "runtime no-gaps does not accept missing values, and age may be missing"
    )
    assert selection.fits(SklearnRuntime, manifest) == (True, "")
    # The compiled graph may serve nullable features only where publish verified them.
    ok = {"ok": True, "sha256": "ab" * 32, "artifact": "model.onnx", "rows_checked": 9}
    gaps = _manifest(ok)
    gaps.features[0].nullable = True
    usable, why = OnnxRuntime.usable(gaps)
    assert not usable and "not verified on missing values of x" in why
