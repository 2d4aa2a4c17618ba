"""The sender group's load-aware assignment against a real broker: when the load sits on
one member's partitions and the group falls behind (its members' commits say records wait),
the leader has the group rebalance, and the busy partitions end up on different members
(services/sender/balance.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from services.sender import balance
from services.sender.balance import Balancer, PartitionLoad, assignor
from shared.config import Settings
from shared.kafka import TopicSpec, ensure_topics, make_consumer, make_producer

BUSY = (0, 2)  # round-robin deals both to the first member


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balance, "SAMPLE_S", 0.3)
    monkeypatch.setattr(balance, "IDLE_SAMPLE_S", 0.3)
    monkeypatch.setattr(balance, "RATE_TAU_S", 1.0)
    monkeypatch.setattr(balance, "PERSIST", 2)
    monkeypatch.setattr(balance, "COOLDOWN_S", 2.0)
    monkeypatch.setattr(balance, "MIN_RATE", 5.0)


Consume = Callable[[AIOKafkaConsumer, asyncio.Event], Coroutine[Any, Any, None]]


class Group:
    """Two members of a fresh group on a fresh 4-partition topic, each with the load-aware
    assignor and a `Balancer`, consuming with `consume`; a producer beside them."""

    def __init__(self, bootstrap: str, consume: Consume, *, old: int = 0) -> None:
        self.bootstrap = bootstrap
        self.topic = "test.balance." + uuid.uuid4().hex[:8]
        self.group = "test-balance-" + uuid.uuid4().hex[:8]
        self.consume = consume
        self.old = old  # the first `old` members offer aiokafka's round-robin only
        self.stop = asyncio.Event()
        self.members: list[tuple[AIOKafkaConsumer, PartitionLoad]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.producer = make_producer(bootstrap, client_id="test-balance")

    async def __aenter__(self) -> Group:
        await ensure_topics(self.bootstrap, [TopicSpec(self.topic, 4, {})])
        await self.producer.start()
        for i in range(2):
            load = PartitionLoad(self.topic)
            consumer = make_consumer(
                self.bootstrap,
                self.topic,
                group_id=self.group,
                client_id=f"test-balance-{i}",
                partition_assignment_strategy=(
                    (RoundRobinPartitionAssignor,) if i < self.old else (assignor(load),)
                ),
            )
            await consumer.start()
            self.members.append((consumer, load))
            self.tasks.append(asyncio.create_task(self.consume(consumer, self.stop)))
            self.tasks.append(asyncio.create_task(Balancer(consumer, load).run(self.stop)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sorted(map(len, self.owners())) != [2, 2]:  # both members joined
            assert loop.time() < deadline, f"the group never formed: {self.owners()}"
            await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for consumer, _ in self.members:
            await consumer.stop()
        await self.producer.stop()

    def owners(self) -> list[set[int]]:
        return [{tp.partition for tp in c.assignment()} for c, _ in self.members]

    def leaders(self) -> list[PartitionLoad]:
        return [load for _, load in self.members if load.dealt is not None]

    async def offer_busy(self) -> None:
        """Ten records to each busy partition."""
        for p in BUSY:
            for _ in range(10):
                await self.producer.send(self.topic, b"x", partition=p)


async def fall_behind(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    """Takes nothing on: each commit tells the leader that all of its partition waits."""
    while not stop.is_set():
        await asyncio.sleep(0.3)
        mine = list(consumer.assignment())
        if mine:
            ends = await consumer.end_offsets(mine)
            with contextlib.suppress(KafkaError):  # a rebalance under way
                await consumer.commit({tp: (0, str(end)) for tp, end in ends.items()})


async def keep_up(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    """Commits all it fetched, telling that nothing waits."""
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=200)
        if batch:
            with contextlib.suppress(KafkaError):
                await consumer.commit({tp: (m[-1].offset + 1, "0") for tp, m in batch.items()})


async def test_a_group_behind_with_its_load_on_one_member_is_dealt_afresh(
    provisioned: Settings, quick: None
) -> None:
    async with Group(provisioned.kafka_bootstrap, fall_behind) as g:
        first = g.owners()
        assert set(BUSY) in first, f"round-robin first: {first}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while any(set(BUSY) <= mine for mine in g.owners()):
            assert loop.time() < deadline, f"never dealt afresh: {g.owners()}"
            await g.offer_busy()
            await asyncio.sleep(0.05)
        after = g.owners()
        assert all(len(mine & set(BUSY)) == 1 for mine in after), after
        assert sorted(p for mine in after for p in mine) == [0, 1, 2, 3]
        assert len(g.leaders()) == 1, "exactly one member knows the assignment it dealt"


async def test_a_group_keeping_up_is_left_alone_however_uneven(
    provisioned: Settings, quick: None
) -> None:
    async with Group(provisioned.kafka_bootstrap, keep_up) as g:
        first = g.owners()
        generations = [c._coordinator.generation for c, _ in g.members]
        loop = asyncio.get_running_loop()
        until = loop.time() + 8  # many times PERSIST samples and the cooldown
        while loop.time() < until:
            await g.offer_busy()
            await asyncio.sleep(0.05)
        leaders = g.leaders()
        assert leaders and sum(leaders[0].rates.values()) > balance.MIN_RATE  # it was measured
        assert g.owners() == first
        # No rebalance at all, asked for or not (offering two assignors made aiokafka send
        # two different JoinGroups per join, and the broker rebalanced at each).
        assert [c._coordinator.generation for c, _ in g.members] == generations


async def test_a_sender_of_an_older_release_shares_the_group_through_an_upgrade(
    provisioned: Settings,
) -> None:
    # The older sender offers round-robin only; the new one deals under the same name.
    async with Group(provisioned.kafka_bootstrap, keep_up, old=1) as g:
        assert sorted(p for mine in g.owners() for p in mine) == [0, 1, 2, 3]
        assert sorted(map(len, g.owners())) == [2, 2]
