"""SSRF guard with I/O: resolve a host once, check every address, return what to connect
to; `PinnedResolver` keeps a checked answer (and, briefly, a failure) for a while.

Lookups go through c-ares (aiodns), not the event loop's resolver threads: a lookup that
never answers holds no thread, so it cannot make another webhook's lookup queue behind
it, and giving up on it (a per-lookup bound) really ends it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiodns

from shared.core.errors import BlockedTarget, ResolveFailed
from shared.core.ssrf import Address, Allowlist, check_addresses, parse_host_ip

# A checked resolution is reused for this long.
RESOLVE_TTL_S = 30.0
# A failed one (no such name, no answer in time, a blocked address) for this long: a
# dead host is not asked again for every delivery to it.
NEGATIVE_TTL_S = 5.0
# One lookup never takes longer than this (nor than the attempt's timeout).
LOOKUP_TIMEOUT_S = 5.0
# Hosts remembered at most (answers and failures); the least recently used go first.
MAX_HOSTS = 10_000

Lookup = Callable[[str, int], Awaitable[list[Address]]]

_resolvers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiodns.DNSResolver] = (
    weakref.WeakKeyDictionary()
)


def _dns() -> aiodns.DNSResolver:
    """The running loop's c-ares channel (one per loop, made on first use)."""
    loop = asyncio.get_running_loop()
    resolver = _resolvers.get(loop)
    if resolver is None:
        resolver = _resolvers[loop] = aiodns.DNSResolver(
            loop=loop, timeout=LOOKUP_TIMEOUT_S / 2, tries=2
        )
    return resolver


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an IP literal in any spelling parses directly)."""
    literal = parse_host_ip(host)
    if literal is not None:
        return [literal]
    try:
        answer = await _dns().getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
    except (aiodns.error.DNSError, UnicodeError, ValueError) as exc:
        raise ResolveFailed(f"{host}: {exc}") from None
    seen: dict[str, Address] = {}
    for node in answer.nodes:
        raw = node.addr[0]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ip = parse_host_ip(text.split("%", 1)[0])
        if ip is not None:
            seen.setdefault(str(ip), ip)
    if not seen:
        raise ResolveFailed(f"{host}: no address")
    return list(seen.values())


async def checked_addresses(
    host: str, port: int, allow: Allowlist, *, lookup: Lookup | None = None
) -> list[Address]:
    """Resolves and checks; raises BlockedTarget if any address is non-public and not allowed."""
    addrs = await (lookup or resolve)(host, port)
    reason = check_addresses(addrs, allow)
    if reason is not None:
        raise BlockedTarget(reason)
    return addrs


@dataclass(frozen=True)
class Pinned:
    """A host's checked addresses, to connect to until `expires` (monotonic time)."""

    addresses: list[Address]
    ips: frozenset[str]
    expires: float


@dataclass(frozen=True)
class _Failed:
    """A host's failed check, answered again until `expires`."""

    error: BlockedTarget | ResolveFailed
    expires: float


class PinnedResolver:
    """Resolves and SSRF-checks hosts, caching a checked answer for `ttl` seconds and a
    failure for `negative_ttl`: the hot path stays free of lookups, and only a checked
    address is ever connected to. Concurrent checks of one host share one lookup, and
    each caller waits at most its own `timeout`: a host that never answers costs the
    webhooks that use it (error class `dns`), never another's."""

    def __init__(
        self,
        allow: Allowlist,
        ttl: float = RESOLVE_TTL_S,
        *,
        lookup: Lookup | None = None,
        negative_ttl: float = NEGATIVE_TTL_S,
        max_hosts: int = MAX_HOSTS,
    ) -> None:
        """`lookup` resolves a host (tests pass a fake); c-ares by default."""
        self._allow = allow
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_hosts = max_hosts
        self._lookup = lookup
        self._held: OrderedDict[str, Pinned | _Failed] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Pinned]] = {}

    def __len__(self) -> int:
        return len(self._held)

    async def check(self, host: str, port: int, *, timeout: float = LOOKUP_TIMEOUT_S) -> Pinned:
        """Raises BlockedTarget, or ResolveFailed (also when no answer came in `timeout`)."""
        now = time.monotonic()
        held = self._held.get(host)
        if held is not None and held.expires > now:
            self._held.move_to_end(host)
            if isinstance(held, _Failed):
                raise type(held.error)(str(held.error))
            return held
        task = self._inflight.get(host)
        if task is None:
            task = asyncio.create_task(self._resolve(host, port), name=f"resolve {host}")
            self._inflight[host] = task
            task.add_done_callback(self._done)
        try:
            async with asyncio.timeout(min(timeout, LOOKUP_TIMEOUT_S)):
                # Shielded: one caller giving up does not end the lookup the others wait on.
                return await asyncio.shield(task)
        except TimeoutError:
            raise ResolveFailed(f"{host}: no answer in time") from None

    def _done(self, task: asyncio.Task[Pinned]) -> None:
        host = task.get_name().removeprefix("resolve ")
        if self._inflight.get(host) is task:
            del self._inflight[host]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up on it already

    async def _resolve(self, host: str, port: int) -> Pinned:
        """One lookup and check of `host`, bounded; its result (or failure) remembered."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                addresses = await checked_addresses(host, port, self._allow, lookup=self._lookup)
        except TimeoutError:
            error: BlockedTarget | ResolveFailed = ResolveFailed(f"{host}: no answer in time")
            self._remember(host, _Failed(error, time.monotonic() + self._negative_ttl))
            raise error from None
        except (BlockedTarget, ResolveFailed) as exc:
            self._remember(host, _Failed(exc, time.monotonic() + self._negative_ttl))
            raise
        ips = frozenset(str(a) for a in addresses)
        pinned = Pinned(addresses, ips, time.monotonic() + self._ttl)
        self._remember(host, pinned)
        return pinned

    def _remember(self, host: str, held: Pinned | _Failed) -> None:
        self._held[host] = held
        self._held.move_to_end(host)
        while len(self._held) > self._max_hosts:
            self._held.popitem(last=False)
