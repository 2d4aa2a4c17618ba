"""Unit tests for retry policies, jittered delays, Retry-After and the delay-topic tiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import ValidationError
from shared.core.retry import (
    DEFAULT_SCHEDULE,
    MAX_RETRY_AFTER_S,
    RETRY_TIERS,
    RetryPolicy,
    parse_retry_after,
    retry_topics,
    tier_for,
    tier_for_topic,
)

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)

delays = st.floats(min_value=1, max_value=86400, allow_nan=False)
schedules = st.lists(delays, max_size=20).map(tuple)
rands = st.floats(min_value=0, max_value=1, exclude_max=True)
policies = st.builds(RetryPolicy, schedules)


def test_default_policy() -> None:
    policy = RetryPolicy.from_config(None)
    assert policy.schedule == DEFAULT_SCHEDULE == (60, 300, 1800, 7200, 21600)
    assert policy.max_attempts == 6
    assert policy.to_config() == {"schedule": [60, 300, 1800, 7200, 21600]}


def test_from_config_forms() -> None:
    assert RetryPolicy.from_config({"schedule": [1, 2.5]}).schedule == (1, 2.5)
    policy = RetryPolicy.from_config({"max_retries": 3, "interval_s": 2})
    assert policy.schedule == (2, 2, 2)
    assert policy.max_attempts == 4
    assert RetryPolicy.from_config({"schedule": []}).max_attempts == 1
    assert RetryPolicy.from_config({"schedule": [86400] * 20}).max_attempts == 21


def test_to_config_round_trips() -> None:
    policy = RetryPolicy.from_config({"max_retries": 2, "interval_s": 5})
    assert RetryPolicy.from_config(policy.to_config()) == policy


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ([1, 2], "retry"),
        ("fast", "retry"),
        ({}, "retry"),
        ({"schedule": [1], "extra": 1}, "retry"),
        ({"schedule": [1], "max_retries": 1}, "retry"),
        ({"schedule": "1,2"}, "retry.schedule"),
        ({"schedule": [0.5]}, "retry.schedule"),
        ({"schedule": [86401]}, "retry.schedule"),
        ({"schedule": [True]}, "retry.schedule"),
        ({"schedule": ["1"]}, "retry.schedule"),
        ({"schedule": [float("nan")]}, "retry.schedule"),
        ({"schedule": [float("inf")]}, "retry.schedule"),
        ({"schedule": [1] * 21}, "retry.schedule"),
        ({"max_retries": 21, "interval_s": 1}, "retry.max_retries"),
        ({"max_retries": -1, "interval_s": 1}, "retry.max_retries"),
        ({"max_retries": 2.0, "interval_s": 1}, "retry.max_retries"),
        ({"max_retries": True, "interval_s": 1}, "retry.max_retries"),
        ({"interval_s": 1}, "retry.max_retries"),
        ({"max_retries": 2}, "retry.interval_s"),
        ({"max_retries": 2, "interval_s": 0}, "retry.interval_s"),
        ({"max_retries": 2, "interval_s": False}, "retry.interval_s"),
    ],
)
def test_from_config_rejects(cfg: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RetryPolicy.from_config(cfg)  # type: ignore[arg-type]
    assert info.value.field == field


def test_delay_after_default_examples() -> None:
    policy = RetryPolicy()
    assert policy.delay_after(1, rand=0.5) == pytest.approx(60)
    assert policy.delay_after(1, rand=0.0) == pytest.approx(54)
    assert policy.delay_after(5, rand=0.5) == pytest.approx(21600)
    assert policy.delay_after(6, rand=0.5) is None
    assert policy.delay_after(2, rand=0.5, retry_after=1000) == pytest.approx(1000)
    assert policy.delay_after(2, rand=0.5, retry_after=10) == pytest.approx(300)
    assert policy.delay_after(1, rand=0.5, retry_after=10**9) == MAX_RETRY_AFTER_S
    with pytest.raises(ValueError):
        policy.delay_after(0, rand=0.5)


def test_next_attempt_at() -> None:
    policy = RetryPolicy((10,))
    assert policy.next_attempt_at(1, now=NOW, rand=0.5) == NOW + timedelta(seconds=10)
    assert policy.next_attempt_at(2, now=NOW, rand=0.5) is None


@given(policies, st.integers(min_value=1, max_value=25), rands)
def test_delay_is_within_ten_percent_of_the_schedule(
    policy: RetryPolicy, attempt: int, rand: float
) -> None:
    delay = policy.delay_after(attempt, rand=rand)
    if attempt >= policy.max_attempts:
        assert delay is None
    else:
        base = policy.schedule[attempt - 1]
        assert delay is not None
        assert base * 0.9 - 1e-9 <= delay <= base * 1.1 + 1e-9


@given(policies, st.integers(min_value=1, max_value=21), rands, st.floats(0, 10**7))
def test_retry_after_never_shortens_and_is_clamped(
    policy: RetryPolicy, attempt: int, rand: float, retry_after: float
) -> None:
    plain = policy.delay_after(attempt, rand=rand)
    delay = policy.delay_after(attempt, rand=rand, retry_after=retry_after)
    if plain is None:
        assert delay is None
        return
    assert delay is not None
    assert delay >= plain
    assert delay <= max(plain, MAX_RETRY_AFTER_S)
    if plain <= retry_after <= MAX_RETRY_AFTER_S:
        assert delay == retry_after


@given(policies, rands)
def test_exhausted_after_max_attempts(policy: RetryPolicy, rand: float) -> None:
    got = [policy.delay_after(n, rand=rand) for n in range(1, policy.max_attempts + 3)]
    assert all(d is not None for d in got[: policy.max_attempts - 1])
    assert all(d is None for d in got[policy.max_attempts - 1 :])


def test_tiers_and_topics() -> None:
    assert [t.name for t in RETRY_TIERS] == ["1s", "5s", "30s", "1m", "5m", "30m", "2h"]
    assert [t.delay_s for t in RETRY_TIERS] == [1, 5, 30, 60, 300, 1800, 7200]
    assert retry_topics()[0] == "hookline.retry.1s"
    assert retry_topics()[-1] == "hookline.retry.2h"
    assert tier_for_topic("hookline.retry.5m") == RETRY_TIERS[4]
    assert tier_for_topic("hookline.deliveries") is None


def test_tier_for_examples() -> None:
    assert tier_for(0) is None
    assert tier_for(-3) is None
    assert tier_for(0.2) == RETRY_TIERS[0]
    assert tier_for(1) == RETRY_TIERS[0]
    assert tier_for(4.99) == RETRY_TIERS[0]
    assert tier_for(5) == RETRY_TIERS[1]
    assert tier_for(299) == RETRY_TIERS[3]
    assert tier_for(21600) == RETRY_TIERS[-1]


@given(st.floats(min_value=-10, max_value=200000, allow_nan=False))
def test_tier_for_never_waits_longer_than_remaining(remaining: float) -> None:
    tier = tier_for(remaining)
    if remaining <= 0:
        assert tier is None
    elif remaining < 1:
        assert tier == RETRY_TIERS[0]
    else:
        assert tier is not None
        assert tier.delay_s <= remaining
        longer = [t for t in RETRY_TIERS if t.delay_s > tier.delay_s]
        assert not longer or longer[0].delay_s > remaining


@given(st.floats(min_value=0.001, max_value=200000, allow_nan=False))
def test_hopping_through_tiers_covers_the_delay(remaining: float) -> None:
    left, waited, hops = remaining, 0.0, 0
    while (tier := tier_for(left)) is not None:
        waited += tier.delay_s
        left -= tier.delay_s
        hops += 1
        assert hops < 100
    assert waited >= remaining
    # Only the last, sub-second hop can overshoot.
    assert waited < remaining + 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", now=NOW) == 120
    assert parse_retry_after(" 7 ", now=NOW) == 7
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("", now=NOW) is None
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("-5", now=NOW) is None
    assert parse_retry_after("Mon, 23 Nov 2026 18:01:30 GMT", now=NOW) == 90
    assert parse_retry_after("Mon, 23 Nov 2026 17:00:00 GMT", now=NOW) == 0


HOSTILE_RETRY_AFTER = [
    "²",  # str.isdigit() says yes, int() says no
    "٣",  # an Arabic-Indic digit
    "9" * 400,  # a float would overflow
    "9" * 5000,  # past Python's int-from-text limit
    "-5",
    "+5",
    "1e9",
    "1_000",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sat, 01 Jan 10000 00:00:00 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT",
    "Mon, 23 Nov 2026 18:01:30 +9999",
    "Mon, 23 Nov 99999999999999999999 18:01:30 GMT",
    "\x00",
]


@pytest.mark.parametrize("hostile", HOSTILE_RETRY_AFTER, ids=lambda h: repr(h[:24]))
def test_a_hostile_retry_after_parses_to_none_or_a_clamped_delay(hostile: str) -> None:
    parsed = parse_retry_after(hostile, now=NOW)
    assert parsed is None or 0 <= parsed <= MAX_RETRY_AFTER_S


@given(
    policy=policies.filter(lambda p: len(p.schedule) >= 1),
    header=st.one_of(
        st.sampled_from(HOSTILE_RETRY_AFTER),
        st.text(),
        st.from_regex(r"\A[0-9]{1,500}\Z"),
        st.text(alphabet="0123456789²³¹٣-+ ,:GMTMonDec", max_size=40),
    ),
    status=st.sampled_from([429, 503, 500]),
    rand=rands,
)
def test_decide_never_raises_on_any_retry_after_and_stays_within_the_clamp(
    policy: RetryPolicy, header: str, status: int, rand: float
) -> None:
    # Imported here: attempts imports retry, not the other way round.
    from shared.core.attempts import AttemptResult, decide

    result = AttemptResult(status=status, headers={"Retry-After": header}, error="http_status")
    decision = decide(result, attempt=1, single=False, policy=policy, rand=rand, now=NOW)
    plain = policy.delay_after(1, rand=rand)
    assert plain is not None and decision.next_delay_s is not None
    assert plain <= decision.next_delay_s <= max(plain, MAX_RETRY_AFTER_S)
