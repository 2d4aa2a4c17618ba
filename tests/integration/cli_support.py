"""Helpers for the CLI tests: the API as a real process, and `hookline` run through
click's test runner (in a worker thread, so the tests' event loop stays free)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from click.testing import CliRunner, Result

from services.cli.main import cli
from tests.e2e.harness import ServiceProcess, free_port, wait_ready


@dataclass
class Stack:
    """The API process and what a `hookline` run needs to reach it and Kafka."""

    url: str
    kafka_bootstrap: str
    admin_token: str

    async def org_token(self, org: str) -> str:
        """A fresh token of `org`, made through the API with the admin token."""
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                self.url + "/api/v1/tokens",
                json={"org": org, "name": "cli"},
                headers={"Authorization": f"Bearer {self.admin_token}"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
            token: str = (await resp.json())["token"]
            return token

    async def run(
        self,
        token: str | None,
        *args: str,
        input: str | None = None,
        url: str | None = None,
        kafka: str | None = None,
    ) -> Result:
        """`hookline ARGS` with HOOKLINE_URL/TOKEN/KAFKA_BOOTSTRAP set; never a traceback."""
        env = {
            "HOOKLINE_URL": url or self.url,
            "HOOKLINE_TOKEN": token or "",
            "HOOKLINE_KAFKA_BOOTSTRAP": kafka or self.kafka_bootstrap,
            "COLUMNS": "250",  # rich's tables keep ids whole at this width
        }
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, list(args), env=env, input=input, prog_name="hookline"
        )
        assert "Traceback" not in result.output, result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"hookline {' '.join(args)} raised {result.exception!r}")
        return result

    async def ok(self, token: str | None, *args: str, input: str | None = None) -> str:
        """The output of a run that must succeed."""
        result = await self.run(token, *args, input=input)
        assert result.exit_code == 0, f"hookline {' '.join(args)}: {result.output}"
        return result.output

    async def json(self, token: str | None, *args: str) -> Any:
        return json.loads(await self.ok(token, *args, "--json"))


async def api_stack(service_env: dict[str, str]) -> AsyncIterator[Stack]:
    port = free_port()
    proc = ServiceProcess(
        "api", {**service_env, "HOOKLINE_API_PORT": str(port)}, instance="cli-api"
    ).start()
    stack = Stack(
        url=f"http://127.0.0.1:{port}",
        kafka_bootstrap=service_env["HOOKLINE_KAFKA_BOOTSTRAP"],
        admin_token=service_env["HOOKLINE_ADMIN_TOKEN"],
    )

    try:
        await wait_ready(stack.url, [proc], what="the API's /readyz", timeout=60)
        yield stack
    finally:
        proc.stop()
