"""The web console in-process: sign-in, sessions, CSRF, tenancy, forms, escaping."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.api.console.views.webhooks import PAGE_SIZE
from shared.config import Settings
from tests.integration.api_support import admin, bearer, make_webhook, new_repo, org_token
from tests.integration.console_support import csrf_of, log_attempt, sign_in

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture
async def client(provisioned: Settings) -> AsyncIterator[TestClient]:
    """A fresh app and cookie jar per test: each test signs in on its own."""
    async with TestClient(TestServer(create_app(provisioned))) as c:
        yield c


async def _org_session(client: TestClient, settings: Settings, org: str) -> tuple[str, str]:
    """(bearer token, console CSRF token) of a fresh org token signed in on `client`."""
    token = (await org_token(client, settings, org))["Authorization"].split()[1]
    return token, await sign_in(client, token)


async def test_sign_in_opens_a_strict_http_only_session(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    token = (await org_token(client, provisioned, org))["Authorization"].split()[1]
    login = await client.get("/console/login")
    assert 'for="token">Token</label>' in await login.text()
    resp = await client.post(
        "/console/login",
        data={"token": token, "csrf": csrf_of(await login.text())},
        allow_redirects=False,
    )
    assert resp.status == 303
    cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("hookline_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; over https the cookie is Secure
    landing = await client.get("/console/")
    assert landing.status == 200 and landing.url.path == f"/console/orgs/{org}"
    assert "Sign out" in await landing.text()


async def test_a_bad_token_or_a_missing_csrf_token_does_not_sign_in(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    login = await client.get("/console/login")
    csrf = csrf_of(await login.text())
    bad = await client.post("/console/login", data={"token": "hlt_nope", "csrf": csrf})
    assert bad.status == 401 and "not valid" in await bad.text()
    token = (await org_token(client, provisioned, org))["Authorization"].split()[1]
    forged = await client.post("/console/login", data={"token": token, "csrf": "x" * 43})
    assert forged.status == 403
    assert (await client.get("/console/", allow_redirects=False)).status == 303


async def test_every_form_post_needs_the_session_csrf_token(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    token, csrf = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org)
    form = {"url": "http://127.0.0.1:9/x", "events": "push", "timeout_s": "10", "active": "on"}
    for data in (form, {**form, "csrf": "wrong" + csrf}):
        resp = await client.post(f"/console/orgs/{org}/webhooks/new", data=data)
        assert resp.status == 403 and "text/html" in resp.content_type
    for path in ("ping", "disable", "rotate-secret", "delete"):
        resp = await client.post(f"/console/webhooks/{hook['id']}/{path}", data={})
        assert resp.status == 403, path
    listed = await client.get(f"/api/v1/repos/{org}/widgets/webhooks", headers=bearer(token))
    assert [w["id"] for w in (await listed.json())["webhooks"]] == [hook["id"]]
    assert (await listed.json())["webhooks"][0]["active"] is True
    out = await client.post("/console/logout", data={})
    assert out.status == 403


async def test_another_orgs_pages_are_404(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    other = org + "-other"
    other_headers = await org_token(client, provisioned, other)
    theirs = await make_webhook(client, other_headers, other)
    delivery = await log_attempt(pool, theirs)
    await _org_session(client, provisioned, org)
    for path in (
        f"/console/orgs/{other}",
        f"/console/orgs/{other}/webhooks",
        f"/console/repos/{other}/widgets",
        f"/console/orgs/{other}/webhooks/new",
        f"/console/webhooks/{theirs['id']}",
        f"/console/webhooks/{theirs['id']}/edit",
        f"/console/deliveries/{delivery}",
        f"/console/webhooks/{uuid.uuid4()}",
        "/console/no/such/page",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "text/html" in resp.content_type and "Not found" in await resp.text()
    assert (await client.get("/console/admin")).status == 403


async def test_revoking_the_token_ends_its_sessions(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, _ = await _org_session(client, provisioned, org)
    assert (await client.get(f"/console/orgs/{org}")).status == 200
    (token_id,) = await pool.fetchrow(
        "SELECT id FROM tokens WHERE token_hash = sha256($1::text::bytea)", token
    )
    resp = await client.delete(f"/api/v1/tokens/{token_id}", headers=admin(provisioned))
    assert resp.status == 204
    after = await client.get(f"/console/orgs/{org}", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/console/login"
    left = await pool.fetchval(
        "SELECT count(*) FROM console_sessions WHERE token_hash = sha256($1::text::bytea)", token
    )
    assert left == 0


async def test_sign_out_ends_the_session(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    _, csrf = await _org_session(client, provisioned, org)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/console/"))
    stolen = cookie["hookline_console"].value
    resp = await client.post("/console/logout", data={"csrf": csrf})
    assert resp.status == 200 and resp.url.path == "/console/login"
    client.session.cookie_jar.update_cookies({"hookline_console": stolen})
    again = await client.get(f"/console/orgs/{org}", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/console/login"


async def test_add_webhook_shows_field_errors_then_the_secret_once(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    token, csrf = await _org_session(client, provisioned, org)
    repo = new_repo()
    form = await client.get(f"/console/orgs/{org}/webhooks/new?repo={repo}")
    html = await form.text()
    for label in ("Payload URL", "Content type", "Events", "Secret", "Add webhook"):
        assert label in html, label
    assert 'value="pull_request.opened"' in html and 'value="pull_request"' in html
    data = {
        "csrf": csrf,
        "repo": repo,
        "url": "ftp://example.com/hook",
        "content_type": "json",
        "events": "push",
        "timeout_s": "10",
        "active": "on",
    }
    bad = await client.post(f"/console/orgs/{org}/webhooks/new", data=data)
    text = await bad.text()
    assert bad.status == 422
    assert re.search(r'id="url"[^>]*aria-invalid="true"', text)
    assert 'id="url-error"' in text and "ftp://example.com/hook" in text
    none = await client.post(
        f"/console/orgs/{org}/webhooks/new",
        data={**data, "url": "http://127.0.0.1:9/h", "events": []},
    )
    assert none.status == 422 and 'id="events-error"' in await none.text()
    slow = await client.post(
        f"/console/orgs/{org}/webhooks/new",
        data={**data, "url": "http://127.0.0.1:9/h", "timeout_s": "99"},
    )
    assert slow.status == 422 and 'id="timeout_s-error"' in await slow.text()

    good = {
        **data,
        "url": "http://127.0.0.1:9/h",
        "events": ["pull_request", "pull_request.opened", "push"],
        "retry": "1, 2",
    }
    created = await client.post(f"/console/orgs/{org}/webhooks/new", data=good)
    page = await created.text()
    assert created.status == 200 and created.url.path.startswith("/console/webhooks/")
    secret = re.search(r"data-secret>([^<]+)<", page)
    assert secret and secret.group(1).startswith("whsec_")
    hook_id = created.url.path.rsplit("/", 1)[1]
    got = await (await client.get(f"/api/v1/webhooks/{hook_id}", headers=bearer(token))).json()
    assert got["events"] == ["pull_request", "push"] and got["retry"] == {"schedule": [1, 2]}
    again = await client.get(f"/console/webhooks/{hook_id}")
    assert "data-secret" not in await again.text()
    assert secret.group(1) not in await again.text()


async def test_edit_disable_enable_and_delete(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    token, csrf = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org, events=["push"])
    page = f"/console/webhooks/{hook['id']}"
    edit = await client.get(page + "/edit")
    assert "Save" in await edit.text()
    saved = await client.post(
        page + "/edit",
        data={
            "csrf": csrf,
            "url": hook["url"],
            "events": ["push", "star"],
            "timeout_s": "5",
            "content_type": "form",
            "active": "on",
            "description": "mine",
        },
    )
    assert saved.status == 200 and "Saved." in await saved.text()
    got = await (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=bearer(token))).json()
    assert (got["events"], got["timeout_s"], got["content_type"]) == (["push", "star"], 5, "form")

    rotated = await (await client.post(page + "/rotate-secret", data={"csrf": csrf})).text()
    secret = re.search(r"data-secret>([^<]+)<", rotated)
    assert secret and secret.group(1).startswith("whsec_") and secret.group(1) != hook["secret"]
    again = await (await client.get(page)).text()
    assert "data-secret" not in again and secret.group(1) not in again  # shown once

    off = await client.post(page + "/disable", data={"csrf": csrf})
    text = await off.text()
    assert "This webhook is disabled" in text and ">Enable</button>" in text
    on = await client.post(page + "/enable", data={"csrf": csrf})
    assert (
        "This webhook is disabled" not in await on.text()
        and ">Disable</button>" in await (await client.get(page)).text()
    )

    nul = await client.post(
        page + "/edit",
        data={"csrf": csrf, "url": hook["url"], "events": "push", "timeout_s": "5",
              "content_type": "form", "active": "on", "description": "a\x00b"},
    )  # fmt: skip
    assert nul.status == 422 and "text/html" in nul.content_type

    confirm = await client.get(page + "/delete")
    assert "Delete this webhook?" in await confirm.text()
    gone = await client.post(page + "/delete", data={"csrf": csrf})
    assert gone.status == 200 and "Deleted the webhook" in await gone.text()
    assert (await client.get(page)).status == 404


async def test_send_test_waits_for_the_answer_then_shows_it_inline(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, csrf = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org)
    page = f"/console/webhooks/{hook['id']}"
    sent = await client.post(page + "/ping", data={"csrf": csrf})
    assert sent.status == 200 and sent.url.path == page
    assert {"ping", "sent"} <= set(sent.url.query) and 'id="test"' in await sent.text()
    # Not answered yet: the page says so and reloads itself.
    unanswered = uuid.uuid4()
    waiting = await (await client.get(f"{page}?ping={unanswered}&sent={int(time.time())}")).text()
    assert "waiting for the endpoint" in waiting and 'http-equiv="refresh"' in waiting
    # Answered: the result inline, no more reloading.
    await log_attempt(pool, hook, delivery_id=unanswered, event_type="ping")
    answered = await (await client.get(f"{page}?ping={unanswered}&sent={int(time.time())}")).text()
    assert "HTTP 500" in answered and 'http-equiv="refresh"' not in answered
    assert f'href="/console/deliveries/{unanswered}"' in answered
    # Long unanswered: it stops reloading.
    stale = await (await client.get(f"{page}?ping={uuid.uuid4()}&sent=1000")).text()
    assert "No answer logged yet" in stale and 'http-equiv="refresh"' not in stale


async def test_hostile_bodies_and_headers_render_as_text(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, _ = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org, description=HOSTILE)
    delivery = await log_attempt(
        pool, hook, response_body=HOSTILE, response_headers={"X-Evil": HOSTILE}
    )
    for path in (
        f"/console/deliveries/{delivery}",
        f"/console/webhooks/{hook['id']}",
        f"/console/repos/{org}/widgets",
    ):
        resp = await client.get(path)
        html = await resp.text()
        assert resp.status == 200
        assert "<script>window.pwned" not in html and "<img src=x" not in html
        assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    detail = await client.get(f"/console/deliveries/{delivery}")
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in await detail.text()


async def test_delivery_list_detail_and_stats(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, csrf = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org)
    ok = await log_attempt(pool, hook, outcome="succeeded", status=200, response_body="fine")
    bad = await log_attempt(pool, hook, outcome="failed", status=503)
    page = await client.get(f"/console/webhooks/{hook['id']}")
    html = await page.text()
    assert "Recent deliveries" in html
    assert f'data-delivery="{ok}"' in html and f'data-delivery="{bad}"' in html
    assert "50.0 %" in html and "<svg" in html and "12 ms" in html
    only_failed = await client.get(f"/console/webhooks/{hook['id']}?status=failed")
    assert f'data-delivery="{ok}"' not in await only_failed.text()
    bad_filter = await client.get(f"/console/webhooks/{hook['id']}?event=nope")
    assert bad_filter.status == 200 and 'id="event-error"' in await bad_filter.text()
    detail = await client.get(f"/console/deliveries/{bad}")
    text = await detail.text()
    for word in ("Redeliver", "503", "http_status", "127.0.0.1", "auto", "X-Hookline-Event"):
        assert word in text, word
    redo = await client.post(f"/console/deliveries/{bad}/redeliver", data={"csrf": csrf})
    assert redo.status == 200 and "Redelivery queued as attempt 2" in await redo.text()
    recover = await client.post(
        f"/console/webhooks/{hook['id']}/recover", data={"csrf": csrf, "since": "2000-01-01T00:00"}
    )
    assert recover.status == 200 and "Redelivering" in await recover.text()


async def test_admin_makes_a_token_shown_once_and_revokes_it(
    client: TestClient, provisioned: Settings, org: str
) -> None:
    csrf = await sign_in(client, provisioned.admin_token)
    page = await client.get("/console/admin")
    assert page.status == 200 and "Make a token" in await page.text()
    made = await client.post("/console/admin/tokens", data={"csrf": csrf, "org": org, "name": "ci"})
    html = await made.text()
    token = re.search(r"data-secret>([^<]+)<", html)
    assert token and token.group(1).startswith("hlt_")
    assert f">{org}</a>" in html  # the org is listed now
    assert (
        await client.get(f"/api/v1/orgs/{org}/webhooks", headers=bearer(token.group(1)))
    ).status == 200
    bad = await client.post("/console/admin/tokens", data={"csrf": csrf, "org": "a/b", "name": "x"})
    assert bad.status == 422
    token_id = re.search(r'action="/console/admin/tokens/([0-9a-f-]+)/revoke"', html)
    assert token_id
    await client.post(f"/console/admin/tokens/{token_id.group(1)}/revoke", data={"csrf": csrf})
    assert (
        await client.get(f"/api/v1/orgs/{org}/webhooks", headers=bearer(token.group(1)))
    ).status == 401


async def test_static_assets_and_bare_prefix(client: TestClient) -> None:
    css = await client.get("/console/static/console.css")
    assert css.status == 200 and "Content-Security-Policy" in css.headers
    js = await client.get("/console/static/console.js")
    assert js.status == 200
    bare = await client.get("/console", allow_redirects=False)
    assert bare.status == 308 and bare.headers["Location"] == "/console/"
    api = await client.get("/api/v1/webhooks/x")
    assert api.status == 401 and api.content_type == "application/json"


async def test_recent_deliveries_page_with_the_cursor_and_a_disabled_banner(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, _ = await _org_session(client, provisioned, org)
    hook = await make_webhook(client, bearer(token), org)
    start = datetime.now(UTC) - timedelta(hours=1)
    ids = [
        await log_attempt(
            pool, hook, outcome="succeeded", status=200, at=start + timedelta(seconds=i)
        )
        for i in range(PAGE_SIZE + 2)
    ]
    first = await (await client.get(f"/console/webhooks/{hook['id']}?status=succeeded")).text()
    shown = re.findall(r'data-delivery="([^"]+)"', first)
    assert shown == ids[::-1][:PAGE_SIZE]
    older = re.search(r'href="(/console/webhooks/[^"]+cursor=[^"]+)"', first)
    assert older and "status=succeeded" in older.group(1)
    second = await (await client.get(older.group(1).replace("&amp;", "&"))).text()
    assert re.findall(r'data-delivery="([^"]+)"', second) == ids[1::-1]
    assert "Newest" in second and "Older deliveries" not in second

    await pool.execute(
        "UPDATE webhooks SET active = false, disabled_reason = $2 WHERE id = $1",
        uuid.UUID(hook["id"]),
        "410 Gone from the endpoint",
    )
    banner = await (await client.get(f"/console/webhooks/{hook['id']}")).text()
    assert "This webhook is disabled" in banner and "410 Gone from the endpoint" in banner
    listing = await (await client.get(f"/console/repos/{org}/widgets")).text()
    assert "badge disabled" in listing


def _row(html: str, url: str) -> str:
    """The list's table row of the webhook to `url`."""
    rows = [r for r in html.split("<tr") if f">{url}</a>" in r]
    assert len(rows) == 1, url
    return rows[0]


async def test_overview_and_lists_show_health_badges_last_delivery_and_rate(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    token, _ = await _org_session(client, provisioned, org)
    ok, failing, off = [
        await make_webhook(client, bearer(token), org, repo, url=f"http://127.0.0.1:9/{name}")
        for name, repo in (("ok", "widgets"), ("failing", "widgets"), ("off", None))
    ]
    now = datetime.now(UTC)
    await log_attempt(pool, ok, outcome="failed", status=503, at=now - timedelta(hours=2))
    await log_attempt(pool, ok, outcome="succeeded", status=200, at=now - timedelta(hours=1))
    await log_attempt(pool, ok, outcome="succeeded", status=200, at=now - timedelta(minutes=3))
    await log_attempt(pool, failing, outcome="failed", status=502, at=now - timedelta(minutes=9))
    await log_attempt(pool, ok, outcome="failed", status=500, at=now - timedelta(days=2))
    await pool.execute(
        "INSERT INTO webhook_health (webhook_id, consecutive_failures, first_failure_at)"
        " VALUES ($1, 3, now())",
        uuid.UUID(failing["id"]),
    )
    await pool.execute("UPDATE webhooks SET active = false WHERE id = $1", uuid.UUID(off["id"]))

    overview = await (await client.get(f"/console/orgs/{org}")).text()
    for n, what in ((3, "webhooks"), (1, "failing"), (1, "disabled")):
        assert re.search(rf'<span class="n">{n}</span> {what}<', overview), what
    assert f'href="/console/repos/{org}/widgets">{org}/widgets</a>' in overview
    assert '<span class="badge failing">1</span>' in overview  # widgets: one failing
    assert "1 org-level webhook</a>" in overview and "1 disabled</span>" in overview

    listing = await (await client.get(f"/console/repos/{org}/widgets")).text()
    good = _row(listing, ok["url"])
    assert 'class="badge active"' in good and "✓" in good and "200" in good
    assert "66.7 %" in good  # 2 of the 3 deliveries of the last 24 h
    assert re.search(r'<time datetime="[^"]+Z" title="[^"]+ UTC">3 min ago</time>', good)
    bad = _row(listing, failing["url"])
    assert 'class="badge failing"' in bad and "✗" in bad and "502" in bad and "0.0 %" in bad
    assert off["url"] not in listing  # org-level: on the org's list
    org_level = await (await client.get(f"/console/orgs/{org}/webhooks")).text()
    assert 'class="badge disabled"' in _row(org_level, off["url"])
    assert ok["url"] not in org_level
