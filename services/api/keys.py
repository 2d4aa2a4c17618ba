"""Typed application keys: what the app factory builds and the views use."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from services.api.health import KafkaProbe
from shared.config import Settings
from shared.inbound import InboundStore
from shared.inbound_calls import InvocationLog
from shared.ingest import EventWriter
from shared.limits import LimitStore
from shared.log.queries import DeliveryQueries
from shared.log.redelivery import Redelivery
from shared.outbox import OutboxWaker
from shared.pipeline_metrics import PipelineGauges
from shared.ratelimit import SharedRateLimiter
from shared.tokens import TokenStore
from shared.webhooks import WebhookStore

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
WEBHOOKS = web.AppKey("webhooks", WebhookStore)
TOKENS = web.AppKey("tokens", TokenStore)
DELIVERIES = web.AppKey("deliveries", DeliveryQueries)
REDELIVERY = web.AppKey("redelivery", Redelivery)
KAFKA_PROBE = web.AppKey("kafka_probe", KafkaProbe)
INBOUND = web.AppKey("inbound", InboundStore)
INVOCATIONS = web.AppKey("invocations", InvocationLog)
WAKER = web.AppKey("outbox_waker", OutboxWaker)
EVENT_WRITER = web.AppKey("event_writer", EventWriter)
LIMITS = web.AppKey("limits", LimitStore)
RATES = web.AppKey("rates", SharedRateLimiter)
PIPELINE = web.AppKey("pipeline_gauges", PipelineGauges)
