"""Load-aware assignment of the deliveries topic's partitions to the sender group.

Deliveries are keyed by webhook id (DESIGN.md's matcher row), so how much work a partition
holds depends on which webhooks hash to it. The round-robin assignor deals partitions by
number: a busy repo's webhooks can land on one sender's partitions while another sender
idles, and then every webhook there waits longer than the rest (the bench's fairness phase
saw per-webhook p50s split by sender, 1.5 s against 8.3 s, and 9 of setup's 10 webhooks on
one sender).

Every sender samples the topic's end offsets, so it knows each partition's offered rate
(`PartitionLoad`). The group's leader deals the partitions heaviest first, each to the
member with the least load so far (`deal`), a partition's load being its offered rate plus
its waiting records spread over `BACKLOG_HORIZON_S`. With no load known, that is
round-robin.

What waits in a partition, only its owner knows: the records not yet taken on (in Kafka,
or fetched while its buffer is full). A sender writes that count as the metadata of each
offset commit, and the leader reads every partition's back in one request. The lag behind
the committed offset would not do: the watermark also stays behind requests that are only
slow (a dead endpoint's, for their timeout), with nothing waiting for a sender.

Loads change after an assignment (a repo turns busy), so the leader watches: while the
group is behind (what waits is over `BEHIND_S` seconds of its offered rate) and the
current assignment's busiest member has `UNEVEN` times the load a fresh deal would give it,
for `PERSIST` samples in a row, it asks the group to rebalance, at most once per
`COOLDOWN_S`. A group that keeps up is left alone however uneven: a rebalance pauses every
sender for a hand-off (`REVOKE_WAIT_S`), and spread-out idle capacity costs nobody any
latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError

log = structlog.get_logger(component="sender")

SAMPLE_S = 2.0  # end offsets are sampled this often while records flow
IDLE_SAMPLE_S = 5.0  # and this often while none did since the last sample
RATE_TAU_S = 6.0  # the offered rates' smoothing time
BACKLOG_HORIZON_S = 10.0  # a partition's waiting records weigh as if offered over this long
BEHIND_S = 0.5  # the group is behind when what waits is this many seconds of its rate
MIN_RATE = 50.0  # deliveries/s offered: below it the group is never rebalanced
UNEVEN = 1.25  # the busiest member's load against a fresh deal's busiest
PERSIST = 2  # samples in a row
COOLDOWN_S = 30.0  # after an assignment this leader dealt by a known load
COMMITTED_TIMEOUT_S = 5.0
# The log event of a rebalance this leader asked for (the bench counts them).
REBALANCING = "sender group behind and unevenly loaded: rebalancing"


def deal(weights: Mapping[int, float], members: Sequence[str]) -> dict[str, list[int]]:
    """Partitions heaviest first, each to the member with the least load so far (then the
    fewest partitions, then the first by name): with equal weights, round-robin."""
    load = {m: 0.0 for m in members}
    dealt: dict[str, list[int]] = {m: [] for m in members}
    for p in sorted(weights, key=lambda p: (-weights[p], p)):
        m = min(members, key=lambda m: (load[m], len(dealt[m]), m))
        dealt[m].append(p)
        load[m] += weights[p]
    return {m: sorted(ps) for m, ps in dealt.items()}


def busiest(assignment: Mapping[str, Iterable[int]], weights: Mapping[int, float]) -> float:
    return max((sum(weights.get(p, 0.0) for p in ps) for ps in assignment.values()), default=0.0)


@dataclass
class PartitionLoad:
    """What the sender group's partitions are offered and owe, as this member last saw it,
    and, while this member leads the group, the assignment it dealt."""

    topic: str
    rates: dict[int, float] = field(default_factory=dict)  # offered deliveries/s
    waiting: dict[int, int] = field(default_factory=dict)  # not taken on, as its owner said
    dealt: dict[str, list[int]] | None = None  # member -> partitions, while leading
    dealt_at: float = float("-inf")
    _ends: dict[int, tuple[float, int]] = field(default_factory=dict)
    _fresh: bool = False  # assign() ran in this process since the last on_assignment()

    def observe(self, now: float, ends: Mapping[int, int]) -> None:
        """Folds a sample of end offsets into the rates (smoothed over RATE_TAU_S)."""
        for p, end in ends.items():
            last = self._ends.get(p)
            self._ends[p] = (now, end)
            if last is None or now <= last[0]:
                continue
            dt = now - last[0]
            rate = max(0, end - last[1]) / dt
            alpha = min(1.0, dt / RATE_TAU_S)
            self.rates[p] = self.rates.get(p, rate) * (1 - alpha) + rate * alpha

    def told(self, notes: Mapping[int, str]) -> None:
        """Each partition's waiting records, from its last commit's metadata (a count; else
        unknown, taken as none)."""
        self.waiting = {p: int(n) for p, n in notes.items() if n.isdigit()}

    def weights(self, partitions: Iterable[int]) -> dict[int, float]:
        return {
            p: self.rates.get(p, 0.0) + self.waiting.get(p, 0) / BACKLOG_HORIZON_S
            for p in partitions
        }

    def uneven(self) -> tuple[float, float] | None:
        """(current, possible) busiest-member load when the group is behind and a fresh
        deal would even it out; None otherwise, or when this member does not lead."""
        if self.dealt is None or len(self.dealt) < 2:
            return None
        total = sum(self.rates.values())
        if total < MIN_RATE or sum(self.waiting.values()) < BEHIND_S * total:
            return None
        weights = self.weights(p for ps in self.dealt.values() for p in ps)
        now = busiest(self.dealt, weights)
        best = busiest(deal(weights, sorted(self.dealt)), weights)
        return (now, best) if now > UNEVEN * best else None


def assignor(load: PartitionLoad) -> type[AbstractPartitionAssignor]:
    """An assignor class (aiokafka takes classes, whose methods are class methods) dealing
    `load.topic`'s partitions by `load`; other topics go round-robin."""

    class LoadAware(AbstractPartitionAssignor):  # type: ignore[misc]
        # The protocol name is what members agree on, and senders of a release before this
        # one offer only round-robin: under its name, old and new members share a group
        # through a rolling upgrade, whichever leads deals (each accepts the other's deal,
        # and with no load known this one deals exactly as round-robin does). Offering a
        # second protocol is not possible: aiokafka 0.14 sends one JoinGroup per assignor
        # offered, each with a different list, and the broker rebalances again at every
        # change (two senders rebalanced 543 times in 90 s; aio-libs/aiokafka#1168).
        name = "roundrobin"
        version = 0

        @classmethod
        def assign(
            cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            ids = sorted(members)
            topics: dict[str, list[str]] = {}
            for m in ids:
                for topic in members[m].subscription:
                    topics.setdefault(topic, []).append(m)
            out: dict[str, dict[str, list[int]]] = {m: {} for m in ids}
            for topic, subscribed in sorted(topics.items()):
                partitions = sorted(cluster.partitions_for_topic(topic) or ())
                if topic == load.topic:
                    weights = load.weights(partitions)
                else:
                    weights = dict.fromkeys(partitions, 0.0)
                dealt = deal(weights, subscribed)
                for m, ps in dealt.items():
                    out[m][topic] = ps
                if topic == load.topic:
                    load.dealt, load._fresh = dealt, True
                    # The cooldown keeps a dealt load from flapping; a deal that knew no
                    # load (a member's start) may be corrected at once.
                    informed = sum(weights.values()) >= MIN_RATE
                    load.dealt_at = time.monotonic() if informed else float("-inf")
                    log.info(
                        "sender partitions dealt",
                        members=len(subscribed),
                        loads=[round(sum(weights[p] for p in ps), 1) for ps in dealt.values()],
                    )
            return {
                m: ConsumerProtocolMemberAssignment(cls.version, sorted(t.items()), b"")
                for m, t in out.items()
            }

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, sorted(topics), b"")

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            # Every member gets here after each rebalance, the leader just after assign().
            if not load._fresh:
                load.dealt = None
            load._fresh = False

    return LoadAware


class Balancer:
    """Samples the deliveries topic's offered load for the assignor, and while this member
    leads the group, asks for a rebalance when the load came to sit unevenly."""

    def __init__(self, consumer: AIOKafkaConsumer, load: PartitionLoad) -> None:
        self._consumer = consumer
        self._load = load
        self._strikes = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            flowing = any(self._load.rates.values())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAMPLE_S if flowing else IDLE_SAMPLE_S):
                    await stop.wait()
            if stop.is_set():
                return
            try:
                await self.sample()
            except (KafkaError, TimeoutError) as exc:  # a broker away: the next sample
                log.debug("load sample failed", error=repr(exc))
            except Exception:
                # Unforeseen: logged, and the sampling goes on (the sender never depends
                # on it; without it the group keeps its current deal).
                log.exception("load sample raised")

    async def sample(self) -> None:
        load, consumer = self._load, self._consumer
        tps = [
            TopicPartition(load.topic, p) for p in consumer.partitions_for_topic(load.topic) or ()
        ]
        if not tps:
            return
        async with asyncio.timeout(COMMITTED_TIMEOUT_S):
            ends = await consumer.end_offsets(tps)
        load.observe(time.monotonic(), {tp.partition: end for tp, end in ends.items()})
        if load.dealt is None:
            self._strikes = 0
            return
        async with asyncio.timeout(COMMITTED_TIMEOUT_S):
            notes = await _notes(consumer, tps)
        load.told(notes)
        uneven = load.uneven()
        self._strikes = self._strikes + 1 if uneven else 0
        if uneven and self._strikes >= PERSIST and time.monotonic() - load.dealt_at >= COOLDOWN_S:
            self._strikes = 0
            log.info(
                REBALANCING,
                busiest=round(uneven[0], 1),
                dealt_afresh=round(uneven[1], 1),
            )
            _coordinator(consumer).request_rejoin()


def _coordinator(consumer: AIOKafkaConsumer) -> Any:
    # aiokafka (pinned) has no public call to rejoin or to read other partitions' committed
    # offsets in one request; its group coordinator does both.
    return consumer._coordinator


async def _notes(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[int, str]:
    """Each partition's last commit's metadata (`DeliveryConsumer._waiting`)."""
    offsets = await _coordinator(consumer).fetch_committed_offsets(tps)
    return {tp.partition: meta.metadata or "" for tp, meta in offsets.items()}
