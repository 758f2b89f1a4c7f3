"""Input validation: JSON values in, a checked 2-D array out, or an exact reason.

Every protocol funnels rows through here, so a row is accepted or refused the
same way whichever route it came by. All-numeric schemas become float64 arrays
(so 1 and 1.0 are the same input); a schema with string features becomes an
object array.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from .errors import bad_input, too_large
from .manifest import Feature

_NUMERIC = {"float", "int", "bool"}
_PLAIN_NUMBERS = {float, int}


def describe_schema(features: list[Feature]) -> str:
    names = ", ".join(f.name for f in features)
    return f"{len(features)} features [{names}]"


def rows_from_seed(payload: Any, features: list[Feature], max_rows: int) -> np.ndarray:
    """The seed route's ``{"input": row}`` or ``{"input": [row, ...]}``."""
    if not isinstance(payload, dict) or "input" not in payload:
        raise bad_input(
            "missing_field",
            'request body must be a JSON object with "input": one row of '
            f"{describe_schema(features)} or a list of such rows",
        )
    data = payload["input"]
    if isinstance(data, list) and data and not isinstance(data[0], list | dict):
        data = [data]  # one row given flat
    elif isinstance(data, dict):
        data = [data]
    return validate_rows(data, features, max_rows, field="input")


def rows_from_instances(payload: Any, features: list[Feature], max_rows: int) -> np.ndarray:
    """KServe V1 / TF Serving ``{"instances": [...]}`` (rows as lists or named objects)."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise bad_input(
            "missing_field",
            'request body must be a JSON object with "instances": a list of rows, each a list '
            f"of {describe_schema(features)} or an object keyed by feature name",
        )
    return validate_rows(payload["instances"], features, max_rows, field="instances")


def validate_rows(
    rows: Any, features: list[Feature], max_rows: int, field: str = "input"
) -> np.ndarray:
    """Check a list of rows against the schema and return them as a 2-D array."""
    if not isinstance(rows, list):
        raise bad_input("invalid_type", f'"{field}" must be a list of rows, got {json_type(rows)}')
    if not rows:
        raise bad_input(
            "empty_batch",
            f"no rows to predict: expected at least one row of {describe_schema(features)}",
        )
    check_row_count(len(rows), max_rows)
    n = len(features)
    if set(map(type, rows)) == {list} and set(map(len, rows)) == {n}:
        return _typed_array(rows, features)  # the usual batch: lists of the right length
    ordered: list[list[Any]] = []
    lengths: dict[int, int] = {}
    for i, row in enumerate(rows):
        if type(row) is list:
            lengths.setdefault(len(row), i)
            ordered.append(row)
        elif type(row) is dict:
            ordered.append(_row_from_object(i, row, features))
            lengths.setdefault(n, i)
        else:
            raise bad_input(
                "invalid_type",
                f"row {i}: expected a list of {describe_schema(features)} or an object keyed by "
                f"feature name, got {json_type(row)}",
            )
    if len(lengths) > 1:
        (a, ia), (b, ib) = sorted(lengths.items(), key=lambda kv: kv[1])[:2]
        raise bad_input(
            "ragged_rows",
            f"rows differ in length: row {ia} has {a} values, row {ib} has {b}; "
            f"every row needs {describe_schema(features)}",
        )
    ((length, _),) = lengths.items()
    if length != n:
        raise bad_input(
            "wrong_feature_count",
            f"expected {describe_schema(features)}, got {length} value{'s' * (length != 1)}",
        )
    return _typed_array(ordered, features)


def _typed_array(rows: list[list[Any]], features: list[Feature]) -> np.ndarray:
    if all(f.type in _NUMERIC for f in features):
        return _numeric_array(rows, features)
    return _mixed_array(rows, features)


def check_row_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise too_large(
            "too_many_rows", f"{count} rows exceed the limit of {max_rows} rows per request"
        )


def check_matrix(array: np.ndarray, features: list[Feature], max_rows: int) -> np.ndarray:
    """Validate an already numeric 2-D array (tensor protocols) against the schema."""
    if array.ndim != 2 or array.shape[1] != len(features):
        raise bad_input(
            "wrong_feature_count",
            f"expected shape [N, {len(features)}] for {describe_schema(features)}, "
            f"got {list(array.shape)}",
        )
    if array.shape[0] == 0:
        raise bad_input("empty_batch", "no rows to predict: the batch dimension is 0")
    check_row_count(array.shape[0], max_rows)
    if array.dtype != object:
        array = array.astype(np.float64, copy=False)
        _check_finite(array, features)
        _check_types_exact(array, features)  # int features need integers, bool ones 0/1
    return array


def _row_from_object(i: int, row: dict[str, Any], features: list[Feature]) -> list[Any]:
    names = [f.name for f in features]
    missing = [name for name in names if name not in row]
    if missing:
        raise bad_input(
            "missing_features",
            f"row {i}: missing feature{'s' * (len(missing) != 1)} {missing}; "
            f"expected {describe_schema(features)}",
        )
    if len(row) != len(names):
        extra = [key for key in row if key not in set(names)]
        raise bad_input(
            "unknown_features",
            f"row {i}: unknown feature{'s' * (len(extra) != 1)} {extra}; "
            f"expected {describe_schema(features)}",
        )
    return [row[name] for name in names]


def _numeric_array(rows: list[list[Any]], features: list[Feature]) -> np.ndarray:
    # Fast path: plain numbers only (bool is an int subclass, so check the exact type).
    if not set(map(type, chain.from_iterable(rows))) <= _PLAIN_NUMBERS:
        _explain_numeric(rows, features)  # raises unless the odd values are allowed there
        # null is a missing value (NaN) in a nullable column; _explain_numeric refused the rest.
        rows = [[np.nan if v is None else v for v in row] for row in rows]
    try:
        array = np.array(rows, dtype=np.float64)
    except OverflowError as exc:
        raise bad_input(
            "non_finite_value", f"a value is too large for a 64-bit float: {exc}"
        ) from exc
    _check_types_exact(array, features)
    _check_finite(array, features)
    return array


def _explain_numeric(rows: list[list[Any]], features: list[Feature]) -> None:
    """Find the first value that is not acceptable and raise with its position."""
    for i, row in enumerate(rows):
        for feature, value in zip(features, row, strict=True):
            t = type(value)
            if feature.type == "bool" and t is bool:
                continue
            if t is float or t is int:
                continue
            if value is None:
                _check_missing(i, feature)
                continue
            expected = "true or false" if feature.type == "bool" else "a number"
            raise bad_input(
                "invalid_type",
                f'row {i}, feature "{feature.name}": expected {expected}, got {_describe(value)}',
            )


def _check_missing(i: int, feature: Feature) -> None:
    """A missing value is fine where the manifest says so; else the exact reason."""
    if feature.nullable:
        return
    raise bad_input(
        "missing_value",
        f'row {i}, feature "{feature.name}": a value is required (got a missing value); '
        "this feature is not nullable: the model was published from data without missing "
        "values here and does not accept NaN for it",
    )


def _check_types_exact(array: np.ndarray, features: list[Feature]) -> None:
    for j, feature in enumerate(features):
        if feature.type == "int":
            column = array[:, j]
            bad = np.flatnonzero((column != np.round(column)) & ~np.isnan(column))
            if bad.size:
                raise bad_input(
                    "invalid_type",
                    f'row {int(bad[0])}, feature "{feature.name}": expected an integer, '
                    f"got {column[bad[0]]!r}",
                )
        elif feature.type == "bool":
            column = array[:, j]
            bad = np.flatnonzero((column != 0) & (column != 1) & ~np.isnan(column))
            if bad.size:
                raise bad_input(
                    "invalid_type",
                    f'row {int(bad[0])}, feature "{feature.name}": expected true or false, '
                    f"got {column[bad[0]]!r}",
                )


def _check_finite(array: np.ndarray, features: list[Feature]) -> None:
    if np.isfinite(array).all():
        return
    bad = ~np.isfinite(array)
    nullable = np.array([f.nullable for f in features], dtype=bool)
    if nullable.any():
        # NaN is a missing value in a nullable column; infinities never are.
        bad &= ~(np.isnan(array) & nullable)
        if not bad.any():
            return
    i, j = (int(x) for x in np.argwhere(bad)[0])
    if np.isnan(array[i, j]):
        _check_missing(i, features[j])
    raise bad_input(
        "non_finite_value",
        f'row {i}, feature "{features[j].name}": expected a finite number, got {array[i, j]}',
    )


def _mixed_array(rows: list[list[Any]], features: list[Feature]) -> np.ndarray:
    missing: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        for j, (feature, value) in enumerate(zip(features, row, strict=True)):
            t = type(value)
            if value is None or (t is float and value != value):  # null, or NaN from a tensor
                _check_missing(i, feature)
                missing.append((i, j))
                continue
            if feature.type == "string":
                # Unseen categories are the model's business (OneHotEncoder handle_unknown).
                ok, expected = t is str, "a string"
            elif feature.type == "bool":
                ok, expected = t is bool or (t is int and value in (0, 1)), "true or false"
            else:
                ok = (t is float or t is int) and np.isfinite(value)
                if ok and feature.type == "int" and t is float:
                    ok = value.is_integer()
                expected = "an integer" if feature.type == "int" else "a finite number"
            if not ok:
                raise bad_input(
                    "invalid_type",
                    f'row {i}, feature "{feature.name}": expected {expected}, got '
                    f"{_describe(value)}",
                )
    array = np.empty((len(rows), len(features)), dtype=object)
    array[:] = rows
    for i, j in missing:
        array[i, j] = np.nan  # what pandas reads for a missing cell, and what imputers look for
    return array


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _describe(value: Any) -> str:
    """A JSON-ish description of a bad value: its type, then a short rendering."""
    import orjson

    if value is None:
        return "null"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{json_type(value)} {text}"
