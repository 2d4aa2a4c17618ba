"""The one place an aiohttp service's errors become responses, shared by every HTTP
process (the API, inbound): `{"error":{"code","message","field"?}}`.

Driver errors are translated by their adapter (`shared.db.db_errors`) into the error
tree; a `HooklineError` answers with its status and code (503 `unavailable` with a
`Retry-After`); aiohttp's own HTTP errors keep their status; anything else is one 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from shared.core.errors import HooklineError
from shared.db import db_errors

log = structlog.get_logger("shared.http_errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.Response(
        body=orjson.dumps({"error": error}), status=status, content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps what a handler raises to the JSON error response (see the module)."""
    try:
        with db_errors():
            return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, HooklineError) and exc.http_status != 500:
            return _mapped(request, exc)
        log.exception("unhandled error", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error")


def _mapped(request: web.Request, exc: HooklineError) -> web.Response:
    if exc.retryable and exc.http_status >= 500:
        cause = type(exc.__cause__ or exc).__name__
        log.warning("dependency unavailable", error=cause, path=request.path)
    response = error_response(exc.http_status, exc.code, exc.message, exc.field)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, "payload_too_large", "the body is over the size limit")
    message = {404: "no such route", 405: f"method {request.method} not allowed here"}.get(
        exc.status, exc.reason
    )
    response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    return response
