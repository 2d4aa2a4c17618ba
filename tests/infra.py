"""Where the tests' PostgreSQL and Kafka come from: the environment, Docker, or our scripts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.db import connect, migrate

ROOT = Path(__file__).resolve().parent.parent
TEST_HOME = ROOT / ".hookline" / "test"
# Overridable so that two checkouts can run their suites side by side.
TEST_PG_PORT = os.environ.get("HOOKLINE_TEST_PG_PORT", "54339")
TEST_KAFKA_PORT = os.environ.get("HOOKLINE_TEST_KAFKA_PORT", "19092")
TEST_KAFKA_CONTROLLER_PORT = str(int(TEST_KAFKA_PORT) + 1)


def local_database_url(home: Path, port: str, database: str = "hookline") -> str:
    """The URL of a cluster started by deploy/local/pg.sh with `home` as its state
    directory (the role's password is kept there)."""
    password = (home / "pg.password").read_text().strip()
    return f"postgresql://hookline:{password}@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class Infra:
    database_url: str
    kafka_bootstrap: str
    source: str  # "environment" | "testcontainers" | "local"


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOOKLINE_HOME=str(TEST_HOME),
        HOOKLINE_PG_PORT=TEST_PG_PORT,
        HOOKLINE_KAFKA_PORT=TEST_KAFKA_PORT,
        HOOKLINE_KAFKA_CONTROLLER_PORT=TEST_KAFKA_CONTROLLER_PORT,
    )
    return env


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def _local() -> Iterator[Infra]:
    env = _script_env()
    scripts = ROOT / "deploy" / "local"
    started: list[str] = []  # the scripts whose service this run started
    try:
        for name in ("pg.sh", "kafka.sh"):
            running = (
                subprocess.run([scripts / name, "status"], env=env, capture_output=True).returncode
                == 0
            )
            subprocess.run(
                [scripts / name, "start"], env=env, check=True, stdout=subprocess.DEVNULL
            )
            if not running:
                started.append(name)
        yield Infra(
            database_url=local_database_url(TEST_HOME, TEST_PG_PORT),
            kafka_bootstrap=f"127.0.0.1:{TEST_KAFKA_PORT}",
            source="local",
        )
    finally:
        for name in reversed(started):
            subprocess.run([scripts / name, "stop"], env=env, check=False)


@contextmanager
def _containers() -> Iterator[Infra]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:16", driver=None) as pg,
        KafkaContainer().with_kraft() as kafka,
    ):
        yield Infra(pg.get_connection_url(), kafka.get_bootstrap_server(), "testcontainers")


@contextmanager
def test_infra() -> Iterator[Infra]:
    """The environment's servers if named, else Docker's, else our own local ones."""
    db, kafka = os.environ.get("HOOKLINE_DATABASE_URL"), os.environ.get("HOOKLINE_KAFKA_BOOTSTRAP")
    if db and kafka:
        yield Infra(db, kafka, "environment")
    elif _docker_answers():
        with _containers() as infra:
            yield infra
    else:
        with _local() as infra:
            yield infra


async def migrated(database_url: str) -> None:
    """Hookline's migrations applied to that database (those not applied yet)."""
    conn = await connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def own_database(database_url: str, name: str) -> AsyncIterator[str]:
    """A database of its own on the server of `database_url`, migrated, dropped at the
    end (with whatever is still connected to it); its URL. The role must be allowed to
    create databases (the local scripts' and testcontainers' are)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[-30:]
    database = f"hookline_t_{slug}_{uuid.uuid4().hex[:8]}"
    url = urlsplit(database_url)._replace(path="/" + database).geturl()

    async def run(statement: str) -> None:
        # A connection per statement: the server may be stopped and started meanwhile.
        admin = await connect(database_url)
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    await run(f'CREATE DATABASE "{database}"')
    try:
        await migrated(url)
        yield url
    finally:
        await run(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
