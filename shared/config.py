"""Settings from HOOKLINE_* environment variables: frozen, validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from shared.core.errors import ConfigError
from shared.core.ssrf import Allowlist


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw.strip()


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _bootstrap(raw: str) -> str:
    for part in raw.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port[,host:port...], got {part.strip()!r}")
    return raw.strip()


_HEX = frozenset("0123456789abcdefABCDEF")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=")
MIN_TOKEN_BITS = 256


def token_bits(token: str) -> float:
    """A conservative estimate of a random token's entropy: its characters (after a short
    `xyz_` prefix) times the bits each can carry in the narrowest alphabet they fit."""
    body = token.split("_", 1)[1] if re.fullmatch(r"[a-z]{2,5}_.+", token) else token
    if len(set(body)) < 10:  # "aaaa...", "abab...": whatever the length, not random
        return 0.0
    per_char = 4.0 if set(body) <= _HEX else 6.0 if set(body) <= _BASE64 else 6.5
    return len(body) * per_char


def _admin_token(raw: str) -> str:
    value = raw.strip()
    if value and token_bits(value) < MIN_TOKEN_BITS:
        raise ValueError(
            "too weak: use at least 32 random bytes, e.g. "
            "python -c 'import secrets; print(\"hla_\" + secrets.token_urlsafe(32))'"
        )
    return value


def _db_url(raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql://")
    return raw


def _secret_key(raw: str) -> str:
    # Imported here so that the pure settings module has no hard crypto dependency at import.
    from shared.crypto import validate_key

    if raw.strip():  # empty: services that encrypt or decrypt call require("secret_key")
        validate_key(raw.strip())
    return raw.strip()


def _header_prefix(raw: str) -> str:
    value = raw.strip()
    if not value or not all(c.isalnum() or c == "-" for c in value):
        raise ValueError("must be letters, digits and dashes, e.g. X-Hookline")
    return value


def _public_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError("must be an http(s) URL without a query, e.g. https://hooks.example.com")
    return value


def _smtp_url(raw: str) -> str:
    value = raw.strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must be smtp://host:port or smtps://host:port, or empty")
        parts.port  # noqa: B018 - a bad port raises ValueError here
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "on", "yes"}:
        return True
    if value in {"0", "false", "off", "no"}:
        return False
    raise ValueError("must be 1 or 0 (true/false, on/off)")


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return value


def _setting(env: str, default: str, parse: Callable[[str], Any]) -> Any:
    return field(default=None, metadata={"env": env, "default": default, "parse": parse})


_SECRET_SETTINGS = frozenset({"admin_token", "secret_key"})
_URL_SETTINGS = frozenset({"database_url", "smtp_url"})


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":<hidden>@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True, repr=False)
class Settings:
    """Every HOOKLINE_* variable; a service reads only the ones it needs."""

    database_url: str = _setting(
        "HOOKLINE_DATABASE_URL", "postgresql://hookline@127.0.0.1:54329/hookline", _db_url
    )
    kafka_bootstrap: str = _setting("HOOKLINE_KAFKA_BOOTSTRAP", "127.0.0.1:9092", _bootstrap)
    # Topic layout, read when topics are created (shared.provision): 1 replica on a single
    # broker; 3 on a cluster, where min.insync.replicas=2 lets one broker go.
    kafka_replication: int = _setting("HOOKLINE_KAFKA_REPLICATION", "1", _int(1, 7))
    kafka_partitions: int = _setting("HOOKLINE_KAFKA_PARTITIONS", "12", _int(1, 10_000))
    api_host: str = _setting("HOOKLINE_API_HOST", "127.0.0.1", _nonempty)
    api_port: int = _setting("HOOKLINE_API_PORT", "8080", _int(0, 65535))
    admin_token: str = _setting("HOOKLINE_ADMIN_TOKEN", "", _admin_token)
    secret_key: str = _setting("HOOKLINE_SECRET_KEY", "", _secret_key)
    allowed_targets: Allowlist = _setting("HOOKLINE_ALLOWED_TARGETS", "", Allowlist.parse)
    header_prefix: str = _setting("HOOKLINE_HEADER_PREFIX", "X-Hookline", _header_prefix)
    instance: str = _setting("HOOKLINE_INSTANCE", "", _str)  # this replica's name
    disable_after_failures: int = _setting(
        "HOOKLINE_DISABLE_AFTER_FAILURES", "10", _int(1, 1_000_000)
    )
    disable_after_seconds: int = _setting(
        "HOOKLINE_DISABLE_AFTER_SECONDS", "3600", _int(0, 365 * 86400)
    )
    # Notices (DESIGN.md section 11): webhook.failing after this many consecutive failures;
    # mail through this SMTP server (smtp://host:port, smtps:// for TLS; empty sends none).
    failing_after_failures: int = _setting(
        "HOOKLINE_FAILING_AFTER_FAILURES", "3", _int(1, 1_000_000)
    )
    smtp_url: str = _setting("HOOKLINE_SMTP_URL", "", _smtp_url)
    mail_from: str = _setting("HOOKLINE_MAIL_FROM", "hookline@localhost", _nonempty)
    max_webhooks_per_repo: int = _setting("HOOKLINE_MAX_WEBHOOKS_PER_REPO", "20", _int(1, 10_000))
    max_org_webhooks: int = _setting("HOOKLINE_MAX_ORG_WEBHOOKS", "20", _int(1, 10_000))
    max_payload_bytes: int = _setting(
        "HOOKLINE_MAX_PAYLOAD_BYTES", str(1024 * 1024), _int(1024, 64 * 1024 * 1024)
    )
    ingest_rate_per_org: int = _setting(
        "HOOKLINE_INGEST_RATE_PER_ORG", "60000", _int(1, 100_000_000)
    )
    manage_rate_per_org: int = _setting("HOOKLINE_MANAGE_RATE_PER_ORG", "600", _int(1, 100_000_000))
    recover_rate_per_org: int = _setting(
        "HOOKLINE_RECOVER_RATE_PER_ORG", "10", _int(1, 100_000_000)
    )
    retention_days: int = _setting("HOOKLINE_RETENTION_DAYS", "30", _int(1, 3650))
    sender_concurrency: int = _setting("HOOKLINE_SENDER_CONCURRENCY", "256", _int(1, 10_000))
    sender_inflight_per_webhook: int = _setting(
        "HOOKLINE_SENDER_INFLIGHT_PER_WEBHOOK", "32", _int(1, 10_000)
    )
    sender_max_idle_connections: int = _setting(
        "HOOKLINE_SENDER_MAX_IDLE_CONNECTIONS", "512", _int(0, 100_000)
    )
    sender_idle_timeout_s: int = _setting("HOOKLINE_SENDER_IDLE_TIMEOUT_S", "30", _int(1, 3600))
    log_level: str = _setting("HOOKLINE_LOG_LEVEL", "INFO", _log_level)
    inbound_host: str = _setting("HOOKLINE_INBOUND_HOST", "127.0.0.1", _nonempty)
    inbound_port: int = _setting("HOOKLINE_INBOUND_PORT", "8081", _int(0, 65535))
    public_url: str = _setting("HOOKLINE_PUBLIC_URL", "http://127.0.0.1:8081", _public_url)
    inbound_rate_per_hook: int = _setting(
        "HOOKLINE_INBOUND_RATE_PER_HOOK", "100", _int(1, 100_000_000)
    )
    inbound_rate_per_org: int = _setting(
        "HOOKLINE_INBOUND_RATE_PER_ORG", "1000", _int(1, 100_000_000)
    )
    trusted_proxies: Allowlist = _setting("HOOKLINE_TRUSTED_PROXIES", "", Allowlist.parse)
    # /healthz, /readyz and /metrics (shared/health.py) on 0.0.0.0:this port; 0 serves none.
    metrics_port: int = _setting("HOOKLINE_METRICS_PORT", "0", _int(0, 65535))
    # Prometheus metrics (shared/metrics.py): 0 records nothing and serves no /metrics.
    metrics: bool = _setting("HOOKLINE_METRICS", "1", _flag)
    # After SIGTERM a process drains for at most this long, then exits: under Kubernetes'
    # default 30 s grace before SIGKILL.
    shutdown_grace_s: int = _setting("HOOKLINE_SHUTDOWN_GRACE_S", "25", _int(1, 3600))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads every variable; a set variable wins over the default even when empty."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, default, parse = f.metadata["env"], f.metadata["default"], f.metadata["parse"]
            raw = env.get(name, default)
            try:
                values[f.name] = parse(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return cls(**values)

    def __repr__(self) -> str:
        """Every setting, with the admin token, the encryption key and the database
        password hidden: settings end up in logs and tracebacks."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_SETTINGS and value:
                value = "<hidden>"
            elif f.name in _URL_SETTINGS:
                value = _hide_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def instance_name(self, service: str) -> str:
        """This replica's name, for client ids and logs: HOOKLINE_INSTANCE, else
        `<service>-<pid>`."""
        return self.instance or f"{service}-{os.getpid()}"

    def require(self, *names: str) -> None:
        """Fails naming the variable when a setting a service needs is empty."""
        for name in names:
            if not getattr(self, name):
                env = next(f.metadata["env"] for f in fields(self) if f.name == name)
                raise ConfigError(f"{env}: must be set")
