"""The CLI's moments: relative durations back from now, or RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.cli.times import parse_duration, parse_moment, rfc3339

NOW = datetime(2026, 12, 3, 20, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations_go_back_from_now(text: str, back: timedelta) -> None:
    assert parse_duration(text) == back
    assert parse_moment(text, now=NOW) == NOW - back


@pytest.mark.parametrize("text", ["", "2", "h", "2 h", "-2h", "2y", "yesterday", "1.5h"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_rfc3339_is_taken_as_given_and_naive_is_utc() -> None:
    assert parse_moment("2026-12-01T10:00:00Z", now=NOW) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    plus2 = parse_moment("2026-12-01T12:00:00+02:00", now=NOW)
    assert plus2 == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_moment("2026-12-01T10:00:00", now=NOW) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_moment("last tuesday", now=NOW)


def test_rfc3339_output_is_utc_with_z() -> None:
    moment = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment) == "2026-12-01T10:00:00.123Z"


@given(st.integers(0, 10**6), st.sampled_from("smhdw"))
def test_any_count_of_any_unit(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}") == timedelta(seconds=n * seconds)
