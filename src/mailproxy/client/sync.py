"""The synchronous client of the HTTP API: one method per route (the asynchronous one,
:class:`mailproxy.client.AsyncClient`, has the same methods as coroutines). What each
call sends and how its answer is read is written once, in :mod:`.calls`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from mailproxy.client import calls, types
from mailproxy.client.calls import Call

T = TypeVar("T")
CreatedTenant = types.CreatedTenantAnswer


class Client:
    """``Client(base_url, token=...)``: the admin token (then name the tenant of each
    call, or give ``tenant_id`` here) or a tenant's API key (its tenant is implied).
    ``retries``: how many more times a call that is safe to repeat is tried after a
    transport error, a 5xx or a 429. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        tenant_id: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._tenant_id = tenant_id
        self._retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _tenant(self, tenant_id: str | None) -> str | None:
        return tenant_id if tenant_id is not None else self._tenant_id

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.request(call.method, call.path, **call.request())
            except httpx.TransportError:
                if calls.retry_wait(call, attempt, self._retries, None) is None:
                    raise
            wait = calls.retry_wait(call, attempt, self._retries, response)
            if wait is None and response is not None:
                return call.result(response)
            time.sleep(wait or 0.0)

    def send(self, message: Mapping[str, Any] | Any, *, tenant_id: str | None = None) -> str:
        """Queue one message; its id. Raises :class:`~mailproxy.client.Rejected` with the
        reason when it is refused (retried like :meth:`send_many`)."""
        message_id = calls.message_id_of(message)
        answer = self.send_many([message], tenant_id=tenant_id)
        return calls.one_sent(answer, message_id)

    def list_messages(
        self,
        *,
        tenant_id: str | None = None,
        status: Sequence[types.Status] = (),
        batch_code: str | None = None,
        active_only: bool = False,
        include_history: bool = False,
        page_size: int = 100,
    ) -> Iterator[types.MessageRecord]:
        """The tenant's messages in acceptance order, read a page at a time as the
        iteration goes."""
        params = calls.messages_query(
            self._tenant(tenant_id), status, batch_code, active_only, include_history, page_size
        )
        cursor: str | None = None
        while True:
            page = self._run(calls.messages_page(params, cursor))
            yield from page.messages
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def list_suppressions(
        self,
        *,
        tenant_id: str | None = None,
        reason: str | None = None,
        q: str | None = None,
        page_size: int = 100,
    ) -> Iterator[types.SuppressionRecord]:
        """The tenant's suppressed addresses in address order, a page at a time."""
        params = {"tenant_id": self._tenant(tenant_id), "reason": reason, "q": q,
                  "limit": page_size}  # fmt: skip
        cursor: str | None = None
        while True:
            page = self._run(calls.suppressions_page(params, cursor))
            yield from page.suppressions
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def health(self) -> types.HealthAnswer:
        """Whether the service is up (``GET /health``; no token needed)."""
        return self._run(calls.health())

    def instance(self) -> types.InstanceAnswer:
        """The instance's settings as the API shows them (``GET /instance``)."""
        return self._run(calls.instance())

    def status(self) -> types.StatusAnswer:
        """Queue counts (``GET /status``)."""
        return self._run(calls.status())

    def metrics(self) -> str:
        """The Prometheus metrics, as text (``GET /metrics``)."""
        return self._run(calls.metrics())

    def create_tenant(self, tenant: types.TenantBody | Mapping[str, Any]) -> CreatedTenant:
        """Create a tenant (admin): the answer holds its ``api_key`` and ``webhook_secret``,
        shown only this once."""
        return self._run(calls.create_tenant(tenant))

    def list_tenants(self) -> list[types.TenantRecord]:
        """Every tenant (admin)."""
        return self._run(calls.list_tenants())

    def sync_status(self) -> list[types.SyncStatusRecord]:
        """The delivery-report state of every tenant (admin)."""
        return self._run(calls.sync_status())

    def get_tenant(self, tenant_id: str) -> types.TenantRecord:
        """One tenant (admin, or that tenant's key)."""
        return self._run(calls.get_tenant(tenant_id))

    def update_tenant(
        self,
        tenant_id: str,
        changes: types.TenantChanges | Mapping[str, Any],
    ) -> types.TenantRecord:
        """Change some fields of a tenant; the others stay."""
        return self._run(calls.update_tenant(tenant_id, changes))

    def delete_tenant(self, tenant_id: str) -> None:
        """Delete a tenant with its accounts and messages (admin)."""
        return self._run(calls.delete_tenant(tenant_id))

    def rotate_api_key(self, tenant_id: str, *, expires_at: int | None = None) -> str:
        """A new API key for the tenant (admin); the old one stops working at once."""
        return self._run(calls.rotate_api_key(tenant_id, expires_at))

    def revoke_api_key(self, tenant_id: str) -> None:
        """Revoke the tenant's API key (admin)."""
        return self._run(calls.revoke_api_key(tenant_id))

    def rotate_webhook_secret(self, tenant_id: str) -> str:
        """A new webhook secret (admin); the old one keeps signing beside it until retired."""
        return self._run(calls.rotate_webhook_secret(tenant_id))

    def retire_webhook_secret(self, tenant_id: str) -> None:
        """Only the current webhook secret signs from now on (admin)."""
        return self._run(calls.retire_webhook_secret(tenant_id))

    def put_account(
        self,
        account: types.AccountBody | Mapping[str, Any],
        *,
        tenant_id: str | None = None,
    ) -> types.AccountRecord:
        """Create or replace an SMTP (or capture) account of a tenant."""
        return self._run(calls.put_account(account, self._tenant(tenant_id)))

    def list_accounts(self, *, tenant_id: str | None = None) -> list[types.AccountRecord]:
        """The tenant's accounts."""
        return self._run(calls.list_accounts(self._tenant(tenant_id)))

    def delete_account(
        self,
        account_id: str,
        *,
        tenant_id: str | None = None,
        force: bool = False,
    ) -> None:
        """Delete an account (``force``: even with messages still queued for it, which then
        fail)."""
        return self._run(calls.delete_account(account_id, self._tenant(tenant_id), force))

    def send_many(
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
        return self._run(
            calls.add_messages(messages, self._tenant(tenant_id), default_priority, idempotency_key)
        )

    def get_message(self, message_id: str, *, tenant_id: str | None = None) -> types.MessageRecord:
        """One message with its history, why it waits, and what came back after it was sent."""
        return self._run(calls.get_message(message_id, self._tenant(tenant_id)))

    def delete_messages(
        self,
        ids: Sequence[str],
        *,
        tenant_id: str | None = None,
    ) -> types.DeleteAnswer:
        """Delete messages that are not being sent."""
        return self._run(calls.delete_messages(ids, self._tenant(tenant_id)))

    def cleanup_messages(self, *, tenant_id: str | None = None) -> int:
        """Remove the tenant's old reported messages; how many."""
        return self._run(calls.cleanup_messages(self._tenant(tenant_id)))

    def run_now(self, *, tenant_id: str | None = None) -> None:
        """Send what is due now, and call the tenant's application with its reports."""
        return self._run(calls.run_now(self._tenant(tenant_id)))

    def suspend(
        self,
        *,
        tenant_id: str | None = None,
        batch_code: str | None = None,
    ) -> types.SuspendAnswer:
        """Stop sending the tenant's messages (or one batch's); they stay queued."""
        return self._run(calls.suspend(self._tenant(tenant_id), batch_code))

    def activate(
        self,
        *,
        tenant_id: str | None = None,
        batch_code: str | None = None,
    ) -> types.SuspendAnswer:
        """Resume sending."""
        return self._run(calls.activate(self._tenant(tenant_id), batch_code))

    def add_suppressions(
        self,
        entries: Sequence[types.ManualSuppressionBody | Mapping[str, Any]],
        *,
        tenant_id: str | None = None,
    ) -> int:
        """Suppress addresses by hand; how many entries were added or changed."""
        return self._run(calls.add_suppressions(entries, self._tenant(tenant_id)))

    def remove_suppression(self, address: str, *, tenant_id: str | None = None) -> None:
        """Send to an address again."""
        return self._run(calls.remove_suppression(address, self._tenant(tenant_id)))

    def export_suppressions(self, *, tenant_id: str | None = None) -> str:
        """The whole suppression list as CSV text."""
        return self._run(calls.export_suppressions(self._tenant(tenant_id)))

    def add_dkim_key(
        self,
        tenant_id: str,
        key: types.DkimKeyBody | Mapping[str, Any],
    ) -> types.DkimKeyAnswer:
        """Add a DKIM key (made by the service unless ``private_key`` is given): the answer
        holds the DNS record to publish."""
        return self._run(calls.add_dkim_key(tenant_id, key))

    def list_dkim_keys(self, tenant_id: str) -> list[types.DkimKeyRecord]:
        """The tenant's DKIM keys, each with its DNS record."""
        return self._run(calls.list_dkim_keys(tenant_id))

    def remove_dkim_key(self, tenant_id: str, domain: str, selector: str) -> None:
        """Remove a DKIM key."""
        return self._run(calls.remove_dkim_key(tenant_id, domain, selector))
