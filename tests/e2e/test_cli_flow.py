"""`hookline` end to end: a webhook made, an event sent and a redelivery asked for with the
CLI, the pipeline's processes delivering them, and `tail` printing each attempt live."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Pipeline
from tests.e2e.harness import Receiver, eventually
from tests.integration.cli_support import Stack


async def test_tail_follows_what_the_pipeline_delivers(
    pipeline: Pipeline, receiver: Receiver, service_env: dict[str, str], org: str
) -> None:
    stack = Stack(
        url=pipeline.api_url,
        kafka_bootstrap=service_env["HOOKLINE_KAFKA_BOOTSTRAP"],
        admin_token=service_env["HOOKLINE_ADMIN_TOKEN"],
    )
    token = await stack.org_token(org)
    hook = await stack.json(
        token, "hooks", "create", f"{org}/app", "--url", receiver.url("/cli"), "-e", "push"
    )
    tail = asyncio.create_task(
        stack.run(
            token, "tail", hook["id"], "--count", "2", "--timeout", "120", "--interval", "0.3"
        )
    )
    await asyncio.sleep(1.0)  # tail has started following
    sent = await stack.json(
        token, "events", "send", f"{org}/app", "push", "--payload", '{"ref":"refs/heads/main"}'
    )
    [got] = await eventually(lambda: receiver.at("/cli"), timeout=60, what="the delivery")
    assert got.json()["event_id"] == sent["event_id"] and got.signatures_valid(hook["secret"])

    async def succeeded() -> list[dict[str, str]]:
        page = await stack.json(token, "deliveries", "list", hook["id"], "--status", "succeeded")
        return list(page["deliveries"])

    [delivery] = await eventually(succeeded, timeout=30, what="the delivery logged")
    assert delivery["id"] == got.delivery_id
    out = await stack.ok(token, "redeliver", delivery["id"])
    assert f"Redelivering {delivery['id']} as attempt 2." in out
    await eventually(lambda: len(receiver.at("/cli")) == 2, timeout=60, what="the redelivery")

    result = await asyncio.wait_for(tail, 120)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()[1:]
    assert len(lines) == 2, lines
    print(result.stdout)
    for line, attempt in zip(lines, ("attempt 1", "attempt 2 manual"), strict=True):
        assert "push" in line and "✓ succeeded 200" in line, line
        assert f"{attempt} {delivery['id']}" in line, line
    shown = await stack.json(token, "deliveries", "show", delivery["id"])
    assert [a["trigger"] for a in shown["attempts"]] == ["auto", "manual"]
