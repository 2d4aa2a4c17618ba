"""Where a user lands: the org overview and the webhook lists of a repo or an org."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from services.api.bodies import path_name, path_scope
from services.api.console import queries
from services.api.console.views import me, page, see_other
from services.api.keys import POOL, WEBHOOKS

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    who = me(request)
    see_other("/admin" if who.org is None else f"/orgs/{who.org}")


@routes.get("/orgs/{org}")
async def overview(request: web.Request) -> web.Response:
    org = path_name(request, "org")
    me(request).check_org(org)
    pool = request.config_dict[POOL]
    summary = await queries.org_summary(pool, org)
    inbound = await queries.inbound_scopes(pool, org)
    return await page(
        request, "overview.html", {"org": org, "summary": summary, "inbound": inbound}
    )


@routes.get("/orgs/{org}/webhooks")
@routes.get("/repos/{org}/{repo}")
async def webhook_list(request: web.Request) -> web.Response:
    org, repo = path_scope(request, me(request))
    webhooks = await request.config_dict[WEBHOOKS].list(org, repo)
    health = await queries.health_of(
        request.config_dict[POOL], [w.id for w in webhooks], datetime.now(UTC)
    )
    return await page(
        request,
        "webhooks.html",
        {"org": org, "repo": repo, "webhooks": webhooks, "health": health},
    )
