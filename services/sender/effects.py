"""What follows an attempt, applied: each effect `plan_follow_ups` planned (a retry into
its delay tier, a dead-letter copy, disabling the webhook), then the attempt's row in the
delivery log. A new kind of follow-up gets its type and its planning in
`shared/core/attempts.py` and its application here."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiokafka import AIOKafkaProducer

from shared.config import Settings
from shared.core.attempts import AttemptRow, DeadLetter, Disable, Effect, Retry
from shared.core.health import FailureStreak, should_disable
from shared.core.retry import RETRY_TIERS, tier_for
from shared.kafka import REJECT_HEADER, send_until_acked
from shared.log.writer import DeliveryLog
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .retry_tiers import Topics

log = structlog.get_logger(component="sender")


class Disabler:
    """Turns webhooks off: at once (410 Gone), or when the delivery log reports a failure
    streak the disabling rule (`should_disable`) applies to."""

    def __init__(self, settings: Settings, *, store: WebhookStore, table: WebhookTable) -> None:
        self._store = store
        self._table = table
        self._max_failures = settings.disable_after_failures
        self._max_span = timedelta(seconds=settings.disable_after_seconds)

    async def disable(self, webhook_id: str, reason: str) -> None:
        """Turns the webhook off in the database (published through the outbox) and in the
        local table at once, so the deliveries that follow are skipped."""
        changed = await self._store.disable(webhook_id, reason)
        held = self._table.get(webhook_id)
        if held is not None and held.active:
            self._table.put(dataclasses.replace(held, active=False, revision=held.revision + 1))
        if changed:
            log.warning("webhook disabled", webhook_id=webhook_id, reason=reason)

    async def on_failures(self, streaks: list[FailureStreak]) -> None:
        """Called by the delivery log with the failure streaks of a batch: disables the
        webhooks the disabling rule applies to."""
        now = datetime.now(UTC)
        for item in streaks:
            if not should_disable(
                item, now=now, max_failures=self._max_failures, max_span=self._max_span
            ):
                continue
            reason = (
                f"disabled after {item.failures} consecutive failed attempts since "
                f"{item.first_failure_at.isoformat()}"
            )
            try:
                await self.disable(item.webhook_id, reason)
            except Exception:
                log.exception("disabling webhook failed", webhook_id=item.webhook_id)


@dataclass(frozen=True)
class FollowUps:
    """Applies effects and logs rows for every in-flight delivery of a sender. Each call
    either completes or raises (an outage: the caller tries that step again; once `stop`
    is set, a produce gives up with `ProduceFailed`)."""

    producer: AIOKafkaProducer
    topics: Topics
    disabler: Disabler
    delivery_log: DeliveryLog
    stop: asyncio.Event

    async def apply(self, effect: Effect) -> None:
        match effect:
            case Retry(msg=msg, delay_s=delay_s):
                # A retry, a message not due yet, a parked one: into the tier that holds
                # its delay (the tier forwards it once due).
                topic = self.topics.tier_topic(tier_for(delay_s) or RETRY_TIERS[0])
                await self._send(topic, msg.encode(), msg.key)
            case DeadLetter(msg=msg, reason=reason):
                await self.reject(msg.encode(), msg.key, reason)
            case Disable(webhook_id=webhook_id, reason=reason):
                await self.disabler.disable(webhook_id, reason)

    async def record(self, row: AttemptRow) -> None:
        """Appends the attempt's row; returns once it is durable (its offset may then be
        committed)."""
        await self.delivery_log.append(row)

    async def reject(self, value: bytes | None, key: bytes | None, reason: str | None) -> None:
        """Copies a record to the dead-letter topic, with the reason header if given."""
        headers = None if reason is None else [(REJECT_HEADER, reason.encode())]
        await self._send(self.topics.dlq, value, key, headers)

    async def _send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await send_until_acked(
            self.producer, topic, value, key=key, headers=headers, stop=self.stop
        )
