"""The read side of the delivery log (list, get, stats) and the write side of redelivery.

Lists and stats read the `deliveries` summary table (one row per delivery); a delivery's
attempts come from the append-only `delivery_attempts` log. Redeliver and recover never
touch the log: they write a `DeliveryMessage` through the outbox for the senders.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson

from shared.core.errors import Conflict, NotFound, ValidationError
from shared.core.events import format_timestamp
from shared.core.matching import expand_filter, validate_filters
from shared.core.messages import NUMBERED, DeliveryMessage
from shared.kafka import DELIVERIES
from shared.outbox import enqueue_many

STATUSES = ("pending", "succeeded", "failed", "dead", "skipped")
BODY_LIMIT = 16 * 1024  # request and response bodies are cut here in API responses
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
_NO_BOUND = datetime(1970, 1, 1, tzinfo=UTC)
RECOVER_MAX = 10_000  # deliveries redelivered by one recover call, newest first

_SUMMARY = (
    "id, webhook_id, event_id, event_type, status, attempts, first_at, last_at,"
    " last_error, last_status, next_attempt_at"
)
_ATTEMPT = (
    "delivery_id, webhook_id, org, event_id, event_type, attempt, trigger, outcome, started_at,"
    " duration_ms, request_headers, request_body, response_status, response_headers,"
    " response_body, error, resolved_ip, next_attempt_at"
)

# The statements below are module constants so that tests/bench/explain_log.py can
# EXPLAIN exactly what these queries issue. Every read of delivery_attempts carries a
# lower bound on started_at, so that only the partitions that can hold rows are scanned.
GET_SUMMARY = "SELECT status, first_at FROM deliveries WHERE id = $1"
GET_ATTEMPTS = (
    f"SELECT {_ATTEMPT} FROM delivery_attempts WHERE delivery_id = $1 AND started_at >= $2"
    " ORDER BY attempt, started_at"
)
RECOVER_IDS = (
    "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = ANY($2::text[])"
    " AND first_at >= $3 ORDER BY first_at DESC, id DESC LIMIT $4"
)
RECOVER_ATTEMPTS = (
    f"SELECT {_ATTEMPT} FROM delivery_attempts WHERE delivery_id = ANY($1::uuid[])"
    " AND started_at >= $2"
)  # unordered: sorting thousands of wide rows spilled to disk; recover orders them itself
# One index-only range count per status on deliveries_by_webhook_status.
STATS_COUNTS = (
    "SELECT s.status, (SELECT count(*) FROM deliveries d WHERE d.webhook_id = $1"
    " AND d.status = s.status) AS n FROM unnest($2::text[]) AS s(status)"
)
# Marks each redelivered delivery pending and reserves its attempt number: one more than
# any number logged or given out (the summary's `attempts`), under the row's lock.
_RESERVE_RESEND = (
    "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
    " first_at, last_at, next_attempt_at)"
    " SELECT id, w, o, e, t, 'pending', logged + 1, f, l, now()"
    " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[],"
    " $7::timestamptz[], $8::timestamptz[]) AS v(id, w, o, e, t, logged, f, l)"
    " ON CONFLICT (id) DO UPDATE SET status = 'pending', next_attempt_at = now(),"
    " attempts = GREATEST(deliveries.attempts + 1, EXCLUDED.attempts)"
    " RETURNING id, attempts"
)
STATS_LAST = "SELECT max(started_at) FROM delivery_attempts WHERE webhook_id = $1"
STATS_PERCENTILES = (
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99"
    " FROM (SELECT duration_ms FROM delivery_attempts WHERE webhook_id = $1"
    " AND started_at >= now() - make_interval(days => $2) AND outcome <> 'skipped'"
    " ORDER BY started_at DESC LIMIT $3) recent"
)


def parse_time(value: object, field: str) -> datetime:
    """An RFC 3339 timestamp (UTC if it has no offset), or 422 naming `field`."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(f"{field} must be an RFC 3339 timestamp", field=field) from None
    if not 1 < moment.year < 9999:  # PostgreSQL's range is wider, but these are mistakes
        raise ValidationError(f"{field} is out of range", field=field)
    return moment


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def encode_cursor(first_at: datetime, delivery_id: uuid.UUID) -> str:
    raw = orjson.dumps([first_at.astimezone(UTC).isoformat(), str(delivery_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (first_at, id) a page starts after; 422 naming `cursor` if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        first, ident = orjson.loads(raw)
        moment = datetime.fromisoformat(first)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError("cursor is not valid", field="cursor") from None


def _cut(text: str | None) -> tuple[str | None, bool]:
    if text is None:
        return None, False
    data = text.encode("utf-8")
    if len(data) <= BODY_LIMIT:
        return text, False
    return data[:BODY_LIMIT].decode("utf-8", errors="ignore"), True


def _summary_to_api(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "webhook_id": str(row["webhook_id"]),
        "event_id": row["event_id"],
        "event": row["event_type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "first_at": _ts(row["first_at"]),
        "last_at": _ts(row["last_at"]),
        "last_error": row["last_error"],
        "last_status": row["last_status"],
        "next_attempt_at": _ts(row["next_attempt_at"]),
    }


def _attempt_to_api(row: asyncpg.Record) -> dict[str, Any]:
    req_body, req_cut = _cut(row["request_body"])
    resp_body, resp_cut = _cut(row["response_body"])
    return {
        "attempt": row["attempt"],
        "trigger": row["trigger"],
        "outcome": row["outcome"],
        "started_at": _ts(row["started_at"]),
        "duration_ms": row["duration_ms"],
        "request": {
            "headers": row["request_headers"] or {},
            "body": req_body,
            "truncated": req_cut,
        },
        "response": {
            "status": row["response_status"],
            "headers": row["response_headers"] or {},
            "body": resp_body,
            "truncated": resp_cut,
        },
        "error": row["error"],
        "resolved_ip": row["resolved_ip"],
        "next_attempt_at": _ts(row["next_attempt_at"]),
    }


def request_payload(body: str | None) -> dict[str, Any]:
    """The JSON object a logged request carried: a JSON body, or `payload=<url-encoded
    JSON>` for form webhooks. Conflict if the log holds no usable body."""
    if body:
        text = body
        if not body.lstrip().startswith("{"):
            values = parse_qs(body, keep_blank_values=True).get("payload")
            text = values[0] if values else ""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
    raise Conflict("the delivery log holds no request body to send again")


def payload_of(attempts: list[asyncpg.Record]) -> dict[str, Any]:
    """The body to send again: from the newest attempt that logged one (a skipped or
    undecryptable attempt may have logged none)."""
    for attempt in reversed(attempts):
        if attempt["request_body"]:
            return request_payload(attempt["request_body"])
    return request_payload(None)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None


def page_query(
    webhook_id: uuid.UUID,
    *,
    status: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page (limit + 1 rows, to know whether more follow)."""
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
    if cursor is not None:
        args += list(decode_cursor(cursor))
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
    """Tenant-scoped queries on the delivery log; `org=None` is the admin's view."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a webhook's deliveries, newest first (keyset on first_at, id)."""
        sql, args = page_query(
            _uuid(webhook_id, "webhook"),
            status=status,
            event=event,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        rows = await self._pool.fetch(sql, *args)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(page[-1]["first_at"], page[-1]["id"])
        return [_summary_to_api(r) for r in page], next_cursor

    async def _attempts(
        self, conn: asyncpg.Connection, delivery_id: str, org: str | None
    ) -> tuple[list[asyncpg.Record], str | None]:
        """A delivery's attempts (oldest first) and its summary status, if any."""
        did = _uuid(delivery_id, "delivery")
        summary = await conn.fetchrow(GET_SUMMARY, did)
        # The summary's first_at prunes the partitions older than the delivery.
        since = _NO_BOUND if summary is None else summary["first_at"] - SUMMARY_SLACK
        rows = await conn.fetch(GET_ATTEMPTS, did, since)
        if not rows or (org is not None and rows[0]["org"] != org):
            raise NotFound("delivery not found")
        return list(rows), None if summary is None else summary["status"]

    async def get(self, delivery_id: str, org: str | None) -> dict[str, Any]:
        """A delivery with every attempt; status from the summary, else the last attempt."""
        async with self._pool.acquire() as conn:
            rows, status = await self._attempts(conn, delivery_id, org)
        last = rows[-1]
        return {
            "id": str(last["delivery_id"]),
            "webhook_id": str(last["webhook_id"]),
            "event_id": last["event_id"],
            "event": last["event_type"],
            "status": status or last["outcome"],
            "attempts": [_attempt_to_api(r) for r in rows],
        }

    async def _resend(
        self, conn: asyncpg.Connection, rows: list[list[asyncpg.Record]], trigger: str
    ) -> list[DeliveryMessage]:
        """Writes one single-shot message per delivery (attempts as logged, oldest first),
        marks each summary row pending and reserves each message's attempt number there,
        in the caller's transaction: two redeliveries of one delivery, or one racing its
        automatic retry, never share a number (the row lock orders them)."""
        now = time.time()
        firsts, lasts = [a[0] for a in rows], [a[-1] for a in rows]
        reserved = await conn.fetch(
            _RESERVE_RESEND,
            [r["delivery_id"] for r in lasts],
            [r["webhook_id"] for r in lasts],
            [r["org"] for r in lasts],
            [r["event_id"] for r in lasts],
            [r["event_type"] for r in lasts],
            [max(a["attempt"] for a in attempts) for attempts in rows],
            [r["started_at"] for r in firsts],
            [r["started_at"] for r in lasts],
        )
        number = {r["id"]: r["attempts"] for r in reserved}
        messages = []
        for attempts in rows:
            last = attempts[-1]
            messages.append(
                DeliveryMessage(
                    delivery_id=str(last["delivery_id"]),
                    webhook_id=str(last["webhook_id"]),
                    org=last["org"],
                    event_id=last["event_id"],
                    event_type=last["event_type"],
                    body=payload_of(attempts),
                    attempt=number[last["delivery_id"]],
                    trigger=trigger,
                    enqueued_at=now,
                    single=True,
                    extra={NUMBERED: True},
                )
            )
        await enqueue_many(conn, [(DELIVERIES, m.key, m.encode()) for m in messages])
        return messages

    async def redeliver(self, delivery_id: str, org: str | None) -> DeliveryMessage:
        """Sends a delivery again: same id, the next attempt number, trigger `manual`."""
        async with self._pool.acquire() as conn, conn.transaction():
            attempts, _ = await self._attempts(conn, delivery_id, org)
            exists = await conn.fetchval(
                "SELECT 1 FROM webhooks WHERE id = $1", attempts[-1]["webhook_id"]
            )
            if not exists:
                raise Conflict("the webhook of this delivery has been deleted")
            (msg,) = await self._resend(conn, [attempts], "manual")
        return msg

    async def recover(self, webhook_id: str, since: datetime) -> int:
        """Redelivers (trigger `recover`) every failed or dead delivery of a webhook first
        attempted at or after `since`, newest first, at most RECOVER_MAX per call."""
        wid = _uuid(webhook_id, "webhook")
        async with self._pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(RECOVER_IDS, wid, ["failed", "dead"], since, RECOVER_MAX)
            if not ids:
                return 0
            # Attempts start at or after their delivery's first_at: older partitions pruned.
            rows = await conn.fetch(RECOVER_ATTEMPTS, [r["id"] for r in ids], since - SUMMARY_SLACK)
            grouped: dict[uuid.UUID, list[asyncpg.Record]] = {}
            for r in rows:
                grouped.setdefault(r["delivery_id"], []).append(r)
            # A delivery whose log rows are gone (retention) or hold no body is skipped.
            usable = []
            for found in ids:
                attempts = sorted(
                    grouped.get(found["id"], ()), key=lambda a: (a["attempt"], a["started_at"])
                )
                if not attempts:
                    continue
                try:
                    payload_of(attempts)
                except Conflict:
                    continue
                usable.append(attempts)
            if usable:
                await self._resend(conn, usable, "recover")
        return len(usable)

    async def stats(self, webhook_id: str) -> dict[str, Any]:
        """Counts per derived status (summary table) and attempt-duration percentiles over
        the last STATS_WINDOW_DAYS days, at most STATS_MAX_ATTEMPTS attempts."""
        wid = _uuid(webhook_id, "webhook")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(STATS_COUNTS, wid, list(STATUSES))
            counts = {r["status"]: r["n"] for r in rows}
            last_at = await conn.fetchval(STATS_LAST, wid)
            pct = await conn.fetchrow(STATS_PERCENTILES, wid, STATS_WINDOW_DAYS, STATS_MAX_ATTEMPTS)
        succeeded = counts.get("succeeded", 0)
        failed = counts.get("failed", 0) + counts.get("dead", 0)
        return {
            "deliveries": sum(counts.values()),
            "succeeded": succeeded,
            "failed": failed,
            "success_rate": succeeded / (succeeded + failed) if succeeded + failed else None,
            "last_delivery_at": _ts(last_at),
            "p50_ms": pct["p50"],
            "p99_ms": pct["p99"],
        }
