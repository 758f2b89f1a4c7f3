"""What an ONNX graph may hold before it is compiled into a session: nothing outside itself.

An initializer (or a Constant's tensor) stored as *external data* makes
onnxruntime read a file named by the graph, relative to the working directory
when the graph is loaded from bytes: a store writer could turn any readable file
into "coefficients" and read it back as predictions. Operators from domains other
than the standard ones (``""`` / ``ai.onnx`` and ``ai.onnx.ml``) and local
functions reach code paths no published graph needs. Both are refused, at
publish (compile) and at load, before onnxruntime sees the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...errors import ArtifactRejected

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def graph_problems(onnx_bytes: bytes) -> list[str]:
    """Every reason the graph is refused (empty when it is self-contained and standard)."""
    import onnx

    try:
        model = onnx.ModelProto.FromString(onnx_bytes)
    except Exception as exc:  # protobuf's DecodeError and friends
        return [f"not an ONNX model ({type(exc).__name__})"]
    problems = []
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            problems.append(f"imports operator domain {opset.domain!r}")
    if model.functions:
        names = ", ".join(f"{f.domain}.{f.name}" for f in model.functions)
        problems.append(f"defines local functions ({names})")
    for where, tensor in _tensors(model.graph, "graph"):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            problems.append(f"{where} {tensor.name!r} reads external data from {location!r}")
    for where, node in _nodes(model.graph, "graph"):
        if node.domain not in ALLOWED_DOMAINS:
            problems.append(f"{where} node {node.name!r} ({node.op_type}) is in domain "
                            f"{node.domain!r}")  # fmt: skip
    return problems


def check_graph(onnx_bytes: bytes) -> None:
    """Raise ArtifactRejected("unsafe_graph") when the graph is refused."""
    problems = graph_problems(onnx_bytes)
    if problems:
        allowed = ", ".join(repr(d) for d in sorted(ALLOWED_DOMAINS))
        raise ArtifactRejected(
            "unsafe_graph",
            f"ONNX graph refused: {'; '.join(problems[:5])} (allowed: self-contained tensors, "
            f"operator domains {allowed})",
        )


def _subgraphs(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _nodes(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for node in graph.node:
        yield where, node
        for sub in _subgraphs(node):
            yield from _nodes(sub, f"{where}/{node.name or node.op_type}")


def _tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for tensor in graph.initializer:
        yield f"{where} initializer", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where} sparse initializer", sparse.values
        yield f"{where} sparse initializer", sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield f"{where} node attribute", attr.t
            yield from ((f"{where} node attribute", t) for t in attr.tensors)
            if attr.HasField("sparse_tensor"):
                yield f"{where} node attribute", attr.sparse_tensor.values
            for sparse in attr.sparse_tensors:
                yield f"{where} node attribute", sparse.values
        for sub in _subgraphs(node):
            yield from _tensors(sub, f"{where}/{node.name or node.op_type}")
