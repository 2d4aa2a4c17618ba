"""`make screenshots`: a PNG of each main console page, from a seeded demo org ("acme"),
into .hookline/screenshots/. Uses the test PostgreSQL (like `make test`) and runs the API
as a process; the demo's delivery log is written straight into the tables, spread over
the last 24 hours so that the chart has something to show.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import secrets
import socket
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from selenium.webdriver.support.ui import WebDriverWait

from shared.crypto import SecretBox
from shared.db import connect, create_pool, migrate
from shared.tokens import TokenStore
from tests.browser.chrome import chrome, replaced
from tests.e2e.harness import ServiceProcess
from tests.infra import ROOT, test_infra

OUT = ROOT / ".hookline" / "screenshots"
ORG = "acme"
DEMO_DB = "hookline_screenshots"
# Fixed like the test suite's, so that rows from earlier runs stay readable.
SECRET_KEY = base64.urlsafe_b64encode(b"hookline-test-key-not-for-prod!!").decode()


@dataclass(frozen=True)
class DemoHook:
    repo: str | None
    url: str
    events: list[str]
    description: str
    active: bool = True
    disabled_reason: str | None = None
    retry: dict[str, Any] | None = None
    failing: int = 0


HOOKS = {
    "ci": DemoHook("widgets", "https://ci.acme.example/hooks/hookline", ["push", "pull_request"],
                   "CI: builds every push and pull request"),
    "chat": DemoHook("widgets", "https://chat.acme.example/services/T024/B0871",
                     ["pull_request.opened", "pull_request.merged", "release.published"],
                     "Team chat notifications", failing=4),
    "deploy": DemoHook("api", "https://deploy.acme.example/hooks", ["release"],
                       "Deploys published releases", retry={"schedule": [10, 60, 300]}),
    "docs": DemoHook("docs", "https://docs-preview.acme.example/rebuild", ["push"],
                     "Docs preview builds", active=False,
                     disabled_reason="disabled after 10 failed attempts in a row over 1 h "
                     "(last: timeout)"),
    "audit": DemoHook(None, "https://audit.acme.example/webhooks", ["*"], "Security audit log"),
}  # fmt: skip


def _request(hook_id: str, delivery: uuid.UUID, n: int, event: str, body: str) -> dict[str, str]:
    digest = hashlib.sha256(body.encode()).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "Hookline/0.1.0",
        "X-Hookline-Event": event,
        "X-Hookline-Delivery": str(delivery),
        "X-Hookline-Attempt": str(n),
        "X-Hookline-Signature-256": f"sha256={digest}",
        "X-Hub-Signature-256": f"sha256={digest}",
        "webhook-id": str(delivery),
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + base64.b64encode(bytes.fromhex(digest)).decode(),
    }


@dataclass(frozen=True)
class DemoInbound:
    repo: str | None
    name: str
    target: str | None
    event: str
    verify: str
    active: bool = True


INBOUND = {
    "ci": DemoInbound("widgets", "ci-failures", "triage-agent", "agent.action", "secret_header"),
    "alerts": DemoInbound(None, "pagerduty-alerts", "on-call", "agent.action", "standard"),
    "mirror": DemoInbound("widgets", "github-mirror", None, "pipeline.run_completed", "github"),
    "deploys": DemoInbound("api", "deploys", "release-bot", "agent.action", "none", active=False),
}
# (minutes ago, result, status, error, source IP, message) of ci-failures' calls.
CALLS = [
    (3, "accepted", 202, None, "203.0.113.40", "Build 4711 failed on main"),
    (9, "duplicate", 200, None, "203.0.113.40", "Build 4711 failed on main"),
    (26, "unauthorized", 401, "the X-Webhook-Secret header is wrong", "198.51.100.9", None),
    (48, "accepted", 202, None, "203.0.113.41", "Build 4709 failed on release/2.3"),
    (95, "invalid_payload", 422, "the body must be a JSON object", "203.0.113.41", None),
    (130, "accepted", 202, None, None, "A test call from Hookline"),
    (260, "accepted", 202, None, "203.0.113.40", "Build 4702 failed on main"),
    (410, "rate_limited", 429, "over the inbound webhook's limit of 100 calls a minute",
     "203.0.113.40", None),
    (720, "accepted", 202, None, "203.0.113.42", "Nightly build failed: 3 tests"),
]  # fmt: skip


class Seeder:
    """Writes the demo org: webhooks, health, and a day of deliveries with their attempts;
    inbound webhooks and their calls."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.box = SecretBox(SECRET_KEY)
        self.rand = random.Random(7)
        self.now = datetime.now(UTC)
        self.attempts: list[tuple[Any, ...]] = []
        self.summaries: list[tuple[Any, ...]] = []

    async def webhooks(self) -> dict[str, str]:
        await self.conn.execute(
            "DELETE FROM webhook_health WHERE webhook_id IN"
            " (SELECT id FROM webhooks WHERE org = $1)",
            ORG,
        )
        await self.conn.execute("DELETE FROM webhooks WHERE org = $1", ORG)
        ids = {}
        for name, h in HOOKS.items():
            hook_id = uuid.uuid4()
            ids[name] = str(hook_id)
            await self.conn.execute(
                "INSERT INTO webhooks (id, org, repo, url, events, active, description, retry,"
                " secret_enc, disabled_reason, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
                hook_id, ORG, h.repo, h.url, h.events, h.active, h.description, h.retry,
                self.box.seal("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()),
                h.disabled_reason, self.now - timedelta(days=12),
            )  # fmt: skip
            if h.failing or not h.active:
                await self.conn.execute(
                    "INSERT INTO webhook_health (webhook_id, consecutive_failures,"
                    " first_failure_at) VALUES ($1, $2, $3)",
                    hook_id,
                    h.failing or 10,
                    self.now - timedelta(hours=3),
                )
        return ids

    async def inbound(self) -> dict[str, str]:
        await self.conn.execute("DELETE FROM inbound_webhooks WHERE org = $1", ORG)
        ids = {}
        for name, h in INBOUND.items():
            ids[name] = "ih_" + secrets.token_urlsafe(24)
            await self.conn.execute(
                "INSERT INTO inbound_webhooks (id, org, repo, name, target, event, verify,"
                " secret_enc, active, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                ids[name], ORG, h.repo, h.name, h.target, h.event, h.verify,
                self.box.seal("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()),
                h.active, self.now - timedelta(days=5),
            )  # fmt: skip
        rows: list[tuple[Any, ...]] = []
        for minutes, result, status, error, ip, message in CALLS:
            at = self.now - timedelta(minutes=minutes, seconds=self.rand.randint(0, 50))
            test = ip is None
            headers = {"Content-Type": "application/json", "User-Agent": "curl/8.5.0",
                       "X-Webhook-Secret": "[redacted]"}  # fmt: skip
            if test:
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "User-Agent": "Mozilla/5.0", "Cookie": "[redacted]"}  # fmt: skip
            elif result in ("accepted", "duplicate"):
                headers["Idempotency-Key"] = f"run-{8800 + minutes}-1"
            if message is not None:
                body = orjson.dumps({"message": message, "data": {"pipeline": 4711}}).decode()
            elif result == "invalid_payload":
                body = '["not", "an", "object"]'
            elif result == "unauthorized":
                body = '{"message":"<script>alert(1)</script>"}'
            else:  # rate limited: refused before its body was read
                body = None
            event_id = str(uuid.uuid4()) if result in ("accepted", "duplicate") else None
            rows.append((
                uuid.uuid4(), ids["ci"], ORG, at, ip or "127.0.0.1", headers, body, result,
                status, event_id, error, test,
            ))  # fmt: skip
        await self.conn.executemany(
            "INSERT INTO inbound_invocations (id, inbound_webhook_id, org, received_at,"
            " source_ip, headers, body, result, status, event_id, error, test)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            rows,
        )
        ids["refused-call"] = str(next(r[0] for r in rows if r[7] == "unauthorized"))
        return ids

    def delivery(
        self,
        hook_id: str,
        at: datetime,
        event: str,
        outcomes: Sequence[tuple[str, int | None, str | None, str]],
        *,
        pending: bool = False,
    ) -> uuid.UUID:
        """outcomes: one (outcome, http status, error class, response body) per attempt."""
        delivery = uuid.uuid4()
        event_id = "evt_" + uuid.uuid4().hex[:20]
        family, _, action = event.partition(".")
        payload = {"event": family, "type": event, "event_id": event_id,
                   "created_at": at.isoformat().replace("+00:00", "Z"),
                   "repository": {"full_name": f"{ORG}/widgets"},
                   "sender": {"login": "octo-dev"}}  # fmt: skip
        if action:
            payload["action"] = action
            payload["pull_request"] = {
                "number": self.rand.randint(100, 999),
                "title": "Fix flaky retry test",
            }
        else:
            payload["ref"] = "refs/heads/main"
        body = orjson.dumps(payload).decode()
        started = at
        for n, (outcome, status, error, response) in enumerate(outcomes, start=1):
            last = n == len(outcomes)
            next_at = started + timedelta(minutes=5) if (last and pending) else None
            duration = 10_000.0 if error == "timeout" else self.rand.uniform(35, 260)
            self.attempts.append((
                delivery, uuid.UUID(hook_id), ORG, event_id, event, n,
                "auto" if n == 1 else "retry", outcome, started, duration,
                _request(hook_id, delivery, n, event, body), body, status,
                {"Content-Type": "application/json" if status and status < 300 else "text/html",
                 "Server": "nginx", "Date": started.strftime("%a, %d %b %Y %H:%M:%S GMT")}
                if status else None,
                response if status else None, error, "203.0.113.24", next_at,
            ))  # fmt: skip
            if not last:
                started += timedelta(seconds=60 * n)
        final, status, error, _ = outcomes[-1]
        derived = "pending" if pending else ("dead" if final == "dead" else final)
        self.summaries.append((
            delivery, uuid.UUID(hook_id), ORG, event_id, event,
            "failed" if pending else derived, len(outcomes), at, started, error, status,
            started + timedelta(minutes=5) if pending else None,
        ))  # fmt: skip
        return delivery

    def day(self, ids: dict[str, str]) -> uuid.UUID:
        ok_body = '{"ok":true,"queued":"build-4711"}'
        err = "<html><body><h1>502 Bad Gateway</h1><script>alert('not run')</script></body></html>"
        for i in range(72):  # CI: one every 20 minutes, a bad hour around 5 h ago
            at = self.now - timedelta(minutes=20 * i + self.rand.randint(0, 15))
            event = self.rand.choice(
                ["push", "push", "pull_request.opened", "pull_request.updated"]
            )
            if 14 <= i <= 16:
                self.delivery(ids["ci"], at, event, [("failed", 503, "http_status", "busy")] * 2
                              + [("dead", 503, "http_status", "busy")])  # fmt: skip
            elif i % 9 == 4:
                retried = [
                    ("failed", 500, "http_status", "oops"),
                    ("succeeded", 200, None, ok_body),
                ]
                self.delivery(ids["ci"], at, event, retried)
            else:
                self.delivery(ids["ci"], at, event, [("succeeded", 200, None, ok_body)])
        for i in range(18):  # chat: fine until three hours ago, then failing
            at = self.now - timedelta(minutes=75 * i + 20)
            if i < 3:
                failing = [("failed", 502, "http_status", err), ("failed", None, "timeout", "")]
                self.delivery(ids["chat"], at, "pull_request.opened", failing, pending=True)
            else:
                self.delivery(
                    ids["chat"], at, "pull_request.merged", [("succeeded", 200, None, "ok")]
                )
        for i in range(4):
            at = self.now - timedelta(hours=6 * i + 2)
            self.delivery(ids["deploy"], at, "release.published", [("succeeded", 202, None, "{}")])
            self.delivery(ids["audit"], at, "push", [("succeeded", 204, None, "")])
        return self.delivery(
            ids["chat"], self.now - timedelta(minutes=4), "pull_request.opened",
            [("failed", 502, "http_status", err), ("failed", None, "timeout", "")], pending=True,
        )  # fmt: skip

    async def write(self) -> None:
        await self.conn.execute("SELECT hookline_ensure_partitions(2, 2)")
        await self.conn.executemany(
            "INSERT INTO delivery_attempts (delivery_id, webhook_id, org, event_id, event_type,"
            " attempt, trigger, outcome, started_at, duration_ms, request_headers, request_body,"
            " response_status, response_headers, response_body, error, resolved_ip,"
            " next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " $14, $15, $16, $17, $18)",
            self.attempts,
        )
        await self.conn.executemany(
            "INSERT INTO deliveries (id, webhook_id, org, event_id, event_type, status, attempts,"
            " first_at, last_at, last_error, last_status, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            self.summaries,
        )


async def demo_database(database_url: str) -> str:
    """A database of its own beside the tests' (made afresh each run), so that the pages
    show only the demo; the given one if this server will not make databases."""
    conn = await connect(database_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DEMO_DB}")
    except asyncpg.PostgresError as exc:
        print(f"using the test database ({type(exc).__name__}: {exc})")
        return database_url
    finally:
        await conn.close()
    return database_url.rsplit("/", 1)[0] + "/" + DEMO_DB


async def seed(database_url: str) -> tuple[str, dict[str, str], str]:
    """(org token, webhook ids, the failing delivery's id)."""
    conn = await connect(database_url)
    try:
        await migrate(conn)
        seeder = Seeder(conn)
        ids = await seeder.webhooks()
        failing = seeder.day(ids)
        await seeder.write()
        ids.update({f"inbound-{k}": v for k, v in (await seeder.inbound()).items()})
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        token = await TokenStore(pool).create({"org": ORG, "name": "console demo"})
        for org, name in (("acme", "deploy bot"), ("globex", "ci"), ("initech", "ops")):
            await TokenStore(pool).create({"org": org, "name": name})
        old = await TokenStore(pool).create({"org": "initech", "name": "old laptop"})
        await TokenStore(pool).revoke(old.id)
    finally:
        await pool.close()
    assert token.token is not None
    return token.token, ids, str(failing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, api: ServiceProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert api.alive, api.tail()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the API did not start:\n" + api.tail())


def press(driver: Any, text: str) -> None:
    """Clicks the button labelled `text` and waits for the page it loads (a capture or a
    look-up right after the click could otherwise still see the old page)."""
    old = driver.find_element("tag name", "html")
    driver.find_element("xpath", f"//button[normalize-space()='{text}']").click()
    wait = WebDriverWait(driver, 30, poll_frequency=0.1)
    wait.until(lambda _: replaced(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def capture(driver: Any, name: str) -> Path:
    """The whole page (the window is grown to its height), as OUT/name.png."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    path = OUT / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def shoot(
    base: str, org_token: str, admin_token: str, ids: dict[str, str], failing: str
) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    driver = chrome(1280, 900)
    saved = []
    try:
        driver.get(base + "/console/login")
        saved.append(capture(driver, "01-sign-in"))
        driver.find_element("id", "token").send_keys(org_token)
        press(driver, "Sign in")
        saved.append(capture(driver, "02-org-overview"))
        pages = [
            ("03-webhook-list", f"/console/repos/{ORG}/widgets"),
            ("04-webhook", f"/console/webhooks/{ids['ci']}"),
            ("05-webhook-failing", f"/console/webhooks/{ids['chat']}"),
            ("06-webhook-disabled", f"/console/webhooks/{ids['docs']}"),
            ("07-delivery", f"/console/deliveries/{failing}"),
            ("08-add-webhook", f"/console/orgs/{ORG}/webhooks/new?repo=widgets"),
            ("11-inbound-list", f"/console/repos/{ORG}/widgets/inbound"),
            ("12-inbound", f"/console/inbound/{ids['inbound-ci']}"),
            ("13-inbound-disabled", f"/console/inbound/{ids['inbound-deploys']}"),
            (
                "16-invocation",
                f"/console/inbound/{ids['inbound-ci']}/invocations/{ids['inbound-refused-call']}",
            ),
        ]
        for name, path in pages:
            driver.set_window_size(1280, 900)
            driver.get(base + path)
            saved.append(capture(driver, name))
        # A new inbound webhook: its URL and, this once, its secret.
        driver.set_window_size(1280, 900)
        driver.get(base + f"/console/orgs/{ORG}/inbound/new?repo=widgets")
        saved.append(capture(driver, "14-add-inbound"))
        driver.set_window_size(1280, 900)
        driver.find_element("id", "name").send_keys("sentry-issues")
        driver.find_element("id", "target").send_keys("bug-triage")
        press(driver, "Add inbound webhook")
        saved.append(capture(driver, "15-inbound-created"))
        driver.set_window_size(390, 844)
        driver.get(base + f"/console/webhooks/{ids['chat']}")
        saved.append(capture(driver, "09-phone-webhook"))
        driver.set_window_size(390, 844)
        driver.get(base + f"/console/inbound/{ids['inbound-ci']}")
        saved.append(capture(driver, "17-phone-inbound"))
        driver.set_window_size(1280, 900)
        press(driver, "Sign out")
        driver.find_element("id", "token").send_keys(admin_token)
        press(driver, "Sign in")
        saved.append(capture(driver, "10-admin"))
    finally:
        driver.quit()
    return saved


def main() -> None:
    admin_token = "hla_" + secrets.token_urlsafe(32)
    with test_infra() as infra:
        database_url = asyncio.run(demo_database(infra.database_url))
        token, ids, failing = asyncio.run(seed(database_url))
        port = _free_port()
        env = {
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ADMIN_TOKEN": admin_token,
            "HOOKLINE_API_PORT": str(port),
            "HOOKLINE_PUBLIC_URL": "https://hooks.acme.example",
            "HOOKLINE_LOG_LEVEL": "WARNING",
        }
        api = ServiceProcess("api", env, instance="screenshots-api").start()
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, api)
            saved = shoot(base, token, admin_token, ids, failing)
        finally:
            api.stop()
    for path in saved:
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
