"""The local PostgreSQL that deploy/local/pg.sh runs trusts nobody: every connection needs
the role's password, and its socket is in a directory only the server's user can enter."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# pg.sh hands its directory to the server's user (postgres) only when it runs as root.
as_root = pytest.mark.skipif(
    os.geteuid() != 0 or not glob.glob("/usr/lib/postgresql/*/bin/initdb"),
    reason="pg.sh hands its directory to the server's user only when it runs as root",
)


@contextlib.contextmanager
def pg_sh(home: Path) -> Iterator[subprocess.CompletedProcess[str]]:
    """`pg.sh start` with `home` as the state directory (its answer), then `stop`, and the
    fresh cluster directory it made under /var/tmp removed."""
    env = {**os.environ, "HOOKLINE_HOME": str(home), "HOOKLINE_PG_PORT": str(_free_port())}
    script = ROOT / "deploy" / "local" / "pg.sh"
    try:
        yield subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    finally:
        subprocess.run([script, "stop"], env=env, check=False, capture_output=True)
        kept = home / "pg.root"
        pg_root = Path(kept.read_text().strip()) if kept.is_file() else None
        if pg_root is not None and pg_root.parent == Path("/var/tmp"):
            shutil.rmtree(pg_root, ignore_errors=True)


@as_root
def test_a_cluster_out_of_the_servers_reach_goes_to_a_fresh_directory_and_follows_no_link(
    tmp_path: Path,
) -> None:
    """A state directory the server's user cannot enter (under a 0700 root directory, as
    /root is): the cluster goes to a fresh, unpredictable directory under /var/tmp, and a
    link planted at the name pg.sh once derived from the state directory is left alone
    (a predictable name and a chown that followed links gave the target to postgres)."""
    home = tmp_path / "home"  # pytest's base directory is root's, mode 0700
    victim = tmp_path / "victim"
    victim.mkdir()
    digest = hashlib.md5(str(home).encode()).hexdigest()[:12]
    planted = Path(f"/var/tmp/hookline-pg-{digest}")
    planted.unlink(missing_ok=True)  # left by a run that was killed
    planted.symlink_to(victim)
    try:
        with pg_sh(home) as started:
            # The planted link and what it points to are untouched.
            assert planted.is_symlink() and os.readlink(planted) == str(victim)
            assert victim.stat().st_uid == 0 and list(victim.iterdir()) == []
            assert started.returncode == 0, started.stderr
            pg_root = Path((home / "pg.root").read_text().strip())
            assert pg_root.parent == Path("/var/tmp") and pg_root.name.startswith("hookline-pg.")
            assert not pg_root.is_symlink() and (pg_root / "data" / "PG_VERSION").is_file()
            assert stat.S_IMODE(os.lstat(pg_root).st_mode) == 0o700
            assert os.lstat(pg_root).st_uid == pwd.getpwnam("postgres").pw_uid
    finally:
        planted.unlink(missing_ok=True)


@as_root
def test_a_link_planted_as_the_cluster_directory_does_not_hand_its_target_over(
    tmp_path: Path,
) -> None:
    """`$HOOKLINE_HOME/pg` made a link to a directory of root's: pg.sh (as root) gives
    the server's user the link at most, never what it points to."""
    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (home / "pg").symlink_to(victim)
    with pg_sh(home) as started:
        assert victim.stat().st_uid == 0, "the link's target was handed to the server's user"
        assert list(victim.iterdir()) == []
        assert started.returncode == 0, started.stderr
        pg_root = Path((home / "pg.root").read_text().strip())
        assert pg_root.parent == Path("/var/tmp") and not pg_root.is_symlink()
