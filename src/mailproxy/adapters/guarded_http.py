"""Outbound HTTP that cannot be turned against the network it runs in (httpx).

Every request resolves its host once, requires every resolved address to pass
:func:`mailproxy.domain.egress.address_allowed` (public, or inside the operator's
``security.egress_allow``), and connects to the address it checked — the ``Host`` header
and the TLS server name stay the original host name — so a DNS answer that changes
between the check and the connection cannot send the request elsewhere. Redirects are
never followed. Bodies are streamed and cut at a size cap, whatever ``Content-Length``
claims.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from mailproxy.domain.egress import Network, address_allowed
from mailproxy.domain.model import Tenant


class EgressRefused(Exception):
    """The host is not a place mailproxy may connect to (or cannot be resolved)."""


class TooLarge(Exception):
    """The answer is larger than the cap."""


class GuardedResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    #: The body was cut at the cap (only when the caller asked not to raise).
    truncated: bool = False


class GuardedHttp:
    """httpx behind the egress rule; one client (connection pool) for the process."""

    def __init__(self, *, timeout_s: float, egress_allow: Sequence[Network] = ()) -> None:
        self._timeout = httpx.Timeout(timeout_s)
        self._allow = tuple(egress_allow)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, trust_env=False
            )
        return self._client

    async def pinned_address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; raises :class:`EgressRefused` unless
        every address it resolves to is allowed."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise EgressRefused(f"cannot resolve {host}: {exc}") from None
        addresses = [str(info[4][0]) for info in infos]
        refused = [a for a in addresses if not address_allowed(a, self._allow)]
        if not addresses or refused:
            raise EgressRefused(
                f"{host} resolves to an address that is not allowed: "
                f"{', '.join(refused) or 'none'} (see security.egress_allow)"
            )
        return addresses[0]

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int,
        truncate: bool = False,
    ) -> GuardedResponse:
        """Send the request to the checked address and read at most ``max_bytes`` of the
        answer: beyond that, :class:`TooLarge` (or, with ``truncate``, the first bytes).
        Raises :class:`EgressRefused`, and ``httpx.HTTPError`` for network failures."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused(f"not an http(s) URL: {url}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await self.pinned_address(host, port)
        literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        pinned = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
        sent_headers = {"Host": parts.netloc.rpartition("@")[2], **(headers or {})}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        async with self._http().stream(
            method, pinned, content=content, headers=sent_headers, extensions=extensions
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    if truncate:
                        return GuardedResponse(response.status_code, bytes(body[:max_bytes]), True)
                    raise TooLarge(f"larger than {max_bytes} bytes")
            return GuardedResponse(response.status_code, bytes(body))

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def client_auth_headers(tenant: Tenant) -> dict[str, str]:
    """The ``Authorization`` header of the tenant's ``client_auth`` (none, bearer, basic),
    for calls to the tenant's own application."""
    auth = tenant.client_auth
    if auth.method == "bearer" and auth.token:
        return {"Authorization": f"Bearer {auth.token}"}
    if auth.method == "basic":
        pair = f"{auth.user or ''}:{auth.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}
