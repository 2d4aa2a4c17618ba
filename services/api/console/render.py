"""Template filters: relative times, durations, rates, readable bodies, the SVG chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jinja2
import orjson

from shared.core.events import CATALOG

NONE = "\u2013"  # an en dash: "no value"


def moment(value: datetime | str | None) -> datetime | None:
    """A datetime from the API's RFC 3339 strings (or a datetime), in UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """ "3 min ago", "in 2 h", "just now"; "never" for None."""
    at = moment(value)
    if at is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - at).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    for limit, unit, size in (
        (60, "s", 1),
        (3600, "min", 60),
        (86400, "h", 3600),
        (float("inf"), "days", 86400),
    ):
        if seconds < limit:
            n = int(seconds // size)
            text = f"{n} {'day' if unit == 'days' and n == 1 else unit}"
            return f"in {text}" if future else f"{text} ago"
    raise AssertionError("unreachable")


def exact(value: datetime | str | None) -> str:
    at = moment(value)
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | str | None) -> str:
    at = moment(value)
    return "" if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def pct(rate: float | None) -> str:
    if rate is None:
        return NONE
    return f"{rate * 100:.1f} %" if rate < 1 else "100 %"


def pretty(body: str | None) -> str:
    """A JSON body indented for reading; anything else as it is (autoescaped later)."""
    if not body:
        return ""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body


def mark(status: str | None) -> str:
    """✓ succeeded, ✗ failed or dead, … pending, a dash for skipped."""
    return {"succeeded": "✓", "failed": "✗", "dead": "✗", "pending": "…"}.get(status or "", NONE)


def call_mark(result: str | None) -> str:
    """An inbound call's result: ✓ accepted (a duplicate was accepted before), ✗ refused."""
    return "✓" if result in ("accepted", "duplicate") else "✗"


@dataclass(frozen=True)
class Bar:
    x: int
    ok_y: float
    ok_h: float
    bad_y: float
    bad_h: float
    label: str


CHART_W, CHART_H, BAR_W = 480, 120, 20


def chart_bars(hours: list[tuple[datetime, int, int]]) -> list[Bar]:
    """One stacked bar per hour (succeeded below, failed above), scaled to the tallest."""
    top = max((ok + bad for _h, ok, bad in hours), default=0) or 1
    bars = []
    for i, (hour, ok, bad) in enumerate(hours):
        ok_h = CHART_H * ok / top
        bad_h = CHART_H * bad / top
        end = hour + timedelta(hours=1)
        label = f"{hour:%H:%M} to {end:%H:%M} UTC: {ok} succeeded, {bad} failed"
        bars.append(
            Bar(
                x=i * BAR_W,
                ok_y=CHART_H - ok_h,
                ok_h=ok_h,
                bad_y=CHART_H - ok_h - bad_h,
                bad_h=bad_h,
                label=label,
            )
        )
    return bars


def event_groups() -> list[tuple[str, list[str]]]:
    """The catalog as the form's checkbox groups: (family, its full types)."""
    return [
        (family, [f"{family}.{a}" for a in actions] if actions else [])
        for family, actions in CATALOG.items()
    ]


def install(env: jinja2.Environment) -> None:
    # Each filter goes by its function's name.
    filters = (ago, exact, iso, ms, pct, pretty, mark, call_mark, chart_bars)
    env.filters.update({f.__name__: f for f in filters})
    env.globals.update(chart_w=CHART_W, chart_h=CHART_H, bar_w=BAR_W)
