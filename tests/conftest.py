"""Real PostgreSQL and Kafka, started and provisioned once per run; the database a module
uses (the shared one, or one of its own) and the clients on it, per module."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.config import Settings
from shared.db import create_pool
from shared.kafka import ensure_topics, topic_specs, wait_for_kafka
from tests.infra import Infra, migrated, own_database, test_infra

# Fixed, so that rows left in a reused local test database stay readable across runs.
TEST_SECRET_KEY = base64.urlsafe_b64encode(b"hookline-test-key-not-for-prod!!").decode()
TEST_ADMIN_TOKEN = "hla_" + secrets.token_urlsafe(32)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The order's seed, also under -q (pytest-randomly prints it only in the header):
    `-p randomly --randomly-seed=N` replays a failing order."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"test order: --randomly-seed={seed}")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with test_infra() as found:
        yield found


@pytest.fixture(scope="session")
async def shared_database(infra: Infra) -> str:
    """The tests' shared database, migrated once per session."""
    await migrated(infra.database_url)
    return infra.database_url


@pytest.fixture(scope="session")
async def topics_ready(infra: Infra) -> None:
    """Kafka answering and Hookline's topics created, once per session."""
    await wait_for_kafka(infra.kafka_bootstrap)
    await ensure_topics(infra.kafka_bootstrap, topic_specs())


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, shared_database: str) -> AsyncIterator[str]:
    """The shared database; for a module marked `own_database`, one of its own, made for it
    and dropped after it: what runs there (a relay publishing every unpublished outbox row,
    an ANALYZE of whole tables, retention dropping partitions) sees only that module's rows,
    never those other tests or earlier runs left."""
    if request.node.get_closest_marker("own_database") is None:
        yield shared_database
        return
    async with own_database(shared_database, request.module.__name__) as url:
        yield url


@pytest.fixture(scope="module")
def service_env(infra: Infra, database_url: str) -> dict[str, str]:
    """HOOKLINE_* variables for the code under test and for service subprocesses."""
    return {
        "HOOKLINE_DATABASE_URL": database_url,
        "HOOKLINE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "HOOKLINE_SECRET_KEY": TEST_SECRET_KEY,
        "HOOKLINE_ADMIN_TOKEN": TEST_ADMIN_TOKEN,
        "HOOKLINE_ALLOWED_TARGETS": "127.0.0.0/8,::1/128",
        "HOOKLINE_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env({**os.environ, **service_env})


@pytest.fixture(scope="module")
async def provisioned(settings: Settings, topics_ready: None) -> Settings:
    """Settings whose database is migrated and whose Kafka has the topics."""
    return settings


@pytest.fixture(scope="module")
async def pool(provisioned: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(provisioned.database_url, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture
def org() -> str:
    """A fresh org per test, so tests never see each other's rows."""
    return "org-" + uuid.uuid4().hex[:10]
