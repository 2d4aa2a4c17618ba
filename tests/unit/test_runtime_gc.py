"""Every service tunes the cyclic collector at start (shared.runtime.tune_gc)."""

from __future__ import annotations

import gc

import orjson

from shared.runtime import GC_THRESHOLD, tune_gc


def test_tune_gc_freezes_the_start_up_heap_and_raises_the_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLD
        assert gc.get_freeze_count() > 1000  # this test process's modules and classes
        # 20,000 containers parsed: 2 collections at most (at CPython's 700, 32).
        body = orjson.dumps([{"a": [{"b": n}], "c": {"d": [n]}} for n in range(5000)])
        young = gc.get_stats()[0]["collections"]
        orjson.loads(body)
        assert gc.get_stats()[0]["collections"] - young <= 2
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
