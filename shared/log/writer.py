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
import structlog

from shared import metrics
from shared.core.attempts import ERROR_CLASSES, AttemptRow, clean_text
from shared.core.errors import LogClosed, RowRejected, Unstorable
from shared.core.health import FailureStreak
from shared.db import db_errors

from .health import count_failures

log = structlog.get_logger(component="delivery_log")

# One JSON document per batch (json_to_recordset), in one round trip: the driver sends
# orjson's bytes as they are, where one array per column cost a per-element encoding in
# Python (an ABC isinstance each). Every string of a row is text PostgreSQL unescapes, as
# it would take it from an array; a NUL in either form is refused, and the batch is then
# written row by row (`_write_each`).
_INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type, attempt,
    trigger, outcome, started_at, duration_ms, request_headers, request_body,
    response_status, response_headers, response_body, error, resolved_ip, next_attempt_at)
SELECT d, w, o, e, t, a, tr, oc, s, ms, rh, rb, st, sh, sb, er, ip, na
FROM json_to_recordset($1::json) AS v(d uuid, w uuid, o text, e text, t text, a int,
    tr text, oc text, s timestamptz, ms float8, rh jsonb, rb text, st int, sh jsonb,
    sb text, er text, ip text, na timestamptz)
"""

_UPSERT_DELIVERIES = """
INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,
                        first_at, last_at, last_error, last_status, next_attempt_at)
SELECT d, w, o, e, t, st, a, f, l, er, ls, na
FROM json_to_recordset($1::json) AS v(d uuid, w uuid, o text, e text, t text, st text,
    a int, f timestamptz, l timestamptz, er text, ls int, na timestamptz)
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
        # Rows of one delivery in one batch: the summary takes the latest, since one
        # INSERT ... ON CONFLICT cannot touch a row twice.
        latest: dict[str, AttemptRow] = {}
        first: dict[str, datetime] = {}
        for r in rows:
            held = latest.get(r.delivery_id)
            if held is None or (r.started_at, r.attempt) >= (held.started_at, held.attempt):
                latest[r.delivery_id] = r
            first[r.delivery_id] = min(first.get(r.delivery_id, r.started_at), r.started_at)
        attempts = [_attempt_doc(r) for r in rows]
        summary = [_summary_doc(r, first) for r in latest.values()]
        # A value the `json` codec (orjson) cannot encode, a lone surrogate say, fails as
        # the driver's DataError: Unstorable, as PostgreSQL refusing one does.
        with db_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT_ATTEMPTS, attempts)
                await conn.execute(_UPSERT_DELIVERIES, summary)
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


def _names(r: AttemptRow) -> dict[str, Any]:
    """The keys that name a row's delivery in both documents (as `delivery_columns`)."""
    return {"d": r.delivery_id, "w": r.webhook_id, "o": r.org, "e": r.event_id, "t": r.event_type}


def _attempt_doc(r: AttemptRow) -> dict[str, Any]:
    """One row of `_INSERT_ATTEMPTS`'s document."""
    return {
        **_names(r),
        "a": r.attempt,
        "tr": r.trigger,
        "oc": r.outcome,
        "s": r.started_at,
        "ms": float(r.duration_ms),
        "rh": r.request_headers,
        "rb": r.request_body,
        "st": r.response_status,
        "sh": r.response_headers,
        "sb": r.response_body,
        "er": r.error,
        "ip": r.resolved_ip,
        "na": r.next_attempt_at,
    }


def _summary_doc(r: AttemptRow, first: dict[str, datetime]) -> dict[str, Any]:
    """One row of `_UPSERT_DELIVERIES`'s document: the delivery as of its latest attempt."""
    return {
        **_names(r),
        "st": r.status,
        "a": r.attempt,
        "f": first[r.delivery_id],
        "l": r.started_at,
        "er": r.error,
        "ls": r.response_status,
        "na": r.next_attempt_at,
    }
