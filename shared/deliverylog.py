"""The delivery log writer: buffers attempt rows and appends them in batches, with
the `deliveries` summary and the webhooks' failure counts, in one transaction.

An attempt counts as done (its Kafka offset may be committed) only once `append`'s
future resolved, i.e. its row is durably written: a kill -9 loses nothing.

An outage (connection lost, server down) is retried with backoff for as long as it lasts.
A row the database can never store (a data error) must not block the rows behind it: the
batch is retried row by row, a refused row is stored as a sanitised copy, and a row even
that fails has its future failed with `RowRejected` (the sender dead-letters it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog

from shared.core.attempts import ERROR_CLASSES, AttemptRow, clean_text, health_deltas

log = structlog.get_logger(component="delivery_log")

_PARTITION = re.compile(r"^delivery_attempts_(\d{8})$")
# Any fixed number: one replica at a time creates or drops partitions.
_MAINTENANCE_LOCK = 0x686C6F67

# INSERT ... SELECT unnest rather than COPY: asyncpg's COPY is binary and the shared pool
# has only text codecs for jsonb; unnest measured ~150k rows/s (NOTES.md), an order of
# magnitude above what the HTTP side can send, in one round trip per batch.
_INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type, attempt,
    trigger, outcome, started_at, duration_ms, request_headers, request_body,
    response_status, response_headers, response_body, error, resolved_ip, next_attempt_at)
SELECT d, w, o, e, t, a, tr, oc, s, ms, rh::jsonb, rb, st, sh::jsonb, sb, er, ip, na
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::timestamptz[], $10::float8[], $11::text[], $12::text[],
            $13::int[], $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[])
     AS v(d, w, o, e, t, a, tr, oc, s, ms, rh, rb, st, sh, sb, er, ip, na)
"""

_UPSERT_DELIVERIES = """
INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,
                        first_at, last_at, last_error, last_status, next_attempt_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::int[],
                     $12::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    -- A failed single (manual) attempt does not revive a dead delivery.
    status = CASE WHEN deliveries.status = 'dead' AND EXCLUDED.status = 'failed'
                       AND EXCLUDED.next_attempt_at IS NULL
                  THEN 'dead' ELSE EXCLUDED.status END,
    attempts = GREATEST(deliveries.attempts, EXCLUDED.attempts),
    first_at = LEAST(deliveries.first_at, EXCLUDED.first_at),
    last_at = EXCLUDED.last_at,
    last_error = EXCLUDED.last_error,
    last_status = EXCLUDED.last_status,
    next_attempt_at = EXCLUDED.next_attempt_at
WHERE EXCLUDED.last_at >= deliveries.last_at
"""

# The number of a repeat attempt: one more than any given out or logged (the summary's
# `attempts` is the highest of them), at least what the message asked for.
_NUMBER_ATTEMPT = (
    "UPDATE deliveries SET attempts = GREATEST(attempts + 1, $2) WHERE id = $1 RETURNING attempts"
)

_HEALTH_RESET = """
INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at, updated_at)
SELECT w, n, f, now() FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS v(w, n, f)
ON CONFLICT (webhook_id) DO UPDATE SET
    consecutive_failures = EXCLUDED.consecutive_failures,
    first_failure_at = EXCLUDED.first_failure_at,
    updated_at = now()
RETURNING webhook_id, consecutive_failures, first_failure_at
"""

_HEALTH_ADD = """
INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at, updated_at)
SELECT w, n, f, now() FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS v(w, n, f)
ON CONFLICT (webhook_id) DO UPDATE SET
    consecutive_failures = webhook_health.consecutive_failures + EXCLUDED.consecutive_failures,
    first_failure_at = COALESCE(webhook_health.first_failure_at, EXCLUDED.first_failure_at),
    updated_at = now()
RETURNING webhook_id, consecutive_failures, first_failure_at
"""


# Errors a retry cannot fix: the row itself is unstorable (bad UUID, NUL, surrogates,
# out-of-range integer). Everything else is treated as an outage and retried.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    ValueError,
    TypeError,
    orjson.JSONEncodeError,
)


class RowRejected(Exception):
    """A row (and its sanitised copy) the database refused: it is not in the log."""


class LogClosed(RuntimeError):
    """The writer stopped before the row was written (shutdown): try again elsewhere."""


@dataclass(frozen=True)
class Unhealthy:
    """A webhook whose consecutive failures crossed the disabling threshold."""

    webhook_id: str
    failures: int
    first_failure_at: datetime


OnUnhealthy = Callable[[list[Unhealthy]], Coroutine[Any, Any, None]]


class DeliveryLog:
    """Append-only writer of `delivery_attempts` (never an UPDATE or DELETE of a row)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_interval: float = 0.05,
        batch_size: int = 500,
        disable_after_failures: int = 10,
        disable_after_seconds: float = 3600,
        on_unhealthy: OnUnhealthy | None = None,
    ) -> None:
        self._pool = pool
        self._interval = flush_interval
        self._batch_size = batch_size
        self._threshold = disable_after_failures
        self._span = timedelta(seconds=disable_after_seconds)
        self._on_unhealthy = on_unhealthy
        self._buffer: list[tuple[AttemptRow, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-log")

    def append(self, row: AttemptRow) -> asyncio.Future[None]:
        """Buffers a row; the future resolves once it is committed to PostgreSQL."""
        if self._closing:
            raise LogClosed("delivery log is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.append((row, fut))
        self._idle.clear()
        if len(self._buffer) == 1 or len(self._buffer) >= self._batch_size:
            self._wake.set()
        return fut

    async def number_attempt(self, delivery_id: str, at_least: int) -> int:
        """The number for a repeat attempt of a delivery (see `_NUMBER_ATTEMPT`); two
        attempts of one delivery never get the same. `at_least` when the delivery has no
        summary row yet."""
        number = await self._pool.fetchval(_NUMBER_ATTEMPT, uuid.UUID(delivery_id), at_least)
        return at_least if number is None else int(number)

    async def flush(self) -> None:
        """Returns once every row appended so far is written."""
        self._wake.set()
        await self._idle.wait()

    async def close(self, timeout: float = 10.0) -> None:
        """Writes what is buffered (until `timeout`), then stops; unwritten rows' futures
        fail, so their offsets are never committed."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            # The writer returns by itself once the buffer is empty.
            await asyncio.wait({self._task}, timeout=timeout)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for _row, fut in self._buffer:
            if not fut.done():
                fut.set_exception(LogClosed("delivery log closed before the row was written"))
        self._buffer.clear()
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=timeout)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._buffer:
                self._idle.set()
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if len(self._buffer) < self._batch_size and not self._closing:
                # Gather a batch: wait out the interval unless it fills up first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
                self._wake.clear()
            batch = self._buffer[: self._batch_size]
            try:
                unhealthy = await self._write([row for row, _ in batch])
                handled, outage = len(batch), None
            except DATA_ERRORS as exc:
                log.warning("delivery log batch refused; writing row by row", error=repr(exc))
                handled, unhealthy, outage = await self._write_each(batch)
            except Exception as exc:
                handled, unhealthy, outage = 0, [], exc
            del self._buffer[:handled]
            for _row, fut in batch[:handled]:
                if not fut.done():
                    fut.set_result(None)
            self._report(unhealthy)
            if outage is not None:
                # An outage: keep the rows and try again; their offsets stay uncommitted
                # meanwhile, so nothing is lost.
                log.warning(
                    "delivery log write failed; retrying",
                    error=repr(outage),
                    rows=len(batch) - handled,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1

    def _report(self, unhealthy: list[Unhealthy]) -> None:
        if unhealthy and self._on_unhealthy is not None:
            task: asyncio.Task[None] = asyncio.create_task(self._on_unhealthy(unhealthy))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _write_each(
        self, batch: list[tuple[AttemptRow, asyncio.Future[None]]]
    ) -> tuple[int, list[Unhealthy], Exception | None]:
        """Writes `batch` one row at a time; a row refused for its data is replaced by
        sanitised copies, and if those are refused too its future fails with RowRejected.

        Returns how many rows (from the start) are settled, what became unhealthy, and the
        outage that stopped it early, if any. A settled row's future is resolved by the
        caller unless it was failed here.
        """
        unhealthy: list[Unhealthy] = []
        for i, (row, fut) in enumerate(batch):
            candidates = [row, *_fallbacks(row)]
            error: BaseException | None = None
            for n, candidate in enumerate(candidates):
                try:
                    unhealthy += await self._write([candidate])
                except DATA_ERRORS as exc:
                    error = exc
                    continue
                except Exception as exc:
                    return i, unhealthy, exc
                if n:
                    log.error(
                        "delivery log row refused; stored a sanitised copy",
                        delivery_id=row.delivery_id,
                        attempt=row.attempt,
                        error=repr(error),
                    )
                error = None
                break
            if error is not None:
                log.error(
                    "delivery log row refused; not stored",
                    delivery_id=row.delivery_id,
                    attempt=row.attempt,
                    error=repr(error),
                )
                if not fut.done():
                    fut.set_exception(RowRejected(f"delivery log refused the row: {error!r}"))
        return len(batch), unhealthy, None

    async def _write(self, rows: Sequence[AttemptRow]) -> list[Unhealthy]:
        columns = _attempt_columns(rows)
        # Rows of one delivery in one batch: the summary takes the latest, since one
        # INSERT ... ON CONFLICT cannot touch a row twice.
        latest: dict[str, AttemptRow] = {}
        first: dict[str, datetime] = {}
        for r in rows:
            held = latest.get(r.delivery_id)
            if held is None or (r.started_at, r.attempt) >= (held.started_at, held.attempt):
                latest[r.delivery_id] = r
            first[r.delivery_id] = min(first.get(r.delivery_id, r.started_at), r.started_at)
        summary = list(latest.values())
        deltas = health_deltas(rows)
        reset = {w: d for w, d in deltas.items() if d.reset}
        added = {w: d for w, d in deltas.items() if not d.reset and d.failures}
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_INSERT_ATTEMPTS, *columns)
            await conn.execute(
                _UPSERT_DELIVERIES,
                [uuid.UUID(r.delivery_id) for r in summary],
                [uuid.UUID(r.webhook_id) for r in summary],
                [r.org for r in summary],
                [r.event_id for r in summary],
                [r.event_type for r in summary],
                [r.status for r in summary],
                [r.attempt for r in summary],
                [first[r.delivery_id] for r in summary],
                [r.started_at for r in summary],
                [r.error for r in summary],
                [r.response_status for r in summary],
                [r.next_attempt_at for r in summary],
            )
            counts: list[asyncpg.Record] = []
            for sql, part in ((_HEALTH_RESET, reset), (_HEALTH_ADD, added)):
                if part:
                    ids = sorted(part)  # a fixed order: no deadlock between replicas
                    counts += await conn.fetch(
                        sql,
                        [uuid.UUID(w) for w in ids],
                        [part[w].failures for w in ids],
                        [part[w].first_failure_at for w in ids],
                    )
        now = datetime.now(UTC)
        return [
            Unhealthy(str(c["webhook_id"]), c["consecutive_failures"], c["first_failure_at"])
            for c in counts
            if c["consecutive_failures"] >= self._threshold
            and c["first_failure_at"] is not None
            and now - c["first_failure_at"] >= self._span
        ]

    async def maintain(self, retention_days: int, *, now: datetime | None = None) -> list[str]:
        """Creates the coming days' partitions and drops those older than the retention;
        returns the dropped partitions' names. One replica at a time does it."""
        today = (now or datetime.now(UTC)).date()
        cutoff = today - timedelta(days=retention_days)
        dropped: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _MAINTENANCE_LOCK):
                return dropped
            await conn.execute("SELECT hookline_ensure_partitions(1, 7)")
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'delivery_attempts'::regclass"
            )
            for rec in names:
                match = _PARTITION.match(rec["relname"])
                if match is None:
                    continue
                day = datetime.strptime(match.group(1), "%Y%m%d").date()
                if day < cutoff:
                    await conn.execute(f'DROP TABLE "{rec["relname"]}"')
                    dropped.append(rec["relname"])
            # The summary rows of deliveries whose attempts are gone go with them.
            await conn.execute(
                "DELETE FROM deliveries WHERE last_at < $1",
                datetime.combine(cutoff, datetime.min.time(), UTC),
            )
        if dropped:
            log.info("delivery log partitions dropped", partitions=dropped)
        return dropped

    async def maintain_forever(self, retention_days: int, stop: asyncio.Event) -> None:
        """`maintain` now and then hourly until `stop` is set; failures are logged."""
        while not stop.is_set():
            try:
                await self.maintain(retention_days)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("delivery log maintenance failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3600):
                    await stop.wait()


def _fallbacks(row: AttemptRow) -> list[AttemptRow]:
    """Sanitised copies of a refused row, in order of preference: text cleaned, headers
    and the response body dropped (a note says so); then the request body dropped too."""
    note = "[not stored: the delivery log refused this attempt's data]"
    base = dataclasses.replace(
        row,
        org=clean_text(str(row.org)),
        event_id=clean_text(str(row.event_id)),
        event_type=clean_text(str(row.event_type)),
        trigger=clean_text(str(row.trigger)),
        outcome=clean_text(str(row.outcome)),
        error=row.error if row.error in ERROR_CLASSES else None,
        resolved_ip=None if row.resolved_ip is None else clean_text(str(row.resolved_ip)),
        request_headers=None,
        response_headers=None,
        response_body=note,
    )
    kept = base.request_body
    first = dataclasses.replace(base, request_body=None if kept is None else clean_text(str(kept)))
    return [first, dataclasses.replace(base, request_body=None)]


def _json(value: dict[str, str] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _attempt_columns(rows: Sequence[AttemptRow]) -> list[list[Any]]:
    """The batch as one array per column, in `_INSERT_ATTEMPTS`'s order."""
    return [
        [uuid.UUID(r.delivery_id) for r in rows],
        [uuid.UUID(r.webhook_id) for r in rows],
        [r.org for r in rows],
        [r.event_id for r in rows],
        [r.event_type for r in rows],
        [r.attempt for r in rows],
        [r.trigger for r in rows],
        [r.outcome for r in rows],
        [r.started_at for r in rows],
        [float(r.duration_ms) for r in rows],
        [_json(r.request_headers) for r in rows],
        [r.request_body for r in rows],
        [r.response_status for r in rows],
        [_json(r.response_headers) for r in rows],
        [r.response_body for r in rows],
        [r.error for r in rows],
        [r.resolved_ip for r in rows],
        [r.next_attempt_at for r in rows],
    ]
