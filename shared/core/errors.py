"""Hookline's single error tree: every failure the API or a worker reports is one of these.

Each class carries its HTTP status, a stable machine-readable ``code`` and whether the
operation that raised it may succeed if retried (aiokafka's ``retryable`` convention; an
instance may say otherwise, e.g. a Kafka error carrying aiokafka's ``retriable``).
Adapters translate driver errors into these (``shared.db``, ``shared.kafka``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "BlockedTarget",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HooklineError",
    "LogClosed",
    "MessageError",
    "NotFound",
    "PayloadTooLarge",
    "ProduceFailed",
    "ProducerBroken",
    "RateLimited",
    "ResolveFailed",
    "RowRejected",
    "Unauthorized",
    "Unavailable",
    "Undeliverable",
    "Unstorable",
    "ValidationError",
    "is_retryable",
]


class HooklineError(Exception):
    """Root of Hookline's errors; the API maps any of them to a JSON error response."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    retryable: bool = False

    def __init_subclass__(
        cls,
        *,
        code: str | None = None,
        http_status: int | None = None,
        retryable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """`class NotFound(HooklineError, code="not_found", http_status=404)`: what a
        class does not say, it inherits."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status
        if retryable is not None:
            cls.retryable = retryable

    def __init__(
        self, message: str, *, field: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if retryable is not None:
            self.retryable = retryable

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


class BadRequest(HooklineError, code="bad_request", http_status=400):
    """The request could not be parsed at all (e.g. malformed JSON)."""


class Forbidden(HooklineError, code="forbidden", http_status=403):
    """An org token on a route that only the admin token may call."""


class Unauthorized(HooklineError, code="unauthorized", http_status=401):
    """The bearer token is missing, unknown or revoked."""


class NotFound(HooklineError, code="not_found", http_status=404):
    """The resource does not exist, or belongs to an organisation the caller cannot see."""


class Conflict(HooklineError, code="conflict", http_status=409):
    """The request conflicts with the current state (e.g. too many webhooks on a repo)."""


class PayloadTooLarge(HooklineError, code="payload_too_large", http_status=413):
    """The request body is over the configured maximum."""


class ValidationError(HooklineError, code="validation_error", http_status=422):
    """Well-formed input with an invalid value; ``field`` names the offending field."""


class RateLimited(HooklineError, code="rate_limited", http_status=429, retryable=True):
    """The caller is over its rate limit; ``retry_after`` is in whole seconds."""

    def __init__(self, message: str, *, retry_after: int = 1, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class Unavailable(HooklineError, code="unavailable", http_status=503, retryable=True):
    """A dependency (database, broker) is unavailable; the operation may be retried,
    after about ``retry_after`` seconds."""

    retry_after = 5


class Unstorable(ValidationError, code="validation_error"):
    """A value the database refuses to store (a NUL in a string, a number out of range):
    bad input, which no retry fixes."""


class ConfigError(HooklineError, ValueError, code="config_error"):
    """A HOOKLINE_* variable holds a value that cannot be used; the message names it."""


class MessageError(HooklineError, ValueError, code="invalid_message"):
    """A message that cannot be decoded; `reason` says why (goes into a header)."""

    @property
    def reason(self) -> str:
        return self.message


class RowRejected(HooklineError, code="row_rejected"):
    """A row (and its sanitised copy) the delivery log refused: it is not in the log."""


class LogClosed(HooklineError, code="log_closed", retryable=True):
    """The delivery log stopped before the row was written (shutdown): try again
    elsewhere."""


class BlockedTarget(HooklineError, code="blocked"):
    """The target resolves to an address Hookline refuses to call (error class `blocked`)."""


class ResolveFailed(HooklineError, code="dns", retryable=True):
    """The host name does not resolve (error class `dns`)."""


class Undeliverable(HooklineError, code="undeliverable"):
    """A message no retry can fix (its webhook's secret cannot be decrypted with this
    HOOKLINE_SECRET_KEY): logged as dead and sent to the dead-letter topic with the
    reason instead of blocking its partition's commits."""


class ProduceFailed(HooklineError, code="produce_failed", retryable=True):
    """The broker did not acknowledge a message; ``retryable`` is aiokafka's
    ``retriable`` of the error it gave."""


class ProducerBroken(HooklineError, code="producer_broken"):
    """The producer hit a non-retriable error; it must be replaced before going on."""


def is_retryable(exc: BaseException) -> bool:
    """Whether the operation that raised `exc` may succeed if tried again: only errors of
    the tree say so (an untranslated error is a bug or bad data)."""
    return isinstance(exc, HooklineError) and exc.retryable
