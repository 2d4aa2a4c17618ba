"""Prometheus metrics (DESIGN.md 11): every series a process exports, all named
`hookline_*` with bounded label sets (never a webhook id, an org or a URL), and the text
served at `GET /metrics`.

The hot paths call the small functions below (`attempt`, `retried`, ...): each is a
flag check, then a counter `inc` or a histogram `observe` on a child bound once, never a
`.labels()` lookup per call. The sender's per-attempt pair (`attempt`) is cheaper still:
plain ints and floats in `AttemptStats`, mutated and read on the event loop's one thread,
at a quarter of prometheus_client's cost (its counter and histogram take a lock each).
`configure(enabled=False)` (HOOKLINE_METRICS=0) turns every one of them into the flag
check alone, so that a benchmark can measure what metrics cost.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from shared.core.attempts import ERROR_CLASSES, OUTCOMES
from shared.core.retry import RETRY_TIERS, tier_for

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "attempt",
    "configure",
    "dead_letter",
    "exposition",
    "fanout",
    "inbound_request",
    "ingest_request",
    "log_batch",
    "outbox_claimed",
    "parked",
    "rate_limited",
    "rejected_event",
    "relay_published",
    "retried",
    "track_in_flight",
]

# The classic text format every Prometheus reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry()
# RSS, CPU, open files of this process, under the same prefix as everything else.
ProcessCollector(namespace="hookline", registry=REGISTRY)
# Every series below lives in REGISTRY.
_counter = partial(Counter, registry=REGISTRY)
_gauge = partial(Gauge, registry=REGISTRY)
_histogram = partial(Histogram, registry=REGISTRY)

disable_created_metrics()  # no `_created` twin of every series
_on = True


def configure(*, enabled: bool) -> None:
    """HOOKLINE_METRICS: off, nothing is recorded and no `/metrics` is served."""
    global _on
    _on = enabled


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of this process's series (and of `registries`, e.g. the API's
    pipeline gauges)."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))


# --- sender -----------------------------------------------------------------------------

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _possible(outcome: str, error: str | None) -> bool:
    """Success has no error class, a failure always one; dead may have none (nothing
    could be sent), skipped never has one."""
    if outcome in ("succeeded", "skipped"):
        return error is None
    return outcome == "dead" or error is not None


class AttemptStats(Collector):
    """`hookline_delivery_attempts_total{outcome,error}` and
    `hookline_attempt_duration_seconds`, as plain numbers: every pair an attempt can give
    starts at 0, so that `rate()` sees the first one."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str | None], int] = {
            (outcome, error): 0
            for outcome in OUTCOMES
            for error in (None, *ERROR_CLASSES)
            if _possible(outcome, error)
        }
        self.buckets = [0] * (len(_DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "hookline_delivery_attempts",
            "Delivery attempts by outcome (succeeded, failed, dead, skipped) and error class "
            "(none on success or when nothing was sent).",
            labels=["outcome", "error"],
        )
        for (outcome, error), n in sorted(self.counts.items(), key=str):
            attempts.add_metric([outcome, error or "none"], n)
        yield attempts
        duration = HistogramMetricFamily(
            "hookline_attempt_duration_seconds",
            "How long an attempt's HTTP request took, from the lookup to the last byte read.",
        )
        cumulative, total = [], 0
        for bound, n in zip((*_DURATION_BUCKETS, float("inf")), self.buckets, strict=True):
            total += n
            cumulative.append((floatToGoString(bound), total))
        duration.add_metric([], cumulative, sum_value=self.sum)
        yield duration


_ATTEMPT_STATS = AttemptStats()
REGISTRY.register(_ATTEMPT_STATS)
_IN_FLIGHT = _gauge(
    "hookline_requests_in_flight",
    "Webhook requests a sender has in flight now.",
)
_RETRIES = _counter(
    "hookline_retries",
    "Failed attempts scheduled again, by the delay tier they wait in.",
    ["tier"],
)
_PARKED = _counter(
    "hookline_parked",
    "Deliveries parked in a delay tier (no attempt made) behind a slow webhook's backlog.",
    ["tier"],
)
_DEAD_LETTERS = _counter(
    "hookline_dead_letters",
    "Messages copied to hookline.dlq: attempts exhausted, 410 Gone, undeliverable or undecodable.",
)
_LOG_BATCH_ROWS = _histogram(
    "hookline_log_batch_rows",
    "Attempt rows per delivery-log write.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
_LOG_WRITE_SECONDS = _histogram(
    "hookline_log_write_seconds",
    "How long one delivery-log batch took to commit.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_RETRY_CHILDREN = {tier.name: _RETRIES.labels(tier.name) for tier in RETRY_TIERS}
_PARKED_CHILDREN = {tier.name: _PARKED.labels(tier.name) for tier in RETRY_TIERS}


def attempt(outcome: str, error: str | None, seconds: float | None) -> None:
    """One attempt and, when a request was made, its duration."""
    if not _on:
        return
    stats = _ATTEMPT_STATS
    key = (outcome, error)
    # Outcomes and error classes come from fixed sets (shared/core/attempts.py): an
    # unforeseen pair is still a bounded one.
    stats.counts[key] = stats.counts.get(key, 0) + 1
    if seconds is not None:
        stats.buckets[bisect_left(_DURATION_BUCKETS, seconds)] += 1
        stats.sum += seconds


def track_in_flight(count: Callable[[], float]) -> None:
    """The in-flight gauge reads `count` at scrape time: nothing on the hot path."""
    _IN_FLIGHT.set_function(count)


def retried(delay_s: float) -> None:
    """A failed attempt scheduled again `delay_s` from now."""
    if _on:
        _RETRY_CHILDREN[_tier_name(delay_s)].inc()


def parked(delay_s: float) -> None:
    """A delivery parked for `delay_s`, no attempt made."""
    if _on:
        _PARKED_CHILDREN[_tier_name(delay_s)].inc()


def _tier_name(delay_s: float) -> str:
    # The tier the message first waits in, as FollowUps.apply chooses it.
    return (tier_for(delay_s) or RETRY_TIERS[0]).name


def dead_letter() -> None:
    if _on:
        _DEAD_LETTERS.inc()


def log_batch(rows: int, seconds: float) -> None:
    """One delivery-log batch written."""
    if _on:
        _LOG_BATCH_ROWS.observe(rows)
        _LOG_WRITE_SECONDS.observe(seconds)


# --- matcher ----------------------------------------------------------------------------

_FANOUT = _histogram(
    "hookline_matcher_fanout",
    "Deliveries one event fanned out to (0: no webhook subscribed).",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 250, 1000, 5000),
)
_REJECTED_EVENTS = _counter(
    "hookline_matcher_rejected_events",
    "Events copied to hookline.events.rejected (undecodable, unknown type, ping, too large).",
)


def fanout(deliveries: int) -> None:
    if _on:
        _FANOUT.observe(deliveries)


def rejected_event() -> None:
    if _on:
        _REJECTED_EVENTS.inc()


# --- relay ------------------------------------------------------------------------------

_PUBLISHED = _counter(
    "hookline_relay_published",
    "Outbox rows published to Kafka and marked (rate() is the relay's publish rate).",
)
_CLAIM_SECONDS = _histogram(
    "hookline_outbox_claim_seconds",
    "How long the relay's claim of a batch (SELECT ... FOR UPDATE SKIP LOCKED) took.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def outbox_claimed(seconds: float) -> None:
    if _on:
        _CLAIM_SECONDS.observe(seconds)


def relay_published(rows: int) -> None:
    if _on:
        _PUBLISHED.inc(rows)


# --- API and inbound edge ---------------------------------------------------------------

_INGEST = _counter(
    "hookline_ingest_requests",
    "Ingest API requests by route (events, batch) and HTTP status.",
    ["route", "status"],
)
_INBOUND = _counter(
    "hookline_inbound_requests",
    "Calls to inbound webhooks (POST /hooks/in/{id}) by HTTP status.",
    ["status"],
)
_RATE_LIMITED = _counter(
    "hookline_rate_limited",
    "Calls refused by a rate limit, by limit (ingest, manage, recover, inbound_hook, inbound_org).",
    ["limit"],
)
RATE_LIMITS = ("ingest", "manage", "recover", "inbound_hook", "inbound_org")
_RATE_CHILDREN = {name: _RATE_LIMITED.labels(name) for name in RATE_LIMITS}


def ingest_request(route: str, status: int) -> None:
    if _on:
        _INGEST.labels(route, str(status)).inc()


def inbound_request(status: int) -> None:
    if _on:
        _INBOUND.labels(str(status)).inc()


def rate_limited(key: str) -> None:
    """A refusal of the shared limiter's `key` (`ingest:<org>`, `inbound:hook:<id>` ...),
    counted by the kind of limit only."""
    if not _on:
        return
    kind, _, rest = key.partition(":")
    if kind == "inbound":
        kind = "inbound_" + rest.partition(":")[0]
    child = _RATE_CHILDREN.get(kind)
    if child is not None:  # never a label made from anything but the names above
        child.inc()
