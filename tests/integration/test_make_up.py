"""`make up` run twice is harmless and `make down` leaves no process: the whole local
stack (PostgreSQL, Kafka, every service) in a state directory and on ports of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import ROOT, TEST_KAFKA_PORT, TEST_PG_PORT

# Ports of their own, overridable; by default offset from the suite's (54429, 19892 and
# 19893 for 54339 and 19092), so two checkouts that set their own test ports run this
# side by side.
PG_PORT = int(os.environ.get("HOOKLINE_TEST_MAKEUP_PG_PORT", int(TEST_PG_PORT) + 90))
KAFKA_PORT = int(os.environ.get("HOOKLINE_TEST_MAKEUP_KAFKA_PORT", int(TEST_KAFKA_PORT) + 800))
CONTROLLER_PORT = KAFKA_PORT + 1
# Workers' /metrics ports: this base plus each one's place (relay-1 on base + 1).
METRICS_BASE_PORT = KAFKA_PORT + 78
# Variables that would point the stack at other servers or reuse another one's secrets.
FOREIGN = (
    "HOOKLINE_DATABASE_URL",
    "HOOKLINE_KAFKA_BOOTSTRAP",
    "HOOKLINE_ADMIN_TOKEN",
    "HOOKLINE_SECRET_KEY",
    "HOOKLINE_API_HOST",
    "HOOKLINE_INBOUND_HOST",
    "HOOKLINE_KAFKA_JARS",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_of(home: Path) -> set[int]:
    """Every live process started with this HOOKLINE_HOME in its environment."""
    marker = f"HOOKLINE_HOME={home}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.add(int(entry.name))
    return found


def lasting(pids: set[int]) -> set[int]:
    """Without PostgreSQL's own children (backends and workers come and go)."""
    out = set()
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm != "postgres":
            out.add(pid)
    return out


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, int]]:
    if any(port_open(p) for p in (PG_PORT, KAFKA_PORT, CONTROLLER_PORT)):
        pytest.fail(f"ports {PG_PORT}/{KAFKA_PORT}/{CONTROLLER_PORT} are taken")
    home = tmp_path / "home"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(
        HOOKLINE_HOME=str(home),
        HOOKLINE_PG_PORT=str(PG_PORT),
        HOOKLINE_KAFKA_PORT=str(KAFKA_PORT),
        HOOKLINE_KAFKA_CONTROLLER_PORT=str(CONTROLLER_PORT),
        HOOKLINE_API_PORT=str(api_port),
        HOOKLINE_INBOUND_PORT=str(free_port()),
        HOOKLINE_SENDERS="1",
        HOOKLINE_METRICS_BASE_PORT=str(METRICS_BASE_PORT),
    )
    try:
        yield env, home, api_port
    finally:
        # Whatever happened, stop what was started: `make down`, then any straggler.
        subprocess.run(["make", "-s", "down"], cwd=ROOT, env=env, capture_output=True)
        for pid in processes_of(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["make", "-s", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"make {target}:\n{done.stdout}\n{done.stderr}"
    return done


def service_pids(home: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in sorted((home / "run").glob("*.pid"))}


def ready(api_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_make_up_twice_is_harmless_and_make_down_leaves_no_process(
    stack: tuple[dict[str, str], Path, int],
) -> None:
    env, home, api_port = stack
    printed = make("up", env)
    first = service_pids(home)
    assert {name.rsplit("-", 1)[0] for name in first} >= {"relay", "matcher", "api", "sender"}
    running = processes_of(home)
    assert set(first.values()) <= running
    assert ready(api_port)
    # Each worker's /metrics on the port `make up` printed for it; the API's on its own.
    relay = f"http://127.0.0.1:{METRICS_BASE_PORT + 1}/metrics"
    assert f"relay-1 {relay}" in printed.stderr, printed.stderr
    assert f"api http://127.0.0.1:{api_port}/metrics" in printed.stderr
    for url in (relay, f"http://127.0.0.1:{api_port}/metrics"):
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b"hookline_process_resident_memory_bytes" in r.read()

    make("up", env)
    assert service_pids(home) == first, "the second `make up` restarted or added services"
    assert lasting(processes_of(home)) == lasting(running), "the second `make up` started more"
    assert ready(api_port)

    make("down", env)
    deadline = time.monotonic() + 60
    while processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_of(home), "processes left after `make down`"
    assert not list((home / "run").glob("*.pid"))
    assert not any(port_open(p) for p in (PG_PORT, KAFKA_PORT, api_port, METRICS_BASE_PORT + 1))
