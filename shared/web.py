"""aiohttp pieces every HTTP process shares: JSON responses and the error middleware that
turns Hookline's errors, aiohttp's and an unavailable database into one JSON shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from shared.core.errors import HooklineError, RateLimited

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OUTAGE_RETRY_AFTER_S = 5
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
# Errors that mean PostgreSQL (or the network to it) is down or starting: 503, not 500.
OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response({"error": error}, status=status)


class _Throttled:
    """Logs an outage at most once a second, with how many requests it hit since."""

    def __init__(self) -> None:
        self._last = 0.0
        self._count = 0

    def warn(self, exc: BaseException, path: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= 1.0:
            log.warning(
                "dependency unavailable", error=type(exc).__name__, path=path, hits=self._count
            )
            self._last, self._count = now, 0


def error_middleware_for(service: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The one place errors become responses: `{"error":{"code","message","field"?}}`."""
    outage = _Throttled()

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HooklineError as exc:
            response = json_response(exc.to_dict(), status=exc.http_status)
            if isinstance(exc, RateLimited):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if isinstance(exc, web.HTTPRequestEntityTooLarge):
                return error_response(413, "payload_too_large", "the body is over the size limit")
            message = {404: "no such route", 405: f"method {request.method} not allowed here"}
            response = error_response(
                exc.status,
                _HTTP_CODES.get(exc.status, "http_error"),
                message.get(exc.status, exc.reason),
            )
            if isinstance(exc, web.HTTPMethodNotAllowed):
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        except asyncpg.DataError:
            return error_response(
                422, "validation_error", "a value in the request cannot be stored", "body"
            )
        except OUTAGES as exc:
            outage.warn(exc, request.path)
            response = error_response(503, "unavailable", "a dependency is unavailable; try again")
            response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
            return response
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "unhandled error", service=service, method=request.method, path=request.path
            )
            return error_response(500, "internal", "internal error")

    return error_middleware
