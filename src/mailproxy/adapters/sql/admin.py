"""Configuration (tenants, accounts), access (keys, idempotency) and the report outbox."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from mailproxy.adapters.sql.queue import apply_transition
from mailproxy.adapters.sql.rows import (
    account_decoder,
    encode,
    event_decoder,
    message_from_row,
    tenant_decoder,
)
from mailproxy.adapters.sql.tx import Tx
from mailproxy.domain.access import (
    Caller,
    IdempotentStart,
    TenantKey,
    idempotency_scope,
    idempotent_state,
)
from mailproxy.domain.errors import Conflict
from mailproxy.domain.lifecycle import abandoned_with_account
from mailproxy.domain.model import (
    Account,
    ReportBacklog,
    StoredReport,
    Tenant,
)
from mailproxy.domain.storage_rules import account_deletion_refusal

# --- configuration ----------------------------------------------------------------------


def put_tenant(tx: Tx, tenant: Tenant) -> None:
    tx.run(tx.q.put_tenant, (tenant.id, encode(tenant)))


def get_tenant(tx: Tx, tenant_id: str) -> Tenant | None:
    row = tx.one(tx.q.tenant, (tenant_id,))
    return tenant_decoder.decode(row[0]) if row else None


def list_tenants(tx: Tx) -> list[Tenant]:
    return [tenant_decoder.decode(row[0]) for row in tx.all(tx.q.tenants)]


def delete_tenant(tx: Tx, tenant_id: str) -> bool:
    if tx.run(tx.q.delete_tenant, (tenant_id,)) == 0:
        return False
    for statement in tx.q.delete_tenant_rows.split(";"):
        tx.run(statement, (tenant_id,))
    tx.run(tx.q.delete_scope_keys, (idempotency_scope(Caller(tenant_id)),))
    return True


def put_account(tx: Tx, account: Account) -> None:
    if account.is_default:
        others = tx.all(tx.q.other_accounts + tx.FOR_UPDATE, (account.tenant_id, account.id))
        for other_id, data in others:
            other = account_decoder.decode(data)
            if other.is_default:
                no_default = encode(msgspec.structs.replace(other, is_default=False))
                tx.run(tx.q.set_account_data, (no_default, account.tenant_id, other_id))
    tx.run(tx.q.put_account, (account.tenant_id, account.id, encode(account)))
    tx.wake_queue()


def get_account(tx: Tx, tenant_id: str, account_id: str) -> Account | None:
    row = tx.one(tx.q.account, (tenant_id, account_id))
    return account_decoder.decode(row[0]) if row else None


def list_accounts(tx: Tx, tenant_id: str) -> list[Account]:
    return [account_decoder.decode(row[0]) for row in tx.all(tx.q.accounts, (tenant_id,))]


def delete_account(
    tx: Tx,
    tenant_id: str,
    account_id: str,
    *,
    force: bool = False,
    now: float = 0.0,
    deletion_id: str = "",
) -> bool:
    if not tx.one(tx.q.account + tx.FOR_UPDATE, (tenant_id, account_id)):
        return False
    rows = tx.all(tx.q.waiting_in_account + tx.FOR_UPDATE, (tenant_id, account_id))
    refusal = account_deletion_refusal(account_id, len(rows), force=force)
    if refusal is not None:
        raise Conflict(refusal)
    for message in map(message_from_row, rows):
        failed = abandoned_with_account(message, now, deletion_id)
        apply_transition(tx, message.pk, tenant_id, account_id, None, failed, now)
    tx.run(tx.q.delete_account, (tenant_id, account_id))
    tx.run(tx.q.clear_pause, (tenant_id, account_id))
    return True


# --- access -----------------------------------------------------------------------------


def put_tenant_key(tx: Tx, key: TenantKey) -> None:
    tx.run(tx.q.put_tenant_key, (key.tenant_id, key.digest, key.expires_ts))


def find_tenant_key(tx: Tx, digest: str) -> TenantKey | None:
    row = tx.one(tx.q.tenant_key, (digest,))
    return TenantKey(*row) if row else None


def delete_tenant_key(tx: Tx, tenant_id: str) -> bool:
    return tx.run(tx.q.delete_tenant_key, (tenant_id,)) > 0


def begin_idempotent(
    tx: Tx,
    scope: str,
    key: str,
    fingerprint: str,
    now: float,
    *,
    ttl_s: float,
    stale_s: float,
    owner: str = "",
) -> IdempotentStart:
    tx.run(tx.q.forget_expired_keys, (now - ttl_s,))
    if tx.run(tx.q.start_key, (scope, key, fingerprint, now, owner)) == 1:
        return IdempotentStart("new")
    row = tx.one(tx.q.key_record + tx.FOR_UPDATE, (scope, key))
    start = idempotent_state(row[0], row[1], row[2], row[3], fingerprint, now, stale_s)
    if start is not None:
        return start
    tx.run(tx.q.restart_key, (fingerprint, now, owner, scope, key))
    return IdempotentStart("new")


def release_idempotent(tx: Tx, owner: str) -> int:
    return tx.run(tx.q.release_keys, (owner,))


def finish_idempotent(tx: Tx, scope: str, key: str, status: int, body: bytes) -> None:
    tx.run(tx.q.finish_key, (status, body, scope, key))


def forget_idempotent(tx: Tx, scope: str, key: str) -> None:
    tx.run(tx.q.forget_key, (scope, key))


# --- report outbox ----------------------------------------------------------------------


def pending_reports(tx: Tx, tenant_id: str, limit: int) -> list[StoredReport]:
    rows = tx.all(tx.q.pending_reports, (tenant_id, limit))
    return [StoredReport(seq, event_decoder.decode(payload)) for seq, payload in rows]


def tenants_with_pending_reports(tx: Tx) -> set[str]:
    return {tenant_id for (tenant_id,) in tx.all(tx.q.tenants_with_pending_reports)}


def acknowledge_reports(tx: Tx, tenant_id: str, event_ids: Sequence[str], now: float) -> int:
    return tx.run(tx.q.acknowledge_reports, (now, tx.listed(event_ids), tenant_id))


def report_backlog(tx: Tx, tenant_id: str) -> ReportBacklog:
    count, oldest = tx.one(tx.q.report_backlog, (tenant_id,))
    return ReportBacklog(int(count), oldest)


def report_backlogs(tx: Tx) -> dict[str, ReportBacklog]:
    return {
        tenant_id: ReportBacklog(int(count), oldest)
        for tenant_id, count, oldest in tx.all(tx.q.report_backlogs)
    }


def lease_reports(tx: Tx, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
    return tx.one(tx.q.lease_reports, (tenant_id, owner, now + lease_s, now)) is not None


def release_reports(tx: Tx, tenant_id: str, owner: str) -> None:
    tx.run(tx.q.release_reports, (tenant_id, owner))
