"""Per-org limits (DESIGN.md section 12): what the admin set for an org, over the
HOOKLINE_* defaults. Readers on hot paths keep them a few seconds (`LimitCache`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import asyncpg

from shared.config import Settings
from shared.core.errors import ValidationError

# field -> (lowest, highest) value an admin may set
RANGES: dict[str, tuple[int, int]] = {
    "max_webhooks_per_repo": (1, 10_000),
    "max_org_webhooks": (1, 10_000),
    "retention_days": (1, 3650),
    "ingest_rate_per_min": (1, 100_000_000),
    "inbound_rate_per_hook": (1, 100_000_000),
    "inbound_rate_per_org": (1, 100_000_000),
}
# field -> the setting that is its default, where the names differ
_SETTING = {"ingest_rate_per_min": "ingest_rate_per_org"}
CACHE_S = 5.0


@dataclass(frozen=True)
class OrgLimits:
    """The limits in force for one org."""

    max_webhooks_per_repo: int
    max_org_webhooks: int
    retention_days: int
    ingest_rate_per_min: int
    inbound_rate_per_hook: int
    inbound_rate_per_org: int

    @classmethod
    def defaults(cls, settings: Settings) -> OrgLimits:
        """The HOOKLINE_* defaults: each field's setting of the same name, but for
        `_SETTING`'s."""
        return cls(**{f.name: getattr(settings, _SETTING.get(f.name, f.name)) for f in fields(cls)})

    def over(self, overrides: dict[str, int | None]) -> OrgLimits:
        """These defaults with the org's own values where it has them."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def validate_limits(body: object) -> dict[str, int | None]:
    """A PUT body: every field, null (or absent) meaning the default; 422 naming a field."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    for key in body:
        if key not in RANGES:
            raise ValidationError(f"unknown field '{key}'", field=key)
    out: dict[str, int | None] = {}
    for name, (lo, hi) in RANGES.items():
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi
        ):
            raise ValidationError(
                f"{name} must be null or an integer from {lo} to {hi}", field=name
            )
        out[name] = value
    return out


_COLUMNS = ", ".join(RANGES)


class LimitStore:
    """Reads and sets org limits; `effective` is cached for CACHE_S seconds per org, so a
    change reaches every replica within that."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        defaults: OrgLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.defaults = defaults
        self._clock = clock
        self._cache: dict[str, tuple[float, OrgLimits]] = {}

    async def overrides(self, org: str) -> dict[str, int | None]:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM org_limits WHERE org = $1", org)
        return {name: (row[name] if row else None) for name in RANGES}

    async def put(self, org: str, body: object) -> dict[str, int | None]:
        values = validate_limits(body)
        names = list(RANGES)
        await self._pool.execute(
            f"INSERT INTO org_limits (org, {_COLUMNS}) VALUES"
            f" ($1, {', '.join(f'${i + 2}' for i in range(len(names)))})"
            f" ON CONFLICT (org) DO UPDATE SET"
            f" {', '.join(f'{n} = EXCLUDED.{n}' for n in names)}, updated_at = now()",
            org,
            *(values[n] for n in names),
        )
        self._cache.pop(org, None)
        return values

    async def effective(self, org: str) -> OrgLimits:
        now = self._clock()
        held = self._cache.get(org)
        if held is not None and now - held[0] < CACHE_S:
            return held[1]
        limits = self.defaults.over(await self.overrides(org))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[org] = (now, limits)
        return limits

    def to_api(self, org: str, overrides: dict[str, int | None]) -> dict[str, Any]:
        effective = self.defaults.over(overrides)
        return {
            "org": org,
            **overrides,
            "effective": {f.name: getattr(effective, f.name) for f in fields(effective)},
        }
