"""Per-webhook caps: queueing beyond the cap, the backlog estimate, handing slots on
(oldest first among the webhooks below their cap)."""

from __future__ import annotations

import pytest

from services.sender.slots import MAX_QUEUED_PER_WEBHOOK, Slots


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_webhook_holds_at_most_cap_slots_and_its_queue_passes_them_on() -> None:
    slots: Slots[str] = Slots(2, Clock())
    for _ in range(2):
        assert slots.free("w")
        slots.take("w")
    assert not slots.free("w") and slots.free("other")
    slots.enqueue("w", "c", 1)
    slots.enqueue("w", "d", 2)
    dropped: list[str] = []
    assert slots.next(usable=lambda j: True, dropped=dropped.append) is None  # w is at its cap
    slots.release("w", "a")
    # "c" is no longer ours (its partition was revoked): dropped; the slot goes to "d".
    nxt = slots.next(usable=lambda j: j != "c", dropped=dropped.append)
    assert nxt == "d" and dropped == ["c"] and slots.running("w") == 2
    slots.release("w", "b")
    assert slots.next(usable=lambda j: True, dropped=dropped.append) is None
    assert slots.running("w") == 1 and slots.queued("w") == 0 and slots.waiting == 0


def test_the_oldest_job_of_a_webhook_below_its_cap_starts_next() -> None:
    slots: Slots[str] = Slots(1, Clock())
    slots.take("busy")  # at its cap
    slots.enqueue("busy", "b-oldest", 1)
    slots.enqueue("other", "o-newer", 5)
    slots.enqueue("third", "t-older", 3)

    def start() -> str | None:
        return slots.next(usable=lambda j: True, dropped=lambda j: None)

    # "busy" holds the oldest job but is at its cap: the next oldest of the others first.
    assert start() == "t-older"
    slots.release("busy", "x")
    assert start() == "b-oldest"  # its cap has room again, and its head is the oldest
    assert start() == "o-newer"
    assert start() is None


def test_expected_wait_grows_with_the_oldest_request_and_what_was_parked() -> None:
    clock = Clock()
    slots: Slots[str] = Slots(4, clock)
    assert slots.expected_wait("w", 10) == 0.0  # nothing in flight: no evidence of slowness
    slots.take("w")
    slots.began("w", "a")
    clock.now += 2.0  # its oldest request has waited 2 s
    assert slots.expected_wait("w", 8) == 8 * 2.0 / 4
    slots.park("w")
    slots.park("w")
    assert slots.expected_wait("w", 8) == 10 * 2.0 / 4
    slots.unpark("w")
    assert slots.parked("w") == 1
    assert slots.expected_wait("w", MAX_QUEUED_PER_WEBHOOK) == float("inf")


def test_a_wave_of_timeouts_ending_together_leaves_a_remembered_duration() -> None:
    clock = Clock()
    slots: Slots[str] = Slots(2, clock)
    for job in ("a", "b"):
        slots.take("w")
        slots.began("w", job)
    clock.now += 10.0  # both time out together
    for job in ("a", "b"):
        slots.release("w", job)
    slots.take("w")
    slots.began("w", "c")  # a fresh request: its own age is ~0
    assert slots.expected_wait("w", 2) == 2 * 10.0 / 2


def test_remove_takes_selected_jobs_out_of_every_queue() -> None:
    slots: Slots[str] = Slots(1, Clock())
    for n, (wid, job) in enumerate((("w", "a1"), ("w", "b1"), ("v", "a2"))):
        slots.enqueue(wid, job, n)
    assert sorted(slots.remove(lambda j: j.startswith("a"))) == ["a1", "a2"]
    assert slots.queued("w") == 1 and slots.queued("v") == 0
    assert slots.next(usable=lambda j: True, dropped=lambda j: None) == "b1"


def test_request_times_of_webhooks_gone_quiet_are_not_kept_for_good() -> None:
    from services.sender.slots import MAX_REMEMBERED

    clock = Clock()
    slots: Slots[str] = Slots(2, clock)
    slots.take("busy")
    slots.began("busy", "held")  # in flight throughout
    for n in range(MAX_REMEMBERED * 2):
        wid = f"w{n}"
        slots.take(wid)
        slots.began(wid, "job")
        clock.now += 0.001
        slots.release(wid, "job")
    assert slots.remembered() <= MAX_REMEMBERED + 1
    slots.release("busy", "held")
    assert slots.expected_wait("busy", 0) == 0.0  # nothing in flight, nothing queued


def test_slow_is_judged_against_the_median_webhook_and_refreshed_each_second() -> None:
    from services.sender.slots import SLOW_FACTOR, TYPICAL_EVERY_S

    clock = Clock()
    slots: Slots[str] = Slots(4, clock)
    assert slots.typical() == 0.0 and not slots.slow("w")  # nothing in flight, no evidence
    # Nine webhooks whose requests took 0.2 s (a busy event loop), one that took 10 s.
    for n, took in enumerate([0.2] * 9 + [10.0]):
        slots.take(f"w{n}")
        slots.began(f"w{n}", "job")
        clock.now += took
        slots.release(f"w{n}", "job")
    clock.now += TYPICAL_EVERY_S
    assert slots.typical() == pytest.approx(0.2)
    slots.take("w9")
    slots.began("w9", "again")  # its remembered 10 s counts from the first moment
    assert slots.slow("w9")
    slots.take("w0")
    slots.began("w0", "again")
    clock.now += 0.2 * SLOW_FACTOR - 0.01  # as slow as everyone, however long its queue
    assert not slots.slow("w0")
    clock.now += 0.02
    assert slots.slow("w0")  # past SLOW_FACTOR times the median
    # The median is not computed again within the second: a wave of slow requests
    # ending now moves it only at the next refresh.
    for n in range(1, 9):
        slots.take(f"w{n}")
        slots.began(f"w{n}", "slow")
    clock.now += 5.0
    for n in range(1, 9):
        slots.release(f"w{n}", "slow")
    assert slots.typical() > 0.2  # a second passed: refreshed
    before = slots.typical()
    slots.take("w1")
    slots.began("w1", "x")
    clock.now += 0.5
    slots.release("w1", "x")
    assert slots.typical() == before  # within the second: unchanged
