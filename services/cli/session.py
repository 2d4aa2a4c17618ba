"""The settings a CLI run reads from its environment, and the session its commands share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.cli.client import ApiClient, CliError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_KAFKA = "127.0.0.1:9092"


@dataclass(frozen=True)
class CliSettings:
    """What the CLI reads from the environment (flags override the first two)."""

    url: str = DEFAULT_URL
    token: str | None = None
    kafka_bootstrap: str = DEFAULT_KAFKA

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CliSettings:
        # As for the services, a variable that is set wins even when empty (and an empty
        # URL then fails, naming it); an empty token is no token.
        return cls(
            url=env.get("HOOKLINE_URL", DEFAULT_URL),
            token=env.get("HOOKLINE_TOKEN") or None,
            kafka_bootstrap=env.get("HOOKLINE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA),
        )

    def checked(self) -> CliSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"HOOKLINE_URL must be an http(s) URL, not {self.url!r}")
        if not self.kafka_bootstrap.strip():
            raise CliError("HOOKLINE_KAFKA_BOOTSTRAP is empty (host:port[,host:port...])")
        return self


@dataclass
class Session:
    """Handed to every command (`click.pass_obj`)."""

    settings: CliSettings
    api: ApiClient
