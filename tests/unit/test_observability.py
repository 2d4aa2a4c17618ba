"""deploy/observability/: the scrape config and the alert rules pass promtool (Debian's
`prometheus` package, installed by `make promtool`), each alert fires on the series meant
to fire it (`alerts_test.yml`), every metric name the rules and the dashboard use is one
the code exports, and the scrape targets are the ports `make up` gives and prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from shared import metrics
from shared.pipeline_metrics import PipelineGauges, Snapshot
from tests.infra import ROOT

HERE = ROOT / "deploy" / "observability"
# Series Prometheus makes itself, not the code.
PROMETHEUS_OWN = {"up"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "inf", "nan"}


def exported_names() -> set[str]:
    """Every sample name a Hookline process can expose: its own registry's families (a
    counter as `_total`, a histogram as `_bucket`, `_count`, `_sum`) and the API's
    pipeline gauges."""
    gauges = PipelineGauges(pool=None, lag=None)  # type: ignore[arg-type]
    gauges._snapshot = Snapshot(backlog=1, oldest_s=1.0, disabled=1, lag={("g", "t"): 1})
    families = [*metrics.REGISTRY.collect(), *gauges.collect()]
    names: set[str] = set()
    for family in families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (no full parser: strings, label
    matchers, ranges and grouping clauses are cut first, and function names are the
    identifiers followed by a parenthesis)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        if m.start() and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # a duration or number's suffix (1e3, 5m)
        found.add(m.group())
    return found


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load((HERE / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def dashboard_exprs() -> list[str]:
    doc: dict[str, Any] = orjson.loads((HERE / "grafana-dashboard.json").read_bytes())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_the_name_extractor_finds_names_and_skips_functions_labels_and_ranges() -> None:
    expr = (
        'sum by (group) (deriv(hookline_consumer_lag{group=~"a|b"}[5m])) * 60 > 0 and '
        "histogram_quantile(0.99, sum by (le) (rate(hookline_x_bucket[$__rate_interval])))"
        ' / up{job="hookline-sender"} == 0 unless absent(nope_total offset 1h)'
    )
    assert names_in(expr) == {"hookline_consumer_lag", "hookline_x_bucket", "up", "nope_total"}


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    exprs = rule_exprs()
    assert {
        "HooklineConsumerLagGrowing",
        "HooklineOutboxStale",
        "HooklineDeadLettersRising",
        "HooklineSenderDown",
        "HooklineFailureRateHigh",
    } <= set(exprs)


def test_every_name_in_the_rules_and_the_dashboard_is_exported() -> None:
    exported = exported_names() | PROMETHEUS_OWN
    assert {"hookline_consumer_lag", "hookline_delivery_attempts_total"} <= exported
    assert all(n.startswith("hookline_") for n in exported - PROMETHEUS_OWN)
    exprs = [*rule_exprs().values(), *dashboard_exprs()]
    assert len(exprs) > 20
    for expr in exprs:
        used = names_in(expr)
        assert used, expr
        assert used <= exported, (sorted(used - exported), expr)


def test_the_scrape_targets_are_the_ports_make_up_prints(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOOKLINE_HOME": str(tmp_path),
        "HOOKLINE_SENDERS": "2",
        # Set, so that sourcing env.sh makes no key, token or database of its own.
        "HOOKLINE_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "HOOKLINE_SECRET_KEY": "k",
        "HOOKLINE_ADMIN_TOKEN": "t",
    }
    for name in ("HOOKLINE_API_HOST", "HOOKLINE_API_PORT", "HOOKLINE_METRICS_BASE_PORT"):
        env.pop(name, None)
    local = ROOT / "deploy" / "local"
    printed = subprocess.run(
        ["bash", "-c", f"source {local}/common.sh; source {local}/env.sh; print_endpoints"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    line = next(ln for ln in printed.splitlines() if "metrics:" in ln)
    urls = dict(re.findall(r"(\S+) http://([\d.]+:\d+)/metrics", line))
    assert set(urls) == {"api", "relay-1", "matcher-2", "inbound-4", "sender-5", "sender-6"}
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    by_service: dict[str, set[str]] = {}
    for process, target in urls.items():
        by_service.setdefault("hookline-" + process.rsplit("-", 1)[0], set()).add(target)
    assert jobs == by_service
    # The jobs the rules name are scraped.
    for expr in rule_exprs().values():
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job in jobs, job


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return found


def test_promtool_accepts_the_scrape_config_and_its_rules(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "config", str(HERE / "prometheus.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_each_alert_fires_on_its_series_and_not_on_look_alikes(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (HERE / "alerts_test.yml").read_text()))
    assert tested == set(rule_exprs())  # every rule has a case
