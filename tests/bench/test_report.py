"""The bench's bookkeeping on synthetic data: log parsing, percentiles, floors, plot."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from services.sender.balance import REBALANCING
from tests.bench import brokerloss, report, sampling
from tests.bench.observe import ReceiverLog


def write_log(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(lines))


def test_log_counts_unique_deliveries_and_latency(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    t = 1_700_000_000.0
    lines = [
        f"{t + i / 100:.6f} {t + i / 100 - 0.010:.6f} p /hook/{i % 2} d{i} e{i}\n"
        for i in range(100)
    ]
    lines.append(f"{t + 2:.6f} {t:.6f} p /hook/0 d5 e5\n")  # a duplicate delivery
    lines.append("H 1.0\n")
    write_log(path, lines[:50])
    log = ReceiverLog(path)
    path.write_text("".join(lines[:50]) + lines[50][:10])  # a line cut mid-write
    log.poll()
    assert log.phase("p").unique == 50
    with open(path, "a") as f:
        f.write(lines[50][10:] + "".join(lines[51:]))
    log.poll()
    phase = log.phase("p")
    assert phase.unique == 100 and phase.duplicates == 1 and log.hang_connections == 1
    assert phase.paths == {"/hook/0": 50, "/hook/1": 50}
    lat = phase.latency()
    assert 9.9 < lat["p50_ms"] < 10.1 and 9.9 < lat["p99_ms"] < 10.1
    assert phase.count_between(t, t + 0.5) == 50
    bounded = phase.latency(missing=10, missing_at_least_ms=5000)
    assert bounded["lower_bound"] and bounded["p99_ms"] == 5000


def test_floors_mark_pass_fail_and_unmeasured() -> None:
    results = {
        "sustained": {"deliveries_per_s": 3500.0},
        "ceiling": {"req_per_s": 20000.0},
        "latency": {"p50_ms": 20.0, "p99_ms": 150.0},
        "timeouts": {"took_ms": {"0.5": 510.0, "1.0": 1600.0}},
    }
    rows = {
        r.figure: r for r in report.floors(results, {"bench-sender-1": 120.0, "bench-api-1": 400.0})
    }
    assert rows["sustained deliveries/s"].verdict == "PASS"
    assert rows["end-to-end / ceiling (half via outbox)"].verdict == "FAIL"  # 0.175 < 0.8
    assert rows["p99 at 1,000 deliveries/s"].verdict == "FAIL"
    assert rows["isolation: ratio with/without"].verdict == "n/a"
    assert rows["peak RSS bench-sender-1"].verdict == "PASS"
    assert rows["peak RSS bench-api-1"].verdict == "FAIL"
    assert rows["ingest: events/s, one API, 32 clients"].verdict == "n/a"
    assert rows["a 0.5 s attempt timeout took"].verdict == "PASS"
    assert rows["a 1.0 s attempt timeout took"].verdict == "FAIL"  # 1600 > 1500
    assert rows["fairness: worst / median webhook p50"].verdict == "n/a"
    fair = {r.figure: r for r in report.floors({"fairness": {"ratio": 3.4}}, {})}
    assert fair["fairness: worst / median webhook p50"].verdict == "FAIL"
    fair = {r.figure: r for r in report.floors({"fairness": {"ratio": 1.2}}, {})}
    assert fair["fairness: worst / median webhook p50"].verdict == "PASS"
    assert "FAIL" in report.table(list(rows.values()))


def test_issue_14_figures_against_their_targets() -> None:
    results = {
        "setup": {"machine_loop_ns": 119.0},
        "idle": {"cpu_percent": 2.5},
        "ceiling": {"req_per_s": 5000.0},
        "sustained": {"deliveries_per_s": 4100.0, "core_s_per_1000": 0.25},
        "sustained_http": {"deliveries_per_s": 2900.0, "core_s_per_1000": 0.19},
        "ingest": {
            "single": {"events_per_s": 3100.0, "p99_ms": 61.0},
            "batch": {"events_per_s": 19000.0},
        },
    }
    rows = {r.figure: r for r in report.floors(results, {})}
    verdicts = {name: rows[name].verdict for name in rows if rows[name].verdict != "n/a"}
    assert rows["machine: a Python loop, per iteration"].value == 119.0
    assert verdicts == {
        "machine: a Python loop, per iteration": "-",
        "idle: CPU of all processes": "PASS",
        "idle: of it, Kafka's JIT compiler": "-",
        "sustained deliveries/s": "PASS",
        "end-to-end / ceiling (half via outbox)": "PASS",  # 0.82
        "core-s per 1,000 deliveries (sustained)": "FAIL",
        "core-s per 1,000: of it, Kafka's JIT compiler": "-",
        "sustained deliveries/s, all via HTTP ingest": "-",
        "end-to-end / ceiling (all via HTTP ingest)": "FAIL",  # 0.58
        "core-s per 1,000 deliveries (HTTP ingest)": "PASS",
        "ingest: events/s, one API, 32 clients": "PASS",
        "ingest: p99 per request": "FAIL",
        "ingest: events/s in batches of 500": "FAIL",
        "ceiling (bare aiohttp loop)": "-",
        "p50 at 1,000 deliveries/s": "-",
        "isolation: fast p99 without": "-",
        "isolation: fast p99 with dead hook": "-",
        "fairness: median webhook p50": "-",
        "fairness: worst webhook p50": "-",
        "inbound: steal in that window": "-",
        "inbound: edge CPU per accepted call": "-",
        "inbound: call->delivery p50": "-",
        "inbound: call->delivery p99": "-",
    }


def test_hookline_cpu_leaves_out_the_bench_and_the_host() -> None:
    shares = {
        "bench-sender-1": 1.5,
        "kafka": 6.0,
        "kafka-jit": 2.5,  # a part of kafka's, not beside it
        "postgres": 0.5,
        "bench-driver": 9.0,
        "bench-receiver": 3.0,
        "host": 120.0,
        "steal": 30.0,
    }
    assert report.hookline_cpu(shares) == 8.0


def test_cpu_table_shows_steal_apart_from_the_processes() -> None:
    table = report.cpu_table(
        {"inbound-edge": {"bench-inbound-1": 90.0, "postgres": 40.0, "host": 150.0, "steal": 36.0}}
    )
    header, row = table.splitlines()
    assert header.split() == [
        "cpu",
        "%",
        "of",
        "a",
        "core",
        "inbound-1",
        "postgres",
        "host",
        "other",
        "steal",
    ]
    # other = host - ours (130): steal is not one of the processes
    assert row.split() == ["inbound-edge", "90", "40", "150", "20", "36"]


def test_cpu_table_counts_kafkas_jit_within_kafka() -> None:
    table = report.cpu_table({"idle": {"kafka": 6.0, "kafka-jit": 4.0, "host": 10.0}})
    header, row = table.splitlines()
    assert header.split()[-5:] == ["kafka", "kafka-jit", "host", "other", "steal"]
    assert row.split() == ["idle", "6", "4", "10", "4", "0"]  # other = 10 - 6


def test_jit_seconds_sums_the_threads_named_as_a_jvms_compilers() -> None:
    assert sampling.jit_seconds(os.getpid()) == 0.0  # no thread of the runner is named so
    release = threading.Event()
    spun: list[threading.Event] = []

    def spin(name: str) -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name)
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun[-1 if name.startswith("C2") else 0].set()
        release.wait(10)

    spun += [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=spin, args=(n,)) for n in ("data-plane-kafka", "C2 CompilerThread0")
    ]
    for t in threads:
        t.start()
    try:
        assert all(e.wait(10) for e in spun)
        measured = sampling.jit_seconds(os.getpid())
    finally:
        release.set()
        for t in threads:
            t.join()
    assert measured is not None and 0.25 <= measured <= 0.5  # the compiler's 0.3 s alone
    assert sampling.jit_seconds(2**22 + 7) is None  # no such process


def test_sampler_records_the_hosts_steal(tmp_path: Path) -> None:
    sampler = sampling.Sampler(t0=0.0)
    sampler.sample({}, {})
    assert [name for name in sampler.cpu] == ["host", "steal"]
    assert sampler.cpu["steal"][0][1] >= 0.0


def test_series_and_plot(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    t0 = 1_700_000_000.0
    write_log(
        path, [f"{t0 + i / 10:.6f} {t0 + i / 10 - 0.05:.6f} p /h d{i} e{i}\n" for i in range(50)]
    )
    log = ReceiverLog(path)
    log.poll()
    s = report.series(log, t0)
    assert s["deliveries_per_s"] == [10, 10, 10, 10, 10]
    assert all(49 < v < 51 for v in s["p99_ms"] if v is not None)
    png = tmp_path / "plot.png"
    report.plot(
        png,
        {"series": s, "rss_series": {"a": [(0.0, 10.0), (4.0, 12.0)]}, "spans": [("p", 0.0, 5.0)]},
    )
    assert png.stat().st_size > 10_000
    # With floors, their figures and verdicts are drawn beside the plots.
    rows = report.floors({"config_scale": {"table_load_s": 0.4, "fanout": {}}}, {"x": 90.0})
    report.plot(
        png,
        {"series": s, "rss_series": {}, "spans": [], "floors": [r.to_dict() for r in rows]},
    )
    assert png.stat().st_size > 10_000


def test_profile_table_ranks_by_own_time(tmp_path: Path) -> None:
    import cProfile

    from tests.bench.runner import top_functions

    def busy() -> int:
        return sum(i * i for i in range(200_000))

    profiler = cProfile.Profile()
    profiler.runcall(busy)
    path = tmp_path / "p.pstats"
    profiler.dump_stats(path)
    lines = top_functions(str(path), limit=3)
    assert lines[0].split()[:2] == ["own", "s"]
    # The generator and sum() share the work (which leads depends on the machine's load);
    # the table is ranked by own time, highest first, and shows no negative count.
    assert len(lines) == 4 and any("<genexpr>" in line for line in lines[1:3])
    own = [float(line.split()[0]) for line in lines[1:]]
    assert own == sorted(own, reverse=True)
    assert all("-" not in line.split()[0] for line in lines[1:])


def test_median_latency_per_webhook_path(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    t = 1_700_000_000.0
    lines = [f"{t + i:.6f} {t + i - 0.010:.6f} p /hook/0 a{i} e{i}\n" for i in range(5)]
    lines += [f"{t + i:.6f} {t + i - 2.0:.6f} p /hook/1 b{i} e{i}\n" for i in range(5)]
    write_log(path, lines)
    log = ReceiverLog(path)
    log.poll()
    assert log.phase("p").p50_by_path() == {"/hook/0": 10.0, "/hook/1": 2000.0}


def test_webhook_partitions_follow_the_producers_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from tests.bench.phases import hook_partitions

    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(20)]
    every = list(range(12))
    expected = [DefaultPartitioner()(i.encode(), every, every) for i in ids]
    assert hook_partitions(ids) == expected and len(set(expected)) > 1


def test_fairness_compares_the_worst_webhook_p50_with_the_median() -> None:
    from tests.bench.fairness import HOT, repo_of, summary

    shares = [repo_of(n) for n in range(1000)]
    assert shares.count(HOT) == 500 and len(set(shares)) == 100
    by_hook = {f"/hook/fair/{r}/0": (100.0 + r, 5) for r in range(1, 10)}
    by_hook["/hook/fair/0/0"] = (520.0, 5)  # the hot repo's webhook, slowest
    by_hook["/hook/fair/5/9"] = (9999.0, 2)  # too few deliveries to count
    figures = summary(by_hook)
    assert figures["hooks_measured"] == 10 and figures["hooks_too_few_deliveries"] == 1
    assert figures["median_p50_ms"] == 105.5 and figures["max_p50_ms"] == 520.0
    assert figures["ratio"] == round(520.0 / 105.5, 3) and figures["worst_hook"] == "/hook/fair/0/0"


def test_config_scale_rows_against_issue_14_item_6() -> None:
    results: dict[str, Any] = {
        "config_scale": {
            "table_load_s": 1.2,
            "start_to_loaded_s": 3.4,
            "matcher_rss_mb": 150.0,
            "sender_rss_mb": 210.0,
            "fanout_cold": {"last_delivery_s": 7.0},
            "fanout": {"last_delivery_s": 4.0},
        }
    }
    rows = {r.figure: r for r in report.floors(results, {})}
    assert rows["10k webhooks: table load (slowest)"].verdict == "PASS"
    assert rows["10k webhooks: matcher peak RSS"].verdict == "PASS"
    assert rows["10k webhooks: sender peak RSS"].verdict == "FAIL"  # 210 > 200
    assert rows["fan-out to 5,000: event -> last"].verdict == "PASS"
    assert rows["fan-out to 5,000: cold, after restart"].verdict == "-"  # informational
    # Deliveries missing when the phase gave up: the time to the last one is not known.
    results["config_scale"]["fanout"]["missing"] = 3
    rows = {r.figure: r for r in report.floors(results, {})}
    assert rows["fan-out to 5,000: event -> last"].verdict == "FAIL"
    assert not any(r.figure.startswith("10k") for r in report.floors({}, {}))


def test_opt_in_phases_run_only_when_named() -> None:
    from tests.bench import runner

    default = runner.parse_args([]).phase_list
    assert default[0] == "setup" and "config_scale" not in default and "brokerloss" not in default
    named = runner.parse_args(["--phases", "ceiling,config_scale"]).phase_list
    assert named == ["setup", "ceiling", "config_scale"]


async def test_brokerloss_counts_late_deliveries_apart_from_missing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window's drain gives up on deliveries parked in a delay tier; the phase waits for
    them once more before it calls anything missing (and breaks the run only for those)."""
    path = tmp_path / "requests.log"
    t = 1_700_000_000.0
    write_log(path, [f"{t:.6f} {t:.6f} steady /hook/0 d{i} e{i}\n" for i in range(8)])
    write_log(path, [f"{t:.6f} {t:.6f} two-brokers /hook/0 b{i} f{i}\n" for i in range(4)])
    bench = SimpleNamespace(log=ReceiverLog(path), broken=[])
    bench.log.poll()
    figures = [
        {"window": "steady", "expected": 10, "delivered": 8, "missing": 2},
        {"window": "two-brokers", "expected": 5, "delivered": 4, "missing": 1},
    ]
    monkeypatch.setattr(brokerloss, "LATE_WAIT_S", 3.0)
    # One of steady's two arrives a moment later, out of a delay tier; the rest never do.
    write_log(path, [f"{t + 70:.6f} {t:.6f} steady /hook/0 d8 e8\n"])
    await brokerloss._late(bench, figures)  # type: ignore[arg-type]
    assert figures[0] == {
        "window": "steady",
        "expected": 10,
        "delivered": 9,
        "missing": 1,
        "late": 1,
    }
    assert figures[1]["missing"] == 1 and not figures[1].get("late")
    assert [b.split(":")[0] for b in bench.broken] == [
        "brokerloss steady",
        "brokerloss two-brokers",
    ]


def test_the_edges_cpu_per_call_comes_from_its_window_and_its_windows_calls() -> None:
    from tests.bench.runner import inbound_edge_cpu

    sampler = sampling.Sampler(t0=0.0)
    # bench-inbound-1 used 0.9 core-s a second from 10 s to 25 s: 13.5 core-s in all
    sampler.cpu["bench-inbound-1"] = [(float(t), 0.9 * t) for t in range(0, 31)]
    results = {
        "inbound": {
            "edge_windows": [{"accepted": 10_000}, {"accepted": 12_000}, {"accepted": 5_000}]
        }
    }
    bench = SimpleNamespace(
        spans=[("inbound", 5.0, 40.0), ("inbound-edge", 10.0, 25.0)], results=results
    )
    inbound_edge_cpu(bench, sampler)  # type: ignore[arg-type]
    assert results["inbound"]["edge_cpu_percent"] == 90.0
    assert results["inbound"]["edge_cpu_us_per_call"] == 500  # 13.5 s / 27,000 calls
    rows = {r.figure: r for r in report.floors(results, {})}
    assert rows["inbound: edge CPU per accepted call"].value == 500


def test_deliveries_missing_at_a_drain_that_arrive_later_are_late_not_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "requests.log"
    t = 1_700_000_000.0
    write_log(path, [f"{t:.6f} {t:.6f} sustained /hook/0 d{i} e{i}\n" for i in range(8)])
    log = ReceiverLog(path)
    log.poll()
    results: dict[str, Any] = {
        "sustained": {"expected": 10, "delivered": 8, "missing": 2},
        "latency": {"expected": 3, "delivered": 3, "missing": 0},
        "ceiling": {"req_per_s": 1.0},
        "inbound": {"accepted": 5, "delivered": 4, "missing": 1},
    }
    # One of the two comes back from a retry tier after the drain gave up; one never does.
    write_log(path, [f"{t + 40:.6f} {t:.6f} sustained /hook/0 d8 e8\n"])
    write_log(path, [f"{t:.6f} {t:.6f} inbound /hook/inbound c{i} g{i}\n" for i in range(5)])
    log.poll()
    assert report.late_arrivals(results, log) == {"sustained": 1, "inbound": 1}
    assert results["inbound"]["missing_at_end"] == 0
    assert results["sustained"] == {
        "expected": 10,
        "delivered": 8,
        "missing": 2,
        "missing_at_end": 1,
        "late": 1,
    }
    assert "late" not in results["latency"]


def test_rebalances_are_read_from_the_senders_logs_and_placed_in_their_phase(
    tmp_path: Path,
) -> None:
    t0 = 1_800_000_000.0

    def line(at: float, event: str, **kw: Any) -> str:
        stamp = datetime.fromtimestamp(t0 + at, UTC).isoformat().replace("+00:00", "Z")
        return orjson.dumps({"event": event, "timestamp": stamp, **kw}).decode()

    (tmp_path / "bench-sender-1.log").write_text(
        "\n".join(
            [
                line(5.0, "sender partitions dealt"),
                line(61.5, REBALANCING, busiest=1902.1, dealt_afresh=1234.2),
                "aiokafka.consumer.group_coordinator Heartbeat failed",
            ]
        )
    )
    (tmp_path / "bench-sender-2.log").write_text(
        line(260.0, REBALANCING, busiest=1937.6, dealt_afresh=1325.8)
    )
    (tmp_path / "bench-matcher-1.log").write_text(line(70.0, REBALANCING))
    spans = [("sustained", 49.6, 123.3), ("fairness", 248.4, 288.6)]
    assert report.rebalances(tmp_path, spans, t0) == [
        {
            "t": 61.5,
            "phase": "sustained",
            "sender": "bench-sender-1",
            "busiest": 1902.1,
            "dealt_afresh": 1234.2,
        },
        {
            "t": 260.0,
            "phase": "fairness",
            "sender": "bench-sender-2",
            "busiest": 1937.6,
            "dealt_afresh": 1325.8,
        },
    ]
