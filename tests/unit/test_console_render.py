"""The console's pure parts: relative times, the chart's geometry, the form's events and
values turned into an API body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api.console.forms import blank, body_of, events_filter, form_field
from services.api.console.render import CHART_H, ago, chart_bars, mark, ms, pct, pretty
from shared.core.errors import ValidationError

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=2), "just now"),
        (timedelta(seconds=40), "40 s ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=5), "5 h ago"),
        (timedelta(days=1, hours=2), "1 day ago"),
        (timedelta(days=9), "9 days ago"),
        (-timedelta(minutes=5), "in 5 min"),
    ],
)
def test_relative_times(delta: timedelta, text: str) -> None:
    assert ago(NOW - delta, NOW) == text
    assert ago((NOW - delta).isoformat().replace("+00:00", "Z"), NOW) == text


def test_small_formatters() -> None:
    assert ago(None) == "never"
    assert (ms(None), ms(4.25), ms(123.4), ms(2500)) == ("\u2013", "4.2 ms", "123 ms", "2.5 s")
    assert (pct(None), pct(0.5), pct(1.0)) == ("\u2013", "50.0 %", "100 %")
    assert [mark(s) for s in ("succeeded", "failed", "dead", "pending", "skipped")] == [
        "✓", "✗", "✗", "…", "\u2013",
    ]  # fmt: skip
    assert pretty('{"a":1}') == '{\n  "a": 1\n}' and pretty("<b>x") == "<b>x"


def test_chart_bars_stack_and_scale_to_the_tallest_hour() -> None:
    hours = [(NOW - timedelta(hours=2), 3, 1), (NOW - timedelta(hours=1), 0, 0), (NOW, 1, 1)]
    first, empty, last = chart_bars(hours)
    assert first.ok_h + first.bad_h == CHART_H  # the tallest fills the chart
    assert first.ok_y == CHART_H - first.ok_h and first.bad_y == first.ok_y - first.bad_h
    assert empty.ok_h == empty.bad_h == 0
    assert last.ok_h == last.bad_h == CHART_H / 4
    assert "3 succeeded, 1 failed" in first.label
    assert all(b.ok_h == 0 for b in chart_bars([(NOW, 0, 0)]))  # no division by zero


def test_checked_events_become_filters() -> None:
    assert events_filter(["push", "*", "star"]) == ["*"]
    chosen = ["pull_request", "pull_request.opened", "push", "issue.closed", "push"]
    assert events_filter(chosen) == ["pull_request", "push", "issue.closed"]
    assert events_filter([]) == []


def test_form_values_become_an_api_body() -> None:
    values = {**blank("app"), "url": "https://x.example/h", "retry": "1, 2.5 30"}
    body = body_of(values, secret="s" * 20)
    assert body["retry"] == {"schedule": [1, 2.5, 30]} and body["timeout_s"] == 10
    assert body["secret"] == "s" * 20 and body["events"] == ["push"]
    assert body_of({**values, "retry": ""})["retry"] is None
    for bad, field in (({"retry": "1, soon"}, "retry"), ({"timeout_s": "ten"}, "timeout_s")):
        with pytest.raises(ValidationError) as err:
            body_of({**values, **bad})
        assert err.value.field == field
    assert form_field("retry.schedule") == "retry" and form_field("body") == "form"
