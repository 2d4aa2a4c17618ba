"""Issue: the REST API, end to end through the API alone."""

from __future__ import annotations

from tests.e2e.conftest import Pipeline
from tests.e2e.harness import Receiver, eventually
from tests.e2e.test_pipeline import Api


async def test_webhook_ingest_log_redeliver_through_the_api(
    pipeline: Pipeline, receiver: Receiver, org: str
) -> None:
    admin = Api(pipeline.api_url)
    status, token = await admin.call("POST", "/tokens", {"org": org, "name": "e2e"})
    assert status == 201
    api = Api(pipeline.api_url, token["token"])

    hook = await api.webhook(org, "app", receiver.url("/flow"), events=["pull_request"])
    status, accepted = await api.call(
        "POST",
        f"/repos/{org}/app/events",
        {"event": "pull_request", "action": "opened", "payload": {"number": 1}},
    )
    assert status == 202
    got = await eventually(lambda: receiver.at("/flow"), what="the delivery")
    assert got[0].json()["action"] == "opened"
    assert got[0].json()["event_id"] == accepted["event_id"]

    async def listed() -> list[dict]:
        s, body = await api.call("GET", f"/webhooks/{hook['id']}/deliveries")
        return [d for d in body["deliveries"] if d.get("status") == "succeeded"] if s == 200 else []

    deliveries = await eventually(listed, what="the delivery listed as succeeded")
    delivery_id = deliveries[0]["id"]
    assert delivery_id == got[0].delivery_id

    status, one = await api.call("GET", f"/deliveries/{delivery_id}")
    assert status == 200 and one["event"] == "pull_request.opened"
    first = one["attempts"][0]
    assert first["attempt"] == 1 and first["trigger"] == "auto"
    assert first["response"]["status"] == 200
    assert first["request"]["headers"]["X-Hookline-Delivery"] == delivery_id
    assert '"number":1' in first["request"]["body"].replace(" ", "")

    status, _ = await api.call("POST", f"/deliveries/{delivery_id}/redeliver")
    assert status == 202
    await eventually(lambda: len(receiver.at("/flow")) >= 2, what="the redelivery")
    again = receiver.at("/flow")[1]
    assert again.delivery_id == delivery_id and again.attempt == 2
    assert again.signatures_valid(hook["secret"])

    async def two_attempts() -> list[dict]:
        _s, body = await api.call("GET", f"/deliveries/{delivery_id}")
        return body["attempts"] if len(body["attempts"]) >= 2 else []

    attempts = await eventually(two_attempts, what="the manual attempt in the log")
    assert attempts[1]["trigger"] == "manual" and attempts[1]["response"]["status"] == 200

    # Another org's token sees none of it.
    status, other = await admin.call("POST", "/tokens", {"org": org + "-x", "name": "x"})
    outsider = Api(pipeline.api_url, other["token"])
    assert (await outsider.call("GET", f"/deliveries/{delivery_id}"))[0] == 404
    assert (await outsider.call("GET", f"/webhooks/{hook['id']}"))[0] == 404
