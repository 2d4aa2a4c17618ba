"""The local PostgreSQL that deploy/local/pg.sh runs trusts nobody: every connection needs
the role's password, and its socket is in a directory only the server's user can enter."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.infra import ROOT, TEST_HOME, TEST_PG_PORT, Infra, _script_env


@pytest.fixture
def local(infra: Infra) -> Infra:
    if infra.source != "local":
        pytest.skip("the servers come from the environment or Docker, not pg.sh")
    return infra


async def test_a_connection_without_the_password_is_refused(local: Infra) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://hookline@127.0.0.1:{TEST_PG_PORT}/hookline")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://hookline:guess@127.0.0.1:{TEST_PG_PORT}/hookline")
    conn = await asyncpg.connect(local.database_url)
    try:
        socket_dir = await conn.fetchval("SHOW unix_socket_directories")
        assert socket_dir != "/tmp" and socket_dir.endswith("/sock")
        assert await conn.fetchval("SHOW unix_socket_permissions") == "0700"
    finally:
        await conn.close()
    password_file = TEST_HOME / "pg.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600


def test_the_socket_directory_is_closed_to_other_users(local: Infra) -> None:
    url = subprocess.run(
        [ROOT / "deploy" / "local" / "pg.sh", "url"],
        env=_script_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert url == local.database_url
    root_file = TEST_HOME / "pg.root"
    pg_root = Path(root_file.read_text().strip()) if root_file.exists() else TEST_HOME / "pg"
    sock = pg_root / "sock"
    assert sock.is_dir() and stat.S_IMODE(sock.stat().st_mode) == 0o700
    if root_file.exists():  # kept outside the checkout: a fresh, unpredictable name
        assert not pg_root.is_symlink() and pg_root.name.startswith("hookline-pg.")
        assert os.stat(pg_root).st_mode & 0o077 == 0
