"""Name resolution behind the egress rule, shared by every outbound connection (HTTP
calls and fetches, SMTP accounts).

A host is resolved once, every address it resolves to must pass
:func:`mailproxy.domain.egress.address_allowed`, and the caller connects to the address
that was checked: a DNS answer that changes between the check and the connection cannot
send it elsewhere. The resolver is injectable, so rules about names are tested without
the system's DNS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

from mailproxy.domain.egress import Network, address_allowed

#: ``(host, port) -> addresses``, as ``getaddrinfo`` would give them.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class EgressRefused(Exception):
    """The host is not a place mailproxy may connect to (or cannot be resolved)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the operating system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pinned_address(
    host: str, port: int, allow: Sequence[Network], resolve: Resolver = system_resolver
) -> str:
    """The address to connect to for ``host``; raises :class:`EgressRefused` unless every
    address it resolves to is allowed."""
    try:
        addresses = list(await resolve(host, port))
    except (OSError, UnicodeError) as exc:
        raise EgressRefused(f"cannot resolve {host}: {exc}") from None
    refused = [a for a in addresses if not address_allowed(a, allow)]
    if not addresses or refused:
        raise EgressRefused(
            f"{host} resolves to an address that is not allowed: "
            f"{', '.join(refused) or 'none'} (see security.egress_allow)"
        )
    return addresses[0]
