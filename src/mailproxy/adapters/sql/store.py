"""The async storage ports over the SQL operations: each method runs one operation as one
transaction on its engine (the engines: ``SqliteEngine``, ``PostgresEngine``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from mailproxy.adapters.sql import admin, queue, reads
from mailproxy.adapters.sql.tx import Tx
from mailproxy.domain.access import IdempotentStart, TenantKey
from mailproxy.domain.model import (
    Account,
    AccountPause,
    Claim,
    DeleteResult,
    HistoryEntry,
    Lease,
    MessagePage,
    MinuteCount,
    NewMessage,
    QueuedMessage,
    Rejection,
    ReportBacklog,
    Status,
    StoredReport,
    SuspendState,
    Tenant,
    Transition,
)
from mailproxy.domain.policy import RateWindow, SlotGrant

P = ParamSpec("P")
T = TypeVar("T")


class Engine(Protocol):
    """Runs operations on a database: ``write`` in a transaction of its own, ``read``
    on a connection; both off the event loop. Driver errors become ``StorageError``."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...
    async def write(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


class SqlStore:
    """Implements ``MessageStore``, ``ConfigStore``, ``ReportOutbox`` and ``AccessStore``
    (:mod:`mailproxy.ports.store`) on an :class:`Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[Rejection]:
        return await self._engine.write(queue.enqueue, messages, now)

    async def claim_due(
        self, *, now: float, limit: int, owner: str, lease_s: float,
        tenant_limit: int | None = None,
    ) -> list[Claim]:  # fmt: skip
        return await self._engine.write(
            queue.claim_due, now=now, limit=limit, owner=owner, lease_s=lease_s,
            tenant_limit=tenant_limit,
        )  # fmt: skip

    async def reserve_slots(
        self, lease: Lease, windows: Sequence[RateWindow], now: float
    ) -> SlotGrant | None:
        return await self._engine.write(queue.reserve_slots, lease, windows, now)

    async def mark_sending(self, lease: Lease, now: float) -> bool:
        return await self._engine.write(queue.mark_sending, lease, now)

    async def complete(self, lease: Lease, transition: Transition, now: float) -> bool:
        return await self._engine.write(queue.complete, lease, transition, now)

    async def release(self, lease: Lease, now: float) -> bool:
        return await self._engine.write(queue.release, lease, now)

    async def recover(
        self, *, owner: str, now: float, lease_s: float, own: bool = True
    ) -> list[Claim]:
        return await self._engine.write(
            queue.recover, owner=owner, now=now, lease_s=lease_s, own=own
        )

    # --- reading, deleting, suspending ------------------------------------------------

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage | None:
        return await self._engine.read(reads.get_message, tenant_id, message_id)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        statuses: Collection[Status] = (),
        batch_code: str | None = None,
        active_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> MessagePage:
        return await self._engine.read(
            reads.list_messages, tenant_id, statuses, batch_code, active_only, limit, cursor
        )

    async def history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        return await self._engine.read(reads.history, tenant_id, message_id)

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        return await self._engine.write(reads.delete_messages, tenant_id, ids)

    async def next_due_ts(self, after: float) -> float | None:
        return await self._engine.read(reads.next_due_ts, after)

    async def count_ahead(self, message: QueuedMessage, now: float) -> int:
        return await self._engine.read(reads.count_ahead, message, now)

    async def account_pause(self, tenant_id: str, account_id: str) -> AccountPause | None:
        return await self._engine.read(reads.account_pause, tenant_id, account_id)

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        return await self._engine.read(reads.suspended_batches, tenant_id)

    async def suspend(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        return await self._engine.write(reads.suspend, tenant_id, batch_code, now)

    async def activate(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        return await self._engine.write(reads.activate, tenant_id, batch_code, now)

    async def purge_final(self, tenant_id: str | None, final_before_ts: float) -> int:
        return await self._engine.write(reads.purge_final, tenant_id, final_before_ts)

    async def count_by_status(self, tenant_id: str | None = None) -> dict[Status, int]:
        return await self._engine.read(reads.count_by_status, tenant_id)

    async def oldest_not_final(self) -> dict[str, float]:
        return await self._engine.read(reads.oldest_not_final)

    async def finished_per_minute(self, since_ts: float) -> list[MinuteCount]:
        return await self._engine.read(reads.finished_per_minute, since_ts)

    # --- configuration ----------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> None:
        await self._engine.write(admin.put_tenant, tenant)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._engine.read(admin.get_tenant, tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return await self._engine.read(admin.list_tenants)

    async def delete_tenant(self, tenant_id: str) -> bool:
        return await self._engine.write(admin.delete_tenant, tenant_id)

    async def put_account(self, account: Account) -> None:
        await self._engine.write(admin.put_account, account)

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        return await self._engine.read(admin.get_account, tenant_id, account_id)

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        return await self._engine.read(admin.list_accounts, tenant_id)

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        force: bool = False,
        now: float = 0.0,
        deletion_id: str = "",
    ) -> bool:
        return await self._engine.write(
            admin.delete_account, tenant_id, account_id, force, now, deletion_id
        )

    # --- access -----------------------------------------------------------------------

    async def put_tenant_key(self, key: TenantKey) -> None:
        await self._engine.write(admin.put_tenant_key, key)

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        return await self._engine.read(admin.find_tenant_key, digest)

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        return await self._engine.write(admin.delete_tenant_key, tenant_id)

    async def begin_idempotent(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        now: float,
        *,
        ttl_s: float,
        stale_s: float,
        owner: str = "",
    ) -> IdempotentStart:
        return await self._engine.write(
            admin.begin_idempotent, scope, key, fingerprint, now, ttl_s, stale_s, owner
        )

    async def release_idempotent(self, owner: str) -> int:
        return await self._engine.write(admin.release_idempotent, owner)

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        await self._engine.write(admin.finish_idempotent, scope, key, status, body)

    async def forget_idempotent(self, scope: str, key: str) -> None:
        await self._engine.write(admin.forget_idempotent, scope, key)

    # --- report outbox ----------------------------------------------------------------

    async def pending_reports(self, tenant_id: str, limit: int) -> list[StoredReport]:
        return await self._engine.read(admin.pending_reports, tenant_id, limit)

    async def tenants_with_pending_reports(self) -> set[str]:
        return await self._engine.read(admin.tenants_with_pending_reports)

    async def acknowledge_reports(
        self, tenant_id: str, event_ids: Sequence[str], now: float
    ) -> int:
        return await self._engine.write(admin.acknowledge_reports, tenant_id, event_ids, now)

    async def report_backlog(self, tenant_id: str) -> ReportBacklog:
        return await self._engine.read(admin.report_backlog, tenant_id)

    async def report_backlogs(self) -> dict[str, ReportBacklog]:
        return await self._engine.read(admin.report_backlogs)

    async def lease_reports(self, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
        return await self._engine.write(admin.lease_reports, tenant_id, owner, now, lease_s)

    async def release_reports(self, tenant_id: str, owner: str) -> None:
        await self._engine.write(admin.release_reports, tenant_id, owner)
