"""Publishing: turn any fitted estimator or Pipeline into a verified store version.

``publish_model`` is the API (a notebook calls it; ``predictor publish`` is a thin
layer over it): from the estimator and the user's own data it derives the schema,
held-out metrics, sample rows and the compiled graph's verification on that
data's distribution, then ``publish_estimator`` writes the version.

The artifact is written into a staging directory, digested, signed, loaded back
through the same verifying loader the service uses and smoke-tested on its
sample input; only then is the directory renamed into place. A failure at any
step (a full or read-only disk included) leaves no version and no ``current``
change behind.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import is_classifier, is_regressor

from . import trust as skops_trust
from .artifacts import load_estimator
from .labels import LabelError, display_labels, plain
from .manifest import ArtifactFormat, CompiledRecord, Feature, Manifest
from .signing import file_sha256, sign, version_files
from .store import ModelStore, check_name
from .training_data import (
    DataError,
    SplitData,
    accepts_nan,
    check_declared_types,
    describe_features,
    feature_names,
    held_out_split,
    metrics_for,
    read_table,
    sample_rows,
    split_target,
)

NO_DATA = "unverified: no data given (publish with --data to verify the compiled graph)"

# ``signing_key`` left out: sign with the configured key, creating the local one if none.
CONFIGURED_KEY: Any = object()


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
    store: ModelStore | Any,
    estimator: Any,
    *,
    name: str,
    version: str | None = None,
    features: list[Feature] | None = None,
    output_labels: Mapping[Any, str] | Sequence[str] | None = None,
    metrics: dict[str, float] | None = None,
    sample_input: list[list[Any]] | None = None,
    artifact_format: ArtifactFormat = "skops",
    signing_key: bytes | None = CONFIGURED_KEY,
    trust: Sequence[str] = (),
    description: str = "",
    promote: bool = False,
    compile_graph: bool = True,
    held_out: Any = None,
    rows_by_source: dict[str, np.ndarray] | None = None,
    trained_sklearn_version: str | None = None,
    data_record: dict[str, Any] | None = None,
    not_compiled_reason: str | None = None,
) -> Manifest:
    """Write a new version of ``name`` and optionally make it current.

    ``trust`` names skops types beyond the allow-list (service/trust.py) that the
    estimator needs; they are recorded in the signed manifest. ``signing_key=None``
    publishes unsigned (served only where ``PREDICTOR_ALLOW_UNSIGNED`` is on).

    The low-level step under ``publish_model``: everything about the inputs is
    given. ``rows_by_source``: verification rows for the compiled graph (else
    rows drawn from the features' ranges). ``not_compiled_reason``: serve with
    scikit-learn and record why (e.g. no data to verify a graph on).
    ``store`` is a store object, a directory path or an ``s3://BUCKET/PREFIX`` URI.
    """
    if isinstance(store, str | Path):
        from .stores import open_store

        store = open_store(store)
    check_name("model", name)
    if signing_key is CONFIGURED_KEY:
        from .settings import Settings

        signing_key = Settings().publishing_key()
    features = features or features_for(estimator)
    version = check_name("version", version or store.next_version(name))
    if version in store.versions(name):
        raise PublishError(f"{name} version {version} already exists in {store.root}")

    task = "classification" if is_classifier(estimator) else "regression"
    classes = labels = None
    if task == "classification":
        classes = [plain(c) for c in estimator.classes_]
        try:
            labels = display_labels(classes, output_labels)
        except LabelError as exc:
            raise PublishError(str(exc)) from exc
    sample = sample_input or [_default_row(features)]
    _check_width(sample, features)
    _smoke(estimator, features, sample)

    try:
        staging = store.staging_dir(name)
    except OSError as exc:
        raise PublishError(f"cannot write to the model store {store.root}: {exc}") from exc
    try:
        artifact, trusted = _dump(estimator, staging, artifact_format, trust)
        manifest = Manifest(
            name=name,
            version=version,
            format=artifact_format,
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            trusted_types=trusted,
            sklearn_version=trained_sklearn_version or sklearn.__version__,
            publisher_sklearn_version=sklearn.__version__,
            estimator=type(estimator).__name__,
            task=task,
            features=features,
            classes=classes,
            output_labels=labels,
            metrics=metrics or {},
            sample_input=sample,
            description=description,
            data=data_record,
        )
        if compile_graph and not not_compiled_reason:
            manifest.compiled = _compile(
                estimator, features, task, sample, held_out, staging, rows_by_source
            )
        elif not_compiled_reason:
            manifest.compiled = {"ok": False, "runtime": "sklearn", "reason": not_compiled_reason}
        manifest.files = version_files(staging)  # every file, signed through the manifest
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
    rows_by_source: dict[str, np.ndarray] | None = None,
) -> CompiledRecord | None:
    """Compile for each compiled runtime until one verifies; the record says how it went."""
    from .runtimes import compiled_runtimes
    from .verification_data import distinct_rows

    record = None
    for runtime in compiled_runtimes():
        record = runtime.compile(
            estimator, features, task=task, sample_rows=sample, held_out=held_out,
            directory=directory, rows_by_source=rows_by_source,
        )  # fmt: skip
        if record.ok:
            break
    if record is not None and rows_by_source is not None:
        record.distinct_rows = distinct_rows(list(rows_by_source.values()))
    return record


def _dump(
    estimator: Any, directory: Path, fmt: ArtifactFormat, trust: Sequence[str] = ()
) -> tuple[Path, list[str]]:
    if fmt == "joblib":
        import joblib

        path = directory / "model.joblib"
        joblib.dump(estimator, path)
        return path, []
    import skops.io as sio

    path = directory / "model.skops"
    sio.dump(estimator, path)
    return path, trusted_types_for(sio.get_untrusted_types(file=path), trust)


def trusted_types_for(found: Sequence[str], trust: Sequence[str]) -> list[str]:
    """What the manifest records as trusted for a skops dump of the publisher's estimator.

    Allow-listed types need nothing. The tree types skops flags are recorded: the
    publisher's own estimator built them in this process. Any other type must be named
    in ``trust``; a never-trusted one is refused whatever ``trust`` says.
    """
    refused, missing = skops_trust.unexplained(found, trust)
    if refused:
        raise PublishError(f"never trusted: {skops_trust.describe_refused(refused)}")
    missing = [t for t in missing if not skops_trust.needs_review(t)]
    if missing:
        flags = " ".join(f"--trust {t}" for t in missing)
        raise PublishError(
            f"the estimator holds types outside the allow-list: {', '.join(missing)}; "
            f"if you vouch for them, publish with {flags} (Python API: trust=[...])"
        )
    return sorted(t for t in set(found) if not skops_trust.allowed_by_default(t))


def _check_width(rows: list[list[Any]], features: list[Feature]) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(features):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise PublishError(
                f"sample row {i} has {got}; expected {len(features)} values, one per feature "
                f"{[f.name for f in features]}"
            )


def _smoke(estimator: Any, features: list[Feature], rows: list[list[Any]]) -> None:
    from .runtimes.sklearn import to_estimator_input
    from .verification_data import validated

    try:
        estimator.predict(to_estimator_input(estimator, features, validated(rows, features)))
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


# --- the API: publish from the user's own data ----------------------------------


def read_model_file(path: Path | str, trust: Sequence[str] = ()) -> tuple[Any, str]:
    """A fitted model from a joblib/pickle or skops file, and the scikit-learn version
    it was saved with (both formats carry it; scikit-learn warns when it differs)."""
    from sklearn.exceptions import InconsistentVersionWarning

    path = Path(path)
    if not path.is_file():
        raise PublishError(f"no such file: {path}")
    if path.suffix in (".py", ".ipynb"):
        raise PublishError(
            f"{path} is source code, not a fitted model: fit it, then save it with "
            "joblib.dump(model, 'model.joblib') or skops.io.dump(model, 'model.skops')"
        )
    trained = sklearn.__version__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        if path.suffix == ".skops":
            try:
                # The publisher vouches for its own file: trust the types it holds.
                # From anywhere: build only the allow-list plus what the publisher vouched for.
                from .artifacts import load_skops
                from .errors import ArtifactRejected

                try:
                    estimator = load_skops(path, list(trust))
                except ArtifactRejected as exc:
                    raise PublishError(f"{path}: {_skops_refusal(exc)}") from exc
            except Exception as exc:
                raise PublishError(f"{path} is not a readable skops file: {exc}") from exc
        else:
            import joblib

            try:  # the publisher's own file, loaded on the publisher's machine
                estimator = joblib.load(path)
            except Exception as exc:
                raise PublishError(
                    f"{path} is not a readable joblib/pickle file ({type(exc).__name__}: "
                    f"{exc}): expected a model saved with joblib.dump or skops.io.dump"
                ) from exc
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            trained = w.message.original_sklearn_version
            break
    return estimator, trained


def check_estimator(estimator: Any, source: str = "the object") -> None:
    """A fitted scikit-learn classifier or regressor, else one line saying what it is."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not hasattr(estimator, "predict") or not hasattr(estimator, "get_params"):
        raise PublishError(
            f"{source} holds a {type(estimator).__module__}.{type(estimator).__name__}, not a "
            "scikit-learn estimator: expected a fitted estimator or Pipeline with predict()"
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise PublishError(
            f"{source} holds an unfitted {type(estimator).__name__}: call fit() before saving it"
        ) from None
    except TypeError:
        pass  # not a BaseEstimator subclass; predict() will tell
    if not (is_classifier(estimator) or is_regressor(estimator)):
        raise PublishError(
            f"{source} holds a {type(estimator).__name__}, which is neither a classifier nor a "
            "regressor: expected a model whose predict() answers classes or values"
        )


def check_version(trained: str, allow_mismatch: bool) -> None:
    """Refuse a model trained with another scikit-learn major.minor than this one."""
    mine = sklearn.__version__
    if _minor(trained) == _minor(mine) or allow_mismatch:
        return
    raise PublishError(
        f"the model was saved with scikit-learn {trained}, this environment (and the service) "
        f"runs {mine}: another minor version may predict differently or fail to load; refit "
        f"it with scikit-learn {_minor(mine)}, or pass --allow-version-mismatch to publish anyway"
    )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def publish_model(
    estimator: Any,
    *,
    name: str,
    data: pd.DataFrame | str | Path | None = None,
    target: str | None = None,
    held_out: pd.DataFrame | str | Path | None = None,
    store: ModelStore | str | Path = "models",
    version: str | None = None,
    features: Sequence[str | Feature] | None = None,
    labels: Mapping[Any, str] | Sequence[str] | None = None,
    sample_input: list[list[Any]] | None = None,
    metrics: dict[str, float] | None = None,
    artifact_format: ArtifactFormat = "skops",
    signing_key: bytes | None = CONFIGURED_KEY,
    trust: Sequence[str] = (),
    description: str = "",
    promote: bool = False,
    compile_graph: bool = True,
    compile_anyway: bool = False,
    allow_version_mismatch: bool = False,
    trained_sklearn_version: str | None = None,
) -> Manifest:
    """Publish a fitted estimator (or a model file's path) from the user's own data.

    >>> publish_model(pipeline, name="churn", data=df, target="churn", store="models")

    ``data``: the training or validation data (a DataFrame, or a .csv/.parquet
    path) with or without the ``target`` column, which is dropped before use.
    Everything about the inputs is derived from it and the estimator: feature
    names, order, types, ranges, categories and nullable flags, held-out metrics
    (on ``held_out``, else a seeded split of ``data``), sample rows, and the
    compiled graph's verification on the data's own distribution. ``features``
    overrides names (``"plan:string"`` or ``Feature`` objects set types too).
    ``labels``: display names per class, e.g. ``{"leave": "Leaves"}``.
    ``metrics``: metrics of your own, recorded beside the computed ones.
    Without data the model serves with scikit-learn unless ``compile_anyway``.
    """
    if isinstance(estimator, str | Path):
        estimator, trained = read_model_file(estimator, trust=trust)
        trained_sklearn_version = trained_sklearn_version or trained
        source = "the file"
    else:
        source = "the object"
    check_estimator(estimator, source)
    trained = trained_sklearn_version or sklearn.__version__
    check_version(trained, allow_version_mismatch)
    if isinstance(store, str | Path):
        from .stores import open_store

        store = open_store(store)  # a directory or s3://BUCKET/PREFIX
    names, declared, given = _feature_overrides(features)
    task = "classification" if is_classifier(estimator) else "regression"
    common: dict[str, Any] = dict(
        name=name,
        version=version,
        output_labels=labels,
        artifact_format=artifact_format,
        signing_key=signing_key,
        trust=trust,
        description=description,
        promote=promote,
        compile_graph=compile_graph,
        trained_sklearn_version=trained,
    )
    try:
        if data is None:
            if given:
                chosen = given
            else:
                chosen = features_for(estimator, names)
                chosen = [
                    f.model_copy(update={"type": declared.get(f.name, f.type)}) for f in chosen
                ]
            check_declared_types(estimator, chosen)
            return publish_estimator(
                store,
                estimator,
                features=chosen,
                sample_input=sample_input,
                metrics=metrics,
                not_compiled_reason=None if compile_anyway else NO_DATA,
                **common,
            )
        plan = _from_data(estimator, task, data, target, held_out, names, declared, given)
        return publish_estimator(
            store,
            estimator,
            features=plan.features,
            metrics={**plan.metrics, **(metrics or {})},
            sample_input=sample_input or plan.sample,
            rows_by_source=plan.rows_by_source if compile_graph else None,
            data_record=plan.record,
            **common,
        )
    except DataError as exc:
        raise PublishError(str(exc)) from exc


def _feature_overrides(
    features: Sequence[str | Feature] | None,
) -> tuple[list[str] | None, dict[str, str], list[Feature] | None]:
    """``--features`` as names, declared types, or complete ``Feature`` objects."""
    if not features:
        return None, {}, None
    if all(isinstance(f, Feature) for f in features):
        given = list(features)  # type: ignore[arg-type]
        return [f.name for f in given], {}, given
    names, declared = [], {}
    allowed = {"float", "int", "bool", "string"}
    for item in features:
        text = item.name if isinstance(item, Feature) else str(item)
        name, _, ftype = text.strip().partition(":")
        if not name or (ftype and ftype not in allowed):
            raise PublishError(
                f"feature {text!r}: expected name or name:type with type in "
                f"{', '.join(sorted(allowed))}"
            )
        names.append(name)
        if ftype:
            declared[name] = ftype
    return names, declared, None


class _Plan:
    """What the data says: schema, metrics, samples, verification rows, a record of it."""

    features: list[Feature]
    metrics: dict[str, float]
    sample: list[list[Any]]
    rows_by_source: dict[str, np.ndarray]
    record: dict[str, Any]


def _from_data(
    estimator: Any,
    task: str,
    data: pd.DataFrame | str | Path,
    target: str | None,
    held_out: pd.DataFrame | str | Path | None,
    names: list[str] | None,
    declared: dict[str, str],
    given: list[Feature] | None,
) -> _Plan:
    from .training_data import json_rows
    from .verification_data import (
        MAX_DATA_ROWS,
        SYNTHETIC_ROWS,
        distinct_synthetic_rows,
        ignores_unknown,
        validated,
    )

    source = str(data) if isinstance(data, str | Path) else "a DataFrame"
    frame = read_table(data) if isinstance(data, str | Path) else data
    if not len(frame):
        raise DataError(f"--data {source} has no rows")
    if names is None:
        names = feature_names(estimator, frame, target)
    else:
        fitted = getattr(estimator, "feature_names_in_", None)
        if fitted is not None and [str(n) for n in fitted] != names:
            raise DataError(
                f"--features {names} do not match the features the estimator was fitted on "
                f"{[str(n) for n in fitted]}"
            )
    split = split_target(frame, names, target)
    if given:
        features = given
    else:
        features = describe_features(estimator, split.X, declared)  # type: ignore[arg-type]
        features = accepts_nan(estimator, features, split.X)
    plan = _Plan()
    plan.features = features
    if held_out is not None:
        held_source = str(held_out) if isinstance(held_out, str | Path) else "a DataFrame"
        held_frame = read_table(held_out) if isinstance(held_out, str | Path) else held_out
        held = split_target(held_frame, names, target if target in held_frame else None,
                            what="--held-out")  # fmt: skip
    elif split.y is not None:
        held, held_source = held_out_split(split)
    else:
        held, held_source = SplitData(split.X.head(0), None), None
    plan.metrics = {}
    if held.y is not None and len(held.X):
        from .runtimes.sklearn import to_estimator_input

        X_held = to_estimator_input(
            estimator, features, validated(json_rows(held.X, features), features)
        )
        plan.metrics = metrics_for(estimator, task, X_held, held.y)
    plan.sample = sample_rows(split.X, features)

    data_rows = json_rows(split.X.head(MAX_DATA_ROWS), features)
    held_rows = json_rows(held.X, features) if held_out is not None else []
    rng = np.random.default_rng(0)
    data_array = validated(data_rows, features)
    unseen = any(f.type == "string" for f in features) and ignores_unknown(
        estimator, features, plan.sample[0]
    )
    plan.rows_by_source = {
        "sample": validated(plan.sample, features),
        "held_out": validated(held_rows, features),
        "data": data_array,
    }
    plan.rows_by_source["synthetic"] = distinct_synthetic_rows(
        features,
        data_array,
        SYNTHETIC_ROWS,
        rng,
        unseen=unseen,
        exclude=list(plan.rows_by_source.values()),
    )
    plan.record = {
        "source": source,
        "rows": len(frame),
        "target": target,
        "held_out": held_source,
        "held_out_rows": len(held.X),
        "unseen_categories": "ignored" if unseen else None,
    }
    return plan


def _skops_refusal(exc: Exception) -> str:
    text = str(exc)
    if getattr(exc, "reason", "") != "untrusted_types" or "never trusted" in text:
        return text
    names = text.rpartition(": ")[2].split(", ")
    flags = " ".join(f"--trust {n}" for n in names)
    return (
        f"it holds types outside the allow-list: {', '.join(names)}; review them, and if "
        f"you vouch for them publish again with {flags}"
    )
