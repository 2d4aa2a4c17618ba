"""The bench's output: figures against the issue's floors, a JSON file, a PNG, a table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.observe import ReceiverLog

RSS_FLOOR_MB = 300
IDLE_CPU_FLOOR = 3.0  # % of one core, every Hookline process with PostgreSQL and Kafka
# Sampled processes that are the bench's own, not Hookline's.
BENCH_OWN = ("bench-receiver", "bench-driver", "bench-ceiling")


def hookline_cpu(shares: dict[str, float]) -> float:
    """The CPU share (% of one core) of Hookline's processes, PostgreSQL and Kafka: every
    sampled name but the bench's own and the host total."""
    return round(sum(v for k, v in shares.items() if k not in (*BENCH_OWN, "host")), 1)


@dataclass(frozen=True)
class Row:
    figure: str
    value: float | None
    unit: str
    floor: str
    ok: bool | None  # None: informational, or not measured

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "-" if self.floor == "" else "n/a"
        return "PASS" if self.ok else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "floor": self.floor,
            "verdict": self.verdict,
        }


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _check(value: Any, test: Any) -> bool | None:
    return None if value is None else bool(test(value))


def floors(results: dict[str, Any], rss_peak_mb: dict[str, float]) -> list[Row]:
    """Each figure of the issue "Benchmark and the first performance floor", with verdict."""
    sustained = _get(results, "sustained", "deliveries_per_s")
    ceiling = _get(results, "ceiling", "req_per_s")
    ratio = sustained / ceiling if sustained and ceiling else None
    http_rate = _get(results, "sustained_http", "deliveries_per_s")
    http_ratio = http_rate / ceiling if http_rate and ceiling else None
    p99 = _get(results, "latency", "p99_ms")
    iso = _get(results, "isolation", "ratio")
    idle_cpu = _get(results, "idle", "cpu_percent")
    rows = [
        Row(
            "idle: CPU of all processes",
            idle_cpu,
            "% core",
            f"<= {IDLE_CPU_FLOOR:g}",
            _check(idle_cpu, lambda v: v <= IDLE_CPU_FLOOR),
        ),
        Row(
            "sustained deliveries/s",
            sustained,
            "/s",
            ">= 3000",
            _check(sustained, lambda v: v >= 3000),
        ),
        Row("ceiling (bare aiohttp loop)", ceiling, "req/s", "", None),
        Row(
            "end-to-end / ceiling (half via outbox)",
            round(ratio, 3) if ratio else None,
            "",
            ">= 0.8",
            _check(ratio, lambda v: v >= 0.8),
        ),
        Row(
            "core-s per 1,000 deliveries (sustained)",
            _get(results, "sustained", "core_s_per_1000"),
            "core-s",
            "<= 0.2",
            _check(_get(results, "sustained", "core_s_per_1000"), lambda v: v <= 0.2),
        ),
        Row(
            "sustained deliveries/s, all via HTTP ingest",
            http_rate,
            "/s",
            "",
            None,
        ),
        Row(
            "end-to-end / ceiling (all via HTTP ingest)",
            round(http_ratio, 3) if http_ratio else None,
            "",
            ">= 0.6",
            _check(http_ratio, lambda v: v >= 0.6),
        ),
        Row(
            "core-s per 1,000 deliveries (HTTP ingest)",
            _get(results, "sustained_http", "core_s_per_1000"),
            "core-s",
            "<= 0.2",
            _check(_get(results, "sustained_http", "core_s_per_1000"), lambda v: v <= 0.2),
        ),
        Row(
            "ingest: events/s, one API, 32 clients",
            _get(results, "ingest", "single", "events_per_s"),
            "/s",
            ">= 3000",
            _check(_get(results, "ingest", "single", "events_per_s"), lambda v: v >= 3000),
        ),
        Row(
            "ingest: p99 per request",
            _get(results, "ingest", "single", "p99_ms"),
            "ms",
            "<= 50",
            _check(_get(results, "ingest", "single", "p99_ms"), lambda v: v <= 50),
        ),
        Row(
            "ingest: events/s in batches of 500",
            _get(results, "ingest", "batch", "events_per_s"),
            "/s",
            ">= 20000",
            _check(_get(results, "ingest", "batch", "events_per_s"), lambda v: v >= 20000),
        ),
        Row("p50 at 1,000 deliveries/s", _get(results, "latency", "p50_ms"), "ms", "", None),
        Row("p99 at 1,000 deliveries/s", p99, "ms", "<= 50", _check(p99, lambda v: v <= 50)),
        Row(
            "isolation: fast p99 without",
            _get(results, "isolation", "baseline_p99_ms"),
            "ms",
            "",
            None,
        ),
        Row(
            "isolation: fast p99 with dead hook",
            _get(results, "isolation", "p99_ms"),
            "ms",
            "",
            None,
        ),
        Row("isolation: ratio with/without", iso, "x", "<= 1.2", _check(iso, lambda v: v <= 1.2)),
    ]
    calls = _get(results, "inbound", "accepted_calls_per_s")
    rows += [
        Row(
            "inbound: accepted calls/s (32 clients)",
            calls,
            "/s",
            ">= 2000",
            _check(calls, lambda v: v >= 2000),
        ),
        Row(
            "inbound: call->delivery p50",
            _get(results, "inbound", "paced", "p50_ms"),
            "ms",
            "",
            None,
        ),
        Row(
            "inbound: call->delivery p99",
            _get(results, "inbound", "paced", "p99_ms"),
            "ms",
            "",
            None,
        ),
    ]
    rows += config_scale_rows(results)
    replicas = _get(results, "scale", "replicas") or {}
    for n, rate in sorted(replicas.items()):
        rows.append(Row(f"scale: deliveries/s with {n} sender(s)", rate, "/s", "", None))
    for name, mb in sorted(rss_peak_mb.items()):
        if name in BENCH_OWN:
            rows.append(Row(f"peak RSS {name}", mb, "MB", "", None))
        else:
            rows.append(
                Row(
                    f"peak RSS {name}",
                    mb,
                    "MB",
                    f"<= {RSS_FLOOR_MB}",
                    _check(mb, lambda v: v <= RSS_FLOOR_MB),
                )
            )
    return rows


CONFIG_RSS_FLOOR_MB = 200  # issue 14 item 6: matcher and sender with 10,000 webhooks
TABLE_LOAD_FLOOR_S = 5.0
FANOUT_FLOOR_S = 5.0


def config_scale_rows(results: dict[str, Any]) -> list[Row]:
    """Issue 14 item 6: 10,000 webhooks loaded, held and fanned out (phase config_scale)."""
    if "config_scale" not in results:
        return []
    load = _get(results, "config_scale", "table_load_s")
    matcher = _get(results, "config_scale", "matcher_rss_mb")
    sender = _get(results, "config_scale", "sender_rss_mb")
    fanout = _get(results, "config_scale", "fanout", "last_delivery_s")
    complete = _get(results, "config_scale", "fanout", "missing") is None
    return [
        Row(
            "10k webhooks: table load (slowest)",
            load,
            "s",
            f"<= {TABLE_LOAD_FLOOR_S:g}",
            _check(load, lambda v: v <= TABLE_LOAD_FLOOR_S),
        ),
        Row(
            "10k webhooks: process start -> loaded",
            _get(results, "config_scale", "start_to_loaded_s"),
            "s",
            "",
            None,
        ),
        Row(
            "10k webhooks: matcher peak RSS",
            matcher,
            "MB",
            f"<= {CONFIG_RSS_FLOOR_MB}",
            _check(matcher, lambda v: v <= CONFIG_RSS_FLOOR_MB),
        ),
        Row(
            "10k webhooks: sender peak RSS",
            sender,
            "MB",
            f"<= {CONFIG_RSS_FLOOR_MB}",
            _check(sender, lambda v: v <= CONFIG_RSS_FLOOR_MB),
        ),
        Row(
            "fan-out to 5,000: cold, after restart",
            _get(results, "config_scale", "fanout_cold", "last_delivery_s"),
            "s",
            "",
            None,
        ),
        Row(
            "fan-out to 5,000: deliveries/s",
            _get(results, "config_scale", "fanout", "deliveries_per_s"),
            "/s",
            "",
            None,
        ),
        Row(
            "fan-out to 5,000: event -> last",
            fanout,
            "s",
            f"<= {FANOUT_FLOOR_S:g}",
            # Not every delivery arrived: the time to the last one is unknown, a failure.
            _check(fanout, lambda v: complete and v <= FANOUT_FLOOR_S),
        ),
    ]


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"


def table(rows: list[Row]) -> str:
    lines = [f"{'figure':<40} {'value':>12} {'unit':<6} {'floor':<10} verdict", "-" * 78]
    for r in rows:
        value = _short(r.value)
        lines.append(f"{r.figure:<40} {value:>12} {r.unit:<6} {r.floor:<10} {r.verdict}")
    return "\n".join(lines)


def cpu_table(by_phase: dict[str, dict[str, float]]) -> str:
    """CPU use per phase, % of one core (host = whole machine, other = not ours)."""
    names = sorted({n for shares in by_phase.values() for n in shares if n != "host"})
    short = {n: n.removeprefix("bench-") for n in names}
    header = f"{'cpu % of a core':<16}" + "".join(f"{short[n]:>10}" for n in names)
    lines = [header + f"{'host':>8}{'other':>8}"]
    for phase, shares in by_phase.items():
        ours = sum(shares.get(n, 0.0) for n in names)
        host = shares.get("host", 0.0)
        lines.append(
            f"{phase:<16}"
            + "".join(f"{shares.get(n, 0.0):>10.0f}" for n in names)
            + f"{host:>8.0f}{max(host - ours, 0.0):>8.0f}"
        )
    return "\n".join(lines)


def series(log: ReceiverLog, t0: float) -> dict[str, list[float | None]]:
    """Per second since t0: deliveries/s at the receiver, and p50/p99 of those arrivals."""
    arrivals: list[np.ndarray] = []
    latencies: list[np.ndarray] = []
    for phase in log.phases.values():
        arrivals.append(np.asarray(phase.arrivals) - t0)
        latencies.append(np.asarray(phase.latencies_ms))
    if not arrivals or not sum(a.size for a in arrivals):
        return {"t": [], "deliveries_per_s": [], "p50_ms": [], "p99_ms": []}
    a = np.concatenate(arrivals)
    lat = np.concatenate(latencies)
    seconds = np.floor(a).astype(int)
    top = int(seconds.max()) + 1
    counts = np.bincount(seconds[seconds >= 0], minlength=top)
    p50: list[float | None] = []
    p99: list[float | None] = []
    order = np.argsort(seconds, kind="stable")
    s_sorted, l_sorted = seconds[order], lat[order]
    bounds = np.searchsorted(s_sorted, np.arange(top + 1))
    for s in range(top):
        chunk = l_sorted[bounds[s] : bounds[s + 1]]
        chunk = chunk[chunk > 0]
        if chunk.size:
            lo, hi = np.percentile(chunk, [50, 99])
            p50.append(round(float(lo), 2))
            p99.append(round(float(hi), 2))
        else:
            p50.append(None)
            p99.append(None)
    return {
        "t": list(range(top)),
        "deliveries_per_s": [int(c) for c in counts],
        "p50_ms": p50,
        "p99_ms": p99,
    }


def plot(path: Path, data: dict[str, Any]) -> None:
    """Throughput, latency and RSS over time, with the phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["series"]
    fig, axes = plt.subplots(3, 1, figsize=(13, 10), sharex=True)
    ax_rate, ax_lat, ax_rss = axes
    ax_rate.plot(s["t"], s["deliveries_per_s"], lw=1, color="tab:blue")
    ax_rate.set_ylabel("deliveries/s at receiver")
    t = [x for x, v in zip(s["t"], s["p50_ms"], strict=True) if v is not None]
    ax_lat.plot(t, [v for v in s["p50_ms"] if v is not None], lw=1, label="p50")
    ax_lat.plot(t, [v for v in s["p99_ms"] if v is not None], lw=1, label="p99")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("event→delivery ms")
    ax_lat.axhline(100, color="red", lw=0.8, ls="--", label="p99 floor (100 ms)")
    ax_lat.legend(loc="upper right", fontsize=8)
    for name, points in sorted(data.get("rss_series", {}).items()):
        if points:
            ax_rss.plot([p[0] for p in points], [p[1] for p in points], lw=1, label=name)
    ax_rss.axhline(RSS_FLOOR_MB, color="red", lw=0.8, ls="--")
    ax_rss.set_ylabel("RSS MB")
    ax_rss.set_xlabel("seconds since start")
    ax_rss.legend(loc="upper left", fontsize=7, ncol=4)
    colours = ["#eef", "#efe", "#fee", "#ffe", "#eff", "#fef"]
    for i, (label, start, end) in enumerate(data.get("spans", [])):
        for ax in axes:
            ax.axvspan(start, end, color=colours[i % len(colours)], zorder=0)
        height = 1.01 + 0.05 * (i % 2)
        ax_rate.text(start, height, label, transform=ax_rate.get_xaxis_transform(), fontsize=7)
    fig.suptitle(f"make bench {data.get('started_at', '')}")
    verdicts = [f for f in data.get("floors", []) if f.get("verdict") in ("PASS", "FAIL")]
    if verdicts:
        # The figures with a floor, beside the plots: each with its value and verdict.
        fig.set_figwidth(20)
        fig.tight_layout(rect=(0, 0, 0.64, 1))
        lines = ["figures against their floors", ""] + [
            f"{f['figure'][:40]:<40} {_short(f['value']):>9} {f['unit']:<6} "
            f"{f['floor']:<8} {f['verdict']}"
            for f in verdicts
        ]
        fig.text(0.65, 0.97, "\n".join(lines), va="top", family="monospace", fontsize=7.5)
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
