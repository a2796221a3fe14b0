"""Attachment sources (the ``AttachmentSource`` port): files under allowed roots, and HTTP
(message-supplied URLs, tenant or instance attachment endpoints) through the egress guard.

Outcomes (HTTP API, "Attachments"): a 5xx or a timeout is temporary (the message is
retried); a 4xx, a missing file, a size cap or a policy refusal is permanent, with a reason
naming the attachment.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx
import msgspec

from mailproxy.adapters.guarded_http import (
    EgressRefused,
    GuardedHttp,
    TooLarge,
    client_auth_headers,
)
from mailproxy.domain.attachments import (
    check_file_path,
    check_url,
    normalize_url,
    split_endpoint,
    under_root,
)
from mailproxy.domain.egress import Network, address_allowed, address_literal
from mailproxy.domain.errors import AttachmentUnavailable, InvalidInput
from mailproxy.domain.model import AttachmentRef, Tenant

FIELD = "attachments.storage_path"
#: Names the tenant on every endpoint call.
TENANT_HEADER = "X-Mail-Proxy-Tenant"


class FilesystemSource:
    """Files relative to ``base_dir``, or absolute under one of ``allowed_roots`` (by
    default ``base_dir``). Symlinks are resolved and the real path is checked again."""

    fetch_modes = frozenset({"filesystem"})

    def __init__(
        self, base_dir: str | Path | None, allowed_roots: Sequence[str | Path] = (), *,
        max_bytes: int,
    ) -> None:  # fmt: skip
        self._base = Path(base_dir).resolve() if base_dir else None
        roots = [Path(r).resolve() for r in allowed_roots] or ([self._base] if self._base else [])
        self._roots = tuple(roots)
        self._max_bytes = max_bytes

    def _lexical(self, attachment: AttachmentRef) -> Path:
        path = check_file_path(FIELD, attachment.storage_path)
        if path.is_absolute():
            candidate = Path(os.path.normpath(path))
        elif self._base is not None:
            candidate = self._base / path
        else:
            raise InvalidInput(
                FIELD, f"invalid {FIELD}: relative path without attachments.base_dir"
            )
        roots = [PurePosixPath(r) for r in self._roots]
        if not under_root(PurePosixPath(candidate), roots):
            raise InvalidInput(FIELD, f"invalid {FIELD}: outside the allowed roots")
        return candidate

    def check(self, tenant: Tenant, attachment: AttachmentRef) -> None:
        self._lexical(attachment)

    async def fetch(self, tenant: Tenant, attachment: AttachmentRef) -> bytes:
        try:
            candidate = self._lexical(attachment)
        except InvalidInput as exc:
            raise AttachmentUnavailable(attachment.filename, exc.reason, temporary=False) from None
        return await asyncio.to_thread(self._read, candidate, attachment.filename)

    def _read(self, candidate: Path, name: str) -> bytes:
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise AttachmentUnavailable(name, "file not found", temporary=False) from None
        if not any(real == root or real.is_relative_to(root) for root in self._roots):
            raise AttachmentUnavailable(name, "file is outside the allowed roots", temporary=False)
        try:
            # Non-blocking, so that opening a FIFO (or a device) under a root returns at
            # once instead of holding a worker thread until a writer appears; not
            # following a link, so that one swapped in after the check above is refused.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise AttachmentUnavailable(
                name, f"cannot read: {exc.strerror}", temporary=False
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AttachmentUnavailable(name, "not a regular file", temporary=False)
        with os.fdopen(fd, "rb") as handle:
            try:
                content = handle.read(self._max_bytes + 1)
            except OSError as exc:
                raise AttachmentUnavailable(
                    name, f"cannot read: {exc.strerror}", temporary=False
                ) from None
        if len(content) > self._max_bytes:
            raise AttachmentUnavailable(
                name, f"larger than {self._max_bytes} bytes", temporary=False
            )
        return content

    async def close(self) -> None:
        return None


class _HttpSource:
    """What URL and endpoint fetches share: the guard, caps and outcome rules."""

    def __init__(self, http: GuardedHttp, allow: Sequence[Network], max_bytes: int) -> None:
        self._http = http
        self._allow = tuple(allow)
        self._max_bytes = max_bytes

    async def close(self) -> None:
        await self._http.close()

    def _check_literal_host(self, url: str) -> None:
        """An IP-literal host that is not allowed is refused at enqueue, without I/O."""
        literal = address_literal(urlsplit(url).hostname or "")
        if literal is not None and not address_allowed(literal, self._allow):
            raise InvalidInput(FIELD, f"invalid {FIELD}: address not allowed: {literal}")

    async def _fetch(
        self, tenant: Tenant, name: str, method: str, url: str, *,
        content: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> bytes:  # fmt: skip
        try:
            response = await self._http.request(
                method, url, content=content, headers=headers, max_bytes=self._max_bytes,
                scope=tenant.id,
            )  # fmt: skip
        except EgressRefused as exc:
            raise AttachmentUnavailable(name, str(exc), temporary=False) from None
        except (TooLarge, httpx.DecodingError) as exc:  # the same answer again
            raise AttachmentUnavailable(name, str(exc), temporary=False) from None
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            raise AttachmentUnavailable(name, reason, temporary=True) from None
        if 200 <= response.status < 300:
            return response.body
        if 300 <= response.status < 400:
            reason = f"HTTP {response.status}: redirect not followed"
            raise AttachmentUnavailable(name, reason, temporary=False)
        temporary = response.status >= 500 or response.status in (408, 429)
        raise AttachmentUnavailable(name, f"HTTP {response.status}", temporary=temporary)


class UrlSource(_HttpSource):
    """``http_url``: GET a message-supplied URL under the tenant's
    ``attachment_url_prefixes``."""

    fetch_modes = frozenset({"http_url"})

    def check(self, tenant: Tenant, attachment: AttachmentRef) -> None:
        check_url(FIELD, attachment.storage_path, tenant.attachment_url_prefixes)
        self._check_literal_host(attachment.storage_path)

    async def fetch(self, tenant: Tenant, attachment: AttachmentRef) -> bytes:
        try:
            self.check(tenant, attachment)
        except InvalidInput as exc:
            raise AttachmentUnavailable(attachment.filename, exc.reason, temporary=False) from None
        return await self._fetch(tenant, attachment.filename, "GET", attachment.storage_path)


class _EndpointCall(msgspec.Struct):
    storage_path: str


class EndpointSource(_HttpSource):
    """``endpoint``: POST ``{"storage_path": params}`` to ``@[url]`` (a message-supplied
    URL, under the tenant's prefixes), else the tenant's attachment endpoint
    (``client_base_url + client_attachment_path``, with its ``client_auth``), else the
    instance ``attachments.http_endpoint`` (with ``http_auth_*``).

    Credentials go only where they were configured for: a message-supplied URL gets the
    tenant's ``client_auth`` only when it is the tenant's own endpoint (compared
    normalised), never because it lies under a prefix; it never gets the instance's.
    Every call names the tenant in ``X-Mail-Proxy-Tenant``: the instance endpoint serves
    every tenant with one credential, and must check that the one asking may have the
    document."""

    fetch_modes = frozenset({"endpoint"})

    def __init__(
        self, http: GuardedHttp, allow: Sequence[Network], max_bytes: int, *,
        instance_endpoint: str | None = None, auth_method: str | None = None,
        auth_token: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(http, allow, max_bytes)
        self._instance = instance_endpoint
        self._auth_method = auth_method
        self._auth_token = auth_token

    def _target(self, tenant: Tenant, attachment: AttachmentRef) -> tuple[str, dict[str, str], str]:
        url, params = split_endpoint(attachment.storage_path)
        own = (
            tenant.client_base_url.rstrip("/") + tenant.client_attachment_path
            if tenant.client_base_url
            else None
        )
        if url is not None:
            check_url(FIELD, url, tenant.attachment_url_prefixes)
            self._check_literal_host(url)
            is_own = own is not None and normalize_url(url) == normalize_url(own)
            return url, client_auth_headers(tenant) if is_own else {}, params
        if own is not None:
            return own, client_auth_headers(tenant), params
        if self._instance:
            headers = {}
            if self._auth_method == "bearer" and self._auth_token:
                headers["Authorization"] = f"Bearer {self._auth_token}"
            elif self._auth_method == "basic" and self._auth_token:
                encoded = base64.b64encode(self._auth_token.encode()).decode()
                headers["Authorization"] = f"Basic {encoded}"
            return self._instance, headers, params
        raise InvalidInput(FIELD, f"invalid {FIELD}: no attachment endpoint for this tenant")

    def check(self, tenant: Tenant, attachment: AttachmentRef) -> None:
        self._target(tenant, attachment)

    async def fetch(self, tenant: Tenant, attachment: AttachmentRef) -> bytes:
        try:
            url, headers, params = self._target(tenant, attachment)
        except InvalidInput as exc:
            raise AttachmentUnavailable(attachment.filename, exc.reason, temporary=False) from None
        body = msgspec.json.encode(_EndpointCall(params))
        # The tenant whose message asks, so that an endpoint serving several tenants
        # (the instance's) can check that this one may have the document.
        headers = {"Content-Type": "application/json", TENANT_HEADER: tenant.id, **headers}
        return await self._fetch(
            tenant, attachment.filename, "POST", url, content=body, headers=headers
        )
