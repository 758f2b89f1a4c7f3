"""Where an app keeps its data plane, and how a transport finds it."""

from __future__ import annotations

from flask import Flask, current_app

from .dataplane import DataPlane

EXTENSION = "predictor"


def state(app: Flask) -> DataPlane:
    """The data plane of ``app`` (settings, store, registry and prediction core hang off it)."""
    return app.extensions[EXTENSION]


def plane() -> DataPlane:
    """The data plane of the app handling the current request."""
    return current_app.extensions[EXTENSION]
