"""The console's inbound webhook pages in-process: tenancy, CSRF, the secret shown once,
Send test, the invocation log (filters, cursor, a hostile call shown inert)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.api.console.views.inbound import PAGE_SIZE
from shared.config import Settings
from tests.integration.api_support import bearer, new_repo, org_token
from tests.integration.console_support import sign_in
from tests.integration.test_inbound import events_of, make_inbound, path_of

SCRIPT = "<script>window.pwned=1</script>"
IMG = '<img src=x onerror="window.pwned=2">'
SECRET = re.compile(r"data-secret>([^<]+)<")


@pytest.fixture
async def client(provisioned: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(provisioned))) as c:
        yield c


async def _session(client: TestClient, settings: Settings, org: str) -> tuple[dict[str, str], str]:
    """(bearer headers, console CSRF token) of a fresh org token signed in on `client`."""
    headers = await org_token(client, settings, org)
    return headers, await sign_in(client, headers["Authorization"].split()[1])


async def _api_hook(client: TestClient, headers: dict[str, str], hook_id: str) -> Any:
    resp = await client.get(f"/api/v1/inbound-webhooks/{hook_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_another_orgs_inbound_pages_are_404(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, edge: TestClient, org: str
) -> None:
    other = org + "-other"
    theirs = await make_inbound(client, await org_token(client, provisioned, other), other, "app")
    await edge.post(path_of(theirs), json={}, headers={"X-Webhook-Secret": theirs["secret"]})
    _, csrf = await _session(client, provisioned, org)
    inbound = f"/console/inbound/{theirs['id']}"
    invocation = await pool.fetchval(
        "SELECT id FROM inbound_invocations WHERE inbound_webhook_id = $1", theirs["id"]
    )
    for path in (
        f"/console/orgs/{other}/inbound",
        f"/console/repos/{other}/app/inbound",
        f"/console/orgs/{other}/inbound/new",
        inbound,
        inbound + "/edit",
        inbound + "/delete",
        f"{inbound}/invocations/{invocation}",
        "/console/inbound/ih_nosuchhook",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "text/html" in resp.content_type and "Not found" in await resp.text()
    for action in ("test", "disable", "rotate-secret", "delete", "edit"):
        resp = await client.post(f"{inbound}/{action}", data={"csrf": csrf, "name": "x"})
        assert resp.status == 404, action
    made = await client.post(f"/console/orgs/{other}/inbound/new", data={"csrf": csrf, "name": "x"})
    assert made.status == 404
    got = await _api_hook(client, bearer(provisioned.admin_token), theirs["id"])
    assert got["active"] is True and got["name"] == "ci"


async def test_every_inbound_form_needs_the_csrf_token(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    headers, csrf = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, "widgets")
    page = f"/console/inbound/{hook['id']}"
    for data in ({"name": "new"}, {"name": "new", "csrf": "wrong" + csrf}):
        resp = await client.post(f"/console/orgs/{org}/inbound/new", data=data)
        assert resp.status == 403 and "text/html" in resp.content_type
    for action in ("test", "disable", "enable", "rotate-secret", "delete", "edit"):
        resp = await client.post(f"{page}/{action}", data={"name": "renamed"})
        assert resp.status == 403, action
    listed = await client.get(f"/api/v1/repos/{org}/widgets/inbound-webhooks", headers=headers)
    [still] = (await listed.json())["inbound_webhooks"]
    assert (still["id"], still["name"], still["active"]) == (hook["id"], "ci", True)
    logged = await pool.fetchval(
        "SELECT count(*) FROM inbound_invocations WHERE inbound_webhook_id = $1", hook["id"]
    )
    assert logged == 0  # no test call went through


async def test_add_shows_field_errors_then_the_url_and_the_secret_once(
    client: TestClient, provisioned: Settings, edge: TestClient, org: str
) -> None:
    headers, csrf = await _session(client, provisioned, org)
    repo = new_repo()
    form = await (await client.get(f"/console/orgs/{org}/inbound/new?repo={repo}")).text()
    for label in ('for="name">Name', 'for="target">Target', 'for="event">Event', "Secret"):
        assert label in form, label
    assert 'value="agent.action" selected' in form and 'value="ping"' not in form
    assert 'value="secret_header" selected' in form
    assert "none: no verification" in form

    data = {"csrf": csrf, "repo": repo, "name": "", "event": "agent.action",
            "verify": "secret_header", "target": "triage-agent"}  # fmt: skip
    bad = await client.post(f"/console/orgs/{org}/inbound/new", data=data)
    text = await bad.text()
    assert bad.status == 422 and re.search(r'id="name"[^>]*aria-invalid="true"', text)
    assert 'id="name-error"' in text and 'value="triage-agent"' in text
    short = await client.post(
        f"/console/orgs/{org}/inbound/new", data={**data, "name": "ci", "secret": "short"}
    )
    assert short.status == 422 and 'id="secret-error"' in await short.text()

    created = await client.post(
        f"/console/orgs/{org}/inbound/new",
        data={**data, "name": "ci-failures", "event": "pipeline.run_completed"},
    )
    page = await created.text()
    assert created.status == 200 and created.url.path.startswith("/console/inbound/ih_")
    hook_id = created.url.path.rsplit("/", 1)[1]
    secret = SECRET.search(page)
    assert secret and secret.group(1).startswith("whsec_")
    url = f"{provisioned.public_url}/hooks/in/{hook_id}"
    assert f'<code id="hook-url" class="url">{url}</code>' in page
    assert 'data-copy="hook-url"' in page and 'data-copy="curl"' in page
    curl = re.search(r'<pre class="body curl"[^>]*>(.*?)</pre>', page, re.S)
    assert curl and url in curl.group(1) and "X-Webhook-Secret: $SECRET" in curl.group(1)
    assert secret.group(1) not in curl.group(1)
    got = await _api_hook(client, headers, hook_id)
    assert (got["name"], got["target"], got["event"], got["verify"]) == (
        "ci-failures", "triage-agent", "pipeline.run_completed", "secret_header"
    )  # fmt: skip
    again = await (await client.get(f"/console/inbound/{hook_id}")).text()
    assert "data-secret" not in again and secret.group(1) not in again

    # The secret shown is the one the edge wants; the list shows the hook.
    proof = {"X-Webhook-Secret": secret.group(1)}
    call = await edge.post(f"/hooks/in/{hook_id}", json={"message": "hi"}, headers=proof)
    assert call.status == 202
    listing = await (await client.get(f"/console/repos/{org}/{repo}/inbound")).text()
    assert f'data-inbound="{hook_id}"' in listing and "ci-failures" in listing
    assert "badge active" in listing and "just now" in listing
    overview = await (await client.get(f"/console/orgs/{org}")).text()
    assert f'href="/console/repos/{org}/{repo}/inbound"' in overview

    open_hook = await client.post(
        f"/console/orgs/{org}/inbound/new", data={**data, "name": "deploys", "verify": "none"}
    )
    open_page = await open_hook.text()
    assert "anyone who has its URL can call it" in open_page
    assert "X-Webhook-Secret" not in re.sub(r"<option.*?</option>", "", open_page)


async def test_send_test_takes_the_rest_path_and_shows_the_event_inline(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    headers, csrf = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, "widgets", target="bot", event="agent.action")
    page = f"/console/inbound/{hook['id']}"
    sent = await client.post(page + "/test", data={"csrf": csrf})
    html = await sent.text()
    assert sent.status == 200 and sent.url.path == page
    shown = re.search(r'<code class="event-id">([^<]+)</code>', html)
    assert shown and "accepted (HTTP 202)" in html
    [event] = await events_of(pool, org)
    assert event["id"] == shown.group(1) and event["type"] == "agent.action"
    assert event["payload"]["target"] == "bot"
    assert event["payload"]["message"] == "A test call from Hookline"
    [row] = re.findall(r'<tr class="invocation accepted" data-invocation="([^"]+)"', html)
    assert event["payload"]["inbound"]["invocation_id"] == row
    assert 'class="badge test">test<' in html
    # The result shows once; the log keeps the call, marked as a test, like the REST one.
    assert 'id="test"' not in await (await client.get(page)).text()
    logged = await (
        await client.get(f"/api/v1/inbound-webhooks/{hook['id']}/invocations", headers=headers)
    ).json()
    assert [(i["id"], i["test"], i["result"]) for i in logged["invocations"]] == [
        (row, True, "accepted")
    ]

    await client.post(page + "/disable", data={"csrf": csrf})
    refused = await (await client.post(page + "/test", data={"csrf": csrf})).text()
    assert "disabled (HTTP 403)" in refused and "enable it to test it" in refused
    assert len(await events_of(pool, org)) == 1
    assert '<tr class="invocation disabled"' in refused


async def _call(
    pool: asyncpg.Pool, hook: dict[str, Any], at: datetime, result: str, **more: Any
) -> str:
    ident = uuid.uuid4()
    await pool.execute(
        "INSERT INTO inbound_invocations (id, inbound_webhook_id, org, received_at, source_ip,"
        " headers, body, result, status, event_id, error)"
        " VALUES ($1, $2, $3, $4, '198.51.100.7', $5, $6, $7, $8, $9, $10)",
        ident,
        hook["id"],
        hook["scope"]["org"],
        at,
        more.get("headers", {"Content-Type": "application/json"}),
        more.get("body", "{}"),
        result,
        202 if result == "accepted" else 401,
        "evt-" + ident.hex[:8] if result == "accepted" else None,
        None if result == "accepted" else "the X-Webhook-Secret header is wrong",
    )
    return str(ident)


async def test_invocation_log_filters_pages_and_marks(
    client: TestClient, provisioned: Settings, pool: asyncpg.Pool, org: str
) -> None:
    headers, _ = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, "widgets")
    start = datetime.now(UTC) - timedelta(hours=1)
    accepted = [
        await _call(pool, hook, start + timedelta(seconds=i), "accepted")
        for i in range(PAGE_SIZE + 2)
    ]
    refused = await _call(pool, hook, start + timedelta(minutes=5), "unauthorized")
    page = f"/console/inbound/{hook['id']}"
    first = await (await client.get(page)).text()
    assert re.findall(r'data-invocation="([^"]+)"', first)[0] == refused
    row = re.search(r'<tr class="invocation unauthorized".*?</tr>', first, re.S)
    assert row and "✗" in row.group(0) and ">401<" in row.group(0)
    assert "198.51.100.7" in row.group(0) and "header is wrong" in row.group(0)
    ok_row = re.search(r'<tr class="invocation accepted".*?</tr>', first, re.S)
    assert ok_row and "✓" in ok_row.group(0) and "evt-" in ok_row.group(0)

    only = await (await client.get(page + "?result=accepted")).text()
    assert re.findall(r'data-invocation="([^"]+)"', only) == accepted[::-1][:PAGE_SIZE]
    older = re.search(r'href="(/console/inbound/[^"]+cursor=[^"]+)"', only)
    assert older and "result=accepted" in older.group(1)
    second = await (await client.get(older.group(1).replace("&amp;", "&"))).text()
    assert re.findall(r'data-invocation="([^"]+)"', second) == accepted[1::-1]
    assert "Newest" in second and "Older calls" not in second
    bad = await client.get(page + "?result=bogus&cursor=zzz")
    assert bad.status == 200 and 'id="result-error"' in await bad.text()


async def test_a_hostile_call_renders_inert(
    client: TestClient, provisioned: Settings, edge: TestClient, org: str
) -> None:
    headers, _ = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, "widgets", name=SCRIPT, target=IMG)
    call = await edge.post(
        path_of(hook),
        data=SCRIPT.encode(),
        headers={"Content-Type": "text/plain", "X-Webhook-Secret": "nope", "X-Evil": IMG},
    )
    assert call.status == 401
    page = f"/console/inbound/{hook['id']}"
    html = await (await client.get(page)).text()
    [inv] = re.findall(r'data-invocation="([^"]+)"', html)
    for path in (page, f"{page}/invocations/{inv}", f"/console/repos/{org}/widgets/inbound"):
        resp = await client.get(path)
        text = await resp.text()
        assert resp.status == 200, path
        assert "<script>window.pwned" not in text and "<img src=x" not in text, path
        assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", text))
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    detail = await (await client.get(f"{page}/invocations/{inv}")).text()
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=" in detail  # the X-Evil header, as text
    assert "[redacted]" in detail and "nope" not in detail  # the secret header
    assert "<h3>Body</h3>" in detail  # a short body was kept whole
    assert (await client.get(f"{page}/invocations/not-a-uuid")).status == 404
    assert (await client.get(f"{page}/invocations/{uuid.uuid4()}")).status == 404


async def test_edit_rotate_disable_enable_and_delete(
    client: TestClient, provisioned: Settings, edge: TestClient, org: str
) -> None:
    headers, csrf = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, None)
    page = f"/console/inbound/{hook['id']}"
    assert "org-level" in await (await client.get(f"/console/orgs/{org}/inbound")).text()
    form = {"csrf": csrf, "name": "alerts", "target": "", "event": "issue.opened",
            "verify": "github"}  # fmt: skip
    saved = await client.post(page + "/edit", data=form)
    assert saved.status == 200 and "Saved." in await saved.text()
    got = await _api_hook(client, headers, hook["id"])
    assert (got["name"], got["target"], got["event"], got["verify"]) == (
        "alerts", None, "issue.opened", "github"
    )  # fmt: skip
    assert "X-Hub-Signature-256: sha256=$SIG" in await saved.text()
    bad = await client.post(page + "/edit", data={**form, "event": "ping"})
    assert bad.status == 422 and 'id="event-error"' in await bad.text()

    rotated = await (await client.post(page + "/rotate-secret", data={"csrf": csrf})).text()
    secret = SECRET.search(rotated)
    assert secret and secret.group(1) != hook["secret"]
    await client.post(page + "/edit", data={**form, "verify": "secret_header"})
    call = await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": secret.group(1)})
    assert call.status == 202

    off = await (await client.post(page + "/disable", data={"csrf": csrf})).text()
    assert "This inbound webhook is disabled" in off and ">Enable</button>" in off
    refused = await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": secret.group(1)})
    assert refused.status == 403
    assert "badge disabled" in await (await client.get(f"/console/orgs/{org}/inbound")).text()
    on = await (await client.post(page + "/enable", data={"csrf": csrf})).text()
    assert "This inbound webhook is disabled" not in on and ">Disable</button>" in on

    confirm = await (await client.get(page + "/delete")).text()
    assert "Delete this inbound webhook?" in confirm
    gone = await client.post(page + "/delete", data={"csrf": csrf})
    assert gone.status == 200 and gone.url.path == f"/console/orgs/{org}/inbound"
    assert "answers 404 now" in await gone.text()
    assert (await client.get(page)).status == 404
    after = await edge.post(path_of(hook), json={}, headers={"X-Webhook-Secret": secret.group(1)})
    assert after.status == 404


async def test_a_body_over_16_kib_is_shown_as_cut(
    client: TestClient, provisioned: Settings, edge: TestClient, org: str
) -> None:
    headers, _ = await _session(client, provisioned, org)
    hook = await make_inbound(client, headers, org, "widgets")
    big = orjson.dumps({"message": "x" * 20_000}).decode()
    call = await edge.post(
        path_of(hook),
        data=big.encode(),
        headers={"Content-Type": "application/json", "X-Webhook-Secret": hook["secret"]},
    )
    assert call.status == 202, await call.text()
    page = f"/console/inbound/{hook['id']}"
    [inv] = re.findall(r'data-invocation="([^"]+)"', await (await client.get(page)).text())
    detail = await (await client.get(f"{page}/invocations/{inv}")).text()
    assert "<h3>Body (cut at 16 KiB)</h3>" in detail
    assert "x" * 16_000 in detail and "x" * 16_400 not in detail
