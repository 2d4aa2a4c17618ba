"""Typed application keys: what the app factory builds and the views use."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from services.api.health import KafkaProbe
from services.api.ratelimit import IngestLimiter
from shared.config import Settings
from shared.log.queries import DeliveryQueries
from shared.log.redelivery import Redelivery
from shared.tokens import TokenStore
from shared.webhooks import WebhookStore

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
WEBHOOKS = web.AppKey("webhooks", WebhookStore)
TOKENS = web.AppKey("tokens", TokenStore)
DELIVERIES = web.AppKey("deliveries", DeliveryQueries)
REDELIVERY = web.AppKey("redelivery", Redelivery)
LIMITER = web.AppKey("ingest_limiter", IngestLimiter)
KAFKA_PROBE = web.AppKey("kafka_probe", KafkaProbe)
