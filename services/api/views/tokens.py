"""Org tokens (admin only): create one (shown once), revoke one (stops working at once)."""

from __future__ import annotations

from aiohttp import web

from services.api.auth import require_admin
from services.api.bodies import API, json_response, read_json
from services.api.keys import TOKENS

routes = web.RouteTableDef()


@routes.post(API + "/tokens")
async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    token = await request.app[TOKENS].create(await read_json(request))
    return json_response(token.to_api(), status=201)


@routes.delete(API + "/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[TOKENS].revoke(request.match_info["id"])
    return web.Response(status=204)
