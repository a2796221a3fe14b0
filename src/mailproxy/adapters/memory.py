"""In-memory store: a real adapter of every storage port, for tests and embedding.

Nothing survives the process. It passes the same contract suites as the SQL stores and
takes its policy from the same domain functions (queue order, fairness, slot grants, the
resubmission rule, the suspended-scope status, the account-deletion rule).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Sequence

import msgspec

from mailproxy.adapters.memory_bounces import MemoryBounces
from mailproxy.adapters.memory_records import StoredEvent, home_again
from mailproxy.domain.envelope import with_suppressed
from mailproxy.domain.errors import Conflict
from mailproxy.domain.lifecycle import abandoned_with_account, is_final
from mailproxy.domain.model import (
    QUEUED_STATUSES,
    Claim,
    Enqueued,
    HistoryEntry,
    Lease,
    NewMessage,
    QueuedMessage,
    Rejection,
    Status,
    StoredReport,
    Transition,
    earliest_claimable,
)
from mailproxy.domain.policy import (
    RateWindow,
    SlotGrant,
    fair_order,
    grant_slot,
    held_by_tenant,
    plan_claim,
    queue_order,
    routed_heads,
)
from mailproxy.domain.storage_rules import (
    account_deletion_refusal,
    resubmission_refusal,
    stored_status,
)

replace = msgspec.structs.replace


class MemoryStore(MemoryBounces):
    """Implements every storage port in memory (the records and reads in
    :class:`~mailproxy.adapters.memory_records.MemoryRecords`, bounces and suppression in
    :class:`~mailproxy.adapters.memory_bounces.MemoryBounces`; the queue here)."""

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> Enqueued:
        rejected: list[Rejection] = []
        stored: list[tuple[Status, float]] = []
        for new in messages:
            pk = self._keys.get((new.tenant_id, new.id))
            existing = self._messages.get(pk) if pk is not None else None
            if existing is not None:
                refusal = resubmission_refusal(existing.status, existing.possible_duplicate)
                if refusal:
                    rejected.append(Rejection(new.id, refusal))
                    continue
            if pk is None:
                pk = self._next_pk
                self._next_pk += 1
                self._keys[(new.tenant_id, new.id)] = pk
            self._release_slots(pk)
            fields = msgspec.structs.asdict(new)
            suspended = self._suspended.get(new.tenant_id, ())
            fields["status"] = stored_status(new.status, suspended, new.batch_code)
            message = QueuedMessage(
                pk=pk,
                seq=self._next_seq,
                attempts=0,
                possible_duplicate=False,
                created_ts=now,
                updated_ts=now,
                **fields,
            )
            self._next_seq += 1
            self._messages[pk] = message
            self._history.setdefault(pk, []).append(HistoryEntry("queued", now))
            self._push(message)
            stored.append((message.status, message.due_ts))
        return Enqueued(refused=rejected, next_due_ts=earliest_claimable(stored))

    async def claim_due(
        self, *, now: float, limit: int, owner: str, lease_s: float,
        tenant_limit: int | None = None,
    ) -> list[Claim]:  # fmt: skip
        in_flight: dict[tuple[str, str], int] = {}
        for m in self._messages.values():
            if m.status is Status.SENDING and m.lease_owner == owner:
                key = (m.tenant_id, m.account_id)  # the sending account
                in_flight[key] = in_flight.get(key, 0) + 1
        plan = plan_claim(
            {key: (a.max_connections, a.fallback_accounts) for key, a in self._accounts.items()},
            in_flight, self._pauses, now,
        )  # fmt: skip
        heads = {
            key: self._due_heads(key, now, min(count, limit))
            for key, count in plan.heads_wanted().items()
        }
        token = uuid.uuid4().hex
        claims: list[Claim] = []
        picked = fair_order(
            routed_heads(plan, heads), limit, tenant_limit=tenant_limit,
            held=held_by_tenant(in_flight),
        )  # fmt: skip
        for message in picked:
            lease = Lease(message.pk, owner, token, now + lease_s)
            claimed = replace(
                message,
                status=Status.SENDING,
                lease_owner=owner,
                lease_token=token,
                lease_expires_ts=lease.expires_ts,
                attempt_open=False,
                updated_ts=now,
            )
            self._messages[message.pk] = claimed
            claims.append(
                Claim(claimed, lease, self._pauses.get((message.tenant_id, message.account_id)))
            )
        candidates = [m for queue in heads.values() for m in queue]
        for message in candidates:
            if self._messages[message.pk].status is not Status.SENDING:
                self._push(message)
        return with_suppressed(claims, lambda t, found: self._suppressed_among(t, found, now))

    def _due_heads(self, key: tuple[str, str], now: float, count: int) -> list[QueuedMessage]:
        """Pop the account's first ``count`` due messages in queue order (the caller pushes
        back those it does not claim)."""
        queue = self._queues.get(key, [])
        heads: list[QueuedMessage] = []
        not_due: list[tuple[float, int, int]] = []
        seen: set[int] = set()
        while queue and len(heads) < count:
            entry = heapq.heappop(queue)
            message = self._messages.get(entry[2])
            if message is None or message.status not in QUEUED_STATUSES:
                continue
            if queue_order(message) != entry[:2] or (message.tenant_id, message.account_id) != key:
                continue
            if message.pk in seen:
                continue  # pushed again when its suspension was lifted: one entry is enough
            seen.add(message.pk)
            if message.due_ts > now:
                not_due.append(entry)
                continue
            heads.append(message)
        for entry in not_due:
            heapq.heappush(queue, entry)
        return heads

    async def reserve_slots(
        self, lease: Lease, windows: Sequence[RateWindow], now: float
    ) -> SlotGrant | None:
        if self._leased(lease) is None:
            return None
        held = [ts for slots in self._slots.values() for ts, holder in slots if holder == lease.pk]
        if held and max(held) > now:
            return SlotGrant(max(held), "reserved earlier")
        self._release_slots(lease.pk)  # a slot that has come is checked again
        horizon = now if held else float("inf")
        longest: dict[str, float] = {}
        for window in windows:
            longest[window.key] = max(longest.get(window.key, 0.0), window.window_s)
        for key, span in longest.items():
            self._slots[key] = [
                s for s in self._slots.get(key, []) if s[0] > now - span or s[1] is not None
            ]
        grant = grant_slot(
            {key: sorted(ts for ts, _ in self._slots[key] if ts <= horizon) for key in longest},
            windows,
            now,
        )
        for key in longest:
            self._slots[key].append((grant.at_ts, lease.pk))
        return grant

    def _leased(self, lease: Lease) -> QueuedMessage | None:
        message = self._messages.get(lease.pk)
        if message is None or message.status is not Status.SENDING:
            return None
        if message.lease_token != lease.token:
            return None
        return message

    async def mark_sending(self, lease: Lease, now: float) -> bool:
        message = self._leased(lease)
        if message is None:
            return False
        self._messages[lease.pk] = replace(message, attempt_open=True, updated_ts=now)
        self._history[lease.pk].append(
            HistoryEntry("sending", now, f"attempt {message.attempts + 1}")
        )
        return True

    async def complete(self, lease: Lease, transition: Transition, now: float) -> bool:
        message = self._leased(lease)
        if message is None:
            return False
        self._apply(message, transition, now)
        return True

    def _apply(self, message: QueuedMessage, transition: Transition, now: float) -> None:
        pk = message.pk
        suspensions = self._suspended.get(message.tenant_id, ())
        status = stored_status(transition.status, suspensions, message.batch_code)
        updated = replace(
            home_again(message),
            status=status,
            due_ts=transition.due_ts,
            attempts=transition.attempts,
            possible_duplicate=transition.possible_duplicate,
            error=transition.error,
            smtp_code=transition.smtp_code,
            sent_ts=transition.sent_ts if transition.sent_ts is not None else message.sent_ts,
            error_ts=transition.error_ts if transition.error_ts is not None else message.error_ts,
            lease_owner=None,
            lease_token=None,
            lease_expires_ts=None,
            attempt_open=False,
            updated_ts=now,
            wait_reason=transition.wait_reason,
            wait_detail=transition.wait_detail,
            final_ts=now if is_final(status) else None,
        )
        self._messages[pk] = updated
        if transition.slots == "release":
            self._release_slots(pk)
        elif transition.slots == "consume":
            for key, slots in self._slots.items():
                self._slots[key] = [(max(ts, now), None) if h == pk else (ts, h) for ts, h in slots]
        account_key = (message.tenant_id, message.account_id)
        if transition.pause is not None:
            self._pauses[account_key] = transition.pause
        elif transition.clear_pause:
            self._pauses.pop(account_key, None)
        if transition.history is not None:
            self._history[pk].append(transition.history)
        for event in transition.events:
            seq = self._next_report
            self._next_report += 1
            self._reports.append(
                StoredEvent(seq, message.tenant_id, pk, StoredReport(seq, event), created_ts=now)
            )
        if transition.bounces:
            # Refusals at the SMTP exchange are hard bounces: the soft-bounce rule is unused.
            self._keep_records(pk, message.tenant_id, message.id, transition.bounces, None, now)
        if transition.pec_watch is not None:
            self._watch_pec(pk, transition.pec_watch)
        self._push(updated)

    async def release(self, lease: Lease, now: float) -> bool:
        message = self._leased(lease)
        if message is None or message.attempt_open:
            return False
        self._requeue(message, now)
        return True

    async def recover(
        self, *, owner: str, now: float, lease_s: float, own: bool = True
    ) -> list[Claim]:
        claims: list[Claim] = []
        token = uuid.uuid4().hex
        for message in list(self._messages.values()):
            if message.status is not Status.SENDING:
                continue
            expired = message.lease_expires_ts is not None and message.lease_expires_ts <= now
            if not (expired or (own and message.lease_owner == owner)):
                continue
            if not message.attempt_open:
                self._requeue(message, now)
                continue
            lease = Lease(message.pk, owner, token, now + lease_s)
            taken = replace(
                message, lease_owner=owner, lease_token=token, lease_expires_ts=lease.expires_ts
            )
            self._messages[message.pk] = taken
            claims.append(Claim(taken, lease))
        return claims

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        force: bool = False,
        now: float = 0.0,
        deletion_id: str = "",
    ) -> bool:
        if (tenant_id, account_id) not in self._accounts:
            return False
        waiting = [
            m
            for m in self._messages.values()
            if (m.tenant_id, m.account_id) == (tenant_id, account_id)
            and (m.status in QUEUED_STATUSES or m.status is Status.SUSPENDED)
        ]
        refusal = account_deletion_refusal(account_id, len(waiting), force=force)
        if refusal is not None:
            raise Conflict(refusal)
        for message in waiting:
            self._apply(message, abandoned_with_account(message, now, deletion_id), now)
        del self._accounts[(tenant_id, account_id)]
        self._pauses.pop((tenant_id, account_id), None)
        return True
