"""One delivery attempt, in stages as Svix's worker has them: prepare (due? number it,
look the webhook up), call (sign and POST, within one of the sender's global slots), and
decide what follows (`decide`, `plan_follow_ups`). The result is an immutable `Outcome`:
the row to log and its effects, which `effects.FollowUps` applies."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from shared import metrics
from shared.config import Settings
from shared.core.attempts import (
    AttemptRow,
    DeadLetter,
    Outcome,
    Retry,
    build_request,
    clean_text,
    decide,
    plan_follow_ups,
)
from shared.core.errors import Undeliverable, ValidationError
from shared.core.events import parse_timestamp
from shared.core.messages import DeliveryMessage, WebhookRecord
from shared.core.retry import RetryPolicy
from shared.core.webhooks import MASK
from shared.crypto import OpenedSecrets, SecretBox
from shared.log.numbering import AttemptNumbers
from shared.subscriptions import WebhookTable
from shared.webhooks import WebhookStore

from .effects import FollowUps
from .http import WebhookClient

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


class Webhooks:
    """A webhook by id: from the in-memory table, or on a miss (created a moment ago)
    from the database, a miss being remembered for a while."""

    def __init__(self, table: WebhookTable, store: WebhookStore) -> None:
        self._table = table
        self._store = store
        self._misses: dict[str, float] = {}

    async def get(self, webhook_id: str) -> WebhookRecord | None:
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

    async def fresh(self, webhook_id: str) -> WebhookRecord | None:
        """From the database, newer than the table may be (the table keeps the newer)."""
        found = await self._store.record(webhook_id)
        if found is not None:
            self._table.put(found)
        return self._table.get(webhook_id)


@dataclass(frozen=True)
class Prepared:
    """An attempt ready to be sent: `msg` as received (its `attempt` counts the retry
    chain), `numbered` with the number it is sent and logged under, and its webhook."""

    msg: DeliveryMessage
    numbered: DeliveryMessage
    webhook: WebhookRecord


class Deliverer:
    """Performs attempts; shared by every in-flight delivery task of a sender process."""

    def __init__(
        self,
        settings: Settings,
        *,
        webhooks: Webhooks,
        client: WebhookClient,
        numbers: AttemptNumbers,
        follow_ups: FollowUps,
    ) -> None:
        self._prefix = settings.header_prefix
        self._webhooks = webhooks
        self._client = client
        self._numbers = numbers
        self._follow_ups = follow_ups
        self._secrets = OpenedSecrets(SecretBox(settings.secret_key))
        self._user_agent = USER_AGENT.format(version=_version())
        self.in_flight = 0  # requests being made now (read by the metrics at scrape time)

    async def prepare(self, msg: DeliveryMessage) -> Prepared | Outcome | None:
        """Everything before the request that may need the database or the broker: None
        if the message is not due (moved on to its retry tier), an `Outcome` if there is
        nothing to send (the webhook is gone or off), else the attempt to `call`."""
        wait = (msg.due_at or 0.0) - time.time()
        if wait > 0:
            await self._follow_ups.apply(Retry(msg, wait))
            return None
        numbered = await self._numbered(msg)
        structlog.contextvars.bind_contextvars(
            delivery_id=msg.delivery_id, webhook_id=msg.webhook_id, attempt=numbered.attempt
        )
        webhook = await self._webhooks.get(msg.webhook_id)
        if webhook is not None and not webhook.active and msg.trigger == "recover":
            # Re-enabling with recover_since writes its redeliveries right after the
            # change: the table may not hold it yet, the database does.
            webhook = await self._webhooks.fresh(msg.webhook_id)
        if webhook is None or not webhook.active:
            reason = "webhook deleted" if webhook is None else "webhook inactive"
            log.info("attempt", outcome="skipped", reason=reason, trigger=msg.trigger)
            metrics.attempt("skipped", None, None)
            return Outcome(_unsent(numbered, datetime.now(UTC), "skipped"))
        return Prepared(msg, numbered, webhook)

    async def call(self, prepared: Prepared) -> Outcome:
        """Signs and POSTs, then decides what follows; reads the clock once. Nothing in
        here could fail for an outage after the POST, so a caller retrying the follow-ups
        never POSTs twice."""
        msg, numbered, webhook = prepared.msg, prepared.numbered, prepared.webhook
        now = datetime.now(UTC)  # signed, and logged as the attempt's start
        try:
            secrets = self._signing_secrets(webhook, now)
            custom = {name: self._secret(sealed) for name, sealed in webhook.headers.items()}
        except Undeliverable as exc:
            # No retry can fix it: dead, with the reason in the dead-letter header.
            log.error("attempt", outcome="dead", reason=str(exc), trigger=msg.trigger)
            metrics.attempt("dead", None, None)
            return Outcome(_unsent(numbered, now, "dead"), (DeadLetter(msg, reason=str(exc)),))
        body, headers = build_request(
            numbered,
            content_type=webhook.content_type,
            prefix=self._prefix,
            user_agent=self._user_agent,
            secrets=secrets,
            timestamp=int(now.timestamp()),
            custom=custom,
        )
        self.in_flight += 1
        try:
            result = await self._client.post(
                webhook.url, body, headers, timeout_s=webhook.timeout_s
            )
        finally:
            self.in_flight -= 1
        try:
            policy = RetryPolicy.from_config(webhook.retry)
        except ValidationError:
            policy = RetryPolicy()
        # What follows counts from the answer (a Retry-After is relative to it): the
        # same reading of the clock plus the request's measured duration.
        answered = now + timedelta(milliseconds=result.duration_ms)
        # The retry policy counts this chain's attempts (msg.attempt), not the log's number.
        decision = decide(
            result,
            attempt=msg.attempt,
            single=msg.single,
            policy=policy,
            rand=random.random(),
            now=answered,
        )
        delay = decision.next_delay_s
        metrics.attempt(decision.outcome, decision.error, result.duration_ms / 1000)
        row = AttemptRow.of(
            numbered,
            outcome=decision.outcome,
            started_at=now,
            duration_ms=result.duration_ms,
            # The custom headers' values are credentials: the log shows them masked.
            request_headers={k: MASK if k in custom else v for k, v in headers.items()},
            request_body=clean_text(body.decode("utf-8", errors="replace")),
            response_status=result.status,
            response_headers=result.headers or None,
            response_body=result.body,
            error=decision.error,
            resolved_ip=result.resolved_ip,
            next_attempt_at=None if delay is None else answered + timedelta(seconds=delay),
        )
        # A success is the common case and the delivery log holds it: one line each at
        # INFO would cost a busy sender more than its signing. Failures stay at INFO.
        (log.debug if decision.outcome == "succeeded" else log.info)(
            "attempt",
            outcome=decision.outcome,
            status=result.status,
            duration_ms=result.duration_ms,
            error=decision.error,
            trigger=msg.trigger,
        )
        return Outcome(row, plan_follow_ups(msg, decision, answered))

    async def _numbered(self, msg: DeliveryMessage) -> DeliveryMessage:
        """A repeat attempt (retry, redeliver, recover) takes the next number free in the
        log, so that a redelivery racing an automatic retry, or two redeliveries, never
        show the receiver and the log the same attempt number twice."""
        if msg.attempt == 1 or msg.numbered:
            return msg
        number = await self._numbers.next(msg.delivery_id, msg.attempt)
        return msg if number == msg.attempt else dataclasses.replace(msg, attempt=number)

    def _secret(self, sealed: str) -> str:
        try:
            return self._secrets.open(sealed.encode())
        except ValueError as exc:
            raise Undeliverable(str(exc)) from None

    def _signing_secrets(self, record: WebhookRecord, now: datetime) -> list[str]:
        secrets = [self._secret(record.secret_enc)]
        if record.previous_secret_enc and record.previous_expires_at:
            expires = parse_timestamp(record.previous_expires_at)
            if expires > now:
                secrets.append(self._secret(record.previous_secret_enc))
        return secrets


def _unsent(msg: DeliveryMessage, now: datetime, outcome: str) -> AttemptRow:
    """The row of an attempt that made no request (skipped, dead before sending): with
    the body it would have sent, so that a redelivery has something to send."""
    body = clean_text(orjson.dumps(msg.body).decode())
    return AttemptRow.of(msg, outcome=outcome, started_at=now, request_body=body)
