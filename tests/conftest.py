"""Session fixtures: real PostgreSQL and Kafka, migrated and provisioned once per run."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.config import Settings
from shared.db import connect, create_pool, migrate
from shared.kafka import ensure_topics, topic_specs, wait_for_kafka
from tests.infra import Infra, test_infra

# Fixed, so that rows left in a reused local test database stay readable across runs.
TEST_SECRET_KEY = base64.urlsafe_b64encode(b"hookline-test-key-not-for-prod!!").decode()
TEST_ADMIN_TOKEN = "hla_" + secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with test_infra() as found:
        yield found


@pytest.fixture(scope="session")
def service_env(infra: Infra) -> dict[str, str]:
    """HOOKLINE_* variables for the code under test and for service subprocesses."""
    return {
        "HOOKLINE_DATABASE_URL": infra.database_url,
        "HOOKLINE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "HOOKLINE_SECRET_KEY": TEST_SECRET_KEY,
        "HOOKLINE_ADMIN_TOKEN": TEST_ADMIN_TOKEN,
        "HOOKLINE_ALLOWED_TARGETS": "127.0.0.0/8,::1/128",
        "HOOKLINE_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env({**os.environ, **service_env})


@pytest.fixture(scope="session")
async def provisioned(settings: Settings) -> Settings:
    """Migrations applied and topics created, once per session."""
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await wait_for_kafka(settings.kafka_bootstrap)
    await ensure_topics(settings.kafka_bootstrap, topic_specs())
    return settings


@pytest.fixture(scope="session")
async def pool(provisioned: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(provisioned.database_url, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture
def org() -> str:
    """A fresh org per test, so tests never see each other's rows."""
    return "org-" + uuid.uuid4().hex[:10]
