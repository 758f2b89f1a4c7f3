"""Rewrite ``ai.onnx.ml.Imputer`` nodes as standard ops onnxruntime runs in double.

skl2onnx converts ``SimpleImputer`` to the ML-domain ``Imputer`` node, which
onnxruntime implements for float32 only; in a float64 graph (how the service
keeps scikit-learn's precision) the session then fails with "Could not find
an implementation for Imputer(1)". ``Where(IsNaN(x), fill, x)`` is the same
computation: each missing value (NaN, or the configured ``replaced_value``)
takes the fitted statistic of its column, every other value passes unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def replace_imputers(model: Any, dtype: type = np.float64) -> int:
    """Rewrite every Imputer node of ``model`` (an onnx ModelProto) in place; how many.

    ``dtype``: the graph's numeric precision (float64, or float32 for a float graph).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    new_nodes = []
    count = 0
    for node in graph.node:
        if node.op_type != "Imputer" or node.domain != "ai.onnx.ml":
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values = list(attrs.get("imputed_value_floats") or [])
        ints = list(attrs.get("imputed_value_int64s") or [])
        if not values and ints:  # integer imputation has no NaN to look for: keep the node
            new_nodes.append(node)
            continue
        replaced = attrs.get("replaced_value_float", math.nan)
        x, y = node.input[0], node.output[0]
        prefix = f"{node.name or 'imputer'}_{count}"
        fill = numpy_helper.from_array(
            np.asarray(values, dtype=dtype).reshape(1, -1), f"{prefix}_fill"
        )
        graph.initializer.append(fill)
        if math.isnan(replaced):
            new_nodes.append(helper.make_node("IsNaN", [x], [f"{prefix}_missing"]))
        else:
            value = numpy_helper.from_array(np.asarray(replaced, dtype=dtype), f"{prefix}_value")
            graph.initializer.append(value)
            new_nodes.append(helper.make_node("Equal", [x, value.name], [f"{prefix}_missing"]))
        new_nodes.append(helper.make_node("Where", [f"{prefix}_missing", fill.name, x], [y]))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count
