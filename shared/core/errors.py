"""Hookline's single error tree: every failure the API or a worker reports is one of these.

Each class carries its HTTP status, a stable machine-readable ``code`` and whether the
operation that raised it may succeed if retried (aiokafka's ``retryable`` convention).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "HooklineError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
]


class HooklineError(Exception):
    """Root of Hookline's errors; the API maps any of them to a JSON error response."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """Return the response body ``{"error": {"code", "message", "field"?}}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def __repr__(self) -> str:
        if self.field is None:
            return f"{type(self).__name__}({self.message!r})"
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"


class BadRequest(HooklineError):
    """The request could not be parsed at all (e.g. malformed JSON)."""

    code = "bad_request"
    http_status = 400


class Unauthorized(HooklineError):
    """The bearer token is missing, unknown or revoked."""

    code = "unauthorized"
    http_status = 401


class NotFound(HooklineError):
    """The resource does not exist, or belongs to an organisation the caller cannot see."""

    code = "not_found"
    http_status = 404


class Conflict(HooklineError):
    """The request conflicts with the current state (e.g. too many webhooks on a repo)."""

    code = "conflict"
    http_status = 409


class PayloadTooLarge(HooklineError):
    """The request body is over the configured maximum."""

    code = "payload_too_large"
    http_status = 413


class ValidationError(HooklineError):
    """Well-formed input with an invalid value; ``field`` names the offending field."""

    code = "validation_error"
    http_status = 422


class RateLimited(HooklineError):
    """The caller is over its rate limit; ``retry_after`` is in whole seconds."""

    code = "rate_limited"
    http_status = 429
    retryable = True

    def __init__(self, message: str, *, retry_after: int = 1, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class Unavailable(HooklineError):
    """A dependency (database, broker) is unavailable; the operation may be retried."""

    code = "unavailable"
    http_status = 503
    retryable = True
