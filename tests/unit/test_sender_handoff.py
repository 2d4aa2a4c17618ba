"""The sender's hand-off with the broker and the endpoint replaced by fakes: what is handed
off is not also sent here, and a handed-off request schedules no retry of its own.

(`tests/integration/test_sender.py` runs the hand-off against real Kafka; these pin the
interleavings that are hard to provoke there.)
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import TopicPartition

from services.sender.consumer import Consuming, DeliveryConsumer
from services.sender.deliver import Prepared
from services.sender.offsets import Offsets
from services.sender.scheduler import OnFinished, Scheduler
from shared.core.attempts import AttemptRow, Effect, Outcome, Retry
from shared.core.messages import DeliveryMessage

TP = TopicPartition("hookline.deliveries", 0)
WEBHOOK = "00000000-0000-4000-8000-00000000000a"


class Record:
    def __init__(self, offset: int, msg: DeliveryMessage) -> None:
        self.offset, self.value, self.key = offset, msg.encode(), msg.key
        self.timestamp = 0


class Producer:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.acks: set[asyncio.Task[None]] = set()

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            await asyncio.sleep(0.05)
            self.sent.append(DeliveryMessage.decode(value).event_id)
            fut.set_result(None)

        task = asyncio.create_task(ack())
        self.acks.add(task)
        task.add_done_callback(self.acks.discard)
        return fut


class Consumer:
    committed: dict[TopicPartition, int] = {}
    notes: dict[TopicPartition, str] = {}  # each commit's metadata
    end: int | None = None  # the end offset the last fetch saw

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *_: Any) -> None: ...

    def resume(self, *_: Any) -> None: ...

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.end

    async def commit(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        self.committed = {tp: offset for tp, (offset, _) in offsets.items()}
        self.notes = {tp: note for tp, (_, note) in offsets.items()}


class Deliverer:
    """Each attempt takes `seconds[event_id]` (0.05 by default) and fails with a retry;
    it is also the follow-ups, recording what was retried and what was logged."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.posted: list[str] = []
        self.retried: list[str] = []
        self.logged: list[str] = []

    async def prepare(self, msg: DeliveryMessage) -> Prepared:
        return Prepared(msg, msg, cast(Any, None))

    async def call(self, prepared: Prepared) -> Outcome:
        msg = prepared.msg
        self.posted.append(msg.event_id)
        await asyncio.sleep(self.seconds.get(msg.event_id, 0.05))
        row = AttemptRow.of(msg, outcome="failed", started_at=datetime.now(UTC))
        return Outcome(row, (Retry(msg, 60.0),))

    async def apply(self, effect: Effect) -> None:
        assert isinstance(effect, Retry)
        self.retried.append(effect.msg.event_id)

    async def record(self, row: AttemptRow) -> None:
        self.logged.append(row.event_id)

    async def reject(self, value: bytes | None, key: bytes | None, reason: str | None) -> None:
        raise AssertionError("nothing here is dead-lettered")


@dataclass
class Sender:
    """A sender's consumer and scheduler, built through their constructors on fakes."""

    consumer: DeliveryConsumer
    producer: Producer
    kafka: Consumer
    deliverer: Deliverer
    scheduler: Scheduler


def make(concurrency: int, cap: int, seconds: dict[str, float]) -> Sender:
    producer, kafka, deliverer = Producer(), Consumer(), Deliverer(seconds)
    offsets = Offsets()
    built: list[Scheduler] = []

    def scheduler(on_finished: OnFinished) -> Scheduler:
        built.append(
            Scheduler(
                deliverer,
                deliverer,
                concurrency=concurrency,
                per_webhook=cap,
                owns=offsets.owns,
                on_finished=on_finished,
                stop=asyncio.Event(),
            )
        )
        return built[-1]

    consumer = DeliveryConsumer(
        cast(Any, kafka),
        cast(Any, producer),
        scheduler,
        config=Consuming(TP.topic, max_pending=100, revoke_wait=0.2),
        offsets=offsets,
        stop=asyncio.Event(),
    )
    consumer.assign({TP})
    part = offsets.parts[TP]
    for n in range(3):
        msg = DeliveryMessage(
            delivery_id=str(uuid.uuid4()),
            webhook_id=WEBHOOK,
            org="o",
            event_id=f"e{n}",
            event_type="push",
            body={},
        )
        built[0].dispatch(TP, part, cast(Any, Record(n, msg)))
    return Sender(consumer, producer, kafka, deliverer, built[0])


async def test_jobs_waiting_for_a_global_slot_are_handed_off_not_sent() -> None:
    s = make(concurrency=1, cap=5, seconds={"e0": 0.6})  # e1, e2 wait for the one slot
    await s.consumer.revoke({TP})
    assert sorted(s.producer.sent) == ["e0", "e1", "e2"]
    await asyncio.sleep(0.8)
    assert s.deliverer.posted == ["e0"]
    assert s.scheduler.pending == 0


async def test_jobs_queued_behind_the_webhook_cap_are_not_started_meanwhile() -> None:
    # Cap 2: e0 hangs, e1 ends while the hand-off waits for its acks, e2 is queued.
    s = make(concurrency=10, cap=2, seconds={"e0": 1.0, "e1": 0.22})
    await s.consumer.revoke({TP})
    await asyncio.sleep(0.2)
    assert "e2" not in s.deliverer.posted
    assert "e2" in s.producer.sent


async def test_a_handed_off_request_that_fails_schedules_no_retry_of_its_own() -> None:
    s = make(concurrency=10, cap=5, seconds={"e0": 0.5})
    await s.consumer.revoke({TP})  # e1, e2 failed (with retries) within the wait; e0 is handed off
    await asyncio.sleep(0.6)
    assert sorted(s.deliverer.logged) == ["e0", "e1", "e2"]
    assert sorted(s.deliverer.retried) == ["e1", "e2"]  # e0's copy carries it on
    assert s.kafka.committed == {TP: 3}


async def test_each_commit_tells_how_many_records_wait_to_be_taken_on() -> None:
    s = make(concurrency=10, cap=5, seconds={})
    await asyncio.sleep(0.2)  # e0..e2 ended
    await s.consumer.commit()
    assert (s.kafka.committed, s.kafka.notes) == ({TP: 3}, {TP: ""})  # end not seen yet
    part = s.consumer._offsets.parts[TP]
    msg = DeliveryMessage(str(uuid.uuid4()), WEBHOOK, "o", "e3", "push", {})
    s.scheduler.dispatch(TP, part, cast(Any, Record(3, msg)))
    part.taken = 3
    await asyncio.sleep(0.2)
    s.kafka.end = 10  # offsets 4..9 are in Kafka or fetched, not taken on
    await s.consumer.commit()
    assert (s.kafka.committed, s.kafka.notes) == ({TP: 4}, {TP: "6"})
