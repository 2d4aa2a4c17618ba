"""deploy/compose/compose.yaml, loaded as YAML (no Docker engine here): every process, two
senders after the migrate job, and only HOOKLINE_* variables that Settings knows."""

from __future__ import annotations

import re
from typing import Any

import yaml

from shared.config import Settings
from tests.infra import ROOT

COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
SETTINGS_ENV = {f.metadata["env"] for f in Settings.__dataclass_fields__.values()}


def _services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_every_hookline_variable_it_sets_is_a_setting() -> None:
    seen: set[str] = set()
    for name, service in _services().items():
        for var in _environment(service):
            if var.startswith("HOOKLINE_"):
                assert var in SETTINGS_ENV, f"{name} sets {var}, which Settings does not read"
                seen.add(var)
    assert {"HOOKLINE_DATABASE_URL", "HOOKLINE_KAFKA_BOOTSTRAP", "HOOKLINE_SECRET_KEY"} <= seen


def test_the_literal_values_parse() -> None:
    for service in _services().values():
        env = _environment(service)
        literal = {k: v for k, v in env.items() if k.startswith("HOOKLINE_") and "${" not in v}
        Settings.from_env(literal)  # raises ConfigError naming a bad one


def test_every_process_runs_from_the_one_image_after_the_migrate_job() -> None:
    services = _services()
    commands = {name: s.get("command") for name, s in services.items()}
    assert commands["migrate"] == ["shared.migrate"]
    for name in ("api", "inbound", "relay", "matcher", "sender"):
        assert commands[name] == [f"services.{name}"]
        assert services[name]["image"] == services["migrate"]["image"]
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["sender"]["deploy"]["replicas"] == 2


def test_kafka_is_the_official_image_in_kraft_mode_and_postgres_is_pinned() -> None:
    services = _services()
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", services["postgres"]["image"])


def test_notice_mail_is_configurable_and_off_by_default() -> None:
    for name in ("api", "inbound", "relay", "matcher", "sender", "migrate"):
        env = _environment(_services()[name])
        # From the operator's environment; empty (no mail) unless set.
        assert env["HOOKLINE_SMTP_URL"] == "${HOOKLINE_SMTP_URL:-}", name
        assert env["HOOKLINE_MAIL_FROM"].startswith("${HOOKLINE_MAIL_FROM:-"), name
    unset = {"HOOKLINE_SMTP_URL": "", "HOOKLINE_MAIL_FROM": "hookline@localhost"}
    assert Settings.from_env(unset).smtp_url == ""
