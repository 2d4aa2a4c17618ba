"""The console sub-application: templates, security headers, HTML errors, sessions.

Mounted by the API app under `/console`; its views reach the API's stores through
`request.config_dict` (the same WebhookStore, DeliveryQueries and TokenStore the REST API
uses, and the InboundStore and InvocationLog of inbound webhooks), never over HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp_jinja2
import asyncpg
import jinja2
import structlog
from aiohttp import web

from services.api.auth import Forbidden, Handler
from services.api.console import render
from services.api.console.session import COOKIE, Session, SessionStore
from services.api.keys import POOL, SETTINGS
from shared.core.errors import HooklineError
from shared.crypto import SecretBox

PREFIX = "/console"
HERE = Path(__file__).parent
SESSION = web.RequestKey("console_session", Session)
# Everything the console loads comes from this process: no inline script or style, no
# frames, forms post only here. The inline SVG chart uses attributes, not style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PUBLIC = (PREFIX + "/login", PREFIX + "/static/")

log = structlog.get_logger("services.api.console")


def sessions(request: web.Request) -> SessionStore:
    settings = request.config_dict[SETTINGS]
    return SessionStore(
        request.config_dict[POOL], SecretBox(settings.secret_key), settings.admin_token
    )


def session(request: web.Request) -> Session:
    found: Session = request[SESSION]
    return found


def _harden(response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    if response.content_type == "text/html" or response.status in (301, 302, 303, 307):
        # Pages may carry a secret shown once: never cache them.
        h.setdefault("Cache-Control", "no-store")


async def error_page(request: web.Request, status: int, message: str) -> web.Response:
    found = request.get(SESSION)
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {"status": status, "message": message, "session": found, "csrf": found and found.csrf},
        status=status,
    )
    return response


@web.middleware
async def page_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors become HTML pages (never the API's JSON); every answer gets the headers."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            _harden(exc)
            raise
        if exc.status == 404 and request.path == PREFIX:
            raise web.HTTPPermanentRedirect(PREFIX + "/") from None
        message = {404: "There is nothing here.", 405: "That method is not allowed here."}
        response = await error_page(request, exc.status, message.get(exc.status, exc.reason))
    except HooklineError as exc:
        response = await error_page(request, exc.http_status, exc.message)
    except asyncpg.DataError:
        # A value PostgreSQL cannot store (a NUL character, say) is bad input, as in the API.
        response = await error_page(request, 422, "A value in the form cannot be stored.")
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        log.warning("dependency unavailable", error=type(exc).__name__, path=request.path)
        response = await error_page(request, 503, "A dependency is unavailable; try again.")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("console error", method=request.method, path=request.path)
        response = await error_page(request, 500, "Something went wrong on our side.")
    _harden(response)
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but sign-in and the static files needs a live session."""
    if request.path == PREFIX or request.path.startswith(_PUBLIC):
        return await handler(request)
    found = await sessions(request).find(request.cookies.get(COOKIE))
    if found is None:
        if request.method == "GET":
            raise web.HTTPSeeOther(PREFIX + "/login")
        raise Forbidden("Your session has ended. Sign in again.")
    request[SESSION] = found
    return await handler(request)


def create_console() -> web.Application:
    """The console; mount it with `app.add_subapp(PREFIX, create_console())`."""
    from services.api.console.views import admin, deliveries, inbound, pages, signin, webhooks

    console = web.Application(middlewares=[page_middleware, session_middleware])
    env = aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    render.install(env)
    env.globals["static"] = PREFIX + "/static"
    console.router.add_static("/static/", HERE / "static")
    for module in (signin, pages, webhooks, deliveries, inbound, admin):
        console.add_routes(module.routes)
    return console
