"""Owned partitions: completion up to the watermark, hand-off, forgetting on revoke."""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from services.sender.offsets import Job, Offsets
from shared.core.messages import DeliveryMessage

TP = TopicPartition("hookline.deliveries", 0)


def job(offsets: Offsets, offset: int) -> Job:
    part = offsets.parts[TP]
    part.wm.dispatch(offset)
    msg = DeliveryMessage(
        delivery_id="00000000-0000-5000-8000-000000000001",
        webhook_id="00000000-0000-4000-8000-000000000002",
        org="o",
        event_id=f"e{offset}",
        event_type="push",
        body={"n": offset},
    )
    j = Job(TP, part, offset, msg)
    part.open[offset] = j
    return j


class Producer:
    """Acknowledges every send except those whose event id is in `refuse` (failed) or
    `hold` (never answered)."""

    def __init__(
        self, refuse: AbstractSet[str] = frozenset(), hold: AbstractSet[str] = frozenset()
    ) -> None:
        self.sent: list[bytes] = []
        self.partitions: list[int] = []
        self.refuse, self.hold = refuse, hold

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int
    ) -> asyncio.Future[Any]:
        await asyncio.sleep(0)  # a real send yields: other tasks run meanwhile
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.partitions.append(partition)
        if any(e.encode() in value for e in self.refuse):
            fut.set_exception(KafkaTimeoutError())
        elif not any(e.encode() in value for e in self.hold):
            self.sent.append(value)
            fut.set_result(None)
        return fut


def test_the_watermark_moves_only_over_contiguous_successes_of_owned_partitions() -> None:
    offsets = Offsets()
    offsets.assign({TP})
    a, b, c = (job(offsets, n) for n in (0, 1, 2))
    offsets.finish(TP, b.part, 1, ok=True)
    assert offsets.parts[TP].wm.committable() is None  # 0 is still running
    offsets.finish(TP, a.part, 0, ok=True)
    assert offsets.parts[TP].wm.committable() == 2
    offsets.forget({TP})
    offsets.finish(TP, c.part, 2, ok=True)  # revoked meanwhile: completes nothing
    assert c.part.wm.committable() == 2 and not c.part.open


async def test_a_hand_off_completes_what_was_requeued_and_nothing_twice() -> None:
    offsets = Offsets()
    offsets.assign({TP})
    hung, _refused, done = (job(offsets, n) for n in (0, 1, 2))
    offsets.finish(TP, done.part, 2, ok=True)
    producer = Producer(refuse={"e1"})
    await offsets.hand_off(producer, "hookline.deliveries", [hung.part])  # type: ignore[arg-type]
    assert len(producer.sent) == 1 and b'"e0"' in producer.sent[0]
    part = offsets.parts[TP]
    assert part.wm.committable() == 1  # 1 was not acknowledged: it stays unfinished
    # The hung request ends later: its offset was completed already, not again.
    offsets.finish(TP, part, 0, ok=True)
    assert 0 not in part.handed and part.wm.committable() == 1
    offsets.finish(TP, part, 1, ok=True)
    assert part.wm.committable() == 3


async def test_overlapping_hand_offs_send_each_job_once() -> None:
    offsets = Offsets()
    offsets.assign({TP})
    hung = job(offsets, 0)
    producer = Producer()
    # A stop's hand-off and a revoke's at the same moment.
    await asyncio.gather(
        offsets.hand_off(producer, "t", [hung.part]),  # type: ignore[arg-type]
        offsets.hand_off(producer, "t", [hung.part]),  # type: ignore[arg-type]
    )
    assert len(producer.sent) == 1 and producer.partitions == [TP.partition]
    assert hung.part.wm.committable() == 1


async def test_a_job_that_ends_during_the_hand_off_is_not_marked_handed() -> None:
    offsets = Offsets()
    offsets.assign({TP})
    a = job(offsets, 0)

    async def ends() -> None:
        await asyncio.sleep(0)
        offsets.finish(TP, a.part, 0, ok=True)

    await asyncio.gather(offsets.hand_off(Producer(), "t", [a.part]), ends())  # type: ignore[arg-type]
    assert not a.part.handed and a.part.wm.committable() == 1


async def test_copies_not_acknowledged_in_time_stay_unfinished(monkeypatch: Any) -> None:
    import services.sender.offsets as offsets_module

    monkeypatch.setattr(offsets_module, "HANDOFF_TIMEOUT_S", 0.05)
    offsets = Offsets()
    offsets.assign({TP})
    a, b = job(offsets, 0), job(offsets, 1)
    await offsets.hand_off(Producer(hold={"e1"}), "t", [a.part])  # type: ignore[arg-type]
    assert a.part.handed == {0} and a.part.wm.committable() == 1  # 1 is replayed
    assert 1 in b.part.open
