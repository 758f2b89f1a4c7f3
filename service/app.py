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
from .stores import open_store


def create_app(settings: Settings | None = None, *, load_models: bool = True) -> Flask:
    """Build the service. Tests pass their own Settings; nothing global leaks between apps."""
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL.upper(),
        handlers=[logs.handler("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")],
    )
    # Fail closed: a broken configured secret stops the service here, before it serves.
    for warning in settings.check_secrets():
        logging.getLogger("predictor.settings").warning("%s", warning)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_BODY_BYTES
    store = open_store(settings.MODEL_STORE, settings.STORE_CACHE_DIR)
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

    from .protocols import explain, health, openapi, repository, seed, v1, v2, web

    for module in (health, seed, v1, explain, v2, repository, openapi, web):
        app.register_blueprint(module.bp)
    return app
