"""Publishing: turn any fitted estimator or Pipeline into a verified store version.

The artifact is written into a staging directory, digested, signed, loaded back
through the same verifying loader the service uses and smoke-tested on its
sample input; only then is the directory renamed into place. A failure at any
step (a full or read-only disk included) leaves no version and no ``current``
change behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.base import is_classifier

from .artifacts import load_estimator
from .manifest import ArtifactFormat, CompiledRecord, Feature, Manifest
from .signing import file_sha256, sign
from .store import ModelStore, check_name


class PublishError(Exception):
    """Publishing refused; the message says why in one line."""


def features_for(estimator: Any, names: Sequence[str] | None = None) -> list[Feature]:
    """Feature schema from explicit names or the estimator's ``feature_names_in_``."""
    fitted_names = getattr(estimator, "feature_names_in_", None)
    n_in = getattr(estimator, "n_features_in_", None)
    if names:
        chosen = [str(n) for n in names]
        if n_in is not None and len(chosen) != n_in:
            raise PublishError(
                f"schema mismatch: {len(chosen)} feature names given, the estimator expects {n_in}"
            )
        if fitted_names is not None and list(fitted_names) != chosen:
            raise PublishError(
                "schema mismatch: the estimator was fitted on features "
                f"{list(fitted_names)}, not {chosen}"
            )
    elif fitted_names is not None:
        chosen = [str(n) for n in fitted_names]
    elif n_in is not None:
        raise PublishError(
            f"the estimator has {n_in} unnamed features: name them with --features a,b,..."
        )
    else:
        raise PublishError("cannot tell the estimator's features: is it fitted?")
    return [Feature(name=n) for n in chosen]


def ranges_from_data(features: list[Feature], data: Any) -> list[Feature]:
    """Record the min/max (or categories) seen in training data for each feature."""
    columns = _columns(data, len(features))
    out = []
    for feature, column in zip(features, columns, strict=True):
        update: dict[str, Any] = {}
        if feature.type == "string":
            update["categories"] = sorted({str(v) for v in column})
        else:
            values = np.asarray(column, dtype=float)
            update["minimum"], update["maximum"] = float(values.min()), float(values.max())
        out.append(feature.model_copy(update=update))
    return out


def _columns(data: Any, n: int) -> list[list[Any]]:
    if hasattr(data, "columns"):  # a DataFrame
        return [data.iloc[:, i].tolist() for i in range(n)]
    array = np.asarray(data, dtype=object)
    return [array[:, i].tolist() for i in range(n)]


def publish_estimator(
    store: ModelStore,
    estimator: Any,
    *,
    name: str,
    version: str | None = None,
    features: list[Feature] | None = None,
    output_labels: Sequence[str] | None = None,
    metrics: dict[str, float] | None = None,
    sample_input: list[list[Any]] | None = None,
    artifact_format: ArtifactFormat = "skops",
    signing_key: bytes | None = None,
    description: str = "",
    promote: bool = False,
    compile_graph: bool = True,
    held_out: Any = None,
) -> Manifest:
    """Write a new version of ``name`` and optionally make it current."""
    check_name("model", name)
    features = features or features_for(estimator)
    version = check_name("version", version or store.next_version(name))
    if version in store.versions(name):
        raise PublishError(f"{name} version {version} already exists in {store.root}")

    task = "classification" if is_classifier(estimator) else "regression"
    classes = labels = None
    if task == "classification":
        classes = [_plain(c) for c in estimator.classes_]
        labels = [str(x) for x in (output_labels or classes)]
        if len(labels) != len(classes):
            raise PublishError(
                f"{len(labels)} output labels given for {len(classes)} classes {classes}"
            )
    sample = sample_input or [_default_row(features)]
    _smoke(estimator, features, sample)

    try:
        staging = store.staging_dir(name)
    except OSError as exc:
        raise PublishError(f"cannot write to the model store {store.root}: {exc}") from exc
    try:
        artifact, trusted = _dump(estimator, staging, artifact_format)
        manifest = Manifest(
            name=name,
            version=version,
            format=artifact_format,
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            trusted_types=trusted,
            sklearn_version=sklearn.__version__,
            estimator=type(estimator).__name__,
            task=task,
            features=features,
            classes=classes,
            output_labels=labels,
            metrics=metrics or {},
            sample_input=sample,
            description=description,
        )
        if compile_graph:
            manifest.compiled = _compile(estimator, features, task, sample, held_out, staging)
        if signing_key:
            manifest.signature = sign(signing_key, manifest.signed_fields())
        manifest.write(staging)
        # Load it back exactly as the service will, so a version that cannot serve never lands.
        reloaded = load_estimator(
            staging, manifest, signing_key, allow_unsigned_pickle=signing_key is None
        )
        _smoke(reloaded, features, sample)
        store.commit_version(staging, name, version)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PublishError(f"cannot write to the model store {store.root}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if promote:
        store.promote(name, version)
    return manifest


def _compile(
    estimator: Any,
    features: list[Feature],
    task: str,
    sample: list[list[Any]],
    held_out: Any,
    directory: Path,
) -> CompiledRecord | None:
    """Compile for each compiled runtime until one verifies; the record says how it went."""
    from .runtimes import compiled_runtimes

    record = None
    for runtime in compiled_runtimes():
        record = runtime.compile(
            estimator, features, task=task, sample_rows=sample, held_out=held_out,
            directory=directory,
        )  # fmt: skip
        if record.ok:
            break
    return record


def _dump(estimator: Any, directory: Path, fmt: ArtifactFormat) -> tuple[Path, list[str]]:
    if fmt == "joblib":
        import joblib

        path = directory / "model.joblib"
        joblib.dump(estimator, path)
        return path, []
    import skops.io as sio

    path = directory / "model.skops"
    sio.dump(estimator, path)
    # The publisher vouches for the types its own estimator uses; nothing else will load.
    return path, sorted(sio.get_untrusted_types(file=path))


def _smoke(estimator: Any, features: list[Feature], rows: list[list[Any]]) -> None:
    from .runtimes.sklearn import to_estimator_input

    try:
        estimator.predict(to_estimator_input(estimator, features, rows))
    except Exception as exc:
        raise PublishError(f"the estimator fails on its sample input {rows[:1]}: {exc}") from exc


def _default_row(features: list[Feature]) -> list[Any]:
    row: list[Any] = []
    for f in features:
        if f.type == "string":
            if not f.categories:
                raise PublishError(f"string feature {f.name!r} needs a sample input")
            row.append(f.categories[0])
        elif f.minimum is not None and f.maximum is not None:
            row.append((f.minimum + f.maximum) / 2)
        else:
            row.append(0.0)
    return row


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
