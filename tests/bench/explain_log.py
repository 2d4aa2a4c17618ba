"""EXPLAIN (ANALYZE, BUFFERS) of the delivery log's read queries at millions of attempts.

`.venv/bin/python -m tests.bench.explain_log [--keep] [--reuse] [--scale 5] [--runs 200]`

In a scratch database (`hookline_explain`) on the test PostgreSQL it generates, set-based,
at `--scale 1` ~2M attempts / ~1.45M deliveries across 1,000 webhooks in 5 orgs over the
last 10 days (4 hot webhooks with ~260k attempts each; `--scale 5` is issue 14's 10M
attempts), runs EXPLAIN of exactly the statements `shared/log/queries.py` and
`shared/log/redelivery.py` issue (their SQL constants and `page_query`), then times the
real `DeliveryQueries` calls `--runs` times each: p50 / p99 / max, and list, detail and
stats against issue 14's floor (p99 <= 50 ms). Prints each plan's top lines; writes
everything to `.hookline/bench/explain-<timestamp>.txt` and the timings to `.json` beside
it. Drops the database unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared.db import connect, create_pool, migrate
from shared.log import counts, redelivery
from shared.log import queries as dl
from tests.infra import ROOT, TEST_HOME, TEST_PG_PORT, _script_env, local_database_url

SCRATCH = "hookline_explain"
OUT_DIR = ROOT / ".hookline" / "bench"
HOT = 4  # webhooks 0..3 take half of all deliveries
RUNS = 200  # timed calls per query by default (p50 / p99 / max reported)
P99_FLOOR_MS = 50.0  # issue 14: list, detail and stats p99 at 10M attempts
TOP_LINES = 14

# Common types first (picked with a skew towards the front); rare ones get 0.3 % in all.
COMMON = (
    "push pull_request.opened pull_request.updated pipeline.run_started pipeline.run_completed"
    " pipeline.job_completed pull_request.closed pull_request.merged issue.commented"
    " comment.created pull_request.review_submitted pull_request.review_requested issue.opened"
    " issue.closed create delete pull_request.edited pull_request.reopened issue.edited"
    " issue.reopened issue.deleted agent.action ai_review.started ai_review.completed"
    " ai_review.suggestion_applied"
).split()
RARE = "release.created release.updated release.published fork.created star.added".split()

GENERATE = [
    "SELECT hookline_ensure_partitions(12, 7)",
    "INSERT INTO webhooks (id, org, repo, url, events, secret_enc)"
    " SELECT md5('webhook-' || w)::uuid, 'bench-org-' || (w % 5), 'repo-' || w,"
    " 'https://hooks.example.com/' || w, '{*}', '\\x00'::bytea FROM generate_series(0, 999) w",
    # One row per delivery: webhook, type, final status, number of attempts, first attempt.
    """CREATE UNLOGGED TABLE bench_gen AS
    SELECT g, md5('delivery-' || g)::uuid AS id, w, md5('webhook-' || w)::uuid AS webhook_id,
           'bench-org-' || (w % 5) AS org,
           CASE WHEN r4 < 0.997 THEN ($2::text[])[1 + floor(power(r5, 2) * cardinality($2))::int]
                ELSE ($3::text[])[1 + floor(r5 * cardinality($3))::int] END AS event_type,
           status,
           CASE status WHEN 'succeeded' THEN CASE WHEN r2 < 0.9 THEN 1 ELSE 2 END
                       WHEN 'failed' THEN 1 + floor(r2 * 5)::int WHEN 'dead' THEN 6
                       WHEN 'pending' THEN 1 + floor(r2 * 3)::int ELSE 1 END AS n,
           now() - r6 * interval '10 days' AS first_at
    FROM (SELECT g, r2, r4, r5, r6,
                 CASE WHEN r3 < 0.5 THEN floor(r3 * 2 * $4::int)::int
                      ELSE $4::int + floor((r3 - 0.5) * 2 * (1000 - $4::int))::int END AS w,
                 CASE WHEN r1 < 0.86 THEN 'succeeded' WHEN r1 < 0.91 THEN 'failed'
                      WHEN r1 < 0.95 THEN 'dead' WHEN r1 < 0.97 THEN 'pending'
                      ELSE 'skipped' END AS status
          FROM (SELECT g, random() r1, random() r2, random() r3, random() r4, random() r5,
                       random() r6 FROM generate_series(1, $1::int) g) r) s""",
    # One row per attempt, on the default schedule (0, 1 min, 5 min, 30 min, 2 h, 6 h).
    """CREATE UNLOGGED TABLE bench_att AS
    SELECT g, k, started_at, outcome, r,
           CASE WHEN outcome IN ('failed', 'dead') THEN
                CASE WHEN r < 0.3 THEN 'timeout' WHEN r < 0.4 THEN 'connect'
                     ELSE 'http_status' END END AS error,
           CASE WHEN outcome = 'succeeded' THEN 200 WHEN outcome IN ('failed', 'dead')
                AND r >= 0.4 THEN 500 + (r * 10)::int % 4 END AS response_status,
           CASE WHEN outcome = 'succeeded' THEN 8 + power(r, 3) * 900
                WHEN outcome = 'skipped' THEN 0 WHEN r < 0.3 THEN 10000
                ELSE 30 + r * 2000 END AS duration_ms
    FROM (SELECT gen.g, k,
                 least(gen.first_at + make_interval(secs => (ARRAY[0, 60, 360, 2160, 9360,
                       30960])[k] * (0.95 + 0.1 * random())), now()) AS started_at,
                 CASE WHEN k < gen.n OR gen.status = 'pending' THEN 'failed'
                      ELSE gen.status END AS outcome,
                 random() AS r
          FROM bench_gen gen CROSS JOIN LATERAL generate_series(1, gen.n) k) a""",
    # The log in time order, as the writer appends it; bodies of realistic size.
    """INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,
        attempt, trigger, outcome, started_at, duration_ms, request_headers, request_body,
        response_status, response_headers, response_body, error, resolved_ip, next_attempt_at)
    SELECT gen.id, gen.webhook_id, gen.org, 'evt-' || gen.g, gen.event_type, a.k,
           CASE WHEN a.k = 1 THEN 'auto' ELSE 'retry' END, a.outcome, a.started_at,
           a.duration_ms,
           jsonb_build_object('Content-Type', 'application/json', 'User-Agent', 'Hookline/0.1',
               'X-Hookline-Event', gen.event_type, 'X-Hookline-Delivery', gen.id::text,
               'X-Hookline-Attempt', a.k::text,
               'X-Hub-Signature-256', 'sha256=' || md5(a.g::text) || md5(a.k::text),
               'webhook-id', gen.id::text, 'webhook-signature', 'v1,' || md5(gen.id::text)),
           '{"event":"' || split_part(gen.event_type, '.', 1) || '","event_id":"evt-' || gen.g
               || '","repository":{"full_name":"' || gen.org || '/repo-' || gen.w
               || '"},"payload":{"ref":"refs/heads/main","commits":"'
               || repeat(md5(gen.g::text), 10) || '"}}',
           a.response_status,
           CASE WHEN a.response_status IS NOT NULL THEN
                '{"Server":"nginx","Content-Type":"text/plain"}'::jsonb END,
           CASE WHEN a.response_status = 200 THEN 'ok'
                WHEN a.response_status IS NOT NULL THEN '<html>upstream error</html>' END,
           a.error, '203.0.113.' || (gen.w % 250),
           CASE WHEN a.outcome = 'failed' THEN a.started_at + interval '5 minutes' END
    FROM bench_att a JOIN bench_gen gen USING (g) ORDER BY a.started_at""",
    """INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,
        first_at, last_at, last_error, last_status, next_attempt_at)
    SELECT gen.id, gen.webhook_id, gen.org, 'evt-' || gen.g, gen.event_type, gen.status,
           gen.n, gen.first_at, a.started_at, a.error, a.response_status,
           CASE WHEN gen.status IN ('failed', 'pending') THEN a.started_at + interval '5 min' END
    FROM bench_gen gen JOIN bench_att a ON a.g = gen.g AND a.k = gen.n ORDER BY gen.first_at""",
    "DROP TABLE bench_gen, bench_att",
    "VACUUM (ANALYZE) delivery_attempts",
    "VACUUM (ANALYZE) deliveries",
]

Case = tuple[str, str, list[Any]]


def hot_webhook() -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(b"webhook-0").hexdigest())


def ensure_server() -> bool:
    """Starts the test PostgreSQL if nothing answers; True if we started it."""
    script = ROOT / "deploy" / "local" / "pg.sh"
    env = _script_env()
    if subprocess.run([script, "status"], env=env, capture_output=True).returncode == 0:
        return False
    subprocess.run([script, "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    return True


async def generate(conn: asyncpg.Connection, scale: float) -> float:
    started = time.perf_counter()
    await conn.execute("SET work_mem = '256MB'; SET synchronous_commit = off")
    await conn.execute("SELECT setseed(0.42)")
    for step in GENERATE:
        t = time.perf_counter()
        if "$1" in step:
            await conn.execute(step, int(1_450_000 * scale), COMMON, RARE, HOT)
        else:
            await conn.execute(step)
        print(f"  {time.perf_counter() - t:6.1f}s  {' '.join(step.split())[:70]}", flush=True)
    return time.perf_counter() - started


async def targets(conn: asyncpg.Connection) -> dict[str, Any]:
    """The hot webhook, a page-2 cursor, a cursor 6 days back, a dead delivery 3 days old."""
    wid = hot_webhook()
    now = datetime.now(UTC)
    first, first_args = dl.page_query(wid)
    rows = await conn.fetch(first, *first_args)
    deep = await conn.fetchrow(
        "SELECT first_at, id FROM deliveries WHERE webhook_id = $1 AND first_at < $2"
        " ORDER BY first_at DESC, id DESC LIMIT 1",
        wid,
        now - timedelta(days=6),
    )
    dead = await conn.fetchrow(
        "SELECT id, first_at FROM deliveries WHERE webhook_id = $1 AND status = 'dead'"
        " AND first_at < $2 ORDER BY first_at DESC LIMIT 1",
        wid,
        now - timedelta(days=3),
    )
    return {
        "wid": wid,
        "now": now,
        "cursor": (rows[-2]["first_at"], rows[-2]["id"]),
        "deep": (deep["first_at"], deep["id"]),
        "did": dead["id"],
        "did_first_at": dead["first_at"],
    }


async def cases(conn: asyncpg.Connection, t: dict[str, Any]) -> list[Case]:
    """Every read statement of shared/log/, with arguments for the hot webhook."""
    wid, now = t["wid"], t["now"]
    since = now - timedelta(days=1)
    out: list[Case] = []
    for name, kw in [
        ("list", {}),
        ("list status=failed", {"status": "failed"}),
        ("list event=pull_request", {"event": "pull_request"}),
        ("list event=release (rare)", {"event": "release"}),
        ("list status+event", {"status": "dead", "event": "release"}),
        (
            "list since/until 1h",
            {"since": now - timedelta(days=3, hours=1), "until": now - timedelta(days=3)},
        ),
        ("list page 2 (cursor)", {"after": t["cursor"]}),
        ("list deep page (6 days back)", {"after": t["deep"]}),
    ]:
        sql, args = dl.page_query(wid, **kw)
        out.append((name, sql, args))
    out += dl_get_cases(t["did"], t["did_first_at"])
    out += dl_stats_cases(wid)
    ids = [r["id"] for r in await conn.fetch(redelivery.RECOVER_IDS, *recover_ids_args(wid, since))]
    out.append(("recover: ids", redelivery.RECOVER_IDS, recover_ids_args(wid, since)))
    attempts_args = recover_attempts_args(ids, since)
    out.append((f"recover: attempts ({len(ids)})", redelivery.RECOVER_ATTEMPTS, attempts_args))
    return out


def dl_get_cases(did: uuid.UUID, first_at: datetime) -> list[Case]:
    return [
        ("get: summary", dl.GET_SUMMARY, [did]),
        ("get: attempts", dl.GET_ATTEMPTS, [did, first_at - dl.SUMMARY_SLACK]),
    ]


def dl_stats_cases(wid: uuid.UUID) -> list[Case]:
    return [
        ("stats: counts", counts.COUNTS, [wid]),
        ("stats: last", dl.STATS_LAST, [wid]),
        (
            "stats: percentiles",
            dl.STATS_PERCENTILES,
            [wid, dl.STATS_WINDOW_DAYS, dl.STATS_MAX_ATTEMPTS],
        ),
    ]


def recover_ids_args(wid: uuid.UUID, since: datetime) -> list[Any]:
    return [wid, ["failed", "dead"], since, redelivery.RECOVER_MAX]


def recover_attempts_args(ids: list[uuid.UUID], since: datetime) -> list[Any]:
    return [ids, since - dl.SUMMARY_SLACK]


_INDEX = re.compile(r"(?:Index(?: Only)? Scan(?: Backward)?|Bitmap Index Scan) (?:using|on) (\w+)")
_SCAN = re.compile(r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan)[^>]* on (\w+)")
_PARTITION = re.compile(r"^delivery_attempts_(\d{8}|default)")


def highlights(plan: list[str]) -> str:
    """Which indexes, how many partitions, seq scans (with rows) and sorts: one line."""
    text = "\n".join(plan)
    indexes = sorted({_PARTITION.sub("delivery_attempts_*", i) for i in _INDEX.findall(text)})
    parts = {rel for _, rel in _SCAN.findall(text) if _PARTITION.match(rel)}
    notes = [f"index: {', '.join(indexes) or '-'}"]
    if parts:
        notes.append(f"partitions: {len(parts)}")
    seq = [line for line in plan if "Seq Scan" in line]
    if seq:
        rows = sum(int(m) for line in seq for m in re.findall(r"actual time=\S+ rows=(\d+)", line))
        notes.append(f"SEQ SCAN x{len(seq)} ({rows} rows)")
    sorts = re.findall(r"Sort Method: (\S+(?: \S+)?)", text)
    if sorts:
        notes.append(f"sort: {', '.join(sorts)}")
    return "; ".join(notes)


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> tuple[list[str], float]:
    await conn.fetch(sql, *args)  # warm the cache: timings are of a warm steady state
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    plan = [r[0] for r in rows]
    ms = next(float(line.split(":")[1].split()[0]) for line in plan if "Execution Time" in line)
    return plan, ms


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: a p99 of 200 runs is the 198th."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def timed(call: Callable[[], Awaitable[object]], runs: int) -> dict[str, float]:
    """p50 / p99 / max in ms of `runs` calls, after one warm-up call."""
    await call()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t) * 1000)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "max_ms": round(max(samples), 2),
        "runs": runs,
    }


async def run(args: argparse.Namespace) -> int:
    base = local_database_url(TEST_HOME, TEST_PG_PORT).rsplit("/", 1)[0]
    admin = await connect(base + "/postgres")
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", SCRATCH)
    fresh = not (exists and args.reuse)
    if fresh:
        await admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        await admin.execute(f"CREATE DATABASE {SCRATCH}")
    dsn = f"{base}/{SCRATCH}"
    report: list[str] = []
    try:
        conn = await connect(dsn)
        try:
            applied = await migrate(conn)
            print(f"migrations applied: {', '.join(applied) or 'none (reused)'}")
            secs = 0.0
            if fresh:
                print("generating data ...")
                secs = await generate(conn, args.scale)
                print(f"generated in {secs:.0f}s")
            sizes = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM delivery_attempts) AS attempts,"
                " (SELECT count(*) FROM deliveries) AS deliveries,"
                " (SELECT count(*) FROM delivery_attempts WHERE webhook_id = $1) AS hot_attempts,"
                " (SELECT count(*) FROM deliveries WHERE webhook_id = $1) AS hot_deliveries,"
                " pg_size_pretty(pg_total_relation_size('deliveries')) AS summary_size",
                hot_webhook(),
            )
            head = ", ".join(f"{k}={v}" for k, v in dict(sizes).items())
            print(head)
            report += [f"hookline explain_log {datetime.now(UTC).isoformat()}", head, ""]
            summary: list[str] = []
            t = await targets(conn)
            for name, sql, qargs in await cases(conn, t):
                plan, ms = await explain(conn, sql, qargs)
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                try:
                    _, generic_ms = await explain(conn, sql, qargs)
                finally:
                    await conn.execute("RESET plan_cache_mode")
                line = f"{name:32} {ms:8.2f} ms  generic {generic_ms:8.2f} ms  {highlights(plan)}"
                summary.append(line)
                print(f"\n== {name}: {ms:.2f} ms (generic plan {generic_ms:.2f} ms)")
                print("   " + " ".join(sql.split())[:300])
                for p in plan[:TOP_LINES]:
                    print("   " + p[:180])
                report += [f"== {name}", " ".join(sql.split()), *plan, ""]
        finally:
            await conn.close()
        lines, timings = await time_calls(dsn, t, args.runs)
        summary += ["", *lines]
        print("\n" + "\n".join(summary))
        report = ["EXPLAIN (ANALYZE, BUFFERS), warm cache:", *summary, "", *report]
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        out = OUT_DIR / f"explain-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.txt"
        out.write_text("\n".join(report) + "\n")
        figures = {
            "sizes": {
                k: (v if isinstance(v, int | str) else str(v)) for k, v in dict(sizes).items()
            },
            "scale": args.scale,
            "generate_s": round(secs, 1) if fresh else None,
            "calls": timings,
        }
        out.with_suffix(".json").write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
        print(f"\nwritten {out} and {out.with_suffix('.json').name}")
    finally:
        if not args.keep:
            await admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
        await admin.close()
    return 0


# The calls issue 14's floor names: the log's list, a delivery's detail, a webhook's stats.
FLOORED = {"page()": "list", "get()": "detail", "stats()": "stats"}


async def time_calls(
    dsn: str, t: dict[str, Any], runs: int
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """p50 / p99 / max of `runs` calls of the real DeliveryQueries methods (prepared
    statements, so later runs may use a generic plan), hot webhook; one after the other
    from one client, warm cache."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        q = dl.DeliveryQueries(pool)
        wid, did, cursor = str(t["wid"]), str(t["did"]), t["cursor"]
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "page()": lambda: q.page(wid),
            "page(status=failed)": lambda: q.page(wid, status="failed"),
            "page(event=release)": lambda: q.page(wid, event="release"),
            "page(cursor)": lambda: q.page(wid, after=cursor),
            "page(since/until)": lambda: q.page(
                wid, since=t["now"] - timedelta(days=3, hours=1), until=t["now"] - timedelta(days=3)
            ),
            "get()": lambda: q.get(did, None),
            "stats()": lambda: q.stats(wid),
        }
        lines = [
            f"real calls, {runs} runs each (p50 / p99 / max), floor p99 <= {P99_FLOOR_MS:g} ms:"
        ]
        timings: dict[str, dict[str, Any]] = {}
        for name, call in calls.items():
            got: dict[str, Any] = await timed(call, runs)
            verdict = ""
            if name in FLOORED:
                got["floor"] = f"p99 <= {P99_FLOOR_MS:g} ms ({FLOORED[name]})"
                got["verdict"] = "PASS" if got["p99_ms"] <= P99_FLOOR_MS else "FAIL"
                verdict = f"  {FLOORED[name]}: {got['verdict']}"
            timings[name] = got
            lines.append(
                f"{name:32} p50 {got['p50_ms']:8.2f} ms  p99 {got['p99_ms']:8.2f} ms"
                f"  max {got['max_ms']:8.2f} ms{verdict}"
            )
        # Once, last: it writes (outbox rows, summaries marked pending).
        started = time.perf_counter()
        count = await redelivery.Redelivery(pool).recover(wid, t["now"] - timedelta(days=1))
        ms = (time.perf_counter() - started) * 1000
        lines.append(f"{f'recover(1 day) -> {count}':32} {ms:8.2f} ms  (once; it writes)")
        timings["recover(1 day)"] = {"ms": round(ms, 2), "count": count}
        return lines, timings
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept scratch database")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiple of the data size (1: ~2M attempts; 5: ~10M, issue 14's figure)",
    )
    parser.add_argument("--runs", type=int, default=RUNS, help="timed calls per query")
    args = parser.parse_args()
    started = ensure_server()
    try:
        sys.exit(asyncio.run(run(args)))
    finally:
        if started:
            subprocess.run([ROOT / "deploy" / "local" / "pg.sh", "stop"], env=_script_env())


if __name__ == "__main__":
    main()
