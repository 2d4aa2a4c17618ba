"""The bench's inbound phase: calls to one `services.inbound` process from 32 clients.

Figures: accepted calls/s at saturation (floor >= 2,000 on this 2-core machine), from wrk
(tests/bench/wrk.py) with the relays paused, so that the figure is the edge's own (every
accepted call is committed to the outbox, relayed and matched once they resume, and its
invocation row is checked), on a hook whose events no webhook is subscribed to: the median
of three windows, each reported with the CPU the hypervisor took meanwhile (steal). Then
the same load with the whole pipeline delivering beside it, on a hook whose `agent.action`
events one outbound webhook (on the receiver) is subscribed to; then call -> delivery
p50/p99 at a fixed rate on that hook.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from tests.bench import wrk
from tests.bench.load import JsonClients
from tests.bench.phases import Bench, fmt, say
from tests.bench.sampling import host_steal_seconds

CLIENTS = 32
# The edge's figure is the median of this many windows (plan.inbound seconds in all), each
# reported with its steal: this machine is a virtual one whose hypervisor, now and then,
# takes a fifth of its CPU for seconds at a time.
EDGE_WINDOWS = 3
PADDING = "x" * 400  # a call of about 0.6 KB, like a CI system's notification


def _template(run: str, phase: str = "inbound") -> str:
    """A saturating call's body for wrk, `{seq}` numbered by it: the paced calls' shape,
    with no send time (the saturated windows measure the edge, not call -> delivery)."""
    return (
        '{"message": "bench call {seq}: pipeline failed on main",'
        f' "phase": "{phase}", "run": "{run}", "seq": {{seq}}, "data": {{"pipeline": {{seq}},'
        f' "ref": "refs/heads/main", "log": "{PADDING}"}}}}'
    )


def _body(phase: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "message": f"bench call {seq}: pipeline failed on main",
            "sent_at": time.time(),
            "phase": phase,
            "seq": seq,
            "data": {"pipeline": seq, "ref": "refs/heads/main", "log": PADDING},
        }
    )


class Caller(JsonClients):
    """Posts calls to one inbound URL and counts the answers."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__({"X-Webhook-Secret": secret}, CLIENTS)
        self.url = url
        self.seq = 0
        self.accepted: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.last_error = ""

    async def one(self, phase: str) -> float | None:
        """One call; its accept time, or None if it was not accepted."""
        assert self.session is not None
        self.seq += 1
        try:
            async with self.session.post(self.url, data=_body(phase, self.seq)) as r:
                await r.read()
                if r.status == 202:
                    self.accepted[phase] = self.accepted.get(phase, 0) + 1
                    return time.time()
                self.last_error = f"answered {r.status}"
        except (aiohttp.ClientError, OSError) as exc:
            self.last_error = repr(exc)
        self.refused[phase] = self.refused.get(phase, 0) + 1
        await asyncio.sleep(0.05)
        return None

    async def paced(self, phase: str, rate: float, duration: float, tick: float = 0.05) -> None:
        start, owed, n = time.monotonic(), 0.0, 0
        tasks: set[asyncio.Task[Any]] = set()
        while time.monotonic() < start + duration:
            owed += rate * tick
            count, owed = int(owed), owed - int(owed)
            for _ in range(count):
                task = asyncio.create_task(self.one(phase))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)


async def _edge_window(
    url: str, template: str, headers: dict[str, str], seconds: float
) -> tuple[wrk.WrkResult, float]:
    """One of the edge's windows, and the CPU the hypervisor took from this virtual machine
    meanwhile (steal, % of one core): a window with steal ran on less than 2 cores."""
    steal, start = host_steal_seconds(), time.monotonic()
    result = await wrk.run(url, template, headers, seconds=seconds / EDGE_WINDOWS)
    elapsed = time.monotonic() - start
    return result, 100 * (host_steal_seconds() - steal) / elapsed


def _headers(hook: dict[str, Any]) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Webhook-Secret": hook["secret"]}


async def _inbound_hook(b: Bench, repo: str) -> dict[str, Any] | None:
    status, hook = await b.api.call(
        "POST", f"/repos/{b.ingest.org}/{repo}/inbound-webhooks", {"name": "bench"}
    )
    if status != 201:
        b.broken.append(f"inbound: creating the inbound webhook answered {status}: {hook}")
        return None
    return dict(hook)


async def inbound(b: Bench) -> None:
    b.enter("inbound")
    url_base = b.cluster.inbound_url
    await b.api.create_webhook(
        b.ingest.org,
        b.ingest.repo,
        f"{b.receiver_url}/hook/inbound",
        events=["agent.action"],
        description="bench: inbound calls",
    )
    hook = await _inbound_hook(b, b.ingest.repo)
    # The edge's own figure goes to a repo no webhook is subscribed to, as the ingest
    # phase's does: its events are relayed and matched, not delivered, so that delivering
    # tens of thousands of calls to one endpoint does not spill into the next phase.
    edge_hook = await _inbound_hook(b, b.ingest.repo + "-inbound")
    if hook is None or edge_hook is None:
        return
    url = url_base + "/hooks/in/" + hook["id"]
    edge_url = url_base + "/hooks/in/" + edge_hook["id"]
    warmup = b.plan.paced_warmup
    async with Caller(url, hook["secret"]) as caller:
        start = time.time()
        edge_headers = _headers(edge_hook)
        # Warmed up on the other hook (its deliveries tagged apart): the edge hook's log
        # then holds the measured window's calls only.
        await wrk.run(url, _template("warmup", "inbound-warmup"), _headers(hook), seconds=warmup)
        # The relays paused: what the edge accepts waits in the outbox (committed) and the
        # stages behind take no CPU from this 2-core machine meanwhile.
        with b.cluster.paused("relay"):
            edge_start = time.time()
            windows = [
                await _edge_window(edge_url, _template(f"edge-{n}"), edge_headers, b.plan.inbound)
                for n in range(EDGE_WINDOWS)
            ]
            edge_end = time.time()
        by_rate = sorted(windows, key=lambda w: w[0].count(202) / w[0].seconds)
        edge, edge_steal = by_rate[EDGE_WINDOWS // 2]
        answered = sum(w.count(202) for w, _ in windows)
        caught_up = await b.outbox_drained()
        # Then calls that are delivered, with the whole pipeline running beside them.
        live = await wrk.run(url, _template("live"), _headers(hook), seconds=b.plan.inbound_live)
        accepted = live.count(202)
        drained = await b.drain("inbound", accepted)
        b.mark("inbound", start, time.time())
        b.mark("inbound-edge", edge_start, edge_end)
        saturated = b.log.phase("inbound")
        # Every call the edge answered 202 left its invocation (and its outbox row, in the
        # same statement). wrk stops with up to CLIENTS calls still out, which the edge may
        # accept without wrk counting them: so between the two (per window), never fewer.
        logged = await b.ingest.pool.fetchval(
            "SELECT count(*) FROM inbound_invocations"
            " WHERE inbound_webhook_id = $1 AND result = 'accepted'",
            edge_hook["id"],
        )
        rate = edge.count(202) / edge.seconds
        live_rate = live.count(202) / live.seconds
        each = ", ".join(
            f"{fmt(w.count(202) / w.seconds)} (steal {steal:.0f} %)" for w, steal in windows
        )
        say(
            f"inbound: {fmt(rate)} accepted calls/s from {CLIENTS} clients with the relays "
            f"paused, the median of {EDGE_WINDOWS} windows: {each} (p50 {edge.p50_ms} ms, "
            f"p99 {edge.p99_ms} ms; {fmt(logged)} logged as accepted for {fmt(answered)} "
            f"answered 202); {fmt(live_rate)}/s with the pipeline delivering beside it "
            f"(delivered {fmt(saturated.unique)}/{fmt(accepted)}, drained in {drained}s)"
        )
        if not answered <= logged <= answered + CLIENTS * EDGE_WINDOWS:
            b.broken.append(
                f"inbound: {answered} calls answered 202 but {logged} were logged accepted"
            )
        await caller.paced("inbound-latency-warmup", b.plan.inbound_rate, warmup)
        lat_start = time.time()
        await caller.paced("inbound-latency", b.plan.inbound_rate, b.plan.inbound_latency)
        lat_end = time.time()
        expected = caller.accepted.get("inbound-latency", 0)
        lat_drained = await b.drain("inbound-latency", expected)
        b.mark("inbound-latency", lat_start, time.time())
    log = b.log.phase("inbound-latency")
    missing = max(0, expected - log.unique)
    latency = log.latency(missing=missing, missing_at_least_ms=(time.time() - lat_end) * 1000)
    b.results["inbound"] = {
        "clients": CLIENTS,
        "driver": "wrk",
        "accepted_calls_per_s": round(rate, 1),
        "edge": edge.figures(202, "accepted_calls_per_s")
        | {"relays": "paused", "steal_percent": round(edge_steal, 1)},
        "edge_windows": [
            w.figures(202, "accepted_calls_per_s") | {"steal_percent": round(steal, 1)}
            for w, steal in windows
        ],
        "relays_caught_up_s": caught_up,
        "live": live.figures(202, "accepted_calls_per_s"),
        "warmup_s": warmup,
        "accepted": accepted,
        "edge_logged_accepted": logged,
        "delivered": saturated.unique,
        "missing": max(0, accepted - saturated.unique),
        "duplicates": saturated.duplicates,
        "drain_s": drained,
        "paced_calls_per_s": b.plan.inbound_rate,
        "paced": {
            "duration_s": b.plan.inbound_latency,
            "accepted": expected,
            "delivered": log.unique,
            "drain_s": lat_drained,
            **latency,
        },
    }
    if accepted and saturated.unique == 0:
        b.broken.append("inbound: no accepted call was delivered")
    say(
        f"inbound: call -> delivery p50 {latency.get('p50_ms', '-')} ms, "
        f"p99 {latency.get('p99_ms', '-')} ms at {fmt(b.plan.inbound_rate)} calls/s "
        f"(delivered {fmt(log.unique)}/{fmt(expected)})"
    )
