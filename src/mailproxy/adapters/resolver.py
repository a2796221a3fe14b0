"""Name resolution behind the egress rule, shared by every outbound connection (HTTP
calls and fetches, SMTP accounts).

A host is resolved once, every address it resolves to must pass
:func:`mailproxy.domain.egress.address_allowed`, and the caller connects to the address
that was checked: a DNS answer that changes between the check and the connection cannot
send it elsewhere.

Resolving is a blocking call on a thread, and a name whose servers never answer holds
its thread until the system resolver gives up, whatever deadline the caller set. So
:class:`ThreadedResolver` resolves on threads of its own (never the pool that file
reads and the event loop's own lookups use), gives each scope (a tenant) a share of them
counted until the thread is free again, and never spends a thread on an address literal.
The resolver is injectable, so rules about names are tested without the system's DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from mailproxy.domain.egress import Network, address_allowed


class Resolver(Protocol):
    async def __call__(self, host: str, port: int, scope: str | None = None) -> Sequence[str]:
        """The addresses of ``host``, as ``getaddrinfo`` gives them, for a lookup made on
        behalf of ``scope`` (None: the service's own). Raises ``OSError`` when the name
        does not resolve."""
        ...


class EgressRefused(Exception):
    """The host is not a place mailproxy may connect to (or cannot be resolved)."""


def address_literal(host: str) -> str | None:
    """``host`` as an IP address when it is one (``[::1]`` included), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class ThreadedResolver:
    """Implements :class:`Resolver` with ``socket.getaddrinfo`` on ``threads`` threads of
    its own, of which one scope holds at most ``share`` (default a quarter) at a time —
    until the lookup's thread is free, even when the caller stopped waiting for it."""

    def __init__(self, *, threads: int = 32, share: int | None = None) -> None:
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._share = share if share is not None else max(1, threads // 4)
        self._scopes: dict[str | None, asyncio.Semaphore] = {}

    async def __call__(self, host: str, port: int, scope: str | None = None) -> list[str]:
        literal = address_literal(host)
        if literal is not None:
            return [literal]
        gate = self._scopes.get(scope)
        if gate is None:
            gate = self._scopes[scope] = asyncio.Semaphore(self._share)
        await gate.acquire()
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="dns")
        try:
            lookup: Future[list[str]] = self._executor.submit(_addresses, host, port)
        except BaseException:
            gate.release()
            raise
        lookup.add_done_callback(lambda _: loop.call_soon_threadsafe(gate.release))
        return await asyncio.wrap_future(lookup)

    def close(self) -> None:
        """Let the threads go (a later lookup starts new ones); threads still blocked
        end when their lookup does."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _addresses(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


async def pinned_address(
    host: str,
    port: int,
    allow: Sequence[Network],
    resolve: Resolver,
    scope: str | None = None,
) -> str:
    """The address to connect to for ``host``; raises :class:`EgressRefused` unless every
    address it resolves to is allowed."""
    try:
        addresses = list(await resolve(host, port, scope))
    except (OSError, UnicodeError) as exc:
        raise EgressRefused(f"cannot resolve {host}: {exc}") from None
    refused = [a for a in addresses if not address_allowed(a, allow)]
    if not addresses or refused:
        raise EgressRefused(
            f"{host} resolves to an address that is not allowed: "
            f"{', '.join(refused) or 'none'} (see security.egress_allow)"
        )
    return addresses[0]
