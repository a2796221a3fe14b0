"""The bounce section of the memory store (``BounceStore``): bounce records, the
suppression list, the bounce mailboxes' progress and the store's secrets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailproxy.adapters.memory_records import MemoryRecords, StoredEvent
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
    is_active,
    merged,
    suppressions_for,
    without_known,
)
from mailproxy.domain.model import PecWatch, QueuedMessage, StoredReport
from mailproxy.domain.pec import overdue, receipt_mark
from mailproxy.domain.report_events import pec_timeout_event


@dataclass
class _PecWait:
    acceptance_due_ts: float | None
    delivery_due_ts: float
    recipients: int


class MemoryBounces(MemoryRecords):
    """Bounces and suppression over the memory store's state."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, str] = {}
        #: message pk -> its records, with the tenant
        self._bounce_records: dict[int, list[BounceRecord]] = {}
        #: (tenant, address key) -> entry
        self._suppressions: dict[tuple[str, str], Suppression] = {}
        #: (mailbox, uidvalidity, uid) -> (outcome, tenant, summary, seen_ts)
        self._mailbox: dict[tuple[str, int, int], tuple[str, str | None, str, float]] = {}
        #: message pk -> its deadlines, as a PEC account sent it
        self._pec: dict[int, _PecWait] = {}
        #: message pk -> what its receipts said (domain.pec.receipt_mark)
        self._pec_marks: dict[int, set[str]] = {}

    def _remove(self, pk: int) -> None:
        super()._remove(pk)
        self._bounce_records.pop(pk, None)
        self._pec.pop(pk, None)
        self._pec_marks.pop(pk, None)

    def _watch_pec(self, pk: int, watch: PecWatch) -> None:
        self._pec[pk] = _PecWait(watch.acceptance_due_ts, watch.delivery_due_ts, watch.recipients)

    async def message_by_message_id(
        self, tenant_id: str, account_id: str, message_id: str
    ) -> QueuedMessage | None:
        found = [
            m for m in self._messages.values()
            if (m.tenant_id, m.message_id) == (tenant_id, message_id)
            and (m.failover_from or m.account_id) == account_id
        ]  # fmt: skip
        return max(found, key=lambda m: m.pk, default=None)

    async def expire_pec_watches(self, now: float, limit: int) -> int:
        due = [
            pk for pk, wait in sorted(self._pec.items())
            if (wait.acceptance_due_ts is not None and wait.acceptance_due_ts <= now)
            or wait.delivery_due_ts <= now
        ][:limit]  # fmt: skip
        timeouts = 0
        for pk in due:
            wait, message = self._pec[pk], self._messages.get(pk)
            if message is None:
                del self._pec[pk]
                continue
            marks = self._pec_marks.get(pk, set())
            stage, action = overdue(
                wait.acceptance_due_ts, wait.delivery_due_ts, wait.recipients, marks, now
            )
            if stage is not None:
                deadline = wait.acceptance_due_ts if stage == "acceptance" else wait.delivery_due_ts
                assert deadline is not None
                event = pec_timeout_event(
                    message, stage, deadline - (message.sent_ts or deadline), now
                )
                seq = self._next_report
                self._next_report += 1
                self._reports.append(
                    StoredEvent(seq, message.tenant_id, pk, StoredReport(seq, event), now)
                )
                timeouts += 1
            if action == "forget":
                del self._pec[pk]
                self._pec_marks.pop(pk, None)
            elif action == "stop_acceptance":
                wait.acceptance_due_ts = None
        return timeouts

    async def delete_tenant(self, tenant_id: str) -> bool:
        self._suppressions = {k: s for k, s in self._suppressions.items() if k[0] != tenant_id}
        return await super().delete_tenant(tenant_id)

    async def instance_secret(self, name: str, candidate: str) -> str:
        return self._secrets.setdefault(name, candidate)

    async def message_by_pk(self, pk: int) -> QueuedMessage | None:
        return self._messages.get(pk)

    async def bounces_of(
        self, tenant_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[BounceRecord]]:
        found: dict[str, list[BounceRecord]] = {}
        for message_id in dict.fromkeys(message_ids):
            pk = self._keys.get((tenant_id, message_id))
            if pk is not None and self._bounce_records.get(pk):
                found[message_id] = list(self._bounce_records[pk])
        return found

    async def mailbox_seen(
        self, mailbox: str, uidvalidity: int, uids: Sequence[int]
    ) -> dict[int, MailboxOutcome]:
        return {
            uid: self._mailbox[(mailbox, uidvalidity, uid)][0]  # type: ignore[misc]
            for uid in uids
            if (mailbox, uidvalidity, uid) in self._mailbox
        }

    async def record_mailbox_entry(self, entry: MailboxEntry, now: float) -> bool:
        key = (entry.mailbox, entry.uidvalidity, entry.uid)
        if key in self._mailbox:
            return False
        tenant = entry.tenant_id or entry.mailbox_tenant_id
        self._mailbox[key] = (entry.outcome, tenant, entry.summary, now)
        tenant_id, pk = entry.tenant_id, entry.message_pk
        if entry.outcome == "applied" and tenant_id and pk is not None:
            new = without_known(entry, self._bounce_records.get(pk, ()))
            self._keep_records(pk, tenant_id, new.message_id, new.records, new.settings, now)
            for event in new.events:
                seq = self._next_report
                self._next_report += 1
                stored = StoredReport(seq, event)
                self._reports.append(StoredEvent(seq, tenant_id, pk, stored, now))
            mark = None if entry.pec is None else receipt_mark(entry.pec)
            if mark is not None:
                self._pec_marks.setdefault(pk, set()).add(mark)
        return True

    def _keep_records(
        self,
        pk: int,
        tenant_id: str,
        message_id: str | None,
        records: Sequence[BounceRecord],
        settings: SuppressionSettings | None,
        now: float,
    ) -> None:
        settings = settings or SuppressionSettings()
        self._bounce_records.setdefault(pk, []).extend(records)
        since = now - settings.soft_bounce_window_s
        messages_at: dict[str, set[int]] = {}
        for message_pk, kept in self._bounce_records.items():
            message = self._messages.get(message_pk)
            if message is None or message.tenant_id != tenant_id:
                continue
            for r in kept:
                if counts_toward_rule(r) and r.ts > since and r.recipient:
                    messages_at.setdefault(address_key(r.recipient), set()).add(message_pk)
        entries = suppressions_for(
            records, tenant_id=tenant_id, message_id=message_id, settings=settings,
            counted={key: len(pks) for key, pks in messages_at.items()}, now=now,
        )  # fmt: skip
        self._merge_suppressions(entries, now)

    def _merge_suppressions(self, entries: Sequence[Suppression], now: float) -> int:
        changed = 0
        for entry in entries:
            key = (entry.tenant_id, address_key(entry.address))
            existing = self._suppressions.get(key)
            kept = merged(existing, entry, now)
            if kept != existing:
                self._suppressions[key] = kept
                changed += 1
        return changed

    async def unparsed_reports(self, tenant_id: str | None, limit: int) -> list[UnparsedReport]:
        found = [
            UnparsedReport(mailbox=m, uid=uid, summary=summary, seen_ts=ts, tenant_id=tenant)
            for (m, _, uid), (outcome, tenant, summary, ts) in self._mailbox.items()
            if outcome == "unparsed" and (tenant_id is None or tenant == tenant_id)
        ]
        found.sort(key=lambda r: r.seen_ts, reverse=True)
        return found[:limit]

    async def suppressed_among(
        self, tenant_id: str, addresses: Sequence[str], now: float
    ) -> set[str]:
        return self._suppressed_among(tenant_id, addresses, now)

    def _suppressed_among(self, tenant_id: str, addresses: Sequence[str], now: float) -> set[str]:
        return {
            a
            for a in addresses
            if (entry := self._suppressions.get((tenant_id, address_key(a)))) is not None
            and is_active(entry, now)
        }

    async def add_suppressions(self, entries: Sequence[Suppression], now: float) -> int:
        return self._merge_suppressions(entries, now)

    async def remove_suppression(self, tenant_id: str, address: str, now: float) -> bool:
        key = (tenant_id, address_key(address))
        entry = self._suppressions.get(key)
        if entry is None or not is_active(entry, now):
            return False
        del self._suppressions[key]
        return True

    async def list_suppressions(
        self,
        tenant_id: str,
        *,
        now: float,
        reason: SuppressionReason | None = None,
        q: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SuppressionPage:
        keys = sorted(
            key
            for (tenant, key), entry in self._suppressions.items()
            if tenant == tenant_id
            and is_active(entry, now)
            and key > (cursor or "")
            and (reason is None or entry.reason == reason)
            and (not q or q.lower() in key.lower())
        )
        page = [self._suppressions[(tenant_id, key)] for key in keys[:limit]]
        return SuppressionPage(page, keys[limit - 1] if len(keys) > limit else None)

    async def count_suppressions(self, now: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (tenant, _), entry in self._suppressions.items():
            if is_active(entry, now):
                counts[tenant] = counts.get(tenant, 0) + 1
        return counts
