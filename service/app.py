"""The app factory: settings in, a Flask app with every protocol mounted over one data plane."""

from __future__ import annotations

import importlib
import logging

from flask import Flask

from . import http, logs
from .auth import AccessPolicy, ApiKeys, check_declared
from .cache import cache_from_settings
from .core import PredictionCore
from .dataplane import DataPlane
from .lean_dispatch import LeanDispatch
from .models.registry import ModelRegistry
from .repository_sync import RepositorySync, shared_state_path
from .settings import Settings
from .state import EXTENSION
from .stores import open_store

# The transports mounted, one module of service/protocols/ each (a Blueprint named ``bp``).
PROTOCOLS = ("health", "seed", "v1", "explain", "v2", "repository", "openapi", "docs", "web")


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
    # With the repository API on, every worker applies the others' load/unload.
    sync = RepositorySync(shared_state_path()) if settings.admin_token else None
    plane = DataPlane(
        settings,
        store,
        registry,
        PredictionCore(cache_from_settings(settings), settings.CACHE_SHARED_MIN_US),
        sync=sync,
    )
    app.extensions[EXTENSION] = plane
    policy = AccessPolicy(
        ApiKeys.parse(settings.API_KEYS, settings.API_KEYS_FILE), settings.admin_token
    )
    http_metrics = http.HttpMetrics()
    http.install(app, plane, policy, http_metrics)

    for name in PROTOCOLS:
        app.register_blueprint(importlib.import_module(f".protocols.{name}", __package__).bp)
    check_declared(app.view_functions)  # every route says who may call it
    if settings.LEAN_DISPATCH:  # the prediction routes without Flask's request machinery
        app.wsgi_app = LeanDispatch(app, plane, policy, http_metrics)  # type: ignore[method-assign]
    return app
