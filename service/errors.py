"""The one exception type every layer raises for a client-visible failure.

``code`` is stable and machine-readable; ``message`` says what was wrong and
what was expected. Transports turn it into their own error shape.
"""

from __future__ import annotations

from typing import Any


class PredictorError(Exception):
    """A failure the client should see: HTTP status, stable code, exact reason."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


def bad_input(code: str, message: str, **details: Any) -> PredictorError:
    return PredictorError(400, code, message, details)


def not_found(code: str, message: str) -> PredictorError:
    return PredictorError(404, code, message)


def too_large(code: str, message: str) -> PredictorError:
    return PredictorError(413, code, message)


class ArtifactRejected(Exception):
    """A model artifact failed verification; it was never deserialised."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short label for metrics: digest_mismatch, bad_signature, ...
