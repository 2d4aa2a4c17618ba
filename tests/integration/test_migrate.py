"""`python -m shared.migrate` run by several pods at once: each exits 0 and every migration
is applied exactly once."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.config import Settings
from shared.db import connect, migration_files
from tests.infra import ROOT


@pytest.fixture
async def fresh_database(provisioned: Settings) -> AsyncIterator[str]:
    name = "migrate_" + uuid.uuid4().hex[:12]
    admin = await connect(provisioned.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(provisioned.database_url)
    yield urlunsplit(parts._replace(path="/" + name))
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_three_migrate_jobs_at_once_apply_each_migration_once(
    fresh_database: str, provisioned: Settings
) -> None:
    env = {
        **os.environ,
        "HOOKLINE_DATABASE_URL": fresh_database,
        "HOOKLINE_KAFKA_BOOTSTRAP": provisioned.kafka_bootstrap,
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.migrate",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (out, _) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out.decode()
    # One run applied them all; the others, waiting on the lock, found nothing left to do.
    texts = [out.decode() for out, _ in outputs]
    assert sum("none (up to date)" in t for t in texts) == 2, texts
    conn = await connect(fresh_database)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(versions) == [v for v, _ in migration_files()]
