"""Why an explanation is refused."""

from __future__ import annotations


class Unsupported(Exception):
    """This model (or one of its steps) has no exact explainer here; the message says why."""
