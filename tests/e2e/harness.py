"""End-to-end harness: Hookline's services as real processes, and a real receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardWebhook

from shared.core.signing import verify_github, verify_standard
from tests.infra import ROOT, TEST_HOME

LOG_DIR = TEST_HOME / "logs"


class ServiceProcess:
    """`python -m services.<name>` with the test environment; its output goes to a log file."""

    def __init__(self, name: str, env: dict[str, str], *, instance: str) -> None:
        self.name = name
        self.instance = instance
        self.env = {**os.environ, **env, "HOOKLINE_INSTANCE": instance}
        self.log_path = LOG_DIR / f"{instance}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    peer_port: int = 0  # the sender's end of the connection

    @property
    def delivery_id(self) -> str:
        return self.headers.get("X-Hookline-Delivery", "")

    @property
    def attempt(self) -> int:
        return int(self.headers.get("X-Hookline-Attempt", "0"))

    def json(self) -> Any:
        return orjson.loads(self.body)

    def signatures_valid(self, secret: str) -> bool:
        """Both signatures, by the project's verifiers and by the reference ones."""
        h = self.headers
        ours = verify_github(secret, self.body, h.get("X-Hub-Signature-256")) and verify_standard(
            secret,
            h.get("webhook-id", ""),
            h.get("webhook-timestamp", "0"),
            self.body,
            h.get("webhook-signature"),
        )
        return ours and github_valid(secret, self) and standard_valid(secret, self)


def github_valid(secret: str, r: Received) -> bool:
    """GitHub's documented check: HMAC-SHA256 of the raw body keyed with the secret."""
    digest = hmac.new(secret.encode("utf-8"), r.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + digest, r.headers.get("X-Hub-Signature-256", ""))


def standard_valid(secret: str, r: Received) -> bool:
    """The Standard Webhooks reference library's check (timestamp tolerance included)."""
    headers = {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("webhook-")}
    try:
        StandardWebhook(secret).verify(r.body, headers, json_parse=False)
    except Exception:
        return False
    return True


Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


def answer(status: int, **headers: str) -> Behaviour:
    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status, headers=headers, text="ok")

    return respond


def sequence(*statuses: int) -> Behaviour:
    """Answers statuses in order per path, then the last one forever."""

    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=statuses[min(n, len(statuses) - 1)], text="")

    return respond


def hang(seconds: float) -> Behaviour:
    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=200)

    return respond


@dataclass
class Receiver:
    """A loopback HTTP server recording every request, with behaviour per path."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body = await request.read()
        n = len(self.received[path])
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.received[path].append(
            Received(path, dict(request.headers), body, time.time(), peer[1] if peer else 0)
        )
        behaviour = self.behaviours.get(path, answer(200))
        return await behaviour(request, n)

    def at(self, path: str) -> list[Received]:
        return self.received.get("/" + path.lstrip("/"), [])

    def duplicates(self, path: str) -> Counter[str]:
        counts = Counter(r.delivery_id for r in self.at(path))
        return Counter({k: v for k, v in counts.items() if v > 1})


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], *, timeout: float = 30, what: str = ""
) -> Any:
    """Polls `check` until it returns something truthy; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


def pid_holding(local_port: int, pids: list[int]) -> int | None:
    """Which of `pids` owns the loopback TCP socket bound to `local_port` (from /proc):
    the process on the other end of a connection the receiver holds."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == local_port:
                inodes.add(cols[9])
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


def logs_of(processes: list[ServiceProcess]) -> str:
    return "\n".join(f"--- {p.instance} ---\n{p.tail()}" for p in processes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(
    base: str, processes: list[ServiceProcess], *, what: str, timeout: float = 30
) -> None:
    """Until `base`/readyz answers 200; each of `processes` must stay alive meanwhile."""

    async def ready() -> bool:
        assert all(p.alive for p in processes), logs_of(processes)
        try:
            async with aiohttp.ClientSession() as s, s.get(base + "/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout=timeout, what=what)


__all__ = [
    "Path",
    "Receiver",
    "ServiceProcess",
    "answer",
    "eventually",
    "github_valid",
    "hang",
    "pid_holding",
    "sequence",
    "standard_valid",
]
