"""The read side of the delivery log: a webhook's deliveries page by page, one delivery
with its attempts, and a webhook's stats, as typed rows (the API shapes them as JSON).

Lists and stats read the `deliveries` summary table (one row per delivery); a delivery's
attempts come from the append-only `delivery_attempts` log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypedDict, Unpack

import asyncpg

from shared.core.attempts import AttemptRow
from shared.core.errors import NotFound, ValidationError
from shared.core.matching import expand_filter, validate_filters
from shared.db import translated

from .counts import counts as delivery_counts

STATUSES = ("pending", "succeeded", "failed", "dead", "skipped")
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
# Percentiles are over a bounded window: the newest STATS_MAX_ATTEMPTS attempts of the
# last STATS_WINDOW_DAYS days, read newest first from delivery_attempts_by_webhook
# (webhook_id, started_at DESC) INCLUDE (duration_ms, outcome) as an index-only scan of
# the newest partitions. 10,000 samples put 100 above the p99: plenty, at ~5 ms.
STATS_WINDOW_DAYS = 7
STATS_MAX_ATTEMPTS = 10_000
# Bounds derived from a delivery's first_at are widened by this much: the summary's
# first_at can miss an attempt whose batch was written after a later one (the upsert
# keeps the newest), e.g. a slow replica racing a redelivery. A daily partition more.
SUMMARY_SLACK = timedelta(days=1)
NO_BOUND = datetime(1970, 1, 1, tzinfo=UTC)

_SUMMARY = (
    "id, webhook_id, event_id, event_type, status, attempts, first_at, last_at,"
    " last_error, last_status, next_attempt_at"
)
ATTEMPT_COLUMNS = (
    "delivery_id, webhook_id, org, event_id, event_type, attempt, trigger, outcome, started_at,"
    " duration_ms, request_headers, request_body, response_status, response_headers,"
    " response_body, error, resolved_ip, next_attempt_at"
)

# The statements below are module constants so that tests/bench/explain_log.py can
# EXPLAIN exactly what these queries issue. Every read of delivery_attempts carries a
# lower bound on started_at, so that only the partitions that can hold rows are scanned.
GET_SUMMARY = "SELECT status, first_at FROM deliveries WHERE id = $1"
# What a reader is shown of a body: its first SHOWN_CHARS characters, enough for the API's
# 16 KiB cut to see whether it was cut, never the whole megabyte per attempt.
SHOWN_CHARS = 16 * 1024 + 1
SHOWN_COLUMNS = ATTEMPT_COLUMNS.replace(
    "request_body", f"left(request_body, {SHOWN_CHARS}) AS request_body"
).replace("response_body", f"left(response_body, {SHOWN_CHARS}) AS response_body")
GET_ATTEMPTS = (
    f"SELECT {SHOWN_COLUMNS} FROM delivery_attempts WHERE delivery_id = $1"
    " AND started_at >= $2 ORDER BY attempt, started_at"
)
# One index-only range count per status on deliveries_by_webhook_status.
STATS_LAST = "SELECT max(started_at) FROM delivery_attempts WHERE webhook_id = $1"
STATS_PERCENTILES = (
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99"
    " FROM (SELECT duration_ms FROM delivery_attempts WHERE webhook_id = $1"
    " AND started_at >= now() - make_interval(days => $2) AND outcome <> 'skipped'"
    " ORDER BY started_at DESC LIMIT $3) recent"
)

# A logged attempt reads back as the row that was written.
LoggedAttempt: TypeAlias = AttemptRow


@dataclass(frozen=True)
class DeliverySummary:
    """One row of the `deliveries` summary: a delivery's state after its latest attempt."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    first_at: datetime
    last_at: datetime
    last_error: str | None
    last_status: int | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class LoggedDelivery:
    """A delivery with every logged attempt, oldest first."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempts: list[LoggedAttempt]


@dataclass(frozen=True)
class DeliveryStats:
    """A webhook's delivery counts and recent attempt-duration percentiles."""

    deliveries: int
    succeeded: int
    failed: int
    last_delivery_at: datetime | None
    p50_ms: float | None
    p99_ms: float | None

    @property
    def success_rate(self) -> float | None:
        done = self.succeeded + self.failed
        return self.succeeded / done if done else None


def _columns(row: asyncpg.Record, *ids: str) -> dict[str, Any]:
    """A record's columns by name, the UUID ones named in `ids` as strings."""
    values = dict(row)
    for name in ids:
        values[name] = str(values[name])
    return values


def to_summary(row: asyncpg.Record) -> DeliverySummary:
    """A `deliveries` row (selected as _SUMMARY) as the typed row."""
    return DeliverySummary(**_columns(row, "id", "webhook_id"))


def to_attempt(row: asyncpg.Record) -> LoggedAttempt:
    """A `delivery_attempts` row (selected as ATTEMPT_COLUMNS) as the typed row."""
    return AttemptRow(**_columns(row, "delivery_id", "webhook_id"))


def parse_id(value: str, what: str) -> uuid.UUID:
    """An id from a path; one that cannot exist is not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None


class PageFilters(TypedDict, total=False):
    """What `page_query` takes besides the webhook, by name."""

    status: str | None
    event: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    after: tuple[datetime, uuid.UUID] | None


def page_query(
    webhook_id: uuid.UUID,
    *,
    status: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page (limit + 1 rows, to know whether more follow),
    starting after the (first_at, id) of `after`."""
    where: list[str] = ["webhook_id = $1"]
    args: list[Any] = [webhook_id]
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
        args.append(status)
        where.append(f"status = ${len(args)}")
    types: list[str] | None = None
    if event is not None:
        try:
            (item,) = validate_filters([event])
        except ValidationError as exc:
            raise ValidationError(exc.message, field="event") from None
        types = list(expand_filter(item))
    if since is not None:
        args.append(since)
        where.append(f"first_at >= ${len(args)}")
    if until is not None:
        args.append(until)
        where.append(f"first_at < ${len(args)}")
    if after is not None:
        args += list(after)
        where.append(f"(first_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    n = f"${len(args)}"
    if types is None:
        sql = (
            f"SELECT {_SUMMARY} FROM deliveries WHERE {' AND '.join(where)}"
            f" ORDER BY first_at DESC, id DESC LIMIT {n}"
        )
    else:
        # One ordered range of deliveries_by_webhook_event per type (a family expands to
        # up to 8), each cut at the page size, then the small union sorted: bounded work
        # however rare the type, where a filter over the webhook's range is not.
        args.append(types)
        sql = (
            f"SELECT d.* FROM unnest(${len(args)}::text[]) AS t(event_type) CROSS JOIN LATERAL"
            f" (SELECT {_SUMMARY} FROM deliveries WHERE {' AND '.join(where)}"
            f" AND event_type = t.event_type ORDER BY first_at DESC, id DESC LIMIT {n}) d"
            f" ORDER BY d.first_at DESC, d.id DESC LIMIT {n}"
        )
    return sql, args


class DeliveryQueries:
    """Tenant-scoped reads of the delivery log; `org=None` is the admin's view."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translated
    async def page(
        self, webhook_id: str, **filters: Unpack[PageFilters]
    ) -> tuple[list[DeliverySummary], bool]:
        """A page of a webhook's deliveries, newest first (keyset on first_at, id), and
        whether more follow."""
        sql, args = page_query(parse_id(webhook_id, "webhook"), **filters)
        rows = await self._pool.fetch(sql, *args)
        limit = filters.get("limit", DEFAULT_LIMIT)
        return [to_summary(r) for r in rows[:limit]], len(rows) > limit

    @translated
    async def get(self, delivery_id: str, org: str | None) -> LoggedDelivery:
        """A delivery with every attempt; status from the summary, else the last attempt."""
        async with self._pool.acquire() as conn:
            attempts, status = await load_attempts(conn, delivery_id, org)
        last = attempts[-1]
        return LoggedDelivery(
            id=last.delivery_id,
            webhook_id=last.webhook_id,
            event_id=last.event_id,
            event_type=last.event_type,
            status=status or last.outcome,
            attempts=attempts,
        )

    @translated
    async def stats(self, webhook_id: str) -> DeliveryStats:
        """Counts per derived status (kept as the summary table changes, shared.log.counts)
        and attempt-duration percentiles over the last STATS_WINDOW_DAYS days, at most
        STATS_MAX_ATTEMPTS attempts."""
        wid = parse_id(webhook_id, "webhook")
        async with self._pool.acquire() as conn:
            counts = await delivery_counts(conn, wid)
            last_at = await conn.fetchval(STATS_LAST, wid)
            pct = await conn.fetchrow(STATS_PERCENTILES, wid, STATS_WINDOW_DAYS, STATS_MAX_ATTEMPTS)
        return DeliveryStats(
            deliveries=sum(counts.values()),
            succeeded=counts.get("succeeded", 0),
            failed=counts.get("failed", 0) + counts.get("dead", 0),
            last_delivery_at=last_at,
            p50_ms=pct["p50"],
            p99_ms=pct["p99"],
        )


async def load_attempts(
    conn: asyncpg.Connection, delivery_id: str, org: str | None
) -> tuple[list[LoggedAttempt], str | None]:
    """A delivery's attempts (oldest first, bodies cut at SHOWN_CHARS) and its summary
    status, if any; not found if it has none, or belongs to another org than `org`
    (None: any)."""
    did = parse_id(delivery_id, "delivery")
    summary = await conn.fetchrow(GET_SUMMARY, did)
    # The summary's first_at prunes the partitions older than the delivery.
    since = NO_BOUND if summary is None else summary["first_at"] - SUMMARY_SLACK
    rows = await conn.fetch(GET_ATTEMPTS, did, since)
    if not rows or (org is not None and rows[0]["org"] != org):
        raise NotFound("delivery not found")
    return [to_attempt(r) for r in rows], None if summary is None else summary["status"]
