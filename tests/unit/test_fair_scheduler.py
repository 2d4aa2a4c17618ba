"""Fairness under saturation (issue 14 item 5), with the endpoint and Kafka replaced by
fakes: waiting jobs start oldest first among the webhooks below their cap, whatever
webhook or partition they belong to, and fetched records are taken on oldest first across
partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from services.sender import scheduler as scheduler_module
from services.sender.consumer import Consuming, DeliveryConsumer
from services.sender.deliver import Prepared
from services.sender.fair import FairQueue
from services.sender.offsets import Offsets
from services.sender.scheduler import OnFinished, Scheduler
from shared.core.attempts import AttemptRow, Effect, Outcome, Retry
from shared.core.messages import DeliveryMessage

TOPIC = "hookline.deliveries"


class Record:
    def __init__(self, offset: int, msg: DeliveryMessage, timestamp: int) -> None:
        self.offset, self.value, self.key = offset, msg.encode(), msg.key
        self.timestamp = timestamp


async def until(done: Callable[[], bool]) -> None:
    """Polls `done` (pytest-timeout bounds a wait that never ends)."""
    while not done():  # noqa: ASYNC110 (the fakes have no event to wait on)
        await asyncio.sleep(0.005)


def message(webhook: str, event: str) -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=str(uuid.uuid4()),
        webhook_id=str(uuid.uuid5(uuid.NAMESPACE_URL, webhook)),
        org="o",
        event_id=event,
        event_type="push",
        body={},
    )


class Endpoint:
    """Every attempt succeeds after `seconds` (or once `gate` opens); it is also the
    follow-ups. Records the order requests were sent in."""

    def __init__(self, seconds: float = 0.0, gate: asyncio.Event | None = None) -> None:
        self.seconds = seconds
        self.gate = gate
        self.posted: list[str] = []
        self.rejected: list[str | None] = []

    async def prepare(self, msg: DeliveryMessage) -> Prepared:
        return Prepared(msg, msg, cast(Any, None))

    async def call(self, prepared: Prepared) -> Outcome:
        self.posted.append(prepared.msg.event_id)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.seconds)
        return Outcome(AttemptRow.of(prepared.msg, outcome="succeeded", started_at=_now()))

    async def apply(self, effect: Effect) -> None:
        raise AssertionError("every attempt succeeds")

    async def record(self, row: AttemptRow) -> None:
        pass

    async def reject(self, value: bytes | None, key: bytes | None, reason: str | None) -> None:
        self.rejected.append(reason)  # nothing here should be


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class Sender:
    """A scheduler on one partition, built through its constructor on fakes."""

    def __init__(self, endpoint: Endpoint, *, concurrency: int, cap: int) -> None:
        self.tp = TopicPartition(TOPIC, 0)
        self.offsets = Offsets()
        self.offsets.assign({self.tp})
        self.finished: list[int] = []
        self.scheduler = Scheduler(
            endpoint,
            endpoint,
            concurrency=concurrency,
            per_webhook=cap,
            owns=self.offsets.owns,
            on_finished=self.on_finished,
            stop=asyncio.Event(),
        )
        self.offset = 0

    def on_finished(self, tp: TopicPartition, part: Any, offset: int, ok: bool) -> None:
        self.offsets.finish(tp, part, offset, ok)
        self.finished.append(offset)

    def dispatch(self, webhook: str, event: str, timestamp: int) -> None:
        record = Record(self.offset, message(webhook, event), timestamp)
        self.offset += 1
        self.scheduler.dispatch(self.tp, self.offsets.parts[self.tp], cast(Any, record))

    async def drained(self) -> None:
        await until(lambda: self.scheduler.pending == 0)


def test_the_queue_serves_the_oldest_head_among_free_webhooks() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a1", 1)
    queue.push("a", "a2", 4)
    queue.push("b", "b1", 2)
    queue.push("c", "c1", 3)
    at_cap = {"b"}
    assert queue.pop(lambda w: w not in at_cap) == ("a", "a1")
    assert queue.pop(lambda w: w not in at_cap) == ("c", "c1")  # b is older, but at its cap
    assert queue.pop(lambda w: w not in at_cap) == ("a", "a2")
    assert queue.pop(lambda w: w not in at_cap) is None and len(queue) == 1
    at_cap.clear()
    assert queue.pop(lambda w: True) is None  # set aside until its webhook is unblocked
    queue.unblock("b")
    assert queue.pop(lambda w: True) == ("b", "b1")
    assert len(queue) == 0


def test_removing_jobs_keeps_the_order_of_the_rest() -> None:
    queue: FairQueue[str] = FairQueue()
    for n, (wid, job) in enumerate([("a", "x1"), ("b", "k1"), ("a", "k2"), ("c", "x2")]):
        queue.push(wid, job, n)
    queue.pop(lambda w: w != "c")  # a's x1; c stays in the heap, b next
    assert queue.pop(lambda w: w == "a") == ("a", "k2")  # b set aside (at its cap)
    assert sorted(queue.remove(lambda j: j.startswith("x"))) == ["x2"]
    assert queue.pop(lambda w: True) is None  # b is still set aside
    queue.unblock("b")
    assert queue.pop(lambda w: True) == ("b", "k1")


async def test_small_webhooks_start_before_a_big_backlog_drains() -> None:
    endpoint = Endpoint(seconds=0.001)
    sender = Sender(endpoint, concurrency=16, cap=8)
    for n in range(1000):
        sender.dispatch("big", f"big{n}", n)
    for w in range(50):
        for n in range(2):
            sender.dispatch(f"small{w}", f"small{w}-{n}", 1000 + 2 * w + n)
    await sender.drained()
    smalls = [i for i, e in enumerate(endpoint.posted) if e.startswith("small")]
    bigs = [i for i, e in enumerate(endpoint.posted) if e.startswith("big")]
    assert len(smalls) == 100 and len(bigs) == 1000
    # The big webhook never held more than its cap: the others' jobs took the other slots
    # and all started while most of its backlog still waited.
    assert max(smalls) < bigs[300]
    assert not endpoint.rejected
    assert sorted(sender.finished) == list(range(1100))


async def test_a_busy_webhook_is_not_held_back_behind_others_jobs_waiting_for_a_slot() -> None:
    # One busy webhook's events alternate with those of 60 quiet ones. Oldest first, each
    # job starts about when it arrived; FIFO by slot with the cap counting the jobs that
    # wait for one had the busy one's queue wait behind everyone else's.
    endpoint = Endpoint(seconds=0.002)
    sender = Sender(endpoint, concurrency=4, cap=2)
    arrival: dict[str, int] = {}
    for n in range(60):
        for wid, event in (("busy", f"busy{n}"), (f"quiet{n}", f"quiet{n}")):
            arrival[event] = len(arrival)
            sender.dispatch(wid, event, arrival[event])
    await sender.drained()
    lag = {e: i - arrival[e] for i, e in enumerate(endpoint.posted)}
    assert len(lag) == 120 and not endpoint.rejected
    assert max(lag[f"busy{n}"] for n in range(60)) <= 8


class Parking(Endpoint):
    """An endpoint whose webhooks named in `hang` answer only once `answer` is set;
    records what was parked."""

    def __init__(self, seconds: float, hang: set[str]) -> None:
        super().__init__(seconds)
        self.hang = {str(uuid.uuid5(uuid.NAMESPACE_URL, w)) for w in hang}
        self.answer = asyncio.Event()
        self.parked: list[str] = []

    async def call(self, prepared: Prepared) -> Outcome:
        if prepared.msg.webhook_id in self.hang:
            self.posted.append(prepared.msg.event_id)
            await self.answer.wait()
            return Outcome(AttemptRow.of(prepared.msg, outcome="succeeded", started_at=_now()))
        return await super().call(prepared)

    async def apply(self, effect: Effect) -> None:
        assert isinstance(effect, Retry) and effect.msg.parked
        self.parked.append(effect.msg.event_id)


async def test_a_saturated_sender_parks_no_webhook_whose_requests_take_the_usual_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two webhooks at their cap, their queues 4x longer than the longest wait allowed: the
    # wait is the sender's (every request takes as long), so parking one would only send
    # it round a delay tier.
    monkeypatch.setattr(scheduler_module, "MAX_QUEUE_WAIT_S", 0.2)
    endpoint = Parking(seconds=0.02, hang=set())
    sender = Sender(endpoint, concurrency=4, cap=2)
    for wid in ("a", "b", "a", "b"):
        sender.dispatch(wid, f"{wid}-first{sender.offset}", 0)
    await until(lambda: sender.scheduler.pending == 0)  # request times remembered
    for n in range(80):
        for wid in ("a", "b"):
            sender.dispatch(wid, f"{wid}{n}", 1 + n)
        if n == 1:
            await asyncio.sleep(0.005)  # the first are in flight, the rest queue
    await sender.drained()
    assert endpoint.parked == [] and len(endpoint.posted) == 164


async def test_a_webhook_far_slower_than_the_others_is_parked_behind_its_cap() -> None:
    endpoint = Parking(seconds=0.001, hang={"dead"})
    sender = Sender(endpoint, concurrency=16, cap=2)
    for n in range(40):
        sender.dispatch(f"fast{n % 4}", f"fast{n}", n)
    await until(lambda: len(endpoint.posted) == 40)
    for n in range(2):
        sender.dispatch("dead", f"dead{n}", 100 + n)  # its two slots, held for good
    await asyncio.sleep(0.5)  # its oldest request has waited 0.5 s: 500x the others'
    for n in range(2, 40):
        sender.dispatch("dead", f"dead{n}", 100 + n)
    await until(lambda: len(endpoint.parked) > 0)
    # A few queue (their wait is short yet); the rest are parked, none posted.
    assert set(endpoint.parked) <= {f"dead{n}" for n in range(2, 40)}
    assert len(endpoint.parked) >= 30
    assert [e for e in endpoint.posted if e.startswith("dead")] == ["dead0", "dead1"]
    endpoint.answer.set()  # the endpoint comes back: what queued is sent, nothing left
    await sender.drained()


class Kafka:
    """A consumer fake: one fetch of the given records, then nothing."""

    def __init__(self, batch: dict[TopicPartition, list[Record]]) -> None:
        self.batch: dict[TopicPartition, list[Record]] | None = batch
        self.paused: set[TopicPartition] = set()
        self.resumed: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[Record]]:
        batch, self.batch = self.batch, None
        await asyncio.sleep(0.01)
        return batch or {}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)
        self.resumed += tps

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    async def commit(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None: ...


async def test_fetched_records_are_taken_on_oldest_first_across_partitions() -> None:
    # One fetch brings partition 0's records (newer) first and partition 1's (older) after;
    # the buffer holds 4: the older ones are taken on first, and a partition whose records
    # wait is paused until they are all taken on.
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    batch = {
        p0: [Record(n, message(f"w{n}", f"p0-{n}"), 100 + n) for n in range(6)],
        p1: [Record(n, message(f"v{n}", f"p1-{n}"), 10 * n) for n in range(6)],
    }
    kafka, gate = Kafka(batch), asyncio.Event()
    endpoint, offsets, stop = Endpoint(gate=gate), Offsets(), asyncio.Event()

    def scheduler(on_finished: OnFinished) -> Scheduler:
        return Scheduler(
            endpoint,
            endpoint,
            concurrency=16,
            per_webhook=4,
            owns=offsets.owns,
            on_finished=on_finished,
            stop=stop,
        )

    consumer = DeliveryConsumer(
        cast(Any, kafka),
        cast(Any, None),
        scheduler,
        config=Consuming(TOPIC, max_pending=4, revoke_wait=0.1, drain_timeout=2.0),
        offsets=offsets,
        stop=stop,
    )
    consumer.assign({p0, p1})
    run = asyncio.create_task(consumer.run())
    await until(lambda: len(endpoint.posted) >= 4)
    await asyncio.sleep(0.02)
    assert endpoint.posted == ["p1-0", "p1-1", "p1-2", "p1-3"]
    assert kafka.paused == {p0, p1}
    gate.set()  # every request answers: the rest is taken on, oldest first
    await until(lambda: len(endpoint.posted) >= 12)
    assert endpoint.posted[4:6] == ["p1-4", "p1-5"]
    assert endpoint.posted[6:] == [f"p0-{n}" for n in range(6)]
    await until(lambda: not kafka.paused)
    stop.set()
    await run
    assert set(kafka.resumed) == {p0, p1}
