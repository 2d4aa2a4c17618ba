"""Settings: every variable read, bad values named, a set variable wins even when empty."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from shared.config import ConfigError, Settings
from shared.core.ssrf import parse_host_ip


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.api_port == 8080 and s.header_prefix == "X-Hookline"
    assert s.disable_after_failures == 10 and s.disable_after_seconds == 3600
    assert s.max_payload_bytes == 1024 * 1024 and not s.allowed_targets
    # Idle keep-alive connections: 512 in all per sender, each closed after 30 s idle.
    assert (s.sender_max_idle_connections, s.sender_idle_timeout_s) == (512, 30)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOOKLINE_API_PORT", "http"),
        ("HOOKLINE_API_PORT", "70000"),
        ("HOOKLINE_KAFKA_BOOTSTRAP", "localhost"),
        ("HOOKLINE_DATABASE_URL", "mysql://x"),
        ("HOOKLINE_SECRET_KEY", "short"),
        ("HOOKLINE_ALLOWED_TARGETS", "10.0.0.0/33"),
        ("HOOKLINE_HEADER_PREFIX", "X Hook"),
        ("HOOKLINE_DISABLE_AFTER_FAILURES", "0"),
        ("HOOKLINE_LOG_LEVEL", "LOUD"),
        ("HOOKLINE_SENDER_IDLE_TIMEOUT_S", "0"),
        ("HOOKLINE_SENDER_MAX_IDLE_CONNECTIONS", "-1"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_set_variable_wins_even_when_empty() -> None:
    allowed = Settings.from_env({"HOOKLINE_ALLOWED_TARGETS": "127.0.0.0/8,::1/128"})
    loopback = parse_host_ip("127.0.0.1")
    assert loopback is not None and allowed.allowed_targets.allows(loopback)
    empty = Settings.from_env({"HOOKLINE_ALLOWED_TARGETS": ""})
    assert not empty.allowed_targets.allows(loopback)


def test_required_setting_missing_exits_with_the_name_not_a_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.api"],
        env={"HOOKLINE_SECRET_KEY": "", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "configuration error: HOOKLINE_SECRET_KEY" in out.stderr
    assert "Traceback" not in out.stderr


def test_repr_hides_the_admin_token_the_key_and_the_database_password() -> None:
    token = "hla_" + secrets.token_urlsafe(32)
    key = "aG9va2xpbmUtdGVzdC1rZXktbm90LWZvci1wcm9kISE="
    settings = Settings.from_env(
        {
            "HOOKLINE_ADMIN_TOKEN": token,
            "HOOKLINE_SECRET_KEY": key,
            "HOOKLINE_DATABASE_URL": "postgresql://hookline:s3cr3t-pw@db:5432/hookline",
        }
    )
    shown = repr(settings)
    for secret in (token, key, "s3cr3t-pw"):
        assert secret not in shown and secret not in str(settings)
    assert "postgresql://hookline:<hidden>@db:5432/hookline" in shown
    assert "admin_token='<hidden>'" in shown and "header_prefix='X-Hookline'" in shown


@pytest.mark.parametrize(
    "weak",
    [
        "admin",
        "hla_" + secrets.token_hex(16),  # 128 bits of hex
        "hla_" + "a" * 100,
        "hla_" + secrets.token_urlsafe(24),  # 192 bits
        "ab" * 40,
    ],
)
def test_a_weak_admin_token_is_refused_at_start(weak: str) -> None:
    with pytest.raises(ConfigError, match="HOOKLINE_ADMIN_TOKEN: too weak"):
        Settings.from_env({"HOOKLINE_ADMIN_TOKEN": weak})


@pytest.mark.parametrize(
    "strong",
    [
        "hla_" + secrets.token_urlsafe(32),
        secrets.token_hex(32),
        "",
        "x" + secrets.token_urlsafe(40),
    ],
)
def test_strong_or_no_admin_tokens_are_taken(strong: str) -> None:
    assert Settings.from_env({"HOOKLINE_ADMIN_TOKEN": strong}).admin_token == strong
