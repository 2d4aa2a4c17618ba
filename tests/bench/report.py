"""The bench's output: figures against the issue's floors, a JSON file, a PNG, a table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from services.sender.balance import REBALANCING
from tests.bench.observe import ReceiverLog

RSS_FLOOR_MB = 300
IDLE_CPU_FLOOR = 3.0  # % of one core, every Hookline process with PostgreSQL and Kafka
# Sampled processes that are the bench's own, not Hookline's.
BENCH_OWN = ("bench-receiver", "bench-driver", "bench-ceiling")
# Sampled names that are the machine's totals, not processes: busy time, and the time the
# hypervisor took from this virtual machine's vCPUs (time steal; in % of one core too).
HOST_TOTALS = ("host", "steal")
# Sampled names that are a part of another's CPU: Kafka's JIT compiler threads.
PARTS = ("kafka-jit",)


def hookline_cpu(shares: dict[str, float]) -> float:
    """The CPU share (% of one core) of Hookline's processes, PostgreSQL and Kafka: every
    sampled name but the bench's own and the host total."""
    skip = (*BENCH_OWN, *HOST_TOTALS, *PARTS)
    return round(sum(v for k, v in shares.items() if k not in skip), 1)


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


# Each figure: (name, its dotted path in the results, unit, floor). A floor "" is shown for
# information; "<= x" or ">= x" gives the verdict. "derived" holds the ratios to the ceiling.
FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("machine: a Python loop, per iteration", "setup.machine_loop_ns", "ns", ""),
    ("idle: CPU of all processes", "idle.cpu_percent", "% core", f"<= {IDLE_CPU_FLOOR:g}"),
    ("idle: of it, Kafka's JIT compiler", "idle.kafka_jit_percent", "% core", ""),
    ("sustained deliveries/s", "sustained.deliveries_per_s", "/s", ">= 3000"),
    ("ceiling (bare aiohttp loop)", "ceiling.req_per_s", "req/s", ""),
    ("end-to-end / ceiling (half via outbox)", "derived.outbox_ratio", "", ">= 0.8"),
    ("core-s per 1,000 deliveries (sustained)", "sustained.core_s_per_1000", "core-s", "<= 0.2"),
    (
        "core-s per 1,000: of it, Kafka's JIT compiler",
        "sustained.kafka_jit_core_s_per_1000",
        "core-s",
        "",
    ),
    ("sustained deliveries/s, all via HTTP ingest", "sustained_http.deliveries_per_s", "/s", ""),
    ("end-to-end / ceiling (all via HTTP ingest)", "derived.http_ratio", "", ">= 0.6"),
    (
        "core-s per 1,000 deliveries (HTTP ingest)",
        "sustained_http.core_s_per_1000",
        "core-s",
        "<= 0.2",
    ),
    ("ingest: events/s, one API, 32 clients", "ingest.single.events_per_s", "/s", ">= 3000"),
    ("ingest: p99 per request", "ingest.single.p99_ms", "ms", "<= 50"),
    ("ingest: events/s in batches of 500", "ingest.batch.events_per_s", "/s", ">= 20000"),
    ("p50 at 1,000 deliveries/s", "latency.p50_ms", "ms", ""),
    ("p99 at 1,000 deliveries/s", "latency.p99_ms", "ms", "<= 50"),
    ("isolation: fast p99 without", "isolation.baseline_p99_ms", "ms", ""),
    ("isolation: fast p99 with dead hook", "isolation.p99_ms", "ms", ""),
    ("isolation: ratio with/without", "isolation.ratio", "x", "<= 1.2"),
    ("fairness: median webhook p50", "fairness.median_p50_ms", "ms", ""),
    ("fairness: worst webhook p50", "fairness.max_p50_ms", "ms", ""),
    ("fairness: worst / median webhook p50", "fairness.ratio", "x", "<= 3"),
    ("inbound: accepted calls/s (32 clients)", "inbound.accepted_calls_per_s", "/s", ">= 2000"),
    ("inbound: steal in that window", "inbound.edge.steal_percent", "% core", ""),
    ("inbound: edge CPU per accepted call", "inbound.edge_cpu_us_per_call", "us", ""),
    ("inbound: call->delivery p50", "inbound.paced.p50_ms", "ms", ""),
    ("inbound: call->delivery p99", "inbound.paced.p99_ms", "ms", ""),
)


def verdict(value: float | None, floor: str) -> bool | None:
    """Whether `value` meets `floor` ("<= x" / ">= x"); None when unmeasured or no floor."""
    if value is None or not floor:
        return None
    op, target = floor.split()
    return value <= float(target) if op == "<=" else value >= float(target)


def _ratio(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 3) if part and whole else None


def floors(results: dict[str, Any], rss_peak_mb: dict[str, float]) -> list[Row]:
    """Each figure of the bench's issues, with its verdict."""
    ceiling = _get(results, "ceiling", "req_per_s")
    view = {
        **results,
        "derived": {
            "outbox_ratio": _ratio(_get(results, "sustained", "deliveries_per_s"), ceiling),
            "http_ratio": _ratio(_get(results, "sustained_http", "deliveries_per_s"), ceiling),
        },
    }
    rows = []
    for name, path, unit, floor in FIGURES:
        value = _get(view, *path.split("."))
        rows.append(Row(name, value, unit, floor, verdict(value, floor)))
    # An attempt's timeout: the client gives up within half the timeout again.
    for timeout, took in sorted((_get(results, "timeouts", "took_ms") or {}).items()):
        floor = f"<= {1.5 * float(timeout) * 1000:.0f}"
        rows.append(
            Row(f"a {timeout} s attempt timeout took", took, "ms", floor, verdict(took, floor))
        )
    rows += config_scale_rows(results)
    replicas = _get(results, "scale", "replicas") or {}
    for n, rate in sorted(replicas.items()):
        rows.append(Row(f"scale: deliveries/s with {n} sender(s)", rate, "/s", "", None))
    for name, mb in sorted(rss_peak_mb.items()):
        floor = "" if name in BENCH_OWN else f"<= {RSS_FLOOR_MB}"
        rows.append(Row(f"peak RSS {name}", mb, "MB", floor, verdict(mb, floor)))
    return rows


CONFIG_RSS_FLOOR_MB = 200  # issue 14 item 6: matcher and sender with 10,000 webhooks
TABLE_LOAD_FLOOR_S = 5.0
FANOUT_FLOOR_S = 5.0


def config_scale_rows(results: dict[str, Any]) -> list[Row]:
    """Issue 14 item 6: 10,000 webhooks loaded, held and fanned out (phase config_scale)."""
    if "config_scale" not in results:
        return []
    rss = f"<= {CONFIG_RSS_FLOOR_MB}"
    figures = (
        ("10k webhooks: table load (slowest)", "table_load_s", "s", f"<= {TABLE_LOAD_FLOOR_S:g}"),
        ("10k webhooks: process start -> loaded", "start_to_loaded_s", "s", ""),
        ("10k webhooks: matcher peak RSS", "matcher_rss_mb", "MB", rss),
        ("10k webhooks: sender peak RSS", "sender_rss_mb", "MB", rss),
        ("fan-out to 5,000: cold, after restart", "fanout_cold.last_delivery_s", "s", ""),
        ("fan-out to 5,000: deliveries/s", "fanout.deliveries_per_s", "/s", ""),
    )
    scale = results["config_scale"]
    rows = [
        Row(name, value, unit, floor, verdict(value, floor))
        for name, path, unit, floor in figures
        for value in [_get(scale, *path.split("."))]
    ]
    fanout = _get(scale, "fanout", "last_delivery_s")
    ok = verdict(fanout, f"<= {FANOUT_FLOOR_S:g}")
    if ok and _get(scale, "fanout", "missing") is not None:
        ok = False  # not every delivery arrived: the time to the last one is unknown
    rows.append(Row("fan-out to 5,000: event -> last", fanout, "s", f"<= {FANOUT_FLOOR_S:g}", ok))
    return rows


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"


def late_arrivals(results: dict[str, Any], log: ReceiverLog) -> dict[str, int]:
    """Deliveries a phase counted missing when its drain stopped waiting that the receiver
    got later in the run (a message parked in a retry tier comes back after its wait):
    per phase, how many; each phase's result gains `missing_at_end` and `late`."""
    late: dict[str, int] = {}
    for phase, result in results.items():
        if not isinstance(result, dict) or not result.get("missing") or phase not in log.phases:
            continue
        expected = result.get("expected", result.get("accepted"))  # inbound: its calls
        if expected is None:
            continue
        result["missing_at_end"] = max(0, expected - log.phase(phase).unique)
        result["late"] = result["missing"] - result["missing_at_end"]
        if result["late"]:
            late[phase] = result["late"]
    return late


def rebalances(
    log_dir: Path, spans: list[tuple[str, float, float]], t0: float
) -> list[dict[str, Any]]:
    """The sender group's load-triggered rebalances, from the senders' logs: when (seconds
    since t0), in which phase, and the busiest member's load before and dealt afresh."""
    found: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("bench-sender-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if REBALANCING not in line:
                continue
            try:
                entry = orjson.loads(line)
                at = datetime.fromisoformat(entry["timestamp"]).timestamp() - t0
            except (orjson.JSONDecodeError, KeyError, ValueError):
                continue
            phase = next((label for label, a, b in spans if a <= at <= b), None)
            found.append(
                {
                    "t": round(at, 1),
                    "phase": phase,
                    "sender": path.stem,
                    "busiest": entry.get("busiest"),
                    "dealt_afresh": entry.get("dealt_afresh"),
                }
            )
    return sorted(found, key=lambda r: r["t"])


def table(rows: list[Row]) -> str:
    lines = [f"{'figure':<40} {'value':>12} {'unit':<6} {'floor':<10} verdict", "-" * 78]
    for r in rows:
        value = _short(r.value)
        lines.append(f"{r.figure:<40} {value:>12} {r.unit:<6} {r.floor:<10} {r.verdict}")
    return "\n".join(lines)


def cpu_table(by_phase: dict[str, dict[str, float]]) -> str:
    """CPU use per phase, % of one core (host = whole machine, other = not ours, steal =
    taken from this virtual machine by its hypervisor: the 2 cores were fewer)."""
    names = sorted({n for shares in by_phase.values() for n in shares if n not in HOST_TOTALS})
    short = {n: n.removeprefix("bench-") for n in names}
    header = f"{'cpu % of a core':<16}" + "".join(f"{short[n]:>10}" for n in names)
    lines = [header + f"{'host':>8}{'other':>8}{'steal':>8}"]
    for phase, shares in by_phase.items():
        ours = sum(shares.get(n, 0.0) for n in names if n not in PARTS)
        host = shares.get("host", 0.0)
        lines.append(
            f"{phase:<16}"
            + "".join(f"{shares.get(n, 0.0):>10.0f}" for n in names)
            + f"{host:>8.0f}{max(host - ours, 0.0):>8.0f}{shares.get('steal', 0.0):>8.0f}"
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
