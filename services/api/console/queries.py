"""Read queries only the console needs: scope summaries (of inbound webhooks too), webhook
health at a glance, the 24 h chart, last-attempt durations, and the admin's lists of orgs
and tokens.

Everything else (webhooks, deliveries, stats, redelivery) goes through the same stores
as the REST API. These read the tables those stores write, on their existing indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.webhooks import HEALTH

# The summary's first_at may trail an attempt by this much (see shared/log/queries.py).
_SLACK = timedelta(days=1)
DAY = timedelta(hours=24)


@dataclass(frozen=True)
class Health:
    """What a webhook list shows beside each webhook."""

    failures: int = 0  # consecutive failed attempts (webhook_health)
    last_status: str | None = None  # the newest delivery's derived status
    last_at: datetime | None = None
    last_http: int | None = None
    succeeded_24h: int = 0
    failed_24h: int = 0

    @property
    def rate_24h(self) -> float | None:
        total = self.succeeded_24h + self.failed_24h
        return self.succeeded_24h / total if total else None


@dataclass(frozen=True)
class RepoLine:
    repo: str
    webhooks: int
    failing: int
    disabled: int


@dataclass
class OrgSummary:
    repos: list[RepoLine] = field(default_factory=list)
    org_webhooks: int = 0
    org_failing: int = 0
    org_disabled: int = 0

    @property
    def failing(self) -> int:
        return self.org_failing + sum(r.failing for r in self.repos)

    @property
    def disabled(self) -> int:
        return self.org_disabled + sum(r.disabled for r in self.repos)

    @property
    def webhooks(self) -> int:
        return self.org_webhooks + sum(r.webhooks for r in self.repos)


_SCOPES = """
SELECT w.repo, count(*) AS webhooks,
       count(*) FILTER (WHERE w.active AND coalesce(h.consecutive_failures, 0) > 0) AS failing,
       count(*) FILTER (WHERE NOT w.active) AS disabled
FROM webhooks w LEFT JOIN webhook_health h ON h.webhook_id = w.id
WHERE w.org = $1 GROUP BY w.repo ORDER BY w.repo NULLS FIRST
"""

# Counted per delivery by derived status, as the API's stats are.
_DAY_COUNTS = """
SELECT webhook_id, count(*) FILTER (WHERE status = 'succeeded') AS ok,
       count(*) FILTER (WHERE status IN ('failed', 'dead')) AS bad
FROM deliveries WHERE webhook_id = ANY($1::uuid[]) AND first_at >= $2 GROUP BY webhook_id
"""

_HOURLY = """
SELECT date_trunc('hour', first_at) AS hour,
       count(*) FILTER (WHERE status = 'succeeded') AS ok,
       count(*) FILTER (WHERE status IN ('failed', 'dead')) AS bad
FROM deliveries WHERE webhook_id = $1 AND first_at >= $2 GROUP BY 1
"""

_DURATIONS = """
SELECT DISTINCT ON (delivery_id) delivery_id, duration_ms FROM delivery_attempts
WHERE delivery_id = ANY($1::uuid[]) AND started_at >= $2
ORDER BY delivery_id, attempt DESC, started_at DESC
"""

_INBOUND_SCOPES = """
SELECT repo, count(*) AS hooks, count(*) FILTER (WHERE NOT active) AS disabled
FROM inbound_webhooks WHERE org = $1 AND deleted_at IS NULL
GROUP BY repo ORDER BY repo NULLS FIRST
"""

# The most recently active orgs first (a new org's first token puts it on top), so that
# the admin's list stays useful past its limit.
_ORGS = """
SELECT org, sum(tokens) AS tokens, sum(webhooks) AS webhooks FROM (
    SELECT org, count(*) FILTER (WHERE revoked_at IS NULL) AS tokens, 0 AS webhooks,
           max(created_at) AS latest
    FROM tokens GROUP BY org
    UNION ALL
    SELECT org, 0, count(*), max(updated_at) FROM webhooks GROUP BY org
) both_ GROUP BY org ORDER BY max(latest) DESC, org LIMIT $1
"""

_TOKENS = """
SELECT id, org, name, created_at, revoked_at FROM tokens
ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT $1
"""


@dataclass(frozen=True)
class InboundLine:
    repo: str | None  # None: the org-level ones
    hooks: int
    disabled: int


async def inbound_scopes(pool: asyncpg.Pool, org: str) -> list[InboundLine]:
    """How many inbound webhooks each scope of an org has, and how many are disabled."""
    rows = await pool.fetch(_INBOUND_SCOPES, org)
    return [InboundLine(r["repo"], r["hooks"], r["disabled"]) for r in rows]


async def org_summary(pool: asyncpg.Pool, org: str) -> OrgSummary:
    summary = OrgSummary()
    for r in await pool.fetch(_SCOPES, org):
        if r["repo"] is None:
            summary.org_webhooks = r["webhooks"]
            summary.org_failing = r["failing"]
            summary.org_disabled = r["disabled"]
        else:
            summary.repos.append(RepoLine(r["repo"], r["webhooks"], r["failing"], r["disabled"]))
    return summary


async def health_of(pool: asyncpg.Pool, ids: Sequence[str], now: datetime) -> dict[str, Health]:
    """Each webhook's failure count, newest delivery and last-24 h counts."""
    uuids = [uuid.UUID(i) for i in ids]
    if not uuids:
        return {}
    async with pool.acquire() as conn:
        last = await conn.fetch(HEALTH, uuids)  # as the API shows it
        day = {r["webhook_id"]: r for r in await conn.fetch(_DAY_COUNTS, uuids, now - DAY)}
    out = {}
    for r in last:
        counts = day.get(r["id"])
        out[str(r["id"])] = Health(
            failures=r["consecutive_failures"] or 0,
            last_status=r["status"],
            last_at=r["last_at"],
            last_http=r["last_status"],
            succeeded_24h=counts["ok"] if counts else 0,
            failed_24h=counts["bad"] if counts else 0,
        )
    return out


async def hourly(
    pool: asyncpg.Pool, webhook_id: str, now: datetime
) -> list[tuple[datetime, int, int]]:
    """The last 24 hours, oldest first, one (hour, succeeded, failed) per hour."""
    current = now.replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=23)
    rows = await pool.fetch(_HOURLY, uuid.UUID(webhook_id), first)
    found = {r["hour"]: (r["ok"], r["bad"]) for r in rows}
    hours = [first + timedelta(hours=i) for i in range(24)]
    return [(h, *found.get(h, (0, 0))) for h in hours]


async def durations(pool: asyncpg.Pool, deliveries: list[dict[str, Any]]) -> dict[str, float]:
    """The duration of each listed delivery's latest attempt (the summary has none)."""
    if not deliveries:
        return {}
    oldest = min(datetime.fromisoformat(d["first_at"].replace("Z", "+00:00")) for d in deliveries)
    rows = await pool.fetch(_DURATIONS, [uuid.UUID(d["id"]) for d in deliveries], oldest - _SLACK)
    return {str(r["delivery_id"]): r["duration_ms"] for r in rows}


async def orgs(pool: asyncpg.Pool, limit: int = 500) -> list[asyncpg.Record]:
    """Every org that has a token or a webhook, with how many of each."""
    return list(await pool.fetch(_ORGS, limit))


async def tokens(pool: asyncpg.Pool, limit: int = 500) -> list[asyncpg.Record]:
    """Org tokens, live ones first, newest first (never their values: only hashes exist)."""
    return list(await pool.fetch(_TOKENS, limit))
