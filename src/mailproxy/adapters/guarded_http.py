"""Outbound HTTP that cannot be turned against the network it runs in (httpx).

Every request resolves its host once, requires every resolved address to pass
:func:`mailproxy.domain.egress.address_allowed` (public, or inside the operator's
``security.egress_allow``), and connects to the address it checked — the ``Host`` header
and the TLS server name stay the original host name — so a DNS answer that changes
between the check and the connection cannot send the request elsewhere. Redirects are
never followed. Bodies are streamed and cut at a size cap, whatever ``Content-Length``
claims; a compressed body is capped while it is decoded (a 100 KB gzip bomb never becomes
100 MB in memory). Every request has one overall deadline, resolution included: httpx's
own timeouts are per phase and per read, so a server sending a byte every few seconds
would otherwise hold the call, and its slot, for as long as it likes.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from mailproxy.adapters.resolver import (
    EgressRefused,
    ThreadedResolver,
    Unresolved,
    pinned_addresses,
)
from mailproxy.domain.egress import Network
from mailproxy.domain.model import Tenant
from mailproxy.ports.resolver import Resolver


class TooLarge(Exception):
    """The answer is larger than the cap."""


class GuardedResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    #: The body was cut at the cap (only when the caller asked not to raise).
    truncated: bool = False


#: Content codings that are decoded (with the cap applied to the decoded bytes); an
#: answer in any other coding is refused. ``identity`` is asked for, so these are rare.
_ZLIB_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


class GuardedHttp:
    """httpx behind the egress rule; one client (connection pool) for the process.

    ``timeout_s`` is the whole request's deadline: resolving, connecting, sending and
    reading the answer to the end. The pool has no connection cap of its own, so that
    calls to one slow host never queue calls to another (callers bound their
    concurrency)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        egress_allow: Sequence[Network] = (),
        resolve: Resolver | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._deadline_s = timeout_s
        self._allow = tuple(egress_allow)
        self._resolve: Resolver = resolve if resolve is not None else ThreadedResolver()
        #: An injected client (``httpx.MockTransport`` in tests) is the caller's to close;
        #: redirects and timeouts are set on every request, whatever it was built with.
        self._client: httpx.AsyncClient | None = client
        self._owns_client = client is None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._deadline_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int,
        truncate: bool = False,
        scope: str | None = None,
    ) -> GuardedResponse:
        """Send the request to the checked address and read at most ``max_bytes`` of the
        (decoded) answer: beyond that, :class:`TooLarge` (or, with ``truncate``, the first
        bytes). Raises :class:`EgressRefused`, and ``httpx.HTTPError`` for network
        failures (``httpx.TimeoutException`` past the deadline)."""
        try:
            async with asyncio.timeout(self._deadline_s):
                return await self._request(
                    method, url, content=content, headers=headers, max_bytes=max_bytes,
                    truncate=truncate, scope=scope,
                )  # fmt: skip
        except TimeoutError:
            raise httpx.TimeoutException(
                f"no complete answer within {self._deadline_s:g} s"
            ) from None

    async def _request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        max_bytes: int,
        truncate: bool,
        scope: str | None,
    ) -> GuardedResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused(f"not an http(s) URL: {url}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await pinned_addresses(host, port, self._allow, self._resolve, scope)
        except Unresolved as exc:  # like a refused connection: worth another try later
            raise httpx.ConnectError(str(exc)) from None
        address = addresses[0]
        literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        pinned = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
        sent_headers = {
            "Host": parts.netloc.rpartition("@")[2],
            "Accept-Encoding": "identity",
            **(headers or {}),
        }
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        async with self._http().stream(
            method, pinned, content=content, headers=sent_headers, extensions=extensions,
            follow_redirects=False, timeout=httpx.Timeout(self._deadline_s),
        ) as response:  # fmt: skip
            body = bytearray()
            async for chunk in _decoded(response, max_bytes + 1):
                body += chunk
                if len(body) > max_bytes:
                    if truncate:
                        return GuardedResponse(response.status_code, bytes(body[:max_bytes]), True)
                    raise TooLarge(f"larger than {max_bytes} bytes")
            return GuardedResponse(response.status_code, bytes(body))

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.aclose()


async def _decoded(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The answer's body, decoded, in pieces of which none takes the total past
    ``limit`` bytes by more than one piece: each raw chunk is inflated at most up to what
    is still allowed (httpx's own decoder inflates a whole chunk at once)."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        async for chunk in _raw(response):
            yield chunk
        return
    wbits = _ZLIB_WBITS.get(coding)
    if wbits is None:
        raise httpx.DecodingError(f"answer in an unsupported content coding: {coding}")
    inflater: Any = None
    produced = 0
    try:
        async for chunk in _raw(response):
            if inflater is None and chunk:
                inflater = zlib.decompressobj(_window_bits(coding, wbits, chunk))
            pending = chunk
            while pending and produced < limit:
                piece = inflater.decompress(pending, limit - produced)
                produced += len(piece)
                pending = inflater.unconsumed_tail
                if piece:
                    yield piece
            if produced >= limit:
                return
        tail = inflater.flush() if inflater is not None else b""
        if tail:
            yield tail[: limit - produced + 1]
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode the {coding} answer: {exc}") from None


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The answer's bytes as they came; an answer made in memory (``httpx.MockTransport``
    in tests) is already read."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _window_bits(coding: str, wbits: int, first: bytes) -> int:
    """``deflate`` is meant as zlib-wrapped data (RFC 9110), but some servers send the raw
    stream: a first byte that is no zlib header (method 8, header check) means raw."""
    if coding != "deflate":
        return wbits
    wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
    return wbits if wrapped else -zlib.MAX_WBITS


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


__all__ = ["EgressRefused", "GuardedHttp", "GuardedResponse", "TooLarge", "client_auth_headers"]
