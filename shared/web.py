"""aiohttp pieces every HTTP process shares: JSON responses and the error middleware that
turns Hookline's errors (the database's translated by its adapter, `shared.db`) and
aiohttp's into one JSON shape, and anything else into one 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from shared.config import Settings
from shared.core.errors import HooklineError
from shared.db import db_errors
from shared.logging import configure_logging

log = structlog.get_logger(__name__)
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
    """The one place errors become responses: `{"error":{"code","message","field"?}}`.

    A `HooklineError` answers with its status and code, and a `Retry-After` when it says
    when to come back (`unavailable`: 503, `rate_limited`: 429); aiohttp's HTTP errors
    keep their status; anything else, a bug, is one 500."""
    outage = _Throttled()

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            with db_errors():  # Unavailable and Unstorable, not the driver's own errors
                return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(request, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, HooklineError) and exc.http_status != 500:
                if exc.retryable and exc.http_status >= 500:
                    if _caller_gone(request, exc):
                        log.debug("caller went away", path=request.path)
                    else:
                        outage.warn(exc.__cause__ or exc, request.path)
                return _answer(exc)
            log.exception(
                "unhandled error", service=service, method=request.method, path=request.path
            )
            return error_response(500, "internal", "internal error")

    return error_middleware


def _caller_gone(request: web.Request, exc: BaseException) -> bool:
    """Whether `exc` is the caller's own connection going (reading its body fails with
    ConnectionResetError once it hung up), not a dependency's: then it is no outage."""
    transport = request.transport
    return isinstance(exc.__cause__ or exc, ConnectionResetError) and (
        transport is None or transport.is_closing()
    )


def _answer(exc: HooklineError) -> web.Response:
    response = json_response(exc.to_dict(), status=exc.http_status)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, "payload_too_large", "the body is over the size limit")
    message = {404: "no such route", 405: f"method {request.method} not allowed here"}
    response = error_response(
        exc.status, _HTTP_CODES.get(exc.status, "http_error"), message.get(exc.status, exc.reason)
    )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    return response


async def serve_app(
    app: web.Application, *, host: str, port: int, stop: asyncio.Event, name: str
) -> None:
    """Serves `app` on host:port until `stop` is set, then stops accepting and lets the
    requests in hand finish (10 s at most)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(f"{name} listening", host=host, port=port)
        await stop.wait()
        log.info(f"{name} stopping")
    finally:
        await runner.cleanup()


def app_server(
    name: str,
    create_app: Callable[[Settings], web.Application],
    address: Callable[[Settings], tuple[str, int]],
) -> Callable[[Settings, asyncio.Event], Awaitable[None]]:
    """The `main` of a process that serves one app: logging set up for service `name`, then
    `create_app(settings)` on `address(settings)` until `stop` is set, the requests in hand
    let finish."""

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        configure_logging(settings.log_level, service=name)
        host, port = address(settings)
        await serve_app(create_app(settings), host=host, port=port, stop=stop, name=name)

    return serve
