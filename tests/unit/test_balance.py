"""The sender group's load-aware assignment: the deal, the offered rates, and when the leader
asks for a rebalance (services/sender/balance.py)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, cast

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from services.sender import balance
from services.sender.balance import Balancer, PartitionLoad, assignor, busiest, deal

TOPIC = "hookline.deliveries"


def test_with_no_load_known_the_deal_is_round_robin() -> None:
    assert deal(dict.fromkeys(range(12), 0.0), ["a", "b"]) == {
        "a": [0, 2, 4, 6, 8, 10],
        "b": [1, 3, 5, 7, 9, 11],
    }
    three = deal(dict.fromkeys(range(7), 0.0), ["x", "y", "z"])
    assert sorted(len(ps) for ps in three.values()) == [2, 2, 3]


def test_the_deal_evens_out_what_round_robin_leaves_on_one_member() -> None:
    # A busy repo's webhooks hashed to even partitions: round-robin gives them all to "a".
    weights = {p: (100.0 if p % 2 == 0 and p < 8 else 5.0) for p in range(12)}
    round_robin = {"a": [0, 2, 4, 6, 8, 10], "b": [1, 3, 5, 7, 9, 11]}
    dealt = deal(weights, ["a", "b"])
    assert busiest(round_robin, weights) == 410.0
    assert busiest(dealt, weights) == 220.0  # of 440 in all
    assert sorted(p for ps in dealt.values() for p in ps) == list(range(12))


def test_the_deal_is_never_worse_than_round_robin_on_random_loads() -> None:
    rng = random.Random(7)
    for _ in range(200):
        weights = {p: rng.expovariate(1.0) * rng.choice([1, 1, 20]) for p in range(12)}
        members = ["a", "b", "c"][: rng.choice([2, 3])]
        rr = {m: [p for p in range(12) if p % len(members) == i] for i, m in enumerate(members)}
        dealt = deal(weights, members)
        assert busiest(dealt, weights) <= busiest(rr, weights) + 1e-9
        # LPT is within 4/3 of the best possible, which is at least the mean and the max.
        floor = max(sum(weights.values()) / len(members), max(weights.values()))
        assert busiest(dealt, weights) <= floor * 4 / 3 + 1e-9


def test_offered_rates_follow_the_end_offsets() -> None:
    load = PartitionLoad(TOPIC)
    load.observe(100.0, {0: 1000, 1: 50})
    assert load.rates == {}  # one sample: no rate yet
    load.observe(102.0, {0: 1400, 1: 50})
    assert load.rates == {0: 200.0, 1: 0.0}
    for t in range(3, 40):  # partition 0 falls silent: its rate decays towards 0
        load.observe(100.0 + 2 * t, {0: 1400, 1: 50 + 20 * (t - 2)})
    assert load.rates[0] < 1.0
    assert load.rates[1] == pytest.approx(10.0, rel=0.01)


def _leading(
    rates: dict[int, float], backlog: dict[int, int], dealt: dict[str, list[int]]
) -> PartitionLoad:
    load = PartitionLoad(TOPIC, rates=dict(rates), waiting=dict(backlog))
    load.dealt = dealt
    return load


def test_uneven_only_while_leading_behind_and_worth_a_rebalance() -> None:
    rr = {"a": [0, 2, 4, 6, 8, 10], "b": [1, 3, 5, 7, 9, 11]}
    hot = {p: (100.0 if p % 2 == 0 else 5.0) for p in range(12)}  # all on "a"
    behind = dict.fromkeys(range(12), 500)  # 6,000 owed against 630/s: 9.5 s behind
    now, best = _leading(hot, behind, rr).uneven() or (0, 0)
    assert now > balance.UNEVEN * best
    # Keeping up (little owed): left alone however uneven.
    assert _leading(hot, dict.fromkeys(range(12), 10), rr).uneven() is None
    # Evenly loaded already: nothing to gain.
    even = dict.fromkeys(range(12), 50.0)
    assert _leading(even, behind, rr).uneven() is None
    # A trickle is never worth a rebalance.
    trickle = {p: v / 100 for p, v in hot.items()}
    assert _leading(trickle, behind, rr).uneven() is None
    # Not the leader: it knows no assignment but its own.
    not_leading = _leading(hot, behind, rr)
    not_leading.dealt = None
    assert not_leading.uneven() is None


def test_waiting_records_weigh_in_the_deal() -> None:
    # Equal rates, but partition 0 owes 10 s of work: it gets a member nearly to itself.
    load = PartitionLoad(TOPIC, rates=dict.fromkeys(range(4), 10.0), waiting={0: 1000})
    dealt = deal(load.weights(range(4)), ["a", "b"])
    assert [0] in dealt.values()


class _Cluster:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._partitions.get(topic)


def test_the_assignor_deals_the_deliveries_topic_by_load_and_tells_the_leader_only() -> None:
    load = PartitionLoad(TOPIC, rates={p: (100.0 if p in (0, 2) else 1.0) for p in range(4)})
    cls = assignor(load)
    members = {m: ConsumerProtocolMemberMetadata(0, [TOPIC, "other"], b"") for m in ("m-2", "m-1")}
    out = cls.assign(_Cluster({TOPIC: {0, 1, 2, 3}, "other": {0, 1}}), members)
    got = {m: dict(a.assignment) for m, a in out.items()}
    assert {tuple(got["m-1"][TOPIC]), tuple(got["m-2"][TOPIC])} == {(0, 1), (2, 3)}
    assert sorted(got["m-1"]["other"] + got["m-2"]["other"]) == [0, 1]
    assert load.dealt == {m: got[m][TOPIC] for m in got}
    # The leader's own assignment arrives next: it keeps what it dealt ...
    cls.on_assignment(out["m-1"])
    assert load.dealt is not None
    # ... while a rebalance another member led leaves this one nothing to watch.
    cls.on_assignment(out["m-1"])
    assert load.dealt is None
    meta = cls.metadata({TOPIC})
    assert (meta.version, meta.subscription, meta.user_data) == (0, [TOPIC], b"")


def test_only_a_deal_by_a_known_load_starts_the_cooldown() -> None:
    members = {m: ConsumerProtocolMemberMetadata(0, [TOPIC], b"") for m in ("a", "b")}
    cluster = _Cluster({TOPIC: {0, 1, 2, 3}})
    load = PartitionLoad(TOPIC)  # a member's start: nothing measured yet
    assignor(load).assign(cluster, members)
    assert load.dealt_at == float("-inf")  # may be dealt again as soon as the load shows
    load.rates = dict.fromkeys(range(4), 100.0)
    assignor(load).assign(cluster, members)
    assert time.monotonic() - load.dealt_at < 1.0


async def test_an_unforeseen_error_in_a_sample_does_not_end_the_sampling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balance, "IDLE_SAMPLE_S", 0.01)
    calls: list[int] = []
    stop = asyncio.Event()

    class Broken:
        def partitions_for_topic(self, topic: str) -> set[int]:
            calls.append(1)
            if len(calls) >= 3:
                stop.set()
            raise RuntimeError("a bug")

    await asyncio.wait_for(Balancer(cast(Any, Broken()), PartitionLoad(TOPIC)).run(stop), 5)
    assert len(calls) >= 3
