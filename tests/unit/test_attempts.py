"""An attempt's request, classification and what follows it; the health fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.attempts import (
    AttemptResult,
    AttemptRow,
    build_request,
    clean_headers,
    clean_text,
    cut_text,
    decide,
    delivery_status,
)
from shared.core.health import FailureStreak, health_deltas, should_disable
from shared.core.retry import RetryPolicy
from shared.core.signing import verify_github, verify_standard
from tests.records import attempt_row, delivery_message

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = RetryPolicy(schedule=(10.0, 20.0))


def _decide(result: AttemptResult, attempt: int = 1, single: bool = False):  # type: ignore[no-untyped-def]
    return decide(result, attempt=attempt, single=single, policy=POLICY, rand=0.5, now=NOW)


def test_2xx_succeeds() -> None:
    for status in (200, 201, 204, 299):
        d = _decide(AttemptResult(status=status))
        assert (d.outcome, d.error, d.next_delay_s, d.to_dlq) == ("succeeded", None, None, False)


@pytest.mark.parametrize("status", [199, 301, 302, 400, 404, 500, 502])
def test_other_statuses_fail_and_retry(status: int) -> None:
    d = _decide(AttemptResult(status=status, error="http_status"))
    assert d.outcome == "failed"
    assert d.error == "http_status"
    assert d.next_delay_s == pytest.approx(10.0)  # rand 0.5 = no jitter
    assert not d.to_dlq


def test_error_classes_fail() -> None:
    for error in ("timeout", "connect", "dns", "tls", "blocked", "too_large"):
        d = _decide(AttemptResult(status=None, error=error), attempt=2)
        assert (d.outcome, d.error, d.next_delay_s) == ("failed", error, pytest.approx(20.0))


def test_last_attempt_is_dead_and_goes_to_dlq() -> None:
    d = _decide(AttemptResult(status=500, error="http_status"), attempt=3)
    assert (d.outcome, d.next_delay_s, d.to_dlq) == ("dead", None, True)


def test_single_attempt_failure_is_failed_without_retry_or_dlq() -> None:
    d = _decide(AttemptResult(status=500, error="http_status"), single=True)
    assert (d.outcome, d.next_delay_s, d.to_dlq) == ("failed", None, False)


def test_gone_disables_and_kills_the_delivery() -> None:
    d = _decide(AttemptResult(status=410, error="http_status"))
    assert d.outcome == "dead" and d.to_dlq and d.next_delay_s is None
    assert d.disable_reason and "410" in d.disable_reason


def test_retry_after_lengthens_the_wait_on_429_and_503_only() -> None:
    for status in (429, 503):
        d = _decide(AttemptResult(status=status, headers={"Retry-After": "120"}, error="x"))
        assert d.next_delay_s == pytest.approx(120.0)
    d = _decide(AttemptResult(status=500, headers={"retry-after": "120"}, error="http_status"))
    assert d.next_delay_s == pytest.approx(10.0)
    # Never shorter than the schedule.
    d = _decide(AttemptResult(status=429, headers={"retry-after": "1"}, error="http_status"))
    assert d.next_delay_s == pytest.approx(10.0)


def test_delivery_status_follows_the_outcome() -> None:
    assert delivery_status("succeeded", None) == "succeeded"
    assert delivery_status("failed", NOW) == "failed"
    assert delivery_status("dead", None) == "dead"
    assert delivery_status("skipped", None) == "skipped"
    with pytest.raises(ValueError):
        delivery_status("exploded", None)


def _request(content_type: str, secrets: list[str]) -> tuple[bytes, dict[str, str]]:
    msg = delivery_message(body={"event": "push", "n": 1, "text": "héllo & more"}, attempt=3)
    return build_request(
        msg,
        content_type=content_type,
        prefix="X-Hook",
        user_agent="Hookline/1.0",
        secrets=secrets,
        timestamp=1700000000,
    )


def test_json_request_headers_and_signatures() -> None:
    body, headers = _request("json", ["whsec_" + "A" * 43 + "=", "old-secret"])
    assert orjson.loads(body)["text"] == "héllo & more"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "Hookline/1.0"
    assert (headers["X-Hook-Event"], headers["X-Hook-Delivery"], headers["X-Hook-Attempt"]) == (
        "push",
        "d-1",
        "3",
    )
    assert verify_github("whsec_" + "A" * 43 + "=", body, headers["X-Hub-Signature-256"])
    assert headers["X-Hook-Signature-256"] == headers["X-Hub-Signature-256"]
    for secret in ("whsec_" + "A" * 43 + "=", "old-secret"):
        assert verify_standard(secret, "d-1", 1700000000, body, headers["webhook-signature"])


def test_form_request_is_url_encoded_json_signed_as_sent() -> None:
    body, headers = _request("form", ["s"])
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    payload = parse_qs(body.decode())["payload"][0]
    assert orjson.loads(payload)["text"] == "héllo & more"
    assert verify_github("s", body, headers["X-Hub-Signature-256"])


def test_cut_text_keeps_16_kib() -> None:
    assert len(cut_text(b"x" * 20000)) == 16384
    assert cut_text("é".encode() * 9000).startswith("é")


def _row(webhook: str, outcome: str, at: int, error: str | None = "http_status") -> AttemptRow:
    return attempt_row(
        outcome,
        NOW + timedelta(seconds=at),
        webhook_id=webhook,
        error=error if outcome in ("failed", "dead") else None,
    )


def test_health_counts_failures_after_the_last_success() -> None:
    rows = [
        _row("a", "failed", 0),
        _row("a", "succeeded", 1),
        _row("a", "dead", 2),
        _row("a", "failed", 3),
        _row("b", "failed", 4),
        _row("b", "skipped", 5),
        _row("c", "skipped", 6),
    ]
    deltas = health_deltas(rows)
    assert deltas["a"].reset and deltas["a"].failures == 2
    assert deltas["a"].first_failure_at == NOW + timedelta(seconds=2)
    assert not deltas["b"].reset and deltas["b"].failures == 1
    assert "c" not in deltas


def test_a_dead_row_without_an_error_class_is_no_endpoint_failure() -> None:
    # Dead because this process could not decrypt the secret: nothing was sent.
    unsent = _row("x", "dead", 0, error=None)
    assert not unsent.counts_as_failure
    assert "x" not in health_deltas([unsent])
    assert health_deltas([_row("x", "failed", 0), unsent])["x"].failures == 1


@given(st.lists(st.sampled_from(["succeeded", "failed", "dead", "skipped"]), max_size=30))
def test_health_failures_equal_the_trailing_failure_run(outcomes: list[str]) -> None:
    rows = [_row("w", o, i) for i, o in enumerate(outcomes)]
    delta = health_deltas(rows).get("w")
    counted = [o for o in outcomes if o != "skipped"]
    trailing = 0
    for o in reversed(counted):
        if o == "succeeded":
            break
        trailing += 1
    if delta is None:
        assert not counted
    else:
        assert delta.failures == trailing
        assert delta.reset == ("succeeded" in counted)


@given(
    failures=st.integers(min_value=0, max_value=50),
    age_s=st.integers(min_value=0, max_value=10_000),
    max_failures=st.integers(min_value=1, max_value=50),
    span_s=st.integers(min_value=0, max_value=10_000),
)
def test_a_webhook_is_disabled_only_past_both_thresholds(
    failures: int, age_s: int, max_failures: int, span_s: int
) -> None:
    streak = FailureStreak("w", failures, NOW - timedelta(seconds=age_s))
    disabled = should_disable(
        streak, now=NOW, max_failures=max_failures, max_span=timedelta(seconds=span_s)
    )
    assert disabled == (failures >= max_failures and age_s >= span_s)


def test_clean_text_makes_hostile_text_storable() -> None:
    # aiohttp decodes header bytes with surrogateescape: b"caf\xe9" arrives as this.
    assert clean_text("caf\udce9") == "caf\ufffd"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("\ud800x") == "?x"  # a lone surrogate outside the escape range
    assert clean_text("plain ascii") == "plain ascii"
    assert clean_text("héllo ✓") == "héllo ✓"
    headers = clean_headers({"X-Name\udcff": "caf\udce9", "X-Nul": "a\x00"})
    assert headers == {"X-Name\ufffd": "caf\ufffd", "X-Nul": "a\ufffd"}
    orjson.dumps(headers)  # would raise "surrogates not allowed" before cleaning


@given(st.text())
def test_clean_text_output_always_encodes_without_nul(text: str) -> None:
    out = clean_text(text)
    out.encode("utf-8")  # strict: no surrogates left
    assert "\x00" not in out
    orjson.dumps({"v": out})
