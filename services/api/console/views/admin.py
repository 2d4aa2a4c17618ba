"""The admin's page: every org, and org tokens made (shown once) and revoked."""

from __future__ import annotations

from aiohttp import web

from services.api.auth import Forbidden
from services.api.console import queries
from services.api.console.app import sessions
from services.api.console.views import me, notice, page, read_form, see_other
from services.api.keys import POOL, TOKENS
from shared.core.errors import ValidationError

routes = web.RouteTableDef()


def _admin_only(request: web.Request) -> None:
    if not me(request).is_admin:
        raise Forbidden("This page needs the admin token.")


async def _admin_page(
    request: web.Request,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    field: str | None = None,
    status: int = 200,
) -> web.Response:
    pool = request.config_dict[POOL]
    context = {
        "orgs": await queries.orgs(pool),
        "tokens": await queries.tokens(pool),
        "values": values or {"org": "", "name": ""},
        "error": error,
        "error_field": field,
    }
    return await page(request, "admin.html", context, status=status)


@routes.get("/admin")
async def admin(request: web.Request) -> web.Response:
    _admin_only(request)
    return await _admin_page(request)


@routes.post("/admin/tokens")
async def make_token(request: web.Request) -> web.Response:
    _admin_only(request)
    form = await read_form(request)
    values = {k: v.strip() if isinstance(v := form.get(k), str) else "" for k in ("org", "name")}
    try:
        token = await request.config_dict[TOKENS].create(values)
    except ValidationError as exc:
        return await _admin_page(
            request, values=values, error=exc.message, field=exc.field, status=422
        )
    text = f"Token {token.name!r} made for {token.org}. Copy it now: it is not shown again."
    await notice(request, secret=token.token, label="Token", text=text)
    see_other("/admin")


@routes.post("/admin/tokens/{id}/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    _admin_only(request)
    await read_form(request)
    await request.config_dict[TOKENS].revoke(request.match_info["id"])
    # Every request re-checks the token anyway; this just frees the rows now.
    await sessions(request).end_for_token(request.match_info["id"])
    await notice(request, text="Token revoked; its console sessions have ended.")
    see_other("/admin")
