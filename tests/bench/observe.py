"""Follows the receiver's request log: per-phase unique deliveries, latencies, rates."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class PhaseLog:
    """Deliveries of one phase's events, first arrival of each delivery id only."""

    name: str
    arrivals: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    path_of: list[str] = field(default_factory=list)  # beside latencies_ms

    def p50_by_path(self) -> dict[str, float]:
        """Each webhook path's median latency in ms: how evenly the load was served."""
        lat, paths = np.asarray(self.latencies_ms), np.asarray(self.path_of)
        return {
            path: round(float(np.percentile(lat[(paths == path) & (lat > 0)], 50)), 1)
            for path in sorted(self.paths)
            if np.any((paths == path) & (lat > 0))
        }

    @property
    def unique(self) -> int:
        return len(self.arrivals)

    def count_between(self, t0: float, t1: float) -> int:
        a = np.asarray(self.arrivals)
        return int(np.count_nonzero((a >= t0) & (a < t1)))

    def latency(
        self,
        t0: float | None = None,
        t1: float | None = None,
        *,
        missing: int = 0,
        missing_at_least_ms: float = 0.0,
    ) -> dict[str, float | int | bool]:
        """p50/p90/p99/max in ms of deliveries arriving in [t0, t1) (all when not given).

        `missing` deliveries that never arrived count as `missing_at_least_ms` (how long they
        had waited when we stopped waiting), which makes the percentiles lower bounds."""
        lat = np.asarray(self.latencies_ms)
        if t0 is not None or t1 is not None:
            a = np.asarray(self.arrivals)
            keep = (a >= (t0 if t0 is not None else -np.inf)) & (a < (t1 or np.inf))
            lat = lat[keep]
        lat = lat[lat > 0]
        count = int(lat.size)
        if missing > 0:
            lat = np.concatenate([lat, np.full(missing, max(missing_at_least_ms, 0.0))])
        if lat.size == 0:
            return {"count": 0}
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        return {
            "count": count,
            "missing_counted_as_ms": round(missing_at_least_ms, 1) if missing else 0,
            "lower_bound": missing > 0,
            "p50_ms": round(float(p50), 2),
            "p90_ms": round(float(p90), 2),
            "p99_ms": round(float(p99), 2),
            "max_ms": round(float(lat.max()), 2),
        }


class ReceiverLog:
    """Tails the receiver's file; `poll()` parses what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.phases: dict[str, PhaseLog] = {}
        self.per_second: Counter[int] = Counter()
        self.hang_connections = 0
        self.malformed = 0

    def phase(self, name: str) -> PhaseLog:
        return self.phases.setdefault(name, PhaseLog(name))

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        if not chunk:
            return 0
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._line(raw.decode(errors="replace"))
        return len(lines)

    def _line(self, line: str) -> None:
        parts = line.split(" ")
        if parts[0] == "H":
            self.hang_connections += 1
            return
        if len(parts) != 6:
            self.malformed += 1
            return
        arrival, sent_at = float(parts[0]), float(parts[1])
        phase, path, delivery = parts[2], parts[3], parts[4]
        log = self.phase(phase)
        if delivery in log.ids:
            log.duplicates += 1
            return
        log.ids.add(delivery)
        log.arrivals.append(arrival)
        log.latencies_ms.append((arrival - sent_at) * 1000.0 if sent_at > 0 else -1.0)
        log.paths[path] += 1
        log.path_of.append(path)
        self.per_second[int(arrival)] += 1

    def rate(self, now: float, seconds: int = 3) -> float:
        """Deliveries/s over the last `seconds` whole seconds before `now`."""
        end = int(now)
        return sum(self.per_second[s] for s in range(end - seconds, end)) / seconds

    async def follow(self, every: float = 0.25) -> None:
        while True:
            self.poll()
            await asyncio.sleep(every)
