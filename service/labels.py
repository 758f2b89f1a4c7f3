"""Class values and their display names.

Every protocol answers a classifier's own class values, exactly as
``estimator.predict`` returns them: strings as strings, integers as JSON
numbers, booleans as booleans. Display names (``--labels leave=Leaves``) only
describe the classes (metadata, the web page, metric labels); they never
replace an answer. Probabilities are keyed by ``class_key``: JSON object keys
are strings, so a class is keyed by its JSON text (``"leave"``, ``"0"``,
``"true"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAPPING_SYNTAX = "class=Display name,..."


class LabelError(ValueError):
    """Display names that do not fit the model's classes; the message says how to fix it."""


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON encodes the same way."""
    return value.item() if isinstance(value, np.generic) else value


def class_key(value: Any) -> str:
    """The JSON text of a class value, used as its key in probability objects."""
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return str(value)


def is_index_classes(classes: Sequence[Any]) -> bool:
    """True when the classes are the integers 0..k-1 (booleans are not)."""
    return all(type(c) is int for c in classes) and list(classes) == list(range(len(classes)))


def example_mapping(classes: Sequence[Any]) -> str:
    keys = [class_key(c) for c in classes[:3]]
    return ",".join(f"{k}={k.title() if k.isalpha() else 'Name ' + k}" for k in keys)


def display_labels(
    classes: Sequence[Any], labels: Mapping[Any, str] | Sequence[str] | None
) -> list[str]:
    """One display name per class, in ``classes`` order.

    ``labels``: a mapping from class (its value or its JSON text) to a name, or a
    positional list, accepted only when the classes are 0..k-1 (so position and
    value agree). Classes a mapping leaves out are named by their own text.
    """
    keys = [class_key(c) for c in classes]
    if labels is None:
        return keys
    if isinstance(labels, Mapping):
        names = dict(zip(keys, keys, strict=True))
        for given, name in labels.items():
            key = class_key(given)
            if key not in names:
                raise LabelError(
                    f"--labels names class {given!r}, but the model's classes are {list(classes)}; "
                    f"expected {MAPPING_SYNTAX}, e.g. --labels {example_mapping(classes)}"
                )
            names[key] = str(name)
        return [names[k] for k in keys]
    labels = [str(x) for x in labels]
    if not is_index_classes(classes):
        raise LabelError(
            f"a positional --labels list is ambiguous: the model's classes are {list(classes)}, "
            f"not 0..{len(classes) - 1}; map each class to its name instead: "
            f"--labels {example_mapping(classes)}"
        )
    if len(labels) != len(classes):
        raise LabelError(
            f"{len(labels)} labels given for {len(classes)} classes {list(classes)}; "
            f"expected {MAPPING_SYNTAX}, e.g. --labels {example_mapping(classes)}"
        )
    return labels


def parse_labels_arg(text: str) -> dict[str, str] | list[str]:
    """``--labels`` text: ``a=A,b=B`` (a mapping) or ``A,B`` (positional)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not any("=" in item for item in items):
        return items
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise LabelError(f"--labels item {item!r}: expected {MAPPING_SYNTAX}")
        mapping[key.strip()] = name.strip()
    return mapping
