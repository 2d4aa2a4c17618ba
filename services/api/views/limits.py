"""Per-org limits (admin only): `GET` / `PUT /orgs/{org}/limits`."""

from __future__ import annotations

from aiohttp import web

from services.api.auth import require_admin
from services.api.bodies import API, json_response, path_name, read_json
from services.api.keys import LIMITS

routes = web.RouteTableDef()


@routes.get(API + "/orgs/{org}/limits")
async def get_limits(request: web.Request) -> web.Response:
    require_admin(request)
    org = path_name(request, "org")
    store = request.app[LIMITS]
    return json_response(store.to_api(org, await store.overrides(org)))


@routes.put(API + "/orgs/{org}/limits")
async def put_limits(request: web.Request) -> web.Response:
    """Every field, null meaning the HOOKLINE_* default; in force on every replica within
    a few seconds."""
    require_admin(request)
    org = path_name(request, "org")
    store = request.app[LIMITS]
    return json_response(store.to_api(org, await store.put(org, await read_json(request))))
