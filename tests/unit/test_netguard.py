"""The pinned resolver's memory: failures remembered briefly, hosts bounded."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from shared.core.errors import BlockedTarget, ResolveFailed
from shared.core.ssrf import Address, Allowlist
from shared.netguard import MAX_HOSTS, PinnedResolver


class Dns:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.calls[host] += 1
        if host.startswith("missing"):
            raise ResolveFailed(f"{host}: no such name")
        if host.startswith("inside"):
            return [ipaddress.IPv4Address("10.0.0.1")]
        return [ipaddress.IPv4Address("93.184.216.34")]


async def test_failures_are_remembered_for_a_while_and_the_cache_is_bounded() -> None:
    dns = Dns()
    resolver = PinnedResolver(Allowlist(), lookup=dns)
    for _ in range(3):
        with pytest.raises(ResolveFailed):
            await resolver.check("missing.example", 443)
        with pytest.raises(BlockedTarget):
            await resolver.check("inside.example", 443)
    assert dns.calls["missing.example"] == 1 and dns.calls["inside.example"] == 1
    for n in range(MAX_HOSTS + 500):
        await resolver.check(f"h{n}.example", 443)
    assert len(resolver) == MAX_HOSTS
    await resolver.check(f"h{MAX_HOSTS + 499}.example", 443)  # the newest is still held
    assert dns.calls[f"h{MAX_HOSTS + 499}.example"] == 1
