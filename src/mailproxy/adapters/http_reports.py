"""The HTTP report sender (httpx): POST ``{"delivery_report": [...]}`` to a tenant's
application, signed, through the egress guard.

Each call resolves the callback host once, requires every resolved address to pass
:func:`mailproxy.domain.egress.address_allowed`, and connects to the address it checked
(the ``Host`` header and TLS server name stay the original host name), so a DNS answer that
changes between the check and the connection cannot point the call elsewhere. Redirects
are never followed (a 3xx is a failed call). Only the status code and a small JSON answer
(at most 64 KiB) are read from the application.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from mailproxy.domain.egress import Network, address_allowed
from mailproxy.domain.model import ReportEvent, Tenant
from mailproxy.domain.reporting import signature
from mailproxy.ports.reporting import SyncAnswer

#: The most of an application's answer that is read.
MAX_ANSWER_BYTES = 65536


class _Answer(msgspec.Struct):
    queued: int = 0
    next_sync_after: float | None = None


class _Report(msgspec.Struct):
    delivery_report: Sequence[ReportEvent]


class EgressRefused(Exception):
    """The callback host resolves to an address mailproxy may not connect to."""


class HttpReportSender:
    """Implements ``ReportSender`` over httpx."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        egress_allow: Sequence[Network] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = httpx.Timeout(timeout_s)
        self._allow = tuple(egress_allow)
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, trust_env=False
            )
        return self._client

    async def _pinned_address(self, host: str, port: int) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise EgressRefused(f"cannot resolve {host}: {exc}") from None
        addresses = [str(info[4][0]) for info in infos]
        refused = [a for a in addresses if not address_allowed(a, self._allow)]
        if not addresses or refused:
            raise EgressRefused(
                f"{host} resolves to an address that is not allowed: "
                f"{', '.join(refused) or 'none'} (see security.egress_allow)"
            )
        return addresses[0]

    async def post(self, tenant: Tenant, events: Sequence[ReportEvent]) -> SyncAnswer:
        if not tenant.client_base_url:
            return SyncAnswer(acknowledged=False, error="no client_base_url")
        url = tenant.client_base_url.rstrip("/") + tenant.client_sync_path
        body = msgspec.json.encode(_Report(events))
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = await self._pinned_address(host, port)
        except EgressRefused as exc:
            return SyncAnswer(acknowledged=False, error=str(exc))
        literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        pinned = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
        headers = {"Host": parts.netloc, "Content-Type": "application/json"}
        headers |= self._auth_headers(tenant)
        if tenant.webhook_secret:
            timestamp = int(self._clock())
            headers["X-Mail-Proxy-Timestamp"] = str(timestamp)
            headers["X-Mail-Proxy-Signature"] = signature(tenant.webhook_secret, timestamp, body)
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with self._http().stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response:
                if not 200 <= response.status_code < 300:
                    return SyncAnswer(acknowledged=False, error=f"HTTP {response.status_code}")
                answer = await self._read_answer(response)
        except httpx.HTTPError as exc:
            return SyncAnswer(acknowledged=False, error=f"{type(exc).__name__}: {exc}".strip())
        return SyncAnswer(
            acknowledged=True, queued=answer.queued, next_sync_after=answer.next_sync_after
        )

    @staticmethod
    async def _read_answer(response: httpx.Response) -> _Answer:
        """The application's optional ``{"queued": N, "next_sync_after": ts}``; anything
        else (or too large) counts as a plain acknowledgement."""
        data = b""
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > MAX_ANSWER_BYTES:
                return _Answer()
        try:
            return msgspec.json.decode(data, type=_Answer, strict=False)
        except msgspec.MsgspecError:
            return _Answer()

    @staticmethod
    def _auth_headers(tenant: Tenant) -> dict[str, str]:
        auth = tenant.client_auth
        if auth.method == "bearer" and auth.token:
            return {"Authorization": f"Bearer {auth.token}"}
        if auth.method == "basic":
            pair = f"{auth.user or ''}:{auth.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
