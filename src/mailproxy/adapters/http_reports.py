"""The HTTP report sender: POST ``{"delivery_report": [...]}`` to a tenant's application,
signed, through the egress guard (:mod:`mailproxy.adapters.guarded_http`: checked and
pinned addresses, no redirects — a 3xx is a failed call). Only the status code and a small
JSON answer (at most 64 KiB) are read from the application.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import httpx
import msgspec

from mailproxy.adapters.guarded_http import EgressRefused, GuardedHttp, client_auth_headers
from mailproxy.domain.egress import Network, url_refusal
from mailproxy.domain.model import ReportEvent, Tenant
from mailproxy.domain.reporting import signature_header
from mailproxy.ports.reporting import SyncAnswer
from mailproxy.ports.resolver import Resolver

#: The most of an application's answer that is read.
MAX_ANSWER_BYTES = 65536


class _Answer(msgspec.Struct):
    queued: int = 0
    next_sync_after: float | None = None


class _Report(msgspec.Struct):
    delivery_report: Sequence[ReportEvent]


class HttpReportSender:
    """Implements ``ReportSender`` over :class:`GuardedHttp`."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        egress_allow: Sequence[Network] = (),
        resolve: Resolver | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = GuardedHttp(
            timeout_s=timeout_s, egress_allow=egress_allow, resolve=resolve, client=client
        )
        self._allow = tuple(egress_allow)
        self._clock = clock

    def refusal(self, tenant: Tenant) -> str | None:
        return url_refusal(tenant.client_base_url, self._allow) if tenant.client_base_url else None

    async def post(self, tenant: Tenant, events: Sequence[ReportEvent]) -> SyncAnswer:
        if not tenant.client_base_url:
            return SyncAnswer(acknowledged=False, error="no client_base_url")
        url = tenant.client_base_url.rstrip("/") + tenant.client_sync_path
        body = msgspec.json.encode(_Report(events))
        headers = {"Content-Type": "application/json"} | client_auth_headers(tenant)
        if tenant.webhook_secret:
            timestamp = int(self._clock())
            headers["X-Mail-Proxy-Timestamp"] = str(timestamp)
            headers["X-Mail-Proxy-Signature"] = signature_header(
                (tenant.webhook_secret, tenant.webhook_secret_previous), timestamp, body
            )
        try:
            response = await self._http.request(
                "POST", url, content=body, headers=headers, max_bytes=MAX_ANSWER_BYTES,
                truncate=True, scope=tenant.id,
            )  # fmt: skip
        except EgressRefused as exc:
            return SyncAnswer(acknowledged=False, error=str(exc))
        except httpx.HTTPError as exc:
            return SyncAnswer(acknowledged=False, error=f"{type(exc).__name__}: {exc}".strip())
        if not 200 <= response.status < 300:
            return SyncAnswer(acknowledged=False, error=f"HTTP {response.status}")
        answer = _Answer()
        if not response.truncated:
            with contextlib.suppress(msgspec.MsgspecError):
                answer = msgspec.json.decode(response.body, type=_Answer, strict=False)
        return SyncAnswer(
            acknowledged=True, queued=answer.queued, next_sync_after=answer.next_sync_after
        )

    async def close(self) -> None:
        await self._http.close()
