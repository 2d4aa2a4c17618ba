"""Public documents: the event catalog and the OpenAPI description; health probes."""

from __future__ import annotations

from aiohttp import web

from services.api.bodies import API, json_response
from services.api.keys import KAFKA_PROBE, POOL
from services.api.openapi import openapi_document
from shared.core.events import catalog_document
from shared.health import readiness

routes = web.RouteTableDef()


@routes.get(API + "/event-types")
async def event_types(request: web.Request) -> web.Response:
    return json_response(catalog_document())


@routes.get(API + "/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    return await readiness(request.app[POOL], request.app[KAFKA_PROBE])
