"""Reading what the services under test wrote to Kafka: a topic up to its end offsets, or
only what comes after a test starts (a `Tail`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import CachedPartitioner, make_consumer, partitions_of

DEADLINE_S = 60.0


async def read_to_end(bootstrap: str, topic: str, start: dict[TopicPartition, int]) -> list[Any]:
    """Every message of `topic` from `start` offsets (default 0) up to its end offsets now."""
    consumer = make_consumer(bootstrap, group_id=None, client_id="test-read")
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp, 0))
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert loop.time() < deadline, f"could not read {topic} to its end"
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(m for m in msgs if m.offset < ends[TopicPartition(m.topic, m.partition)])
        return out
    finally:
        await consumer.stop()


class Tail:
    """Reads a topic from the end offsets captured at `start()`: only what came after."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = make_consumer(bootstrap, group_id=None, client_id="test-tail")
        self.messages: list[Any] = []

    async def start(self) -> Tail:
        await self.consumer.start()
        tps = await partitions_of(self.consumer, self.topic)
        assert tps, f"topic {self.topic} has no partitions"
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)
        return self

    async def until(self, done: Callable[[list[Any]], bool], timeout: float = DEADLINE_S) -> None:
        """Reads until `done(messages)` holds; fails after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.messages):
            assert loop.time() < deadline, f"timed out with {len(self.messages)} messages"
            batch = await self.consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                self.messages.extend(msgs)

    async def drain(self) -> None:
        """Reads everything up to the end offsets as of now."""
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)

        async def caught_up() -> bool:
            return all([await self.consumer.position(tp) >= ends[tp] for tp in tps])

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not await caught_up():
            assert loop.time() < deadline, "could not read up to the end offsets"
            batch = await self.consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                self.messages.extend(msgs)

    async def stop(self) -> None:
        await self.consumer.stop()


class GroupProgress:
    """Whether a consumer group has committed every record of one key's partition that is
    on the topic now: e.g. that a sender will not replay deliveries it finished, should it
    be killed next (at-least-once replays whatever is uncommitted)."""

    def __init__(self, bootstrap: str, group: str, topic: str, key: bytes) -> None:
        self._bootstrap, self._group, self._topic, self._key = bootstrap, group, topic, key
        self._tp: TopicPartition | None = None
        self._end = 0

    async def mark(self) -> GroupProgress:
        """Remembers the key's partition and its end offset now."""
        consumer = make_consumer(self._bootstrap, group_id=None, client_id="test-progress")
        await consumer.start()
        try:
            tps = await partitions_of(consumer, self._topic)
            ids = [tp.partition for tp in tps]
            self._tp = TopicPartition(self._topic, CachedPartitioner()(self._key, ids, ids))
            self._end = (await consumer.end_offsets([self._tp]))[self._tp]
        finally:
            await consumer.stop()
        return self

    async def committed(self) -> bool:
        """True once the group's committed offset reached the end offset `mark` saw."""
        assert self._tp is not None, "mark() first"
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self._group)
        finally:
            await admin.close()
        meta = offsets.get(self._tp)
        return meta is not None and meta.offset >= self._end
