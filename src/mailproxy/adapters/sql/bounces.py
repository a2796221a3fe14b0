"""Bounce operations: bounce records, the suppression list, the bounce mailboxes'
progress and the database's secrets (``BounceStore``)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from mailproxy.adapters.sql.rows import encode, event_values, message_from_row
from mailproxy.adapters.sql.tx import Tx
from mailproxy.domain.bounces import (
    BounceRecord,
    MailboxEntry,
    MailboxOutcome,
    Suppression,
    SuppressionPage,
    SuppressionReason,
    SuppressionSettings,
    UnparsedReport,
    address_key,
    counts_toward_rule,
    merged,
    suppressions_for,
    without_known,
)
from mailproxy.domain.model import QueuedMessage
from mailproxy.domain.pec import overdue, receipt_mark
from mailproxy.domain.report_events import pec_timeout_event

_record_decoder = msgspec.json.Decoder(BounceRecord)
_suppression_decoder = msgspec.json.Decoder(Suppression)


def instance_secret(tx: Tx, name: str, candidate: str) -> str:
    tx.run(tx.q.put_instance_secret, (name, candidate))
    return str(tx.one(tx.q.instance_secret, (name,))[0])


def message_by_pk(tx: Tx, pk: int) -> QueuedMessage | None:
    row = tx.one(tx.q.message_by_pk, (pk,))
    return None if row is None else message_from_row(row)


def bounces_of(tx: Tx, tenant_id: str, message_ids: Sequence[str]) -> dict[str, list[BounceRecord]]:
    found: dict[str, list[BounceRecord]] = {}
    if not message_ids:
        return found
    ids = tx.listed(dict.fromkeys(message_ids))
    for message_id, data in tx.all(tx.q.bounce_records_of, (tenant_id, ids)):
        found.setdefault(message_id, []).append(_record_decoder.decode(data))
    return found


def mailbox_seen(
    tx: Tx, mailbox: str, uidvalidity: int, uids: Sequence[int]
) -> dict[int, MailboxOutcome]:
    if not uids:
        return {}
    rows = tx.all(tx.q.mailbox_seen, (mailbox, uidvalidity, tx.listed(uids)))
    return {int(row[0]): row[1] for row in rows}


def record_mailbox_entry(tx: Tx, entry: MailboxEntry, now: float) -> bool:
    added = tx.run(
        tx.q.add_mailbox_entry,
        (
            entry.mailbox, entry.uidvalidity, entry.uid, entry.outcome,
            entry.tenant_id or entry.mailbox_tenant_id, entry.summary, now,
        ),
    )  # fmt: skip
    if not added:
        return False
    tenant_id, pk = entry.tenant_id, entry.message_pk
    if entry.outcome == "applied" and tenant_id and pk is not None:
        lock_list(tx, tenant_id)  # another reader of the same report waits for this one
        kept = tx.all(tx.q.bounce_records_by_pk, (pk,))
        new = without_known(entry, (_record_decoder.decode(row[0]) for row in kept))
        keep_records(tx, pk, tenant_id, new.message_id, new.records, new.settings, now)
        if new.events:
            tx.many(tx.q.add_report, event_values(new.events, tenant_id, pk, now))
            tx.wake_reports(tenant_id)
        mark = None if entry.pec is None else receipt_mark(entry.pec)
        if mark is not None:
            tx.run(tx.q.pec_mark, (pk, mark))
    return True


def message_by_message_id(
    tx: Tx, tenant_id: str, account_id: str, message_id: str
) -> QueuedMessage | None:
    row = tx.one(tx.q.message_by_message_id, (tenant_id, message_id, account_id))
    return None if row is None else message_from_row(row)


def expire_pec_watches(tx: Tx, now: float, limit: int) -> int:
    """Report ``pec_timeout`` for each message past a deadline without its receipts
    (:func:`mailproxy.domain.pec.overdue`), and stop waiting as it says."""
    tx.run(tx.q.pec_orphans)
    tx.run(tx.q.pec_orphan_marks)
    rows = tx.all(tx.q.pec_due + tx.SKIP_LOCKED, (now, now, limit))
    reported: set[str] = set()
    timeouts = 0
    for acceptance_due, delivery_due, recipients, *columns in rows:
        message = message_from_row(columns)
        marks = {row[0] for row in tx.all(tx.q.pec_marks_of, (message.pk,))}
        stage, action = overdue(acceptance_due, delivery_due, recipients, marks, now)
        if stage is not None:
            due = acceptance_due if stage == "acceptance" else delivery_due
            event = pec_timeout_event(message, stage, due - (message.sent_ts or due), now)
            tx.many(tx.q.add_report, event_values([event], message.tenant_id, message.pk, now))
            reported.add(message.tenant_id)
            timeouts += 1
        if action == "forget":
            tx.run(tx.q.pec_forget, (message.pk,))
            tx.run(tx.q.pec_forget_marks, (message.pk,))
        elif action == "stop_acceptance":
            tx.run(tx.q.pec_stop_acceptance, (message.pk,))
    for tenant_id in reported:
        tx.wake_reports(tenant_id)
    return timeouts


def keep_records(
    tx: Tx,
    pk: int,
    tenant_id: str,
    message_id: str | None,
    records: Sequence[BounceRecord],
    settings: SuppressionSettings | None,
    now: float,
) -> None:
    """Keep ``records`` with message ``pk`` and add the suppressions they bring."""
    settings = settings or SuppressionSettings()
    lock_list(tx, tenant_id)  # before counting: a concurrent bounce counts after this one
    tx.many(
        tx.q.add_bounce_record,
        [
            (
                pk, tenant_id, address_key(r.recipient) if r.recipient else None, r.kind,
                int(counts_toward_rule(r)), r.ts, encode(r),
            )
            for r in records
        ],
    )  # fmt: skip
    keys = [address_key(r.recipient) for r in records if r.recipient and counts_toward_rule(r)]
    counted: dict[str, int] = {}
    if keys:
        since = now - settings.soft_bounce_window_s
        rows = tx.all(tx.q.counted_bounces, (tenant_id, since, tx.listed(dict.fromkeys(keys))))
        counted = {row[0]: int(row[1]) for row in rows}
    entries = suppressions_for(
        records, tenant_id=tenant_id, message_id=message_id, settings=settings,
        counted=counted, now=now,
    )  # fmt: skip
    add_suppressions(tx, entries, now)


def lock_list(tx: Tx, tenant_id: str) -> None:
    """Serialise changes to the tenant's list until commit. An address without an entry
    has no row to lock: two processes adding one at once would each merge against
    nothing (and count soft bounces without the other's), and the later would win
    whatever its reason. One lock a tenant: changes are rare beside sends, and one may
    add thousands of addresses."""
    tx.lock_keys([f"suppressions of {tenant_id}"])


def unparsed_reports(tx: Tx, tenant_id: str | None, limit: int) -> list[UnparsedReport]:
    rows = tx.all(tx.q.unparsed_reports, (tenant_id or "", tenant_id or "", limit))
    return [
        UnparsedReport(mailbox=m, uid=int(u), summary=s, seen_ts=ts, tenant_id=t)
        for m, u, s, ts, t in rows
    ]


def suppressed_among(tx: Tx, tenant_id: str, addresses: Sequence[str], now: float) -> set[str]:
    if not addresses:
        return set()
    keys = {address_key(a): a for a in addresses}
    rows = tx.all(tx.q.suppressed_among, (tenant_id, tx.listed(keys), now))
    found = {row[0] for row in rows}
    return {a for a in addresses if address_key(a) in found}


def add_suppressions(tx: Tx, entries: Sequence[Suppression], now: float) -> int:
    by_tenant: dict[str, list[Suppression]] = {}
    for entry in entries:
        by_tenant.setdefault(entry.tenant_id, []).append(entry)
    changed: dict[tuple[str, str], Suppression] = {}
    for tenant_id, group in by_tenant.items():
        keys = list(dict.fromkeys(address_key(e.address) for e in group))
        lock_list(tx, tenant_id)
        rows = tx.all(tx.q.suppressions_of + tx.FOR_UPDATE, (tenant_id, tx.listed(keys)))
        existing = {row[0]: _suppression_decoder.decode(row[1]) for row in rows}
        for entry in group:
            key = address_key(entry.address)
            kept = merged(existing.get(key), entry, now)
            if kept != existing.get(key):
                existing[key] = changed[(tenant_id, key)] = kept
    tx.many(
        tx.q.put_suppression,
        [(t, key, s.reason, s.expires_ts, encode(s)) for (t, key), s in changed.items()],
    )
    return len(changed)


def remove_suppression(tx: Tx, tenant_id: str, address: str, now: float) -> bool:
    return tx.run(tx.q.remove_suppression, (tenant_id, address_key(address), now)) > 0


def list_suppressions(
    tx: Tx,
    tenant_id: str,
    *,
    now: float,
    reason: SuppressionReason | None = None,
    q: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> SuppressionPage:
    pattern = "%"
    if q:
        escaped = q.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
        pattern = f"%{escaped}%"
    rows = tx.all(
        tx.q.list_suppressions,
        (tenant_id, now, cursor or "", reason or "", reason or "", pattern, limit + 1),
    )
    page = [_suppression_decoder.decode(row[1]) for row in rows[:limit]]
    more = len(rows) > limit
    return SuppressionPage(page, rows[limit - 1][0] if more and page else None)


def count_suppressions(tx: Tx, now: float) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in tx.all(tx.q.count_suppressions, (now,))}
