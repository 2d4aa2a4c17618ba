"""The sender's hand-off with the broker and the endpoint replaced by fakes: what is handed
off is not also sent here, and a handed-off request schedules no retry of its own.

(`tests/integration/test_sender.py` runs the hand-off against real Kafka; these pin the
interleavings that are hard to provoke there.)
"""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from services.sender import sender as sender_module
from services.sender.sender import Sender
from shared.config import Settings
from shared.core.messages import DeliveryMessage

TP = TopicPartition("hookline.deliveries", 0)
WEBHOOK = "00000000-0000-4000-8000-00000000000a"


class Record:
    def __init__(self, offset: int, msg: DeliveryMessage) -> None:
        self.offset, self.value, self.key = offset, msg.encode(), msg.key


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

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *_: Any) -> None: ...

    def resume(self, *_: Any) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed = dict(offsets)


class Deliverer:
    """Each attempt takes `seconds[event_id]` (0.05 by default) and fails with a retry."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.posted: list[str] = []
        self.followed: list[tuple[str, Any]] = []

    async def attempt(self, msg: DeliveryMessage) -> Any:
        self.posted.append(msg.event_id)
        await asyncio.sleep(self.seconds.get(msg.event_id, 0.05))
        return types.SimpleNamespace(event_id=msg.event_id, retry=msg, dead=None)

    async def follow_up(self, step: Any) -> asyncio.Future[None]:
        self.followed.append((step.event_id, step.retry))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def make(concurrency: int, cap: int, seconds: dict[str, float]) -> Sender:
    settings = types.SimpleNamespace(
        sender_concurrency=concurrency, sender_inflight_per_webhook=cap
    )
    s = Sender(cast(Settings, settings), asyncio.Event(), client_id="unit")
    s._producer = cast(Any, Producer())
    s._consumer = cast(Any, Consumer())
    s._deliverer = cast(Any, Deliverer(seconds))
    s.assign({TP})
    part = s._offsets.parts[TP]
    for n in range(3):
        msg = DeliveryMessage(
            delivery_id=str(uuid.uuid4()),
            webhook_id=WEBHOOK,
            org="o",
            event_id=f"e{n}",
            event_type="push",
            body={},
        )
        s._dispatch(TP, part, cast(Any, Record(n, msg)))
    return s


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender_module, "REVOKE_WAIT_S", 0.2)


async def test_jobs_waiting_for_a_global_slot_are_handed_off_not_sent() -> None:
    s = make(concurrency=1, cap=5, seconds={"e0": 0.6})  # e1, e2 wait for the one slot
    await s.revoke({TP})
    assert sorted(cast(Producer, s._producer).sent) == ["e0", "e1", "e2"]
    await asyncio.sleep(0.8)
    assert cast(Deliverer, s._deliverer).posted == ["e0"]
    assert s._pending == 0


async def test_jobs_queued_behind_the_webhook_cap_are_not_started_meanwhile() -> None:
    # Cap 2: e0 hangs, e1 ends while the hand-off waits for its acks, e2 is queued.
    s = make(concurrency=10, cap=2, seconds={"e0": 1.0, "e1": 0.22})
    await s.revoke({TP})
    await asyncio.sleep(0.2)
    assert "e2" not in cast(Deliverer, s._deliverer).posted
    assert "e2" in cast(Producer, s._producer).sent


async def test_a_handed_off_request_that_fails_schedules_no_retry_of_its_own() -> None:
    s = make(concurrency=10, cap=5, seconds={"e0": 0.5})
    await s.revoke({TP})  # e1, e2 failed (with retries) within the wait; e0 is handed off
    await asyncio.sleep(0.6)
    followed = dict(cast(Deliverer, s._deliverer).followed)
    assert followed["e1"] is not None and followed["e2"] is not None
    assert followed["e0"] is None  # its copy carries the delivery on
    assert cast(Consumer, s._consumer).committed == {TP: 3}
