"""Bearer-token authentication: the admin token (every org) or an org token (its org only).

Every `/api/v1` route except the public ones (catalog, OpenAPI document) needs a token.
Another org's resource answers 404, so an org token cannot learn what exists elsewhere; an
org token on an admin-only route answers 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from services.api.keys import SETTINGS, TOKENS
from shared.core.errors import Forbidden, NotFound, Unauthorized

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/event-types"}
)
# The web console signs its users in with a cookie session of its own (services/api/console).
CONSOLE_PREFIX = "/console"


@dataclass(frozen=True)
class Principal:
    """Who is calling: `org` None is the admin (sees every org)."""

    org: str | None

    @property
    def is_admin(self) -> bool:
        return self.org is None

    def check_org(self, org: str) -> None:
        """404 unless the caller may see `org`."""
        if self.org is not None and self.org != org:
            raise NotFound("not found")


PRINCIPAL = web.RequestKey("principal", Principal)


async def authenticate(request: web.Request) -> Principal:
    """The caller of `request`, or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    if not token.isascii() or not token.isprintable():
        raise Unauthorized("the token is not valid")
    found = await principal_of(request, token)
    if found is None:
        raise Unauthorized("the token is not valid or has been revoked")
    return found


async def principal_of(request: web.Request, token: str) -> Principal | None:
    """Who `token` is (the admin or an org), or None if it is unknown or revoked."""
    if not token.isascii() or not token.isprintable():
        return None
    admin = request.config_dict[SETTINGS].admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(org=None)
    org = await request.config_dict[TOKENS].authenticate(token)
    return None if org is None else Principal(org=org)


def principal(request: web.Request) -> Principal:
    """The caller, as authenticated by the middleware."""
    found: Principal = request[PRINCIPAL]
    return found


def require_admin(request: web.Request) -> Principal:
    caller = principal(request)
    if not caller.is_admin:
        raise Forbidden("this route needs the admin token")
    return caller


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticates every matched, non-public route before its view runs."""
    info = request.match_info
    if info.http_exception is None:
        resource = info.route.resource
        path = resource.canonical if resource is not None else request.path
        console = path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")
        if path not in PUBLIC_PATHS and not console:
            request[PRINCIPAL] = await authenticate(request)
    return await handler(request)
