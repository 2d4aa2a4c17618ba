"""The outbox relay: publishes committed outbox rows to Kafka, marking them after the ack.

Each batch is claimed with `FOR UPDATE SKIP LOCKED` inside one transaction, published with
the idempotent producer, and marked published in the same transaction once the broker has
acknowledged every message; so several relays can run at once and each row is published
once in the normal case. A crash after the ack but before the commit publishes the batch
again (at-least-once; downstream ids are deterministic, so duplicates are harmless).

Ordering: within a batch rows go out in id order, and one relay publishes its batches one
after another, so one relay keeps a key's messages in order. With several relays running,
two batches can be in flight at once and a key's messages in them can interleave: ordering
per key across concurrent relays is best effort. (The webhook table tolerates this through
revisions.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from shared import metrics
from shared.config import Settings
from shared.core.errors import ProducerBroken, is_retryable
from shared.db import create_pool, db_errors
from shared.kafka import MAX_MESSAGE_BYTES, WEBHOOKS, make_producer
from shared.logging import configure_logging
from shared.mail import Postman, SmtpServer
from shared.outbox import CHANNEL
from shared.runtime import run

log = structlog.get_logger(service="relay")

_CLAIM = (
    "SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL"
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
_REFUSE = "UPDATE outbox SET published_at = now(), refused_reason = $2 WHERE id = $1"
_PRUNE = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE published_at < now() - make_interval(secs => $1) AND refused_reason IS NULL"
    " LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
# The broker refuses a record batch over `message.max.bytes` (default 1048588), and after
# such a refusal an idempotent producer's sequence for that partition is broken for good
# (every later send fails with OutOfOrderSequenceNumber). So oversized rows never reach
# the producer: they are set aside with a reason instead.


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 500
    # Writers that do not wake the relay (plain SQL, a lost NOTIFY) wait at most this long.
    poll_interval_s: float = 0.25
    prune_interval_s: float = 60.0
    prune_after_s: float = 3600.0  # published rows are kept this long, then deleted
    prune_batch: int = 1000
    error_backoff_s: float = 1.0


def _headers(raw: Any) -> list[tuple[str, bytes]] | None:
    if not raw:
        return None
    return [(str(k), str(v).encode()) for k, v in dict(raw).items()]


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> int:
    extra = sum(len(k) + len(v) + 8 for k, v in headers or ())
    return len(key or b"") + len(value or b"") + extra


class Relay:
    """One relay loop over a pool and a started producer (both owned by the caller)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        dsn: str | None = None,
        config: RelayConfig | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._dsn = dsn  # for the dedicated LISTEN connection; None polls only
        self.config = config or RelayConfig()
        self._wake = asyncio.Event()
        self.published = 0  # rows this relay marked published (for tests and metrics)

    async def publish_batch(self) -> int:
        """Claims, publishes and marks up to `batch_size` rows; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            started = time.perf_counter()
            rows = await conn.fetch(_CLAIM, self.config.batch_size)
            metrics.outbox_claimed(time.perf_counter() - started)
            if not rows:
                return 0
            futures = []
            for row in rows:
                key = bytes(row["key"]) if row["key"] is not None else None
                value = bytes(row["value"]) if row["value"] is not None else None
                headers = _headers(row["headers"])
                size = _size(key, value, headers)
                reason = None
                if size > MAX_MESSAGE_BYTES:
                    reason = f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"
                elif key is None and value is None:
                    reason = "a message needs a key or a value"
                if reason is not None:
                    log.error(
                        "outbox row refused", outbox_id=row["id"], topic=row["topic"], reason=reason
                    )
                    await conn.execute(_REFUSE, row["id"], reason)
                    continue
                futures.append(
                    await self._producer.send(row["topic"], key=key, value=value, headers=headers)
                )
                if row["topic"] == WEBHOOKS:
                    # A webhook change must be on the broker before any later row (an event
                    # for that webhook) is sent, so the matcher can wait for it (see
                    # WebhookTable.catch_up). Changes are rare: the extra round trip is too.
                    await asyncio.gather(*futures, return_exceptions=True)
            # Every ack before marking: a row is marked only once the broker has it.
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    if getattr(result, "retriable", True):
                        raise result
                    raise ProducerBroken(repr(result)) from result
            await conn.execute(_MARK, [row["id"] for row in rows])
        self.published += len(rows)
        metrics.relay_published(len(rows))
        return len(rows)

    async def prune(self) -> int:
        """Deletes rows published longer ago than `prune_after_s`, in small batches."""
        total = 0
        while True:
            status = await self._pool.execute(
                _PRUNE, self.config.prune_after_s, self.config.prune_batch
            )
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < self.config.prune_batch:
                return total

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Keeps a dedicated connection LISTENing; reconnects when it drops."""
        assert self._dsn is not None
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._wake.set()  # rows may have arrived while we were not listening
                await _first(stop.wait(), lost.wait())
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("relay listen connection failed; polling meanwhile", error=str(exc))
                await _first(stop.wait(), asyncio.sleep(self.config.error_backoff_s))
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    async def run(self, stop: asyncio.Event) -> None:
        """Publishes until `stop` is set; finishes the batch in hand, then returns."""
        listener = (
            asyncio.create_task(self._listen(stop), name="relay-listen") if self._dsn else None
        )
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    with db_errors():
                        n = await self.publish_batch()
                        if loop.time() >= next_prune:
                            next_prune = loop.time() + self.config.prune_interval_s
                            pruned = await self.prune()
                            if pruned:
                                log.info("outbox pruned", rows=pruned)
                except ProducerBroken:
                    raise
                except Exception as exc:
                    # An outage of the database, or Kafka errors (after the producer's own
                    # retries): the batch rolled back, it is published again.
                    if is_retryable(exc):
                        log.warning("relay database unavailable; retrying", error=repr(exc))
                    else:
                        log.exception("relay publish failed; retrying")
                    await _first(stop.wait(), asyncio.sleep(self.config.error_backoff_s))
                    continue
                if n:
                    log.debug("relay batch published", rows=n)
                    continue  # while rows keep coming, claim again at once (no wake-up needed)
                await _first(
                    stop.wait(), self._wake.wait(), asyncio.sleep(self.config.poll_interval_s)
                )
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener


async def _first(*aws: Any) -> None:
    """Waits until the first of `aws` completes and cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """The composition root: pool, producer, relay; closed in reverse order."""
    configure_logging(settings.log_level, service="relay")
    name = settings.instance_name("relay")
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    # Notice mail (shared/mail.py) beside the outbox: both drain rows other processes wrote.
    postman = None
    if settings.smtp_url:
        server = SmtpServer.parse(settings.smtp_url)
        sender = Postman(pool, server, sender=settings.mail_from)
        postman = asyncio.create_task(sender.run(stop), name="postman")
    try:
        while not stop.is_set():
            producer = make_producer(settings.kafka_bootstrap, client_id=name)
            await producer.start()
            try:
                log.info("relay started", instance=name)
                await Relay(pool, producer, dsn=settings.database_url).run(stop)
            except ProducerBroken as exc:
                # The batch was rolled back; a fresh producer publishes it again.
                log.error("relay producer broken; replacing it", error=str(exc))
                await _first(stop.wait(), asyncio.sleep(1.0))
            finally:
                await producer.stop()
    finally:
        if postman is not None:
            await asyncio.wait({postman}, timeout=5.0)
            postman.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await postman
        await pool.close()
    log.info("relay stopped", instance=name)


def main() -> None:
    """`python -m services.relay`."""
    run(serve)
