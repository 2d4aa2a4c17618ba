"""One delivery attempt, in stages: prepare (number it, look the webhook up, sign), call
(POST), then decide what follows (`decide`, `plan_follow_ups`). The result is an
immutable `Outcome`: the row to log and its effects, which `effects.FollowUps` applies."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from datetime import UTC, datetime, timedelta

import orjson
import structlog
from aiokafka import AIOKafkaProducer

from shared.config import Settings
from shared.core.attempts import (
    AttemptResult,
    AttemptRow,
    DeadLetter,
    Outcome,
    build_request,
    clean_text,
    decide,
    plan_follow_ups,
)
from shared.core.errors import Undeliverable, ValidationError
from shared.core.messages import NUMBERED, DeliveryMessage, WebhookRecord
from shared.core.retry import RetryPolicy, RetryTier, tier_for
from shared.crypto import SecretBox
from shared.kafka import send_until_acked
from shared.log.numbering import AttemptNumbers
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .http import WebhookClient
from .retry_tiers import Topics

log = structlog.get_logger(component="sender")

USER_AGENT = "Hookline/{version}"
# A webhook id the database did not know is not asked again for this long.
_MISS_TTL_S = 30.0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hookline")
    except Exception:  # not installed as a distribution: running from a checkout
        return "0.1.0"


class Deliverer:
    """Performs attempts; shared by every in-flight delivery task of a sender process."""

    def __init__(
        self,
        settings: Settings,
        *,
        table: WebhookTable,
        store: WebhookStore,
        client: WebhookClient,
        numbers: AttemptNumbers,
        producer: AIOKafkaProducer,
        topics: Topics,
        stop: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._table = table
        self._store = store
        self._client = client
        self._numbers = numbers
        self._producer = producer
        self._topics = topics
        self._stop = stop
        self._box = SecretBox(settings.secret_key)
        self._secrets: dict[str, str] = {}
        self._misses: dict[str, float] = {}
        self._user_agent = USER_AGENT.format(version=_version())

    async def attempt(self, msg: DeliveryMessage) -> Outcome | None:
        """Runs the attempt `msg` asks for, up to and including the POST, and returns its
        outcome; None if the message was only moved to a retry tier (not due yet).
        Nothing in here runs after the POST that could fail for an outage, so a caller
        retrying the follow-ups never POSTs twice. The clock is read once."""
        now = datetime.now(UTC)
        wait = (msg.due_at or 0.0) - now.timestamp()
        if wait > 0:
            topic = self._topics.tier_topic(_tier(wait))
            await send_until_acked(
                self._producer, topic, msg.encode(), key=msg.key, stop=self._stop
            )
            return None
        numbered = await self._numbered(msg)
        structlog.contextvars.bind_contextvars(
            delivery_id=msg.delivery_id, webhook_id=msg.webhook_id, attempt=numbered.attempt
        )
        record = await self.webhook(msg.webhook_id)
        if record is None or not record.active:
            # Logged with the body it would have sent, so a redelivery after the webhook
            # is turned back on has something to send.
            reason = "webhook deleted" if record is None else "webhook inactive"
            log.info("attempt", outcome="skipped", reason=reason, trigger=msg.trigger)
            return Outcome(self._row(numbered, now, outcome="skipped", error=None))
        try:
            secrets = self._signing_secrets(record, now)
        except Undeliverable as exc:
            # No retry can fix it: dead, with the reason in the dead-letter header.
            log.error("attempt", outcome="dead", reason=str(exc), trigger=msg.trigger)
            row = self._row(numbered, now, outcome="dead", error=None)
            return Outcome(row, (DeadLetter(msg, reason=str(exc)),))
        body, headers = build_request(
            body=msg.body,
            content_type=record.content_type,
            prefix=self._settings.header_prefix,
            user_agent=self._user_agent,
            event_type=msg.event_type,
            delivery_id=msg.delivery_id,
            attempt=numbered.attempt,
            secrets=secrets,
            timestamp=int(now.timestamp()),
        )
        result = await self._client.post(record.url, body, headers, timeout_s=record.timeout_s)
        try:
            policy = RetryPolicy.from_config(record.retry)
        except ValidationError:
            policy = RetryPolicy()
        # The retry policy counts this chain's attempts (msg.attempt), not the log's number.
        decision = decide(
            result,
            attempt=msg.attempt,
            single=msg.single,
            policy=policy,
            rand=random.random(),
            now=now,
        )
        next_at = None
        if decision.next_delay_s is not None:
            next_at = now + timedelta(seconds=decision.next_delay_s)
        row = self._row(
            numbered,
            now,
            outcome=decision.outcome,
            error=decision.error,
            result=result,
            request=(headers, body),
            next_at=next_at,
        )
        log.info(
            "attempt",
            outcome=decision.outcome,
            status=result.status,
            duration_ms=result.duration_ms,
            error=decision.error,
            trigger=msg.trigger,
        )
        return Outcome(row, plan_follow_ups(msg, decision, now))

    async def _numbered(self, msg: DeliveryMessage) -> DeliveryMessage:
        """A repeat attempt (retry, redeliver, recover) takes the next number free in the
        log, so that a redelivery racing an automatic retry, or two redeliveries, never
        show the receiver and the log the same attempt number twice."""
        if msg.attempt == 1 or msg.extra.get(NUMBERED):
            return msg
        number = await self._numbers.next(msg.delivery_id, msg.attempt)
        return msg if number == msg.attempt else dataclasses.replace(msg, attempt=number)

    async def webhook(self, webhook_id: str) -> WebhookRecord | None:
        """From the in-memory table; on a miss (created a moment ago) from the database."""
        record = self._table.get(webhook_id)
        if record is not None:
            return record
        now = time.monotonic()
        if self._misses.get(webhook_id, 0.0) > now:
            return None
        found = await self._store.record(webhook_id)
        if found is None:
            if len(self._misses) > 100_000:
                self._misses = {k: v for k, v in self._misses.items() if v > now}
            self._misses[webhook_id] = now + _MISS_TTL_S
            return None
        self._table.put(found)
        return self._table.get(webhook_id)  # None if a tombstone got there first

    def _secret(self, sealed: str) -> str:
        secret = self._secrets.get(sealed)
        if secret is None:
            try:
                secret = self._box.open(sealed.encode())
            except ValueError as exc:
                raise Undeliverable(str(exc)) from None
            if len(self._secrets) > 50_000:
                self._secrets.clear()
            self._secrets[sealed] = secret
        return secret

    def _signing_secrets(self, record: WebhookRecord, now: datetime) -> list[str]:
        secrets = [self._secret(record.secret_enc)]
        if record.previous_secret_enc and record.previous_expires_at:
            expires = datetime.fromisoformat(record.previous_expires_at.replace("Z", "+00:00"))
            if expires > now:
                secrets.append(self._secret(record.previous_secret_enc))
        return secrets

    def _row(
        self,
        msg: DeliveryMessage,
        started: datetime,
        *,
        outcome: str,
        error: str | None,
        result: AttemptResult | None = None,
        request: tuple[dict[str, str], bytes] | None = None,
        next_at: datetime | None = None,
    ) -> AttemptRow:
        return AttemptRow(
            delivery_id=msg.delivery_id,
            webhook_id=msg.webhook_id,
            org=msg.org,
            event_id=msg.event_id,
            event_type=msg.event_type,
            attempt=msg.attempt,
            trigger=msg.trigger,
            outcome=outcome,
            started_at=started,
            duration_ms=result.duration_ms if result else 0.0,
            request_headers=request[0] if request else None,
            # Without a request (skipped, dead before sending) the body it would have
            # sent, so that a redelivery has something to send.
            request_body=clean_text(
                request[1].decode("utf-8", errors="replace")
                if request
                else orjson.dumps(msg.body).decode()
            ),
            response_status=result.status if result else None,
            response_headers=result.headers or None if result else None,
            response_body=result.body if result else None,
            error=error,
            resolved_ip=result.resolved_ip if result else None,
            next_attempt_at=next_at,
        )


def _tier(delay_s: float) -> RetryTier:
    tier = tier_for(delay_s)
    assert tier is not None  # delay_s > 0
    return tier
