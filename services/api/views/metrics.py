"""`GET /metrics`: Prometheus' text format, unauthenticated like `/healthz` (a scraper
holds no token) and so carrying no tenant data: every label is from a small fixed set
(outcome, status, tier, group), never an org, a webhook id or a URL. Besides this
process's own series it has the pipeline-wide gauges (`shared/pipeline_metrics.py`)."""

from __future__ import annotations

from aiohttp import web

from services.api.keys import PIPELINE
from shared import metrics

routes = web.RouteTableDef()


@routes.get("/metrics")
async def scrape(request: web.Request) -> web.Response:
    gauges = request.app[PIPELINE]
    await gauges.refresh()  # at most one reading per couple of seconds, however many scrape
    body = metrics.exposition(gauges.registry)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
