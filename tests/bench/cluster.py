"""The bench's own PostgreSQL and Kafka, Hookline's services as processes, and their RSS.

Its state dir and ports are its own (.hookline/bench-infra, 54359, 19292/19293), so the
bench never disturbs `make run` or the test suite. Stops only what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet

from tests.bench.sampling import child_pid
from tests.e2e.harness import ServiceProcess
from tests.infra import ROOT, local_database_url

BENCH_HOME = ROOT / ".hookline" / "bench-infra"
PG_PORT = os.environ.get("HOOKLINE_BENCH_PG_PORT", "54359")
KAFKA_PORT = os.environ.get("HOOKLINE_BENCH_KAFKA_PORT", "19292")
KAFKA_CONTROLLER_PORT = str(int(KAFKA_PORT) + 1)
SCRIPTS = ROOT / "deploy" / "local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchInfra:
    """deploy/local/pg.sh + kafka.sh under the bench's own home and ports."""

    def __init__(self) -> None:
        self.env = {
            **os.environ,
            "HOOKLINE_HOME": str(BENCH_HOME),
            "HOOKLINE_PG_PORT": PG_PORT,
            "HOOKLINE_KAFKA_PORT": KAFKA_PORT,
            "HOOKLINE_KAFKA_CONTROLLER_PORT": KAFKA_CONTROLLER_PORT,
        }
        self.started: list[str] = []
        self.kafka_bootstrap = f"127.0.0.1:{KAFKA_PORT}"

    @property
    def database_url(self) -> str:
        """Known once pg.sh has started the cluster (it keeps the role's password)."""
        return local_database_url(BENCH_HOME, PG_PORT)

    def running(self, script: str) -> bool:
        status = subprocess.run([SCRIPTS / script, "status"], env=self.env, capture_output=True)
        return status.returncode == 0

    def start(self, *, fresh: bool) -> None:
        """Starts what is not running; `fresh` first wipes the data of a stopped server, so
        that no backlog or webhook of an earlier run competes with this one."""
        for script in ("pg.sh", "kafka.sh"):
            was_running = self.running(script)
            if fresh and not was_running:
                shutil.rmtree(BENCH_HOME / script.removesuffix(".sh"), ignore_errors=True)
            subprocess.run(
                [SCRIPTS / script, "start"], env=self.env, check=True, stdout=subprocess.DEVNULL
            )
            if not was_running:
                self.started.append(script)

    def provision(self, env: dict[str, str]) -> None:
        """`python -m shared.provision` with the services' environment."""
        subprocess.run(
            [sys.executable, "-m", "shared.provision"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        while self.started:
            script = self.started.pop()
            subprocess.run([SCRIPTS / script, "stop"], env=self.env, check=False)


def _kept(name: str, make: Callable[[], str]) -> str:
    """A value kept beside the bench's data (its encryption key must outlive a run when
    the infra is kept running)."""
    path = BENCH_HOME / name
    if not path.exists():
        BENCH_HOME.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def service_env(infra: BenchInfra, api_port: int) -> dict[str, str]:
    return {
        "HOOKLINE_DATABASE_URL": infra.database_url,
        "HOOKLINE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "HOOKLINE_API_HOST": "127.0.0.1",
        "HOOKLINE_API_PORT": str(api_port),
        "HOOKLINE_SECRET_KEY": _kept("secret.key", lambda: Fernet.generate_key().decode()),
        # (admin-v2: runs before 2026-12-03 kept a 24-byte token, now refused as too weak)
        "HOOKLINE_ADMIN_TOKEN": _kept("admin-v2.token", lambda: "hla_" + secrets.token_urlsafe(32)),
        "HOOKLINE_ALLOWED_TARGETS": "127.0.0.0/8",
        "HOOKLINE_INBOUND_PORT": str(free_port()),
        # Nothing else: the services run with make up's settings (log level included);
        # the bench's org gets its rate limits raised through the API, as a user would.
    }


class BenchProcess(ServiceProcess):
    """A service process whose log goes under the run's directory, optionally profiled."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        *,
        instance: str,
        log_dir: Path,
        wrapper: Sequence[str] = (),
    ) -> None:
        super().__init__(name, env, instance=instance)
        self.log_path = log_dir / f"{instance}.log"
        self.command = (
            [*wrapper, "-m", f"services.{name}"]
            if wrapper
            else [sys.executable, "-m", f"services.{name}"]
        )
        self.profiled = bool(wrapper)

    def start(self) -> BenchProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self, timeout: float = 20) -> int | None:
        """A profiled service is told to stop itself: py-spy passes no signal on (its child
        outlived it, still in the consumer group of the next run's Kafka on the same
        port, and no profile was written). The profiler then writes and ends."""
        if self.profiled and self.proc is not None and self.proc.poll() is None:
            child = child_pid(self.proc.pid)
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
                try:
                    return self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
        return super().stop(timeout)


def _frozen(p: BenchProcess) -> list[int]:
    """The pids to stop for `p`: the service itself, also when a profiler runs it."""
    if p.pid is None:
        return []
    child = child_pid(p.pid) if p.profiled else None
    return [p.pid] if child is None else [child, p.pid]


def profiler_wrapper(out: Path) -> tuple[list[str], str]:
    """py-spy when installed (it runs the service as its child), else pyinstrument."""
    spy = shutil.which("py-spy")
    if spy:
        return [
            spy,
            "record",
            "--format",
            "speedscope",
            "-o",
            str(out) + ".speedscope.json",
            "--",
            sys.executable,
        ], "py-spy"
    return [
        sys.executable,
        "-m",
        "pyinstrument",
        "-r",
        "pyisession",
        "-o",
        str(out) + ".pyisession",
        "-i",
        "0.002",
    ], "pyinstrument"


@dataclass
class Cluster:
    """relay, matcher, api and N senders; knows how to stop one and when all are ready."""

    env: dict[str, str]
    log_dir: Path
    processes: list[BenchProcess] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # instances stopped on purpose

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HOOKLINE_API_PORT']}"

    @property
    def inbound_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HOOKLINE_INBOUND_PORT']}"

    def start(self, name: str, wrapper: Sequence[str] = ()) -> BenchProcess:
        n = sum(1 for p in self.processes if p.name == name) + 1
        proc = BenchProcess(
            name, self.env, instance=f"bench-{name}-{n}", log_dir=self.log_dir, wrapper=wrapper
        ).start()
        self.processes.append(proc)
        return proc

    def running(self, name: str) -> list[BenchProcess]:
        return [p for p in self.processes if p.name == name and p.alive]

    def dead(self) -> list[BenchProcess]:
        return [p for p in self.processes if not p.alive and p.instance not in self.stopped]

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """Every `name` process frozen (SIGSTOP) for the block, then resumed (SIGCONT).

        For a figure of one stage alone: with the relays paused, what the API or the
        inbound edge accepts waits in the outbox (committed, as always) and goes on when
        they resume; nothing is lost, the stages behind simply take no CPU meanwhile."""
        pids = [pid for p in self.running(name) for pid in _frozen(p)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop_one(self, proc: BenchProcess, timeout: float = 30) -> None:
        self.stopped.add(proc.instance)
        proc.stop(timeout)

    def stop(self) -> None:
        for p in reversed(self.processes):
            self.stopped.add(p.instance)
            p.stop(90 if p.profiled else 30)

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if dead := self.dead():
                    raise RuntimeError(
                        "service exited during start: "
                        + "\n".join(f"--- {p.instance} ---\n{p.tail()}" for p in dead)
                    )
                urls = [self.api_url] + ([self.inbound_url] if self.running("inbound") else [])
                ready = 0
                for url in urls:
                    try:
                        async with session.get(url + "/readyz") as r:
                            ready += r.status == 200
                    except (aiohttp.ClientError, OSError):
                        pass
                if ready == len(urls):
                    return
                await asyncio.sleep(0.3)
        raise RuntimeError(f"the API's or inbound's /readyz did not answer 200 within {timeout}s")
