"""The app factory: settings in, a Flask app with every protocol mounted out."""

from __future__ import annotations

import logging

from flask import Flask

from . import http, logs
from .auth import ApiKeys
from .cache import cache_from_settings
from .core import PredictionCore
from .models.registry import ModelRegistry
from .settings import Settings
from .state import EXTENSION, ServiceState
from .store import ModelStore


def create_app(settings: Settings | None = None, *, load_models: bool = True) -> Flask:
    """Build the service. Tests pass their own Settings; nothing global leaks between apps."""
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL.upper(),
        handlers=[logs.handler("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")],
    )
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_BODY_BYTES
    store = ModelStore(settings.MODEL_STORE)
    registry = ModelRegistry(store, settings)
    if load_models:
        registry.load_all()
    app.extensions[EXTENSION] = ServiceState(
        settings=settings,
        store=store,
        registry=registry,
        core=PredictionCore(cache_from_settings(settings), settings.CACHE_SHARED_MIN_US),
    )
    http.install(
        app, settings.MAX_BODY_BYTES, ApiKeys.parse(settings.API_KEYS, settings.API_KEYS_FILE)
    )

    from .protocols import health, openapi, repository, seed, v1, v2, web

    for module in (health, seed, v1, v2, repository, openapi, web):
        app.register_blueprint(module.bp)
    return app
