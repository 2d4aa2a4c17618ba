"""PostgreSQL adapter: the asyncpg pool, the migration runner, and the translation of
the driver's errors into the error tree (as eventsourcing's postgres.py does)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.exceptions import _base as asyncpg_base

from shared.core.errors import HooklineError, Unavailable, Unstorable

MIGRATIONS_PACKAGE = "shared.migrations"
# Any fixed number: serialises concurrent migrate() calls across processes.
_MIGRATION_LOCK = 0x686F6F6B


P = ParamSpec("P")
T = TypeVar("T")
D = TypeVar("D")  # a dataclass

# The server cannot take the statement now; the same statement may succeed later.
_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock: retry the txn
    OSError,  # refused, reset, timed out
)
# The values themselves cannot be stored: server-side (NUL, bad encoding, out of range)
# and client-side (asyncpg refusing to encode an argument, a ValueError).
_DATA_ERRORS = (asyncpg.DataError, asyncpg_base.DataError)


def translate(exc: BaseException) -> HooklineError | None:
    """The error of the tree a driver error stands for (None: not a driver error we
    know, a bug)."""
    if isinstance(exc, HooklineError):
        return exc
    if isinstance(exc, _DATA_ERRORS):  # before InterfaceError: the client's is one
        return Unstorable("a value cannot be stored", field="body")
    if isinstance(exc, _OUTAGES):
        return Unavailable("a dependency is unavailable; try again")
    return None


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """Raises the block's driver errors as `Unavailable` (retryable) or `Unstorable`."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc)
        if translated is None or translated is exc:
            raise
        raise translated from exc


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """`db_errors` around an adapter's async method."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        with db_errors():
            return await fn(*args, **kwargs)

    return call


def from_columns(cls: type[D], row: Mapping[str, Any], **computed: Any) -> D:
    """A dataclass of `row`: each field the column of its name, but those in `computed`."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: row[n] for n in names if n not in computed}, **computed)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    # `json`'s binary form is its UTF-8 text: orjson's bytes go as they are, with no
    # decoding to str and encoding back (the batches of ingest and of the inbound log are
    # one `json` document each, 0.3 MB for 500 events).
    await conn.set_type_codec(
        "json",
        encoder=orjson.dumps,
        decoder=orjson.loads,
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: Hookline keeps no session state on pooled connections (no SET, no
    LISTEN, no session-level advisory lock; those use connections of their own). asyncpg
    still rolls back a transaction left open; its default reset query (RESET ALL, UNLISTEN,
    pg_advisory_unlock_all, CLOSE ALL) would cost one more round trip on every release:
    measured, 1 in 5 of the inbound edge's samples."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any
) -> asyncpg.Pool:
    """A pool whose connections encode and decode json/jsonb with orjson."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        **kw,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, *, attempts: int = 50, delay: float = 0.2) -> asyncpg.Connection:
    """One connection, retried while the server starts."""
    for i in range(attempts):
        try:
            conn = await asyncpg.connect(dsn)
            await _init_connection(conn)
            return conn
        except (OSError, asyncpg.CannotConnectNowError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration, in order of file name."""
    files = [f for f in resources.files(MIGRATIONS_PACKAGE).iterdir() if f.name.endswith(".sql")]
    return [
        (f.name.removesuffix(".sql"), f.read_text()) for f in sorted(files, key=lambda f: f.name)
    ]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations not yet recorded, each in its own transaction; idempotent."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied
