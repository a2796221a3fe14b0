"""The memory store's records and reads: messages with their history, tenants,
accounts, tenant keys, idempotency records and the report outbox, with every method that
reads or administers them. :class:`mailproxy.adapters.memory.MemoryStore` adds the queue
(accept, claim, reserve, settle, recover) on top."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence

import msgspec

from mailproxy.domain.access import (
    Caller,
    IdempotentStart,
    TenantKey,
    idempotency_scope,
    idempotent_state,
)
from mailproxy.domain.errors import Conflict
from mailproxy.domain.lifecycle import is_final
from mailproxy.domain.model import (
    QUEUED_STATUSES,
    Account,
    AccountPause,
    DeleteResult,
    HistoryEntry,
    MessagePage,
    MinuteCount,
    QueuedMessage,
    ReportBacklog,
    Status,
    StoredReport,
    SuspendState,
    Tenant,
    minute_start,
)
from mailproxy.domain.policy import (
    queue_order,
    suspension_of,
)
from mailproxy.domain.storage_rules import requeue_status

replace = msgspec.structs.replace


class StoredEvent(msgspec.Struct):
    """A report event with the outbox's bookkeeping."""

    seq: int
    tenant_id: str
    pk: int
    report: StoredReport
    created_ts: float = 0.0
    acked: bool = False


class MemoryRecords:
    """The state of a memory store and everything but its queue operations."""

    def __init__(self) -> None:
        self._messages: dict[int, QueuedMessage] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._history: dict[int, list[HistoryEntry]] = {}
        self._reports: list[StoredEvent] = []
        self._tenants: dict[str, Tenant] = {}
        self._accounts: dict[tuple[str, str], Account] = {}
        # Per account: a heap of (rank, seq, pk); entries that no longer match are skipped.
        self._queues: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
        self._slots: dict[str, list[tuple[float, int | None]]] = {}  # key -> (ts, holder)
        self._pauses: dict[tuple[str, str], AccountPause] = {}
        self._suspended: dict[str, set[str]] = {}
        self._tenant_keys: dict[str, TenantKey] = {}
        self._report_leases: dict[str, tuple[str, float]] = {}  # tenant -> (owner, expiry)
        #: (scope, key) -> (fingerprint, status, body, created_ts)
        self._idempotency: dict[tuple[str, str], tuple[str, int | None, bytes | None, float]] = {}
        self._idempotency_owners: dict[tuple[str, str], str] = {}
        self._next_pk = 1
        self._next_seq = 1
        self._next_report = 1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _push(self, message: QueuedMessage) -> None:
        if message.status in QUEUED_STATUSES:
            queue = self._queues.setdefault((message.tenant_id, message.account_id), [])
            heapq.heappush(queue, (*queue_order(message), message.pk))

    def _release_slots(self, pk: int) -> None:
        for key, slots in self._slots.items():
            self._slots[key] = [slot for slot in slots if slot[1] != pk]

    def _requeue(self, message: QueuedMessage, now: float) -> None:
        status = requeue_status(message.attempts, message.due_ts, now)
        updated = replace(
            home_again(message),
            status=status,
            lease_owner=None,
            lease_token=None,
            lease_expires_ts=None,
            attempt_open=False,
            updated_ts=now,
        )
        self._messages[message.pk] = updated
        self._push(updated)

    # --- reading and deleting ---------------------------------------------------------

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage | None:
        pk = self._keys.get((tenant_id, message_id))
        return self._messages.get(pk) if pk is not None else None

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
        after = int(cursor) if cursor else 0
        wanted = set(statuses)
        selected = sorted(
            (
                m
                for m in self._messages.values()
                if m.tenant_id == tenant_id
                and m.seq > after
                and (not wanted or m.status in wanted)
                and (batch_code is None or m.batch_code == batch_code)
                and (not active_only or not is_final(m.status))
            ),
            key=lambda m: m.seq,
        )
        page = selected[:limit]
        more = len(selected) > limit
        return MessagePage(page, str(page[-1].seq) if more and page else None)

    async def history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        pk = self._keys.get((tenant_id, message_id))
        return list(self._history.get(pk, [])) if pk is not None else []

    def _remove(self, pk: int) -> None:
        message = self._messages.pop(pk)
        del self._keys[(message.tenant_id, message.id)]
        self._history.pop(pk, None)
        self._release_slots(pk)
        self._reports = [r for r in self._reports if r.pk != pk or r.acked]

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        removed, not_found, in_flight = 0, [], []
        for message_id in dict.fromkeys(ids):
            pk = self._keys.get((tenant_id, message_id))
            if pk is None:
                not_found.append(message_id)
            elif self._messages[pk].status is Status.SENDING:
                in_flight.append(message_id)
            else:
                self._remove(pk)
                removed += 1
        return DeleteResult(removed, not_found, in_flight)

    async def next_due_ts(self, after: float) -> float | None:
        instants = [
            m.due_ts
            for m in self._messages.values()
            if m.status in QUEUED_STATUSES and m.due_ts > after
        ]
        instants += [p.until_ts for p in self._pauses.values() if p.until_ts > after]
        return min(instants) if instants else None

    async def count_ahead(self, message: QueuedMessage, now: float) -> int:
        return sum(
            1
            for m in self._messages.values()
            if m.tenant_id == message.tenant_id
            and m.account_id == message.account_id
            and m.status in QUEUED_STATUSES
            and m.due_ts <= now
            and queue_order(m) < queue_order(message)
        )

    async def account_pause(self, tenant_id: str, account_id: str) -> AccountPause | None:
        return self._pauses.get((tenant_id, account_id))

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        return sorted(self._suspended.get(tenant_id, ()))

    def _pending_in_scope(self, tenant_id: str, batch_code: str | None) -> int:
        return sum(
            1
            for m in self._messages.values()
            if m.tenant_id == tenant_id
            and not is_final(m.status)
            and (batch_code is None or m.batch_code == batch_code)
        )

    async def suspend(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        suspended = self._suspended.setdefault(tenant_id, set())
        if "*" not in suspended:
            suspended.add(batch_code or "*")
            for m in list(self._messages.values()):
                if (
                    m.tenant_id == tenant_id
                    and m.status in QUEUED_STATUSES
                    and (batch_code is None or m.batch_code == batch_code)
                ):
                    self._messages[m.pk] = replace(m, status=Status.SUSPENDED, updated_ts=now)
        return SuspendState(
            tenant_id, sorted(suspended), self._pending_in_scope(tenant_id, batch_code)
        )

    async def activate(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        suspended = self._suspended.setdefault(tenant_id, set())
        if batch_code is not None and "*" in suspended:
            raise Conflict("the whole tenant is suspended: activate the tenant first")
        suspended.discard(batch_code or "*")
        for m in list(self._messages.values()):
            if (
                m.tenant_id == tenant_id
                and m.status is Status.SUSPENDED
                and suspension_of(suspended, m.batch_code) is None
            ):
                self._requeue(m, now)
        return SuspendState(
            tenant_id, sorted(suspended), self._pending_in_scope(tenant_id, batch_code)
        )

    async def purge_final(self, tenant_id: str | None, final_before_ts: float) -> int:
        unreported = {r.pk for r in self._reports if not r.acked}
        doomed = [
            m.pk
            for m in self._messages.values()
            if (tenant_id is None or m.tenant_id == tenant_id)
            and is_final(m.status)
            and m.final_ts is not None
            and m.final_ts < final_before_ts
            and m.pk not in unreported
        ]
        for pk in doomed:
            self._remove(pk)
        gone = set(doomed)
        self._reports = [r for r in self._reports if r.pk not in gone]
        return len(doomed)

    async def count_by_status(self, tenant_id: str | None = None) -> dict[Status, int]:
        counts: dict[Status, int] = {}
        for m in self._messages.values():
            if tenant_id is None or m.tenant_id == tenant_id:
                counts[m.status] = counts.get(m.status, 0) + 1
        return counts

    async def oldest_not_final(self) -> dict[str, float]:
        oldest: dict[str, float] = {}
        for m in self._messages.values():
            if not is_final(m.status):
                oldest[m.tenant_id] = min(m.created_ts, oldest.get(m.tenant_id, m.created_ts))
        return oldest

    async def finished_per_minute(self, since_ts: float) -> list[MinuteCount]:
        counts: dict[tuple[int, str, Status], int] = {}
        for m in self._messages.values():
            if m.final_ts is not None and m.final_ts >= since_ts and is_final(m.status):
                key = (minute_start(m.final_ts), m.tenant_id, m.status)
                counts[key] = counts.get(key, 0) + 1
        return [MinuteCount(*key, count) for key, count in sorted(counts.items())]

    # --- configuration ----------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> None:
        self._tenants[tenant.id] = tenant

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return [self._tenants[k] for k in sorted(self._tenants)]

    async def delete_tenant(self, tenant_id: str) -> bool:
        if self._tenants.pop(tenant_id, None) is None:
            return False
        for key in [k for k in self._accounts if k[0] == tenant_id]:
            del self._accounts[key]
        for pk in [pk for (t, _), pk in self._keys.items() if t == tenant_id]:
            self._remove(pk)
        self._reports = [r for r in self._reports if r.tenant_id != tenant_id]
        self._pauses = {k: p for k, p in self._pauses.items() if k[0] != tenant_id}
        self._suspended.pop(tenant_id, None)
        self._tenant_keys.pop(tenant_id, None)
        self._report_leases.pop(tenant_id, None)
        scope = idempotency_scope(Caller(tenant_id))
        self._idempotency = {k: r for k, r in self._idempotency.items() if k[0] != scope}
        return True

    async def put_account(self, account: Account) -> None:
        if account.is_default:
            for key, other in self._accounts.items():
                if key[0] == account.tenant_id and other.is_default:
                    self._accounts[key] = replace(other, is_default=False)
        self._accounts[(account.tenant_id, account.id)] = account

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        return self._accounts.get((tenant_id, account_id))

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        return [a for k, a in sorted(self._accounts.items()) if k[0] == tenant_id]

    # --- access -----------------------------------------------------------------------

    async def put_tenant_key(self, key: TenantKey) -> None:
        self._tenant_keys[key.tenant_id] = key

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        return next((k for k in self._tenant_keys.values() if k.digest == digest), None)

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        return self._tenant_keys.pop(tenant_id, None) is not None

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
        self._idempotency = {k: r for k, r in self._idempotency.items() if r[3] > now - ttl_s}
        record = self._idempotency.get((scope, key))
        if record is not None:
            start = idempotent_state(*record, fingerprint, now, stale_s)
            if start is not None:
                return start
        self._idempotency[(scope, key)] = (fingerprint, None, None, now)
        self._idempotency_owners[(scope, key)] = owner
        return IdempotentStart("new")

    async def release_idempotent(self, owner: str) -> int:
        released = [
            k
            for k, record in self._idempotency.items()
            if record[1] is None and self._idempotency_owners.get(k) == owner
        ]
        for k in released:
            del self._idempotency[k]
        return len(released)

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        record = self._idempotency.get((scope, key))
        if record is not None:
            self._idempotency[(scope, key)] = (record[0], status, body, record[3])

    async def forget_idempotent(self, scope: str, key: str) -> None:
        record = self._idempotency.get((scope, key))
        if record is not None and record[1] is None:
            del self._idempotency[(scope, key)]

    # --- report outbox ----------------------------------------------------------------

    async def pending_reports(self, tenant_id: str, limit: int) -> list[StoredReport]:
        pending = [r.report for r in self._reports if r.tenant_id == tenant_id and not r.acked]
        return pending[:limit]

    async def tenants_with_pending_reports(self) -> set[str]:
        return {r.tenant_id for r in self._reports if not r.acked}

    async def acknowledge_reports(
        self, tenant_id: str, event_ids: Sequence[str], now: float
    ) -> int:
        wanted = set(event_ids)
        changed = 0
        for r in self._reports:
            if r.tenant_id == tenant_id and not r.acked and r.report.event.event_id in wanted:
                r.acked = True
                changed += 1
        return changed

    async def report_backlog(self, tenant_id: str) -> ReportBacklog:
        pending = [r for r in self._reports if r.tenant_id == tenant_id and not r.acked]
        return ReportBacklog(len(pending), pending[0].created_ts if pending else None)

    async def report_backlogs(self) -> dict[str, ReportBacklog]:
        backlogs: dict[str, ReportBacklog] = {}
        for r in self._reports:
            if not r.acked:
                known = backlogs.get(r.tenant_id)
                oldest = r.created_ts if known is None else known.oldest_ts
                backlogs[r.tenant_id] = ReportBacklog((known.count if known else 0) + 1, oldest)
        return backlogs

    async def lease_reports(self, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
        holder, expires_ts = self._report_leases.get(tenant_id, (owner, now))
        if holder != owner and expires_ts > now:
            return False
        self._report_leases[tenant_id] = (owner, now + lease_s)
        return True

    async def release_reports(self, tenant_id: str, owner: str) -> None:
        if self._report_leases.get(tenant_id, (None, 0.0))[0] == owner:
            del self._report_leases[tenant_id]


def home_again(message: QueuedMessage) -> QueuedMessage:
    """``message`` back with its own account when its lease ends (a fallback sent it, or
    was to)."""
    if message.failover_from is None:
        return message
    return replace(message, account_id=message.failover_from, failover_from=None)
