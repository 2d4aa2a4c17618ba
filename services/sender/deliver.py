"""One delivery attempt end to end: look the webhook up, sign, POST, decide what follows
(retry tier, dead-letter, disabling) and append the attempt to the delivery log."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.config import Settings
from shared.core.attempts import (
    AttemptResult,
    AttemptRow,
    FailureStreak,
    build_request,
    clean_text,
    decide,
    should_disable,
)
from shared.core.errors import ProduceFailed, Undeliverable, ValidationError
from shared.core.messages import NUMBERED, DeliveryMessage, WebhookRecord
from shared.core.retry import RetryPolicy, RetryTier, tier_for
from shared.crypto import SecretBox
from shared.log.numbering import AttemptNumbers
from shared.log.writer import DeliveryLog
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .http import WebhookClient
from .retry_tiers import REJECT_HEADER, Topics

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


@dataclass
class Attempt:
    """An attempt that has run (or was skipped): the row to log and what follows it,
    with what `Deliverer.follow_up` has done so far."""

    row: AttemptRow
    webhook_id: str | None = None
    retry: DeliveryMessage | None = None
    retry_topic: str | None = None
    dead: DeliveryMessage | None = None
    dead_reason: str | None = None  # the dead-letter header, when no attempt was made
    disable_reason: str | None = None
    retry_sent: bool = False
    dead_sent: bool = False
    disabled: bool = False
    durable: asyncio.Future[None] | None = field(default=None, repr=False)


class Deliverer:
    """Performs attempts; shared by every in-flight delivery task of a sender process."""

    def __init__(
        self,
        settings: Settings,
        *,
        table: WebhookTable,
        store: WebhookStore,
        client: WebhookClient,
        delivery_log: DeliveryLog,
        numbers: AttemptNumbers,
        disabler: Disabler,
        producer: AIOKafkaProducer,
        topics: Topics,
        stop: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._table = table
        self._store = store
        self._client = client
        self._log = delivery_log
        self._numbers = numbers
        self._disabler = disabler
        self._producer = producer
        self._topics = topics
        self._stop = stop
        self._box = SecretBox(settings.secret_key)
        self._secrets: dict[str, str] = {}
        self._misses: dict[str, float] = {}
        self._user_agent = USER_AGENT.format(version=_version())

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

    async def attempt(self, msg: DeliveryMessage) -> Attempt | None:
        """Runs the attempt `msg` asks for, up to and including the POST, and returns
        what must follow it (`follow_up`); None if the message was only moved to a retry
        tier. Nothing in here runs after the POST that could fail for an outage, so a
        caller retrying `follow_up` never POSTs twice."""
        now_s = time.time()
        if msg.due_at is not None and msg.due_at > now_s:
            await self.send(self._topics.tier_topic(_tier(msg.due_at - now_s)), msg)
            return None
        chain = msg.attempt  # the retry policy counts this chain's attempts
        if chain > 1 and not msg.extra.get(NUMBERED):
            # A repeat attempt (retry, redeliver, recover) takes the next number free in
            # the log, so that a redelivery racing an automatic retry, or two redeliveries,
            # never show the receiver and the log the same attempt number twice.
            number = await self._numbers.next(msg.delivery_id, chain)
            if number != chain:
                msg = dataclasses.replace(msg, attempt=number)
        structlog.contextvars.bind_contextvars(
            delivery_id=msg.delivery_id, webhook_id=msg.webhook_id, attempt=msg.attempt
        )
        started = datetime.now(UTC)
        record = await self.webhook(msg.webhook_id)
        if record is None or not record.active:
            # Logged with the body it would have sent, so a redelivery after the webhook
            # is turned back on has something to send.
            reason = "webhook deleted" if record is None else "webhook inactive"
            log.info("attempt", outcome="skipped", reason=reason, trigger=msg.trigger)
            return Attempt(self._row(msg, started, outcome="skipped", error=None))
        try:
            secrets = self._signing_secrets(record, started)
        except Undeliverable as exc:
            # No retry can fix it: dead, with the reason in the dead-letter header.
            log.error("attempt", outcome="dead", reason=str(exc), trigger=msg.trigger)
            row = self._row(msg, started, outcome="dead", error=None)
            return Attempt(row, dead=msg, dead_reason=str(exc))
        body, headers = build_request(
            body=msg.body,
            content_type=record.content_type,
            prefix=self._settings.header_prefix,
            user_agent=self._user_agent,
            event_type=msg.event_type,
            delivery_id=msg.delivery_id,
            attempt=msg.attempt,
            secrets=secrets,
            timestamp=int(started.timestamp()),
        )
        result = await self._client.post(record.url, body, headers, timeout_s=record.timeout_s)
        try:
            policy = RetryPolicy.from_config(record.retry)
        except ValidationError:
            policy = RetryPolicy()
        decision = decide(
            result,
            attempt=chain,
            single=msg.single,
            policy=policy,
            rand=random.random(),
            now=datetime.now(UTC),
        )
        next_at: datetime | None = None
        if decision.next_delay_s is not None:
            due = time.time() + decision.next_delay_s
            next_at = datetime.fromtimestamp(due, UTC)
        out = Attempt(
            self._row(
                msg,
                started,
                outcome=decision.outcome,
                error=decision.error,
                result=result,
                request=(headers, body),
                next_at=next_at,
            ),
            webhook_id=record.id,
            disable_reason=decision.disable_reason,
        )
        if decision.next_delay_s is not None:
            out.retry = dataclasses.replace(
                msg,
                attempt=chain + 1,
                trigger="retry",
                due_at=due,
                last_error=decision.error,
                extra={k: v for k, v in msg.extra.items() if k != NUMBERED},
            )
            out.retry_topic = self._topics.tier_topic(_tier(decision.next_delay_s))
        if decision.to_dlq:
            out.dead = dataclasses.replace(msg, last_error=_describe(result))
        log.info(
            "attempt",
            outcome=decision.outcome,
            status=result.status,
            duration_ms=result.duration_ms,
            error=decision.error,
            trigger=msg.trigger,
        )
        return out

    async def follow_up(self, step: Attempt) -> asyncio.Future[None]:
        """What follows an attempt: the retry or dead-letter message, disabling, and the
        log row; returns the row's future (resolved once durable). Safe to call again
        after it raised: steps already done are not repeated."""
        if step.retry is not None and not step.retry_sent:
            assert step.retry_topic is not None
            await self.send(step.retry_topic, step.retry)
            step.retry_sent = True
        if step.dead is not None and not step.dead_sent:
            headers = None
            if step.dead_reason is not None:
                headers = [(REJECT_HEADER, step.dead_reason.encode())]
            await self.send(self._topics.dlq, step.dead, headers=headers)
            step.dead_sent = True
        if step.disable_reason is not None and not step.disabled:
            assert step.webhook_id is not None
            await self._disabler.disable(step.webhook_id, step.disable_reason)
            step.disabled = True
        durable = step.durable
        if durable is None or (durable.done() and durable.exception() is not None):
            step.durable = durable = self._log.append(step.row)
        return durable

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

    async def send(
        self,
        topic: str,
        msg: DeliveryMessage,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produces until the broker acknowledged (retrying while the process runs)."""
        delay = 0.2
        while True:
            try:
                await self._producer.send_and_wait(
                    topic, msg.encode(), key=msg.key, headers=headers
                )
                return
            except KafkaError as exc:
                if self._stop.is_set() or not exc.retriable:
                    raise ProduceFailed(f"{topic}: {exc!r}", retryable=exc.retriable) from exc
                log.warning("produce failed; retrying", topic=topic, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


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
        webhooks the disabling rule (`should_disable`) applies to."""
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


def _tier(delay_s: float) -> RetryTier:
    tier = tier_for(delay_s)
    assert tier is not None  # delay_s > 0
    return tier


def _describe(result: AttemptResult) -> str:
    if result.error == "http_status" or (result.error is None and result.status is not None):
        return f"http_status {result.status}"
    return result.error or "unknown"
