"""`make bench`: starts the bench's infra, the services and the receiver, runs the phases,
writes `.hookline/bench/<timestamp>.json` + `.png`, prints a table against the floors.

Exits 0 when the pipeline worked (even if a floor fails: it is a measurement), 1 when it
is broken (nothing delivered, a service died), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared.db import create_pool
from tests.bench import report
from tests.bench.brokerloss import brokerloss
from tests.bench.cluster import (
    BENCH_HOME,
    PG_PORT,
    BenchInfra,
    Cluster,
    free_port,
    profiler_wrapper,
    service_env,
)
from tests.bench.config_scale import config_scale
from tests.bench.fairness import fairness
from tests.bench.inbound import inbound
from tests.bench.ingest import ingest
from tests.bench.load import Api, Ingest
from tests.bench.observe import ReceiverLog
from tests.bench.phases import ORDER, PHASES, QUICK, Bench, Plan, fmt, say
from tests.bench.sampling import Sampler, child_pid, pid_from_file
from tests.infra import ROOT

OUT_DIR = ROOT / ".hookline" / "bench"
PHASES["inbound"] = inbound  # registered here: tests.bench.inbound builds on phases
PHASES["ingest"] = ingest
PHASES["fairness"] = fairness
# opt-in: 10,000 webhooks made through the API (about 3 minutes here), two restarts and a
# fan-out of 5,000
PHASES["config_scale"] = config_scale
PHASES["brokerloss"] = brokerloss  # opt-in: its own three-node cluster, about 3 minutes
OPT_IN = ("config_scale", "brokerloss")
DEFAULT = [p for p in ORDER if p not in OPT_IN]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke run")
    parser.add_argument(
        "--phases",
        default=",".join(DEFAULT),
        help=f"comma-separated subset of {','.join(ORDER)} (setup always runs; default: all"
        f" but {' and '.join(OPT_IN)})",
    )
    parser.add_argument(
        "--profile",
        choices=["sender", "matcher", "relay", "api", "inbound"],
        help="run one replica of this service under a profiler",
    )
    parser.add_argument(
        "--keep-infra", action="store_true", help="leave PostgreSQL and Kafka running at the end"
    )
    parser.add_argument(
        "--reuse-state",
        action="store_true",
        help="keep the data of earlier runs (default: a fresh PostgreSQL and Kafka each run)",
    )
    parser.add_argument("--senders", type=int, default=int(os.environ.get("HOOKLINE_SENDERS", "2")))
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(unknown)}; known: {', '.join(ORDER)}")
    args.phase_list = ["setup"] + [p for p in ORDER if p in phases and p != "setup"]
    return args


class ReceiverProcess:
    def __init__(self, out: Path, log_dir: Path) -> None:
        self.port, self.hang_port = free_port(), free_port()
        self.out = out
        self.log_path = log_dir / "bench-receiver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.receiver",
                    "--port",
                    str(self.port),
                    "--hang-port",
                    str(self.hang_port),
                    "--out",
                    str(self.out),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def progress(b: Bench, every: float = 3.0) -> None:
    """One line every few seconds: phase, elapsed, deliveries/s, p99 so far."""
    warned: set[str] = set()
    while True:
        await asyncio.sleep(every)
        now = time.time()
        log = b.log.phase(b.current)
        lat = log.latency() if log.unique else {}
        backlog = b.backlog(b.current) if b.ingest.of(b.current).accepted else 0
        say(
            f"{b.current:<12} run {now - b.t0:5.0f}s  phase {now - b.phase_started:4.0f}s  "
            f"{fmt(b.log.rate(now)):>6} deliveries/s  p99 {lat.get('p99_ms', '-')} ms  "
            f"delivered {fmt(log.unique)}  backlog {fmt(max(backlog, 0))} ev"
        )
        for p in b.cluster.dead():
            if p.instance not in warned:
                warned.add(p.instance)
                say(
                    f"WARNING: {p.instance} exited (code {p.proc.returncode if p.proc else '?'}):\n"
                    f"{p.tail(15)}"
                )


def pids(
    cluster: Cluster, receiver: ReceiverProcess, extra: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    named: dict[str, int] = {}
    for p in cluster.processes:
        if p.alive and p.pid:
            pid = child_pid(p.pid) if p.profiled and p.command[0].endswith("py-spy") else p.pid
            if pid:
                named[p.instance] = pid
    if receiver.proc is not None and receiver.proc.poll() is None:
        named["bench-receiver"] = receiver.proc.pid
    named["bench-driver"] = os.getpid()  # the load generator (this process)
    named.update(extra)
    groups: dict[str, int] = {}
    if pid := pid_from_file(BENCH_HOME / "kafka" / "kafka.pid"):
        groups["kafka"] = pid
    if pid := pid_from_file(BENCH_HOME / "pg" / "data" / "postmaster.pid"):
        groups["postgres"] = pid
    return named, groups


def render_profile(stem: Path, tool: str) -> list[str]:
    """Text and pstats renderings of a pyinstrument session; the top self-time functions."""
    if tool != "pyinstrument":
        return [f"py-spy profile: {stem}.speedscope.json (open in https://speedscope.app)"]
    session = Path(str(stem) + ".pyisession")
    if not session.exists():
        return [f"no profile was written ({session} missing)"]
    py = [sys.executable, "-m", "pyinstrument", f"--load={session}"]
    subprocess.run(
        [
            *py,
            "-r",
            "text",
            "--show-all",
            "-o",
            f"{stem}.txt",
            "-p",
            "processor_options.filter_threshold=0.01",
        ],
        check=False,
    )
    subprocess.run([*py, "-r", "html", "-o", f"{stem}.html"], check=False)
    subprocess.run([*py, "-r", "pstats", "-o", f"{stem}.pstats"], check=False)
    try:
        top = top_functions(f"{stem}.pstats")
    except (OSError, TypeError, ValueError, EOFError) as exc:
        return [f"could not read the profile: {exc}"]
    Path(f"{stem}.top.txt").write_text("\n".join(top) + "\n")
    return top


def top_functions(pstats_path: str, limit: int = 20) -> list[str]:
    """The functions with the most own time, as a table. pyinstrument samples stacks, so
    its pstats carry times but no call counts (they come out negative): none are shown."""
    import pstats

    stats = pstats.Stats(pstats_path).stats  # type: ignore[attr-defined]
    rows = sorted(
        ((tt, ct, func) for func, (_cc, _nc, tt, ct, _callers) in stats.items()),
        key=lambda r: r[0],
        reverse=True,
    )
    total = sum(r[0] for r in rows) or 1.0
    lines = [f"{'own s':>8} {'own %':>6} {'with callees s':>15}  function"]
    for tt, ct, (filename, line, name) in rows[:limit]:
        where = filename.removeprefix(str(ROOT) + "/")
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        elif "/lib/python3" in where:
            where = where.split("/lib/", 1)[1]
        lines.append(f"{tt:8.2f} {100 * tt / total:5.1f}% {ct:15.2f}  {where}:{line}({name})")
    return lines


async def run(
    args: argparse.Namespace,
    infra: BenchInfra,
    env: dict[str, str],
    stamp: str,
    cleanups: list[Callable[[], object]],
) -> int:
    # Ctrl-C / SIGTERM cancel the run: the finally blocks below stop what was started.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    plan: Plan = QUICK if args.quick else Plan()
    plan = replace(plan, senders=args.senders)
    log_dir = OUT_DIR / f"{stamp}-logs"
    plan = replace(
        plan,
        sender_concurrency=int(
            os.environ.get("HOOKLINE_SENDER_CONCURRENCY", plan.sender_concurrency)
        ),
    )
    cluster = Cluster(env=env, log_dir=log_dir)
    receiver = ReceiverProcess(OUT_DIR / f"{stamp}.requests.log", log_dir)
    cleanups += [receiver.stop, cluster.stop]  # also run by main() should the loop die
    t0 = time.time()
    sampler = Sampler(t0)
    tasks: list[asyncio.Task[None]] = []
    extra: dict[str, int] = {}
    profile_stem, tool = OUT_DIR / f"{stamp}-{args.profile}-profile", ""
    pool = None
    ingest = None
    try:
        receiver.start()
        for name in ("relay", "matcher", "api", "inbound"):
            wrapper: list[str] = []
            if args.profile == name:
                wrapper, tool = profiler_wrapper(profile_stem)
            cluster.start(name, wrapper)
        for i in range(plan.senders):
            wrapper = []
            if args.profile == "sender" and i == 0:
                wrapper, tool = profiler_wrapper(profile_stem)
            cluster.start("sender", wrapper)
        tasks.append(asyncio.create_task(sampler.run(lambda: pids(cluster, receiver, extra))))
        await receiver.wait_ready()
        await cluster.wait_ready()
        say(
            f"services ready after {time.time() - t0:.1f}s: "
            + ", ".join(p.instance for p in cluster.processes)
        )
        pool = await create_pool(infra.database_url, min_size=2, max_size=8)
        ingest = await Ingest(
            cluster.api_url,
            env["HOOKLINE_ADMIN_TOKEN"],
            pool,
            "bench",
            f"r{stamp.replace('-', '')}-{uuid.uuid4().hex[:4]}",
        ).open()
        log = ReceiverLog(receiver.out)
        b = Bench(
            plan=plan,
            cluster=cluster,
            api=Api(cluster.api_url, env["HOOKLINE_ADMIN_TOKEN"]),
            ingest=ingest,
            log=log,
            receiver_url=f"http://127.0.0.1:{receiver.port}",
            hang_port=receiver.hang_port,
            t0=t0,
            extra_pids=extra,
        )
        tasks.append(asyncio.create_task(log.follow(0.2)))
        tasks.append(asyncio.create_task(progress(b)))
        for phase in args.phase_list:
            await PHASES[phase](b)
            if phase == "setup" and b.broken:
                break
        for p in cluster.dead():
            b.broken.append(f"{p.instance} exited with code {p.proc.returncode if p.proc else '?'}")
    finally:
        for task in tasks:
            task.cancel()
        if ingest is not None:
            await ingest.close()
        if pool is not None:
            await pool.close()
        say("stopping services")
        await asyncio.to_thread(cluster.stop)
        receiver.stop()
    b.log.poll()
    return finish(b, args, plan, sampler, stamp, profile_stem, tool)


def inbound_edge_cpu(b: Bench, sampler: Sampler) -> None:
    """The edge's CPU per accepted call over its windows: what a call costs the one inbound
    process, which the hypervisor's steal does not change as it changes calls/s."""
    window = next(((s, e) for label, s, e in b.spans if label == "inbound-edge"), None)
    inbound = b.results.get("inbound") or {}
    accepted = sum(w["accepted"] for w in inbound.get("edge_windows", []))
    share = sampler.cpu_share(*window).get("bench-inbound-1") if window else None
    if window and accepted and share is not None:
        busy_s = share / 100 * (window[1] - window[0])
        inbound["edge_cpu_percent"] = share
        inbound["edge_cpu_us_per_call"] = round(busy_s / accepted * 1e6)


def finish(
    b: Bench,
    args: argparse.Namespace,
    plan: Plan,
    sampler: Sampler,
    stamp: str,
    profile_stem: Path,
    tool: str,
) -> int:
    for phase in ("sustained", "sustained_http"):
        window = next(((s, e) for label, s, e in b.spans if label == f"{phase}-window"), None)
        rate = (b.results.get(phase) or {}).get("deliveries_per_s")
        if window and rate:
            shares = sampler.cpu_share(*window)
            used = report.hookline_cpu(shares)
            b.results[phase]["cpu_percent"] = used
            # core-seconds per 1,000 deliveries: (cores busy) / (deliveries per second) * 1000
            b.results[phase]["core_s_per_1000"] = round(used / 100 / rate * 1000, 3)
            # Counted in it: a fresh JVM's compiling, which a Kafka up for days had finished.
            jit = shares.get("kafka-jit")
            if jit is not None:
                b.results[phase]["kafka_jit_percent"] = jit
                b.results[phase]["kafka_jit_core_s_per_1000"] = round(jit / 100 / rate * 1000, 3)
    inbound_edge_cpu(b, sampler)
    if "idle" in b.results:
        shares = next((sampler.cpu_share(s, e) for label, s, e in b.spans if label == "idle"), {})
        b.results["idle"]["cpu_percent_by_process"] = shares
        b.results["idle"]["cpu_percent"] = report.hookline_cpu(shares)
        b.results["idle"]["kafka_jit_percent"] = shares.get("kafka-jit")
    rows = report.floors(b.results, sampler.peak_mb)
    # Counted again at the very end: a redelivery can arrive after its phase was reported
    # (a sender stopped later replays what it had not committed).
    b.log.poll()
    duplicates = {name: p.duplicates for name, p in sorted(b.log.phases.items()) if p.duplicates}
    late = report.late_arrivals(b.results, b.log)
    data: dict[str, Any] = {
        "started_at": datetime.fromtimestamp(b.t0, UTC).isoformat(),
        "duration_s": round(time.time() - b.t0, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "plan": asdict(plan),
        "phases_run": args.phase_list,
        "results": b.results,
        "floors": [r.to_dict() for r in rows],
        "rss_peak_mb": sampler.peak_mb,
        "cpu_percent_by_phase": {
            label: sampler.cpu_share(start, end) for label, start, end in b.spans
        },
        "broken": b.broken,
        "rebalances": report.rebalances(b.cluster.log_dir, b.spans, b.t0),
        "duplicates_by_phase": duplicates,
        "series": report.series(b.log, b.t0),
        "rss_series": sampler.rss,
        "cpu_series": sampler.cpu,
        "spans": b.spans,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    json_path, png_path = OUT_DIR / f"{stamp}.json", OUT_DIR / f"{stamp}.png"
    if args.profile:
        data["profile"] = {"service": args.profile, "tool": tool, "stem": str(profile_stem)}
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    report.plot(png_path, data)
    print()
    print(report.table(rows))
    print()
    print(report.cpu_table(data["cpu_percent_by_phase"]))
    print()
    say(
        "sender group rebalanced by load: "
        + (
            ", ".join(
                f"{r['phase']} at {r['t']}s ({r['busiest']} -> {r['dealt_afresh']}/s)"
                for r in data["rebalances"]
            )
            or "never"
        )
    )
    say(
        "deliveries received twice over the whole run (at-least-once): "
        + (", ".join(f"{k} {v}" for k, v in duplicates.items()) if duplicates else "none")
    )
    if late:
        say(
            "counted missing at their phase's drain but received later in the run (parked "
            "or retried, not lost): " + ", ".join(f"{k} {v}" for k, v in late.items())
        )
    if args.profile:
        top = render_profile(profile_stem, tool)
        print(f"profile of one {args.profile} ({tool}), top functions by own time:")
        print("\n".join(top[:40]))
        print()
    say(
        f"results: {json_path.relative_to(ROOT)}  plot: {png_path.relative_to(ROOT)}  "
        f"({data['duration_s']:.0f}s)"
    )
    if b.broken:
        say("PIPELINE BROKEN: " + "; ".join(b.broken))
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    infra = BenchInfra()
    cleanups: list[Callable[[], object]] = []
    code = 1
    started = time.time()
    try:
        say(
            f"starting PostgreSQL :{PG_PORT} and "
            f"Kafka {infra.kafka_bootstrap} under .hookline/bench-infra"
        )
        infra.start(fresh=not args.reuse_state)
        env = service_env(infra, free_port())
        infra.provision(env)
        say(f"infra ready after {time.time() - started:.1f}s")
        import uvloop

        code = uvloop.run(run(args, infra, env, stamp, cleanups))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        code = 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        say(f"FAILED: {exc}")
        code = 1
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        if args.keep_infra:
            infra.started.clear()
        infra.stop()
    sys.exit(code)
