"""Open Inference Protocol (V2) tensors: decode requests, encode responses.

A V2 request is JSON, optionally followed by raw tensor bytes (the binary tensor
data extension: the ``Inference-Header-Content-Length`` header says where the
JSON ends; each input with ``parameters.binary_data_size`` takes that many bytes
from what follows, in input order). Element data is row-major, flat or nested.
Everything here raises ``PredictorError`` with the exact reason; the V2 routes
turn that into the protocol's ``{"error": "..."}`` (service/http.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from ..errors import bad_input
from ..manifest import Feature
from ..validation import (
    check_matrix,
    check_row_count,
    describe_schema,
    json_type,
    validate_rows,
)

# Datatypes a numeric numpy array can carry, little-endian as the extension specifies.
NUMERIC_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC_DTYPES, "BYTES")
FLOAT_TYPES = {"FP16", "FP32", "FP64"}
INT_TYPES = {t for t in NUMERIC_DTYPES if "INT" in t}


@dataclass(slots=True)
class Tensor:
    """One decoded input: ``data`` is a numpy array (numeric) or a list of str (BYTES)."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request-level binary_data_output decides
    parameters: dict[str, Any] = field(default_factory=dict)  # e.g. explanation's output_kind


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    binary_output: bool
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a V2 infer body (JSON, or JSON + binary tensors) into tensors."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise bad_input(
                "invalid_header",
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}",
            ) from None
        if not 0 < split <= len(body):
            raise bad_input(
                "invalid_header",
                f"Inference-Header-Content-Length {split} is outside the body of {len(body)} bytes",
            )
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    try:
        payload = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise bad_input("invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise bad_input("invalid_request", "the inference request must be a JSON object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_input("invalid_request", '"id" must be a string')
    parameters = _object(payload.get("parameters"), "parameters")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_input(
            "missing_inputs",
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}',
        )
    inputs: list[Tensor] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(i, raw, binary[offset:])
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise bad_input(
            "invalid_binary_data",
            f"{len(binary) - offset} bytes of binary data follow the JSON header but no input "
            "claims them (binary_data_size)",
        )
    outputs = []
    raw_outputs = payload.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise bad_input("invalid_request", '"outputs" must be a list of {"name": ...}')
    for j, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise bad_input("invalid_request", f'outputs[{j}] must be an object with a "name"')
        out_params = _object(raw.get("parameters"), f"outputs[{j}].parameters")
        if out_params.get("classification"):
            raise bad_input(
                "unsupported_parameter",
                "the classification extension is not supported: request predict_proba instead",
            )
        binary_flag = out_params.get("binary_data")
        outputs.append(
            RequestedOutput(
                raw["name"], None if binary_flag is None else bool(binary_flag), out_params
            )
        )
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=outputs,
        binary_output=bool(parameters.get("binary_data_output", False)),
        parameters=parameters,
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_input("invalid_request", f'"{what}" must be a JSON object')
    return value


def _decode_input(i: int, raw: Any, binary: memoryview) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise bad_input(
            "invalid_tensor", f"inputs[{i}] must be an object, got {type(raw).__name__}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise bad_input("invalid_tensor", f'inputs[{i}] needs a "name" (a string)')
    where = f'input "{name}"'
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise bad_input(
            "invalid_datatype",
            f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}",
        )
    shape = raw.get("shape")
    if isinstance(shape, list):  # 3.0 is an integer in JSON Schema, so accept it as one
        shape = [int(d) if type(d) is float and d.is_integer() else d for d in shape]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise bad_input(
            "invalid_shape",
            f"{where}: shape must be a non-empty list of non-negative integers, got "
            f"{orjson.dumps(shape).decode()}",
        )
    count = prod(shape)
    params = _object(raw.get("parameters"), f"inputs[{i}].parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise bad_input("invalid_binary_data", f"{where}: binary_data_size must be an integer")
        if "data" in raw:
            raise bad_input(
                "invalid_binary_data", f'{where}: give either "data" or binary_data_size, not both'
            )
        if size > len(binary):
            raise bad_input(
                "invalid_binary_data",
                f"{where}: binary_data_size {size} exceeds the {len(binary)} bytes left in the "
                "body",
            )
        data = _from_binary(where, datatype, count, binary[:size])
        return Tensor(name, datatype, shape, data), size
    if "data" not in raw:
        raise bad_input("missing_data", f'{where}: "data" is missing')
    return Tensor(name, datatype, shape, _from_json(where, datatype, count, raw["data"])), 0


def _from_binary(where: str, datatype: str, count: int, raw: memoryview) -> Any:
    if datatype == "BYTES":
        items = deserialize_bytes(where, raw)
        if len(items) != count:
            raise bad_input(
                "invalid_shape",
                f"{where}: shape holds {count} elements, binary data has {len(items)}",
            )
        return items
    dtype = NUMERIC_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise bad_input(
            "invalid_binary_data",
            f"{where}: {count} {datatype} elements need {count * dtype.itemsize} bytes, got "
            f"{len(raw)}",
        )
    if datatype == "BOOL":
        as_bytes = np.frombuffer(raw, dtype=np.uint8)
        if as_bytes.size and as_bytes.max() > 1:
            raise bad_input("invalid_value", f"{where}: BOOL bytes must be 0 or 1")
        return as_bytes.astype(bool)
    return np.frombuffer(raw, dtype=dtype)


def deserialize_bytes(where: str, raw: memoryview) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes (UTF-8 here)."""
    items, pos, end = [], 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise bad_input("invalid_binary_data", f"{where}: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise bad_input("invalid_binary_data", f"{where}: truncated BYTES element")
        try:
            items.append(bytes(raw[pos : pos + n]).decode())
        except UnicodeDecodeError:
            raise bad_input("invalid_value", f"{where}: BYTES elements must be UTF-8") from None
        pos += n
    return items


def _flatten(where: str, data: Any) -> list[Any]:
    """Row-major leaves of flat or nested lists (iterative: no recursion limit to hit)."""
    if not isinstance(data, list):
        raise bad_input("invalid_data", f'{where}: "data" must be a list, got {json_type(data)}')
    if not any(type(v) is list for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _from_json(where: str, datatype: str, count: int, data: Any) -> Any:
    flat = _flatten(where, data)
    if len(flat) != count:
        raise bad_input(
            "invalid_shape",
            f"{where}: shape holds {count} element{'s' * (count != 1)}, data has {len(flat)}",
        )
    if datatype == "BYTES":
        ok, expected = (lambda v: type(v) is str), "strings"
    elif datatype == "BOOL":
        ok, expected = (lambda v: type(v) is bool), "true or false"
    elif datatype in FLOAT_TYPES:
        ok, expected = (lambda v: type(v) is float or type(v) is int), "numbers"
    else:
        ok, expected = (lambda v: type(v) is int), "integers"
    has_null = False
    for k, value in enumerate(flat):
        if not ok(value):
            if value is None:  # a missing value: validation decides per feature (nullable)
                has_null = True
                continue
            raise bad_input(
                "invalid_value",
                f"{where}: {datatype} data must be {expected}; element {k} is "
                f"{json_type(value)} {orjson.dumps(value).decode()[:40]}",
            )
    if datatype == "BYTES":
        return flat
    if has_null:
        return np.array([np.nan if v is None else v for v in flat], dtype=np.float64)
    try:
        return np.array(flat, dtype=NUMERIC_DTYPES[datatype])
    except OverflowError:
        raise bad_input(
            "invalid_value", f"{where}: a value does not fit the datatype {datatype}"
        ) from None


# --- responses -----------------------------------------------------------


def serialize_bytes(items: list[str]) -> bytes:
    parts = []
    for item in items:
        encoded = item.encode()
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def encode_output(
    name: str, datatype: str, array: np.ndarray, binary: bool
) -> tuple[dict[str, Any], bytes | None]:
    """One output tensor as its JSON part and, when binary, its raw bytes."""
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        out["data"] = array.ravel().tolist()
        return out, None
    if datatype == "BYTES":
        raw = serialize_bytes([str(v) for v in array.ravel().tolist()])
    else:
        raw = np.ascontiguousarray(array, dtype=NUMERIC_DTYPES[datatype]).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    return out, raw


# --- tensors to rows -------------------------------------------------------

_ACCEPTS = {
    "float": FLOAT_TYPES | INT_TYPES,
    "int": FLOAT_TYPES | INT_TYPES,  # 2.0 is an integer; check_matrix refuses 2.5
    "bool": {"BOOL"} | INT_TYPES,  # 0/1 integers too; check_matrix refuses other values
    "string": {"BYTES"},
}
_ADVERTISED = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def feature_datatype(feature: Feature) -> str:
    """The datatype model metadata advertises for a feature."""
    return _ADVERTISED[feature.type]


def tensors_to_rows(inputs: list[Tensor], features: list[Feature], max_rows: int) -> np.ndarray:
    """Inputs as one ``[N, F]`` tensor or one ``[N]`` tensor per feature -> validated rows."""
    names = [f.name for f in features]
    numeric = all(f.type != "string" for f in features)
    if (
        len(inputs) == 1
        and len(inputs[0].shape) == 2
        and not (len(features) == 1 and inputs[0].name == names[0] and inputs[0].shape[1] != 1)
    ):
        tensor = inputs[0]
        for f in features:
            _check_datatype(tensor, f)
        n_rows, n_cols = tensor.shape
        check_row_count(n_rows, max_rows)
        if numeric:
            matrix = np.asarray(tensor.data).reshape(tensor.shape)
            return check_matrix(matrix.astype(np.float64), features, max_rows)
        if n_cols != len(features):
            raise bad_input(
                "wrong_feature_count",
                f"expected shape [N, {len(features)}] for {describe_schema(features)}, "
                f"got {tensor.shape}",
            )
        rows = [tensor.data[i * n_cols : (i + 1) * n_cols] for i in range(n_rows)]
        return validate_rows(rows, features, max_rows, field="inputs")

    by_name: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise bad_input("duplicate_input", f'input "{tensor.name}" is given twice')
        by_name[tensor.name] = tensor
    unknown = [n for n in by_name if n not in set(names)]
    missing = [n for n in names if n not in by_name]
    if unknown or missing:
        said = []
        if missing:
            said.append(f"missing input{'s' * (len(missing) != 1)} {missing}")
        if unknown:
            said.append(f"unknown input{'s' * (len(unknown) != 1)} {unknown}")
        raise bad_input(
            "missing_inputs" if missing else "unknown_inputs",
            f"{'; '.join(said)}: send one [N, {len(features)}] tensor, or one [N] tensor per "
            f"feature named {names}",
        )
    columns = []
    n_rows = None
    for f in features:
        tensor = by_name[f.name]
        _check_datatype(tensor, f)
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise bad_input(
                "invalid_shape",
                f'input "{f.name}": a per-feature tensor has shape [N] or [N, 1], got '
                f"{tensor.shape}",
            )
        if n_rows is None:
            n_rows = tensor.shape[0]
            check_row_count(n_rows, max_rows)
        elif tensor.shape[0] != n_rows:
            raise bad_input(
                "ragged_inputs",
                f'input "{f.name}" has {tensor.shape[0]} rows, input "{features[0].name}" has '
                f"{n_rows}: every per-feature tensor needs the same batch size",
            )
        columns.append(tensor.data)
    if numeric:
        matrix = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
        return check_matrix(matrix.reshape(n_rows or 0, len(features)), features, max_rows)
    if not n_rows:
        raise bad_input("empty_batch", "no rows to predict: the batch dimension is 0")
    as_lists = [c if isinstance(c, list) else c.tolist() for c in columns]
    return validate_rows([list(row) for row in zip(*as_lists, strict=True)], features, max_rows)


def _check_datatype(tensor: Tensor, feature: Feature) -> None:
    if tensor.datatype not in _ACCEPTS[feature.type]:
        wanted = _ADVERTISED[feature.type]
        raise bad_input(
            "invalid_datatype",
            f'input "{tensor.name}": feature "{feature.name}" is {feature.type}; send '
            f"{wanted}{' (or another numeric datatype)' if feature.type != 'string' else ''}, "
            f"not {tensor.datatype}",
        )
