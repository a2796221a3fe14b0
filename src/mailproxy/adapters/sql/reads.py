"""Reading, deleting and suspending messages."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from mailproxy.adapters.sql.queue import pause_of, suspensions
from mailproxy.adapters.sql.rows import COLUMNS, FINAL_SQL, RESUME_CHUNK, message_from_row, page_of
from mailproxy.adapters.sql.tx import FOLD_AT, Tx
from mailproxy.domain.errors import Conflict
from mailproxy.domain.model import (
    AccountPause,
    DeleteResult,
    HistoryEntry,
    MessagePage,
    MinuteCount,
    QueuedMessage,
    Status,
    SuspendState,
)
from mailproxy.domain.policy import suspension_of
from mailproxy.domain.storage_rules import requeue_status


def get_message(tx: Tx, tenant_id: str, message_id: str) -> QueuedMessage | None:
    row = tx.one(tx.q.message, (tenant_id, message_id))
    return message_from_row(row) if row else None


def list_messages(
    tx: Tx,
    tenant_id: str,
    *,
    statuses: Collection[Status] = (),
    batch_code: str | None = None,
    active_only: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> MessagePage:
    sql = f"SELECT {COLUMNS} FROM messages WHERE tenant_id = ? AND seq > ?"
    args: list[Any] = [tenant_id, int(cursor) if cursor else 0]
    if statuses:
        sql += f" AND status IN ({', '.join('?' * len(statuses))})"
        args.extend(s.value for s in statuses)
    if batch_code is not None:
        sql += " AND batch_code = ?"
        args.append(batch_code)
    if active_only:
        sql += f" AND status NOT IN {FINAL_SQL}"
    return page_of(tx.all(sql + " ORDER BY seq LIMIT ?", (*args, limit + 1)), limit)


def history(tx: Tx, tenant_id: str, message_id: str) -> list[HistoryEntry]:
    return [HistoryEntry(*row) for row in tx.all(tx.q.history, (tenant_id, message_id))]


def remove(tx: Tx, pks: Sequence[int], *, acked_reports_too: bool = False) -> None:
    if pks:
        pk_list = (tx.listed(pks),)
        tx.run(tx.q.remove_history, pk_list)
        tx.run(tx.q.remove_reports if acked_reports_too else tx.q.remove_unacked_reports, pk_list)
        tx.run(tx.q.release_listed_slots, pk_list)
        tx.run(tx.q.remove_bounce_records, pk_list)
        tx.run(tx.q.remove_messages, pk_list)


def delete_messages(tx: Tx, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
    unique = list(dict.fromkeys(ids))
    sql = tx.q.message_states + tx.FOR_UPDATE
    found = {i: (pk, status) for pk, i, status in tx.all(sql, (tenant_id, tx.listed(unique)))}
    not_found = [i for i in unique if i not in found]
    in_flight = [i for i in unique if i in found and found[i][1] == Status.SENDING.value]
    removable = [pk for pk, status in found.values() if status != Status.SENDING.value]
    remove(tx, removable)
    return DeleteResult(len(removable), not_found, in_flight)


def next_due_ts(tx: Tx, after: float) -> float | None:
    instants = [ts for ts in tx.one(tx.q.next_due, (after, after)) if ts is not None]
    return min(instants) if instants else None


def count_ahead(tx: Tx, message: QueuedMessage, now: float) -> int:
    m = message
    args = (m.tenant_id, m.account_id, now, m.rank, m.rank, m.seq)
    return int(tx.one(tx.q.count_ahead, args)[0])


def account_pause(tx: Tx, tenant_id: str, account_id: str) -> AccountPause | None:
    row = tx.one(tx.q.account_pause, (tenant_id, account_id))
    return pause_of(row) if row else None


def suspended_batches(tx: Tx, tenant_id: str) -> list[str]:
    return sorted(suspensions(tx, tenant_id))


def _not_final_in_scope(tx: Tx, tenant_id: str, batch_code: str | None) -> int:
    if batch_code is None:
        return int(tx.one(tx.q.not_final_in_tenant, (tenant_id,))[0])
    return int(tx.one(tx.q.not_final_in_tenant + " AND batch_code = ?", (tenant_id, batch_code))[0])


def suspend(tx: Tx, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
    if "*" not in suspensions(tx, tenant_id):
        tx.run(tx.q.add_suspension, (tenant_id, batch_code or "*"))
        if batch_code is None:
            tx.run(tx.q.suspend_queued, (now, tenant_id))
        else:
            tx.run(tx.q.suspend_queued + " AND batch_code = ?", (now, tenant_id, batch_code))
    return SuspendState(
        tenant_id, suspended_batches(tx, tenant_id), _not_final_in_scope(tx, tenant_id, batch_code)
    )


def activate(tx: Tx, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
    if batch_code is not None and "*" in suspensions(tx, tenant_id):
        raise Conflict("the whole tenant is suspended: activate the tenant first")
    tx.run(tx.q.remove_suspension, (tenant_id, batch_code or "*"))
    remaining = suspensions(tx, tenant_id)
    after_seq, resumed = -1, 0
    while rows := tx.all(  # in chunks: a tenant may hold millions
        tx.q.suspended_chunk + tx.FOR_UPDATE, (tenant_id, after_seq, RESUME_CHUNK)
    ):
        after_seq = rows[-1][4]
        back = [
            (requeue_status(attempts, due_ts, now).value, now, pk)
            for pk, attempts, due_ts, code, _ in rows
            if suspension_of(remaining, code) is None
        ]
        tx.many(tx.q.set_status, back)
        resumed += len(back)
    if resumed:
        tx.wake_queue()
    return SuspendState(
        tenant_id, sorted(remaining), _not_final_in_scope(tx, tenant_id, batch_code)
    )


def purge_final(tx: Tx, tenant_id: str | None, final_before_ts: float) -> int:
    sql, args = tx.q.purgeable, list[Any]([final_before_ts])
    if tenant_id is not None:
        sql, args = sql + " AND tenant_id = ?", [final_before_ts, tenant_id]
    pks = [row[0] for row in tx.all(sql + tx.SKIP_LOCKED, args)]
    remove(tx, pks, acked_reports_too=True)
    tx.fold_counts()
    return len(pks)


def count_by_status(tx: Tx, tenant_id: str | None = None) -> dict[Status, int]:
    by_tenant = tenant_id is not None
    rows = tx.all(tx.q.count_tenant, (tenant_id,)) if by_tenant else tx.all(tx.q.count_all)
    # A read writes only once deltas pile up (more than about two rows a pair): a health
    # probe or a scrape does not rewrite the counts each time.
    if sum(row[2] for row in rows) > 2 * sum(row[3] for row in rows) + FOLD_AT:
        tx.fold_counts()
    return {Status(status): int(total) for status, total, _, _ in rows if total > 0}


def oldest_not_final(tx: Tx) -> dict[str, float]:
    return {tenant_id: float(oldest) for tenant_id, oldest in tx.all(tx.q.oldest_not_final)}


def finished_per_minute(tx: Tx, since_ts: float) -> list[MinuteCount]:
    return [
        MinuteCount(int(minute), tenant, Status(status), int(n))
        for minute, tenant, status, n in tx.all(tx.q.finished_per_minute, (since_ts,))
    ]
