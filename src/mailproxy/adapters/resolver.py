"""Name resolution behind the egress rule, shared by every outbound connection (HTTP
calls and fetches, SMTP accounts).

A host is resolved once, every address it resolves to must pass
:func:`mailproxy.domain.egress.address_allowed`, and the caller connects to an address
that was checked: a DNS answer that changes between the check and the connection cannot
send it elsewhere.

Resolving is a blocking call on a thread, and a name whose servers never answer holds
its thread until the system resolver gives up, whatever deadline the caller set. So
:class:`ThreadedResolver` resolves on threads of its own (never the pool that file reads
and the event loop's own lookups use), gives each scope (a tenant) a share of them,
counted until the thread is free again, and never spends a thread on an address literal.
Its threads are daemons: one still blocked never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence

from mailproxy.domain.egress import Network, address_allowed, address_literal
from mailproxy.domain.policy import tenant_share
from mailproxy.ports.resolver import Resolver


class EgressRefused(Exception):
    """The host resolves to an address mailproxy may not connect to."""


class Unresolved(Exception):
    """The host name did not resolve (now): a temporary failure, like a refused
    connection."""


def _addresses(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class ThreadedResolver:
    """Implements :class:`~mailproxy.ports.resolver.Resolver` with
    ``socket.getaddrinfo`` on at most ``threads`` daemon threads at once, of which one
    scope holds at most ``share`` (default a quarter), each until its lookup ends — even
    when the caller stopped waiting for it."""

    def __init__(self, *, threads: int = 32, share: int | None = None) -> None:
        self._threads = asyncio.Semaphore(threads)
        self._share = share if share is not None else tenant_share(threads, parts=4)
        self._scopes: dict[str | None, asyncio.Semaphore] = {}

    async def __call__(self, host: str, port: int, scope: str | None = None) -> list[str]:
        literal = address_literal(host)
        if literal is not None:
            return [literal]
        gate = self._scopes.get(scope)
        if gate is None:
            gate = self._scopes[scope] = asyncio.Semaphore(self._share)
        await gate.acquire()
        try:
            await self._threads.acquire()
        except BaseException:
            gate.release()
            raise
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[str]] = loop.create_future()

        def settle(addresses: list[str] | None, error: BaseException | None) -> None:
            gate.release()
            self._threads.release()
            if answer.done():  # the caller stopped waiting
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(addresses or [])

        def look_up() -> None:
            try:
                addresses, error = _addresses(host, port), None
            except Exception as exc:
                addresses, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, addresses, error)

        try:
            threading.Thread(target=look_up, name="dns", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had
            settle(None, OSError(f"cannot start a lookup: {exc}"))
        return await answer


async def pinned_addresses(
    host: str,
    port: int,
    allow: Sequence[Network],
    resolve: Resolver,
    scope: str | None = None,
) -> list[str]:
    """The addresses to connect to for ``host``, in the resolver's order. Raises
    :class:`Unresolved` when it does not resolve, :class:`EgressRefused` unless every
    address it resolves to is allowed (one forbidden address refuses the name)."""
    try:
        addresses = list(await resolve(host, port, scope))
    except (OSError, UnicodeError) as exc:
        raise Unresolved(f"cannot resolve {host}: {exc}") from None
    refused = [a for a in addresses if not address_allowed(a, allow)]
    if not addresses or refused:
        raise EgressRefused(
            f"{host} resolves to an address that is not allowed: "
            f"{', '.join(refused) or 'none'} (see security.egress_allow)"
        )
    return addresses


async def connect_first(addresses: Sequence[str], port: int) -> socket.socket:
    """A non-blocking socket connected to the first of ``addresses`` (checked ones, from
    :func:`pinned_addresses`) that accepts on ``port``, each tried in turn. Raises the
    last ``OSError`` when none does; the caller bounds the time it may take."""
    failure: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure if failure is not None else OSError(f"no address to connect to on port {port}")
