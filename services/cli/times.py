"""Moments on the command line: a relative duration back from now (`90s`, `30m`, `2h`,
`1d`, `1w`, or `1h30m`) or an RFC 3339 timestamp, always sent to the API as RFC 3339."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:(\d+)([smhdw]))+")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta | None:
    """`2h`, `30m`, `1h30m`, ... as a timedelta; None if `text` is not a duration."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        return None
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(compact)))


def parse_moment(text: str, *, now: datetime) -> datetime:
    """A relative duration (back from `now`) or an RFC 3339 timestamp (UTC if it has no
    offset); ValueError naming what is accepted otherwise."""
    back = parse_duration(text)
    if back is not None:
        return now - back
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 1d) nor an RFC 3339 timestamp"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, `Z`: what the API writes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_time(text: str | None) -> str:
    """An API timestamp as local `HH:MM:SS` (today) or `YYYY-MM-DD HH:MM:SS`; `-` if none."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return text
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")
