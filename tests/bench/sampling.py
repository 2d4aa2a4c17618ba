"""Per-process resource samples from /proc, once a second: RSS and CPU time.

The services' RSS is a floor of the issue; CPU time (services, PostgreSQL, Kafka, the
receiver and the whole host) says where a 2-core machine's time went in each phase, and
how much of it other work on the machine took, and how much the hypervisor took from this
virtual machine (steal).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int | None:
    """VmRSS of `pid` from /proc, in kB; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []


def child_pid(pid: int) -> int | None:
    found = children(pid)
    return found[0] if found else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


# The JVM's JIT compiler threads, by the name Linux gives them (15 characters at most).
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def jit_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid`'s JIT compiler threads so far (a JVM's warm-up:
    a fresh Kafka's C2 compiler took over half its CPU in the bench's first minutes)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # the thread ended
        name, fields = raw[raw.index("(") + 1 : raw.rindex(")")], raw.rsplit(")", 1)[1].split()
        if name.startswith(JIT_THREADS):
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def _host_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def host_busy_seconds() -> float:
    """CPU seconds spent not idle by the whole machine (all cores) since boot."""
    parts = _host_times()
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / TICK


def host_steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests while this machine's vCPUs wanted to
    run (all cores) since boot: a window with steal was measured on less than 2 cores."""
    parts = _host_times()
    return parts[7] / TICK if len(parts) > 7 else 0.0


def pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Sampler:
    """Samples named pids every second: RSS series and peaks; CPU-seconds series.

    `groups` are pids whose CPU is summed with their children's (PostgreSQL's backends).
    Kafka's JIT compiler threads are also sampled apart, as `kafka-jit` (a part of `kafka`,
    not beside it)."""

    t0: float
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def sample(self, named: dict[str, int], groups: dict[str, int]) -> None:
        now = round(time.time() - self.t0, 2)
        for name, pid in named.items():
            kb = rss_kb(pid)
            if kb is None:
                continue
            mb = kb / 1024
            self.rss.setdefault(name, []).append((now, round(mb, 1)))
            self.peak_mb[name] = round(max(mb, self.peak_mb.get(name, 0.0)), 1)
            self._cpu(name, now, cpu_seconds(pid))
        for name, pid in groups.items():
            total = sum(c for p in [pid, *children(pid)] if (c := cpu_seconds(p)) is not None)
            self._cpu(name, now, total)
            if name == "kafka":
                self._cpu("kafka-jit", now, jit_seconds(pid))
        self._cpu("host", now, host_busy_seconds())
        self._cpu("steal", now, host_steal_seconds())

    def _cpu(self, name: str, now: float, seconds: float | None) -> None:
        if seconds is not None:
            self.cpu.setdefault(name, []).append((now, round(seconds, 2)))

    async def run(
        self, pids: Callable[[], tuple[dict[str, int], dict[str, int]]], every: float = 1.0
    ) -> None:
        while True:
            self.sample(*pids())
            await asyncio.sleep(every)

    def cpu_share(self, start: float, end: float) -> dict[str, float]:
        """CPU use of each sampled name between two offsets from t0, in % of one core."""
        shares: dict[str, float] = {}
        for name, points in self.cpu.items():
            inside = [p for p in points if start <= p[0] <= end]
            if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
                used = inside[-1][1] - inside[0][1]
                shares[name] = round(100 * used / (inside[-1][0] - inside[0][0]), 1)
        return shares
