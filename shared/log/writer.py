"""The delivery log's writer: buffers attempt rows and appends them in batches, with
the `deliveries` summary and the webhooks' failure counts (`health`), in one transaction.

An attempt counts as done (its Kafka offset may be committed) only once `append`'s
future resolved, i.e. its row is durably written: a kill -9 loses nothing.

An outage (connection lost, server down) is retried with backoff for as long as it lasts.
A row the database can never store (`Unstorable`: a data error) must not block the rows
behind it: the batch is retried row by row, a refused row is stored as a sanitised copy,
and a row even that fails has its future failed with `RowRejected` (the sender
dead-letters it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from shared import metrics
from shared.core.attempts import ERROR_CLASSES, AttemptRow, clean_text
from shared.core.errors import LogClosed, RowRejected, Unstorable
from shared.core.health import FailureStreak
from shared.db import db_errors

from .health import count_failures

log = structlog.get_logger(component="delivery_log")

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

OnFailures = Callable[[list[FailureStreak]], Coroutine[Any, Any, None]]


class DeliveryLog:
    """Append-only writer of `delivery_attempts` (never an UPDATE or DELETE of a row)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_interval: float = 0.05,
        batch_size: int = 500,
        on_failures: OnFailures | None = None,
        failing_after: int | None = None,
    ) -> None:
        """`on_failures` hears the failure streaks of the webhooks that failed in each
        batch written (their counts are in the same transaction). With `failing_after`,
        a streak reaching that many failures emits `webhook.failing` in that transaction
        (HOOKLINE_FAILING_AFTER_FAILURES)."""
        self._pool = pool
        self._interval = flush_interval
        self._batch_size = batch_size
        self._on_failures = on_failures
        self._failing_after = failing_after
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
                started = time.perf_counter()
                failing = await self._write([row for row, _ in batch])
                metrics.log_batch(len(batch), time.perf_counter() - started)
                handled, outage = len(batch), None
            except Unstorable as exc:
                log.warning("delivery log batch refused; writing row by row", error=repr(exc))
                handled, failing, outage = await self._write_each(batch)
            except Exception as exc:  # an outage, or a bug: keep the rows either way
                handled, failing, outage = 0, [], exc
            del self._buffer[:handled]
            for _row, fut in batch[:handled]:
                if not fut.done():
                    fut.set_result(None)
            self._report(failing)
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

    def _report(self, failing: list[FailureStreak]) -> None:
        if failing and self._on_failures is not None:
            task: asyncio.Task[None] = asyncio.create_task(self._on_failures(failing))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _write_each(
        self, batch: list[tuple[AttemptRow, asyncio.Future[None]]]
    ) -> tuple[int, list[FailureStreak], Exception | None]:
        """Writes `batch` one row at a time; a row refused for its data is replaced by
        sanitised copies, and if those are refused too its future fails with RowRejected.

        Returns how many rows (from the start) are settled, the failure streaks, and the
        outage that stopped it early, if any. A settled row's future is resolved by the
        caller unless it was failed here.
        """
        failing: list[FailureStreak] = []
        for i, (row, fut) in enumerate(batch):
            candidates = [row, *_fallbacks(row)]
            error: BaseException | None = None
            for n, candidate in enumerate(candidates):
                try:
                    failing += await self._write([candidate])
                except Unstorable as exc:
                    error = exc
                    continue
                except Exception as exc:
                    return i, failing, exc
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
        return len(batch), failing, None

    async def _write(self, rows: Sequence[AttemptRow]) -> list[FailureStreak]:
        try:
            columns = _attempt_columns(rows)
        except (ValueError, TypeError) as exc:  # not a UUID; text orjson cannot encode
            raise Unstorable(f"a value cannot be stored: {exc!r}") from exc
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
        with db_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT_ATTEMPTS, *columns)
                await conn.execute(
                    _UPSERT_DELIVERIES,
                    *delivery_columns(summary),
                    [r.status for r in summary],
                    [r.attempt for r in summary],
                    [first[r.delivery_id] for r in summary],
                    [r.started_at for r in summary],
                    [r.error for r in summary],
                    [r.response_status for r in summary],
                    [r.next_attempt_at for r in summary],
                )
                return await count_failures(conn, rows, failing_after=self._failing_after)


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


def delivery_columns(rows: Sequence[AttemptRow]) -> list[list[Any]]:
    """The columns that name each row's delivery, one array each, in the order every
    batched statement of the log takes them first: delivery id, webhook id, org, event
    id, event type. The ids go as text: asyncpg encodes a str for uuid[] in C (a
    `uuid.UUID` built per row cost a busy sender 2.5 % of its CPU), and refuses a malformed
    one as a DataError, which the log treats as unstorable like any bad value."""
    return [
        [r.delivery_id for r in rows],
        [r.webhook_id for r in rows],
        [r.org for r in rows],
        [r.event_id for r in rows],
        [r.event_type for r in rows],
    ]


def _attempt_columns(rows: Sequence[AttemptRow]) -> list[list[Any]]:
    """The batch as one array per column, in `_INSERT_ATTEMPTS`'s order."""
    return [
        *delivery_columns(rows),
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
