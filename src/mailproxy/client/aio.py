"""The asynchronous client of the HTTP API: :class:`mailproxy.client.Client`'s methods as
coroutines (listings as async iterators), on ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from mailproxy.client import calls, types
from mailproxy.client.calls import Call

T = TypeVar("T")
CreatedTenant = types.CreatedTenantAnswer


class AsyncClient:
    """``AsyncClient(base_url, token=...)``, as :class:`~mailproxy.client.Client`. Use it
    as an async context manager, or await :meth:`aclose`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        tenant_id: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
        self._tenant_id = tenant_id
        self._retries = retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _tenant(self, tenant_id: str | None) -> str | None:
        return tenant_id if tenant_id is not None else self._tenant_id

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = await self._http.request(call.method, call.path, **call.request())
            except httpx.TransportError:
                if calls.retry_wait(call, attempt, self._retries, None) is None:
                    raise
            wait = calls.retry_wait(call, attempt, self._retries, response)
            if wait is None and response is not None:
                return call.result(response)
            await asyncio.sleep(wait or 0.0)

    async def send(self, message: Mapping[str, Any] | Any, *, tenant_id: str | None = None) -> str:
        """Queue one message; its id (see :meth:`mailproxy.client.Client.send`)."""
        message_id = calls.message_id_of(message)
        answer = await self.send_many([message], tenant_id=tenant_id)
        return calls.one_sent(answer, message_id)

    async def list_messages(
        self,
        *,
        tenant_id: str | None = None,
        status: Sequence[types.Status] = (),
        batch_code: str | None = None,
        active_only: bool = False,
        include_history: bool = False,
        page_size: int = 100,
    ) -> AsyncIterator[types.MessageRecord]:
        """The tenant's messages in acceptance order, a page at a time."""
        params = calls.messages_query(
            self._tenant(tenant_id), status, batch_code, active_only, include_history, page_size
        )
        cursor: str | None = None
        while True:
            page = await self._run(calls.messages_page(params, cursor))
            for message in page.messages:
                yield message
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def list_suppressions(
        self,
        *,
        tenant_id: str | None = None,
        reason: str | None = None,
        q: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[types.SuppressionRecord]:
        """The tenant's suppressed addresses in address order, a page at a time."""
        params = {"tenant_id": self._tenant(tenant_id), "reason": reason, "q": q,
                  "limit": page_size}  # fmt: skip
        cursor: str | None = None
        while True:
            page = await self._run(calls.suppressions_page(params, cursor))
            for entry in page.suppressions:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def health(self) -> types.HealthAnswer:
        """Whether the service is up (``GET /health``; no token needed)."""
        return await self._run(calls.health())

    async def instance(self) -> types.InstanceAnswer:
        """The instance's settings as the API shows them (``GET /instance``)."""
        return await self._run(calls.instance())

    async def status(self) -> types.StatusAnswer:
        """Queue counts (``GET /status``)."""
        return await self._run(calls.status())

    async def metrics(self) -> str:
        """The Prometheus metrics, as text (``GET /metrics``)."""
        return await self._run(calls.metrics())

    async def create_tenant(self, tenant: types.TenantBody | Mapping[str, Any]) -> CreatedTenant:
        """Create a tenant (admin): the answer holds its ``api_key`` and ``webhook_secret``,
        shown only this once."""
        return await self._run(calls.create_tenant(tenant))

    async def list_tenants(self) -> list[types.TenantRecord]:
        """Every tenant (admin)."""
        return await self._run(calls.list_tenants())

    async def sync_status(self) -> list[types.SyncStatusRecord]:
        """The delivery-report state of every tenant (admin)."""
        return await self._run(calls.sync_status())

    async def get_tenant(self, tenant_id: str) -> types.TenantRecord:
        """One tenant (admin, or that tenant's key)."""
        return await self._run(calls.get_tenant(tenant_id))

    async def update_tenant(
        self,
        tenant_id: str,
        changes: types.TenantChanges | Mapping[str, Any],
    ) -> types.TenantRecord:
        """Change some fields of a tenant; the others stay."""
        return await self._run(calls.update_tenant(tenant_id, changes))

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete a tenant with its accounts and messages (admin)."""
        return await self._run(calls.delete_tenant(tenant_id))

    async def rotate_api_key(self, tenant_id: str, *, expires_at: int | None = None) -> str:
        """A new API key for the tenant (admin); the old one stops working at once."""
        return await self._run(calls.rotate_api_key(tenant_id, expires_at))

    async def revoke_api_key(self, tenant_id: str) -> None:
        """Revoke the tenant's API key (admin)."""
        return await self._run(calls.revoke_api_key(tenant_id))

    async def rotate_webhook_secret(self, tenant_id: str) -> str:
        """A new webhook secret (admin); the old one keeps signing beside it until retired."""
        return await self._run(calls.rotate_webhook_secret(tenant_id))

    async def retire_webhook_secret(self, tenant_id: str) -> None:
        """Only the current webhook secret signs from now on (admin)."""
        return await self._run(calls.retire_webhook_secret(tenant_id))

    async def put_account(
        self,
        account: types.AccountBody | Mapping[str, Any],
        *,
        tenant_id: str | None = None,
    ) -> types.AccountRecord:
        """Create or replace an SMTP (or capture) account of a tenant."""
        return await self._run(calls.put_account(account, self._tenant(tenant_id)))

    async def list_accounts(self, *, tenant_id: str | None = None) -> list[types.AccountRecord]:
        """The tenant's accounts."""
        return await self._run(calls.list_accounts(self._tenant(tenant_id)))

    async def delete_account(
        self,
        account_id: str,
        *,
        tenant_id: str | None = None,
        force: bool = False,
    ) -> None:
        """Delete an account (``force``: even with messages still queued for it, which then
        fail)."""
        return await self._run(calls.delete_account(account_id, self._tenant(tenant_id), force))

    async def send_many(
        self,
        messages: Sequence[Mapping[str, Any] | Any],
        *,
        tenant_id: str | None = None,
        default_priority: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> types.AddMessagesAnswer:
        """Queue messages (``POST /commands/add-messages``): ``queued`` and the ``rejected``
        ones with their reasons. Sent under an ``Idempotency-Key`` (a new one unless given)
        and retried after a transport error, a 5xx or a 429, so a retried call never queues
        twice. Raises :class:`Rejected` when every message was refused for a reason other
        than "already sent" or "in flight"."""
        return await self._run(
            calls.add_messages(messages, self._tenant(tenant_id), default_priority, idempotency_key)
        )

    async def get_message(
        self,
        message_id: str,
        *,
        tenant_id: str | None = None,
    ) -> types.MessageRecord:
        """One message with its history, why it waits, and what came back after it was sent."""
        return await self._run(calls.get_message(message_id, self._tenant(tenant_id)))

    async def delete_messages(
        self,
        ids: Sequence[str],
        *,
        tenant_id: str | None = None,
    ) -> types.DeleteAnswer:
        """Delete messages that are not being sent."""
        return await self._run(calls.delete_messages(ids, self._tenant(tenant_id)))

    async def cleanup_messages(self, *, tenant_id: str | None = None) -> int:
        """Remove the tenant's old reported messages; how many."""
        return await self._run(calls.cleanup_messages(self._tenant(tenant_id)))

    async def run_now(self, *, tenant_id: str | None = None) -> None:
        """Send what is due now, and call the tenant's application with its reports."""
        return await self._run(calls.run_now(self._tenant(tenant_id)))

    async def suspend(
        self,
        *,
        tenant_id: str | None = None,
        batch_code: str | None = None,
    ) -> types.SuspendAnswer:
        """Stop sending the tenant's messages (or one batch's); they stay queued."""
        return await self._run(calls.suspend(self._tenant(tenant_id), batch_code))

    async def activate(
        self,
        *,
        tenant_id: str | None = None,
        batch_code: str | None = None,
    ) -> types.SuspendAnswer:
        """Resume sending."""
        return await self._run(calls.activate(self._tenant(tenant_id), batch_code))

    async def add_suppressions(
        self,
        entries: Sequence[types.ManualSuppressionBody | Mapping[str, Any]],
        *,
        tenant_id: str | None = None,
    ) -> int:
        """Suppress addresses by hand; how many entries were added or changed."""
        return await self._run(calls.add_suppressions(entries, self._tenant(tenant_id)))

    async def remove_suppression(self, address: str, *, tenant_id: str | None = None) -> None:
        """Send to an address again."""
        return await self._run(calls.remove_suppression(address, self._tenant(tenant_id)))

    async def export_suppressions(self, *, tenant_id: str | None = None) -> str:
        """The whole suppression list as CSV text."""
        return await self._run(calls.export_suppressions(self._tenant(tenant_id)))

    async def add_dkim_key(
        self,
        tenant_id: str,
        key: types.DkimKeyBody | Mapping[str, Any],
    ) -> types.DkimKeyAnswer:
        """Add a DKIM key (made by the service unless ``private_key`` is given): the answer
        holds the DNS record to publish."""
        return await self._run(calls.add_dkim_key(tenant_id, key))

    async def list_dkim_keys(self, tenant_id: str) -> list[types.DkimKeyRecord]:
        """The tenant's DKIM keys, each with its DNS record."""
        return await self._run(calls.list_dkim_keys(tenant_id))

    async def remove_dkim_key(self, tenant_id: str, domain: str, selector: str) -> None:
        """Remove a DKIM key."""
        return await self._run(calls.remove_dkim_key(tenant_id, domain, selector))
