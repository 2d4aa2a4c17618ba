"""What follows an attempt (`plan_follow_ups`), property-tested over every result
`decide` can judge: a retry, a dead letter or neither, disabling on 410, one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.attempts import (
    ERROR_CLASSES,
    AttemptResult,
    DeadLetter,
    Disable,
    Retry,
    decide,
    plan_follow_ups,
)
from shared.core.messages import DeliveryMessage
from shared.core.retry import RetryPolicy

WEBHOOK = "00000000-0000-4000-8000-00000000000a"

results = st.one_of(
    st.builds(
        AttemptResult,
        status=st.sampled_from([200, 204, 301, 400, 404, 410, 429, 500, 503]),
        headers=st.sampled_from([{}, {"Retry-After": "120"}]),
    ),
    st.builds(AttemptResult, status=st.none(), error=st.sampled_from(ERROR_CLASSES[1:])),
)
messages = st.builds(
    DeliveryMessage,
    delivery_id=st.just("11111111-1111-4111-8111-111111111111"),
    webhook_id=st.just(WEBHOOK),
    org=st.just("o"),
    event_id=st.just("e"),
    event_type=st.just("push"),
    body=st.just({"event": "push"}),
    attempt=st.integers(min_value=1, max_value=8),
    trigger=st.sampled_from(["auto", "retry", "manual"]),
    single=st.booleans(),
    numbered=st.booleans(),
    extra=st.sampled_from([{}, {"other": 1}]),
)
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
policies = st.lists(st.integers(min_value=1, max_value=86400), max_size=6).map(
    lambda s: RetryPolicy(schedule=tuple(float(d) for d in s))
)


@given(results, messages, moments, policies, st.floats(min_value=0, max_value=1))
def test_the_plan_follows_the_decision(
    result: AttemptResult,
    msg: DeliveryMessage,
    now: datetime,
    policy: RetryPolicy,
    rand: float,
) -> None:
    decision = decide(
        result, attempt=msg.attempt, single=msg.single, policy=policy, rand=rand, now=now
    )
    effects = plan_follow_ups(msg, decision, now)
    kinds = [type(e) for e in effects]
    # In order, each at most once, and never both a retry and a dead letter.
    assert kinds == sorted(kinds, key=[Retry, DeadLetter, Disable].index)
    assert len(set(kinds)) == len(kinds)
    assert not (Retry in kinds and DeadLetter in kinds)
    assert (Retry in kinds) == (decision.next_delay_s is not None)
    assert (DeadLetter in kinds) == decision.to_dlq
    assert (Disable in kinds) == (result.status == 410)
    if result.ok or msg.single:
        assert Retry not in kinds and DeadLetter not in kinds
    for effect in effects:
        if isinstance(effect, Retry):
            nxt = effect.msg
            assert (nxt.attempt, nxt.trigger) == (msg.attempt + 1, "retry")
            # Due when the row says the next attempt is (now + delay, to the microsecond).
            due = (now + timedelta(seconds=effect.delay_s)).timestamp()
            assert nxt.due_at == pytest.approx(due, abs=1e-5)
            assert nxt.last_error == decision.error and not nxt.numbered
            assert (nxt.delivery_id, nxt.body) == (msg.delivery_id, msg.body)
        elif isinstance(effect, DeadLetter):
            assert effect.msg.delivery_id == msg.delivery_id and effect.reason is None
            assert effect.msg.last_error and effect.msg.last_error.split()[0] == decision.error
        else:
            assert effect.webhook_id == WEBHOOK and "410" in effect.reason


@given(messages, moments)
def test_a_success_plans_nothing(msg: DeliveryMessage, now: datetime) -> None:
    decision = decide(
        AttemptResult(status=200), attempt=1, single=False, policy=RetryPolicy(), rand=0.5, now=now
    )
    assert plan_follow_ups(msg, decision, now) == ()


def test_a_handed_off_outcome_keeps_only_disabling() -> None:
    from shared.core.attempts import AttemptRow, Outcome

    msg = DeliveryMessage(
        delivery_id="d", webhook_id=WEBHOOK, org="o", event_id="e", event_type="push", body={}
    )
    row = AttemptRow("d", WEBHOOK, "o", "e", "push", 1, "auto", "dead", datetime.now(UTC))
    gone = Outcome(row, (DeadLetter(msg), Disable(WEBHOOK, "410")))
    assert gone.handed_off() == Outcome(row, (Disable(WEBHOOK, "410"),))
