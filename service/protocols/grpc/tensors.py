"""Open Inference Protocol tensors over gRPC: protobuf messages <-> the V2 tensors.

A gRPC input carries its elements either typed (``contents.fp64_contents`` ...) or raw
(``raw_input_contents[i]``, the same little-endian bytes as REST's binary extension).
Both decode into the REST transport's ``Tensor``, so shapes, datatypes and every
validation message are the ones REST V2 gives for the same input.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from ...errors import bad_input
from ..v2_tensors import (
    DATATYPES,
    NUMERIC_DTYPES,
    RequestedOutput,
    Tensor,
    _from_binary,
    serialize_bytes,
)
from . import inference_pb2 as pb

# Which typed-contents field carries each datatype (FP16 travels raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    """Every input of the request as a Tensor, raw or typed; a 400 names what is wrong."""
    if not request.inputs:
        raise bad_input(
            "missing_inputs", "inputs must be a non-empty list of tensors (name, shape, datatype)"
        )
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_input(
            "invalid_raw_contents",
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "give one per input, in input order",
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        where = f'input "{tensor.name}"' if tensor.name else f"inputs[{i}]"
        if not tensor.name:
            raise bad_input("invalid_tensor", f"inputs[{i}] needs a name")
        if tensor.datatype not in DATATYPES:
            raise bad_input(
                "invalid_datatype",
                f"{where}: datatype {tensor.datatype!r} is not supported; use one of "
                f"{', '.join(DATATYPES)}",
            )
        shape = list(tensor.shape)
        if not shape or any(d < 0 for d in shape):
            raise bad_input(
                "invalid_shape",
                f"{where}: shape must be a non-empty list of non-negative integers, got {shape}",
            )
        count = prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise bad_input(
                    "invalid_raw_contents",
                    f"{where}: give either contents or raw_input_contents, not both",
                )
            data = _from_binary(where, tensor.datatype, count, memoryview(raw[i]))
        else:
            data = _typed(where, tensor, count)
        tensors.append(Tensor(tensor.name, tensor.datatype, shape, data))
    return tensors


def _typed(where: str, tensor: Any, count: int) -> Any:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise bad_input(
            "invalid_datatype", f"{where}: {tensor.datatype} travels in raw_input_contents only"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise bad_input(
            "invalid_shape",
            f"{where}: shape holds {count} element{'s' * (count != 1)}, "
            f"contents.{field} has {len(values)}",
        )
    if tensor.datatype == "BYTES":
        try:
            return [v.decode() for v in values]
        except UnicodeDecodeError:
            raise bad_input("invalid_value", f"{where}: BYTES elements must be UTF-8") from None
    try:
        return np.array(values, dtype=NUMERIC_DTYPES[tensor.datatype])
    except OverflowError:
        raise bad_input(
            "invalid_value", f"{where}: a value does not fit the datatype {tensor.datatype}"
        ) from None


def requested_outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    """The outputs asked for, with their parameters as plain values (explanation's
    ``output_kind``)."""
    return [
        RequestedOutput(
            out.name,
            None,
            {
                k: getattr(v, v.WhichOneof("parameter_choice") or "string_param")
                for k, v in out.parameters.items()
            },  # fmt: skip
        )
        for out in request.outputs
    ]


def encode_output(
    response: pb.ModelInferResponse, name: str, datatype: str, array: np.ndarray, raw: bool
) -> None:
    """Append one output tensor to the response, raw or typed."""
    out = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    flat = array.ravel().tolist()
    if raw:
        if datatype == "BYTES":
            response.raw_output_contents.append(serialize_bytes([str(v) for v in flat]))
        else:
            dtype = NUMERIC_DTYPES[datatype]
            response.raw_output_contents.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return
    if datatype == "BYTES":
        out.contents.bytes_contents.extend(str(v).encode() for v in flat)
    else:
        getattr(out.contents, CONTENTS_FIELD[datatype]).extend(flat)
