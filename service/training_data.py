"""What a model's own data says about its inputs: the schema a publish records.

From the fitted estimator and a DataFrame of the user's training or validation
data (CSV or Parquet), with no typing by hand: feature names and order
(``feature_names_in_`` first), types (the data's dtypes, checked against the
fitted encoders), numeric ranges, string categories (the encoders' and the
data's), which features are nullable (missing in the data, or the estimator
predicts a row with NaN there), held-out metrics and sample rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .manifest import Feature, FeatureType

MAX_CATEGORIES = 1000  # a string column with more distinct values is listed, not enumerated
HELD_OUT_SHARE = 0.2
SPLIT_SEED = 0
SAMPLE_ROWS = 3


class DataError(ValueError):
    """The data does not fit the estimator; one line saying what and what is expected."""


def read_table(path: Path | str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (missing cells as NaN)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except ImportError as exc:
        raise DataError(f"cannot read {path}: {exc} (install pyarrow for Parquet)") from exc
    except Exception as exc:
        raise DataError(f"{path} is not a readable {suffix[1:]} table: {exc}") from exc
    raise DataError(f"{path}: expected a .csv or .parquet data file, got {suffix or 'no suffix'}")


@dataclass
class SplitData:
    """Feature columns (schema order) and the target, if the data carries one."""

    X: pd.DataFrame
    y: pd.Series | None


def split_target(
    frame: pd.DataFrame, names: Sequence[str], target: str | None, what: str = "--data"
) -> SplitData:
    """The feature columns in schema order and the target column; exact errors."""
    if target is not None:
        if target in names:
            raise DataError(
                f"--target {target!r} is also one of the estimator's features {list(names)}; "
                "expected the column holding the labels or values the model predicts"
            )
        if target not in frame.columns:
            raise DataError(
                f"{what} has no target column {target!r}; its columns are {list(frame.columns)}"
            )
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(
            f"{what} lacks feature column{'s' * (len(missing) != 1)} {missing}: the estimator "
            f"expects {list(names)}; the file has {list(frame.columns)}"
        )
    return SplitData(
        X=frame[list(names)].reset_index(drop=True),
        y=frame[target].reset_index(drop=True) if target is not None else None,
    )


def feature_names(estimator: Any, frame: pd.DataFrame, target: str | None) -> list[str]:
    """``feature_names_in_`` when the estimator has it, else the data's other columns."""
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        return [str(n) for n in fitted]
    names = [str(c) for c in frame.columns if c != target]
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and len(names) != n_in:
        raise DataError(
            f"the estimator was fitted on {n_in} unnamed features but the data has "
            f"{len(names)} columns besides the target {names}: pass --target, or --features "
            "to say which columns, in order"
        )
    return names


# --- types, ranges, categories ----------------------------------------------------


def _walk(estimator: Any):
    yield estimator
    for attr in ("steps", "transformer_list"):
        for _, sub in getattr(estimator, attr, None) or []:
            yield from _walk(sub)
    for _, sub, _ in getattr(estimator, "transformers_", None) or []:
        if not isinstance(sub, str):
            yield from _walk(sub)


def encoder_columns(estimator: Any) -> dict[str, list[Any]]:
    """Input column -> categories of the OneHotEncoder / OrdinalEncoder it feeds."""
    out: dict[str, list[Any]] = {}
    for obj in _walk(estimator):
        for _, trans, cols in getattr(obj, "transformers_", None) or []:
            if isinstance(trans, str):
                continue
            cols = [cols] if isinstance(cols, str) else list(np.atleast_1d(cols))
            if not all(isinstance(c, str) for c in cols):
                continue
            encoders = [o for o in _walk(trans) if hasattr(o, "categories_")]
            if encoders:
                for col, cats in zip(cols, encoders[0].categories_, strict=False):
                    out.setdefault(col, list(cats.tolist()))
    return out


def check_declared_types(estimator: Any, features: list[Feature]) -> None:
    """A feature the fitted encoder knows as strings must not be declared a number."""
    encoded = encoder_columns(estimator)
    for f in features:
        cats = [c for c in encoded.get(f.name) or [] if isinstance(c, str)]
        if cats and f.type != "string":
            raise DataError(
                f'feature "{f.name}" is declared {f.type}, but the fitted encoder knows it as a '
                f"string column (categories {cats[:5]}); declare it {f.name}:string"
            )


def _dtype_type(series: pd.Series) -> FeatureType:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_numeric_dtype(series):
        return "float"
    values = series.dropna()
    if len(values) and values.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return "bool"  # a bool column with gaps reads as object
    return "string"


def describe_features(
    estimator: Any, X: pd.DataFrame, declared: dict[str, FeatureType] | None = None
) -> list[Feature]:
    """One ``Feature`` per column: type, range or categories, missing share."""
    encoded = encoder_columns(estimator)
    declared = declared or {}
    features = []
    for name in X.columns:
        column = X[name]
        ftype = declared.get(name) or _dtype_type(column)
        cats = encoded.get(name)
        has_strings = any(isinstance(c, str) for c in cats or [])
        if has_strings and ftype != "string":
            raise DataError(
                f'feature "{name}" is declared {ftype}, but the fitted encoder knows it as a '
                f"string column (categories {[c for c in cats if isinstance(c, str)][:5]}); "
                f"declare it {name}:string"
            )
        if ftype == "string" and pd.api.types.is_numeric_dtype(column) and not has_strings:
            raise DataError(
                f'feature "{name}" is declared string, but the data holds numbers there; '
                "declare it float or int"
            )
        missing = float(column.isna().mean()) if len(column) else 0.0
        update: dict[str, Any] = {"name": str(name), "type": ftype}
        if missing:
            update.update(nullable=True, missing_rate=round(missing, 6))
        present = column.dropna()
        if ftype == "string":
            known = [str(c) for c in cats or [] if isinstance(c, str)]
            seen = sorted({str(v) for v in present.unique()[: MAX_CATEGORIES + 1]})
            merged = known + [c for c in seen if c not in set(known)]
            if len(merged) <= MAX_CATEGORIES:
                update["categories"] = merged
        elif len(present):
            values = present.astype(float)
            update.update(minimum=float(values.min()), maximum=float(values.max()))
        features.append(Feature(**update))
    return features


def accepts_nan(estimator: Any, features: list[Feature], X: pd.DataFrame) -> list[Feature]:
    """Mark nullable every feature the estimator predicts a NaN for (one real row each)."""
    from .runtimes.sklearn import to_estimator_input

    complete = X.dropna()
    base = (complete if len(complete) else X).head(1)
    if not len(base):
        return features
    row = base.astype(object).values.tolist()[0]
    out = []
    for j, feature in enumerate(features):
        if feature.nullable:
            out.append(feature)
            continue
        probe = list(row)
        probe[j] = np.nan
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator.predict(to_estimator_input(estimator, features, [probe]))
        except Exception:
            out.append(feature)
            continue
        out.append(feature.model_copy(update={"nullable": True}))
    return out


# --- rows as JSON, metrics -----------------------------------------------------------


def json_rows(X: pd.DataFrame, features: list[Feature]) -> list[list[Any]]:
    """Rows as a client sends them: numbers, strings, booleans, ``None`` for missing."""
    out = []
    for row in X.astype(object).values.tolist():
        values = []
        for f, v in zip(features, row, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                values.append(None)
            elif f.type == "int":
                values.append(int(v))
            elif f.type == "bool":
                values.append(bool(v))
            elif f.type == "float":
                values.append(float(v))
            else:
                values.append(str(v))
        out.append(values)
    return out


def sample_rows(X: pd.DataFrame, features: list[Feature], n: int = SAMPLE_ROWS) -> list[list[Any]]:
    """Real rows for the smoke test and the web form: complete ones first, then one with gaps."""
    complete = X.dropna()
    rows = json_rows((complete if len(complete) else X).head(n), features)
    gappy = X[X.isna().any(axis=1)]
    if len(complete) and len(gappy):
        rows.append(json_rows(gappy.head(1), features)[0])
    return rows


def held_out_split(data: SplitData) -> tuple[SplitData, str]:
    """A seeded share of ``data`` held out for the metrics (the model may have seen it)."""
    n = len(data.X)
    rng = np.random.default_rng(SPLIT_SEED)
    take = np.sort(rng.permutation(n)[: max(1, int(round(n * HELD_OUT_SHARE)))])
    y = data.y.iloc[take].reset_index(drop=True) if data.y is not None else None
    return SplitData(data.X.iloc[take].reset_index(drop=True), y), (
        f"a seeded {HELD_OUT_SHARE:.0%} split of --data ({len(take)} rows; the model may have "
        "been trained on them: pass --held-out for unseen rows)"
    )


def metrics_for(estimator: Any, task: str, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Held-out metrics: accuracy, F1 macro and ROC AUC (with probabilities), or R², MAE, RMSE."""
    from sklearn import metrics as m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = estimator.predict(X)
        if task == "regression":
            y_true = y.to_numpy(dtype=float)
            return {
                "r2": _round(m.r2_score(y_true, predicted)),
                "mae": _round(m.mean_absolute_error(y_true, predicted)),
                "rmse": _round(math.sqrt(m.mean_squared_error(y_true, predicted))),
            }
        y_true = _as_classes(y, estimator.classes_)
        out = {
            "accuracy": _round(m.accuracy_score(y_true, predicted)),
            "f1_macro": _round(m.f1_score(y_true, predicted, average="macro")),
        }
        if hasattr(estimator, "predict_proba") and len(set(y_true.tolist())) > 1:
            proba = estimator.predict_proba(X)
            try:
                if proba.shape[1] == 2:
                    auc = m.roc_auc_score(y_true == estimator.classes_[1], proba[:, 1])
                else:
                    auc = m.roc_auc_score(
                        y_true, proba, multi_class="ovr", labels=estimator.classes_
                    )
                out["roc_auc"] = _round(auc)
            except ValueError:
                pass  # a class absent from the held-out rows: no AUC rather than a wrong one
        return out


def _as_classes(y: pd.Series, classes: np.ndarray) -> np.ndarray:
    """The target column in the classes' own type (a CSV reads True as a string, etc.)."""
    values = y.to_numpy()
    if values.dtype == object and classes.dtype != object:
        try:
            return values.astype(classes.dtype)
        except (TypeError, ValueError):
            return values
    return values


def _round(value: float) -> float:
    return round(float(value), 6)
