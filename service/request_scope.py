"""What the service remembers about the HTTP request being answered, whichever dispatch
answers it (Flask's, or the lean one of service/lean_dispatch.py).

A context variable, not Flask's ``g``: the lean dispatch answers the prediction routes
without a Flask request context, and the data plane (the canary's per-version metrics,
its sticky draw by API key) must see the same request either way. Each gthread thread
runs in its own context, so concurrent requests never see each other's scope.
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass, field


@dataclass(slots=True)
class Scope:
    request_id: str
    start: float = field(default_factory=time.perf_counter)
    api_key_id: str | None = None
    # (model, version, role) of the version that answered: set by the canary router.
    served_by: tuple[str, str, str] | None = None


_current: ContextVar[Scope | None] = ContextVar("predictor_request_scope", default=None)


def begin(request_id: str | None) -> tuple[Scope, Token]:
    """A new scope for the request (its id, or a fresh one), current until ``end``."""
    scope = Scope(request_id or uuid.uuid4().hex)
    return scope, _current.set(scope)


def end(token: Token) -> None:
    _current.reset(token)


def current() -> Scope | None:
    """The scope of the request being answered, None outside one (gRPC, the watcher)."""
    return _current.get()
