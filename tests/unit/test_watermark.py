"""The contiguous-offset watermark: out-of-order completion commits only the done prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.watermark import Watermark


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    wm = Watermark()
    for offset in (10, 11, 12, 13):
        wm.dispatch(offset)
    wm.complete(12)
    wm.complete(11)
    assert wm.committable() is None  # 10 is still in flight
    wm.complete(10)
    assert wm.committable() == 13  # 10, 11, 12 done; 13 not
    wm.committed(13)
    assert wm.committable() is None
    wm.complete(13)
    assert wm.committable() == 14
    assert wm.idle


def test_gaps_between_offsets_do_not_stall_the_watermark() -> None:
    wm = Watermark()
    for offset in (5, 9, 20):
        wm.dispatch(offset)
    wm.complete(9)
    wm.complete(5)
    assert wm.committable() == 10
    assert len(wm) == 1


def test_offsets_must_increase() -> None:
    wm = Watermark()
    wm.dispatch(3)
    with pytest.raises(ValueError):
        wm.dispatch(3)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.randoms())
def test_watermark_is_the_first_unfinished_offset(gaps: list[int], rnd: object) -> None:
    offsets: list[int] = []
    current = 0
    for gap in gaps:
        current += gap + 1
        offsets.append(current)
    wm = Watermark()
    for offset in offsets:
        wm.dispatch(offset)
    order = list(offsets)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    done: set[int] = set()
    for offset in order[: len(order) // 2 + 1]:
        wm.complete(offset)
        done.add(offset)
        unfinished = [o for o in offsets if o not in done]
        position = wm.position
        if position is None:
            assert offsets[0] not in done
        else:
            # Everything below the position is done; the position is at most the first
            # unfinished offset (never past it).
            assert all(o in done for o in offsets if o < position)
            if unfinished:
                assert position <= unfinished[0]
                assert position == max(o for o in offsets if o < unfinished[0]) + 1
            else:
                assert position == offsets[-1] + 1


def test_completing_an_offset_twice_changes_nothing() -> None:
    wm = Watermark()
    for offset in (3, 4, 5):
        wm.dispatch(offset)
    wm.complete(3)
    wm.complete(3)  # a hand-off and the job's own end can both report it
    assert wm.position == 4
    wm.complete(5)
    wm.complete(4)
    wm.complete(4)
    assert wm.position == 6 and wm.idle and not wm._done
