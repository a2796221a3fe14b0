"""Queue operations: accept, claim, reserve rate slots, settle, give back, recover."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from mailproxy.adapters.sql.bounces import keep_records, suppressed_among
from mailproxy.adapters.sql.rows import (
    account_limits,
    claims_of,
    encode,
    event_values,
    message_from_row,
    transition_values,
)
from mailproxy.adapters.sql.tx import Tx
from mailproxy.domain.envelope import with_suppressed
from mailproxy.domain.model import (
    QUEUED_STATUSES,
    AccountPause,
    Claim,
    Enqueued,
    Lease,
    NewMessage,
    QueuedMessage,
    Rejection,
    Status,
    Transition,
    earliest_claimable,
)
from mailproxy.domain.policy import (
    RateWindow,
    SlotGrant,
    fair_order,
    held_by_tenant,
    plan_claim,
    queue_order,
    routed_heads,
)
from mailproxy.domain.storage_rules import requeue_status, resubmission_refusal, stored_status

_PAUSE_FIELDS = ("tenant_id", "account_id", "failures", "until_ts", "reason")


def suspensions(tx: Tx, tenant_id: str) -> frozenset[str]:
    return frozenset(row[0] for row in tx.all(tx.q.suspensions, (tenant_id,)))


def pauses(tx: Tx) -> dict[tuple[str, str], AccountPause]:
    return {(row[0], row[1]): pause_of(row) for row in tx.all(tx.q.pauses)}


def pause_of(row: Sequence[Any]) -> AccountPause:
    return AccountPause(**dict(zip(_PAUSE_FIELDS, row, strict=True)))


def enqueue(tx: Tx, messages: Sequence[NewMessage], now: float) -> Enqueued:
    suspended = {t: suspensions(tx, t) for t in dict.fromkeys(m.tenant_id for m in messages)}
    given: dict[tuple[str, str], int] = {}  # the sequence number each id was given
    kept: dict[tuple[str, str], tuple[Status, float]] = {}  # status and due time, if stored
    rows = []
    for new, seq in zip(messages, tx.sequence_numbers(len(messages)), strict=True):
        status = stored_status(new.status, suspended[new.tenant_id], new.batch_code)
        given[(new.tenant_id, new.id)] = seq
        kept[(new.tenant_id, new.id)] = (status, new.due_ts)
        rows.append(
            (
                new.tenant_id, new.id, new.account_id, new.priority, new.rank, seq,
                status.value, new.due_ts, new.batch_code, new.message_id, new.date_ts,
                encode(new.spec), now, now, new.wait_reason,
            )
        )  # fmt: skip
    tx.many(tx.q.upsert_message, rows)
    # Which rows were stored: those that now carry the sequence number given here; the
    # others were refused by the upsert's condition (resubmission_refusal says why).
    stored: list[int] = []
    refused: dict[tuple[str, str], str] = {}
    lists = (tx.listed(suspended), tx.listed(dict.fromkeys(i for _, i in given)))
    for pk, tenant_id, message_id, seq, status, duplicate in tx.all(tx.q.stored_versions, lists):
        key = (tenant_id, message_id)
        if key not in given:  # the id of one of the batch's tenants, in another
            continue
        if seq == given[key]:
            stored.append(pk)
        else:
            refused[key] = resubmission_refusal(Status(status), bool(duplicate)) or ""
    if stored:
        # A replaced message gives back any rate slot its previous version held.
        tx.run(tx.q.release_listed_slots, (tx.listed(stored),))
        tx.run(tx.q.history_queued, (now, tx.listed(stored)))
        tx.wake_queue()
    return Enqueued(
        refused=[
            Rejection(new.id, refused[(new.tenant_id, new.id)])
            for new in messages
            if (new.tenant_id, new.id) in refused
        ],
        next_due_ts=earliest_claimable(kept[k] for k in kept if k not in refused),
    )


def claim_due(
    tx: Tx,
    *,
    now: float,
    limit: int,
    owner: str,
    lease_s: float,
    tenant_limit: int | None = None,
) -> list[Claim]:
    token, expires = uuid.uuid4().hex, now + lease_s
    in_flight = {(t, a): n for t, a, n in tx.all(tx.q.held_by_owner, (owner,))}
    paused = pauses(tx)
    plan = plan_claim(
        {(t, a): account_limits(data) for t, a, data in tx.all(tx.q.account_configs)},
        in_flight, paused, now,
    )  # fmt: skip
    wanted = plan.heads_wanted()
    if not wanted:
        return []
    rooms = [(t, a, min(n, limit)) for (t, a), n in wanted.items()]
    heads: dict[tuple[str, str], list[QueuedMessage]] = {}
    for message in map(message_from_row, tx.queue_heads(rooms, now)):
        heads.setdefault((message.tenant_id, message.account_id), []).append(message)
    for queue in heads.values():
        queue.sort(key=queue_order)
    picked = fair_order(
        routed_heads(plan, heads), limit, tenant_limit=tenant_limit,
        held=held_by_tenant(in_flight),
    )  # fmt: skip
    by_via: dict[str | None, list[int]] = {}
    for message in picked:
        via = message.account_id if message.failover_from else None
        by_via.setdefault(via, []).append(message.pk)
    for via, pks in by_via.items():
        tx.run(tx.q.claim, (owner, token, expires, now, via, tx.listed(pks)))
    claims = claims_of(picked, owner=owner, token=token, expires=expires, now=now, pauses=paused)
    # The suppression list read in the claim's transaction (one read a tenant), so that
    # the attempt needs no read of its own.
    return with_suppressed(claims, lambda tenant, found: suppressed_among(tx, tenant, found, now))


def _held(tx: Tx, lease: Lease) -> tuple[str, str, str | None, int, float, bool, str] | None:
    """(tenant, account, batch, attempts, due_ts, attempt open, client id) of the leased
    message, locked; None when the lease is lost."""
    row = tx.one(tx.q.holds_lease + tx.FOR_UPDATE, (lease.pk, lease.token))
    return None if row is None else (*row[:5], bool(row[5]), row[6])


def reserve_slots(
    tx: Tx, lease: Lease, windows: Sequence[RateWindow], now: float
) -> SlotGrant | None:
    """:func:`mailproxy.domain.policy.grant_slot` over the stored reservations (see the
    port's contract for the re-check of a slot that has come)."""
    if _held(tx, lease) is None:
        return None
    (held,) = tx.one(tx.q.held_slot, (lease.pk,))
    if held is not None:
        if held > now:
            return SlotGrant(held, "reserved earlier")
        tx.run(tx.q.release_slots, (lease.pk,))
    horizon = now if held is not None else float("inf")
    longest: dict[str, float] = {}
    for window in windows:
        longest[window.key] = max(longest.get(window.key, 0.0), window.window_s)
    tx.lock_keys(sorted(longest))
    grant = SlotGrant(now)
    for window in windows:
        if tx.rate_total(window.key) < window.limit:
            continue  # fewer reservations on the key than the limit: room
        row = tx.one(
            tx.q.nth_newest_slot, (window.key, now - window.window_s, horizon, window.limit - 1)
        )
        if row is not None and max(now, row[0] + window.window_s) > grant.at_ts:
            grant = SlotGrant(max(now, row[0] + window.window_s), window.label, window.key)
    for key, span in longest.items():
        tx.run(tx.q.forget_old_sends, (key, now - span))
        tx.run(tx.q.reserve_slot, (key, grant.at_ts, lease.pk))
    return grant


def mark_sending(tx: Tx, lease: Lease, now: float) -> bool:
    row = tx.one(tx.q.open_attempt, (now, lease.pk, lease.token))
    if row is None:
        return False
    tx.run(tx.q.history_entry, (lease.pk, "sending", now, f"attempt {row[0] + 1}"))
    return True


def complete(tx: Tx, lease: Lease, transition: Transition, now: float) -> bool:
    held = _held(tx, lease)
    if held is None:
        return False
    apply_transition(tx, lease.pk, held[0], held[1], held[2], transition, now, held[6])
    return True


def apply_transition(
    tx: Tx,
    pk: int,
    tenant_id: str,
    account_id: str,
    batch_code: str | None,
    t: Transition,
    now: float,
    message_id: str | None = None,
) -> None:
    """Store ``t`` with its history, report events, rate slots, pause and bounce records
    (client id ``message_id``). A message going back to the queue in a suspended scope is
    stored ``suspended``."""
    # Only a message going back to the queue can be held by a suspension: a final one
    # (most completions) needs no read of them.
    held = suspensions(tx, tenant_id) if t.status in QUEUED_STATUSES else frozenset()
    status = stored_status(t.status, held, batch_code)
    tx.run(tx.q.apply_transition, transition_values(t, status, now, pk))
    if t.history is not None:
        tx.run(tx.q.history_entry, (pk, t.history.event, t.history.ts, t.history.detail))
    if t.events:
        tx.many(tx.q.add_report, event_values(t.events, tenant_id, pk, now))
        tx.wake_reports(tenant_id)
    if t.bounces:
        # Refusals at the SMTP exchange are hard bounces: the soft-bounce rule is not used.
        keep_records(tx, pk, tenant_id, message_id, t.bounces, None, now)
    if t.pec_watch is not None:
        w = t.pec_watch
        tx.run(
            tx.q.watch_pec, (pk, tenant_id, w.acceptance_due_ts, w.delivery_due_ts, w.recipients)
        )
    if t.slots == "consume":
        tx.run(tx.q.consume_slots, (now, now, pk))
    elif t.slots == "release":
        tx.run(tx.q.release_slots, (pk,))
    if t.pause is not None:
        p = t.pause
        tx.run(tx.q.put_pause, (p.tenant_id, p.account_id, p.failures, p.until_ts, p.reason))
    elif t.clear_pause:
        tx.run(tx.q.clear_pause, (tenant_id, account_id))


def _requeue(tx: Tx, pks_by_status: dict[Status, list[int]], now: float) -> None:
    for status, pks in pks_by_status.items():
        tx.run(tx.q.requeue, (status.value, now, tx.listed(pks)))


def release(tx: Tx, lease: Lease, now: float) -> bool:
    held = _held(tx, lease)
    if held is None or held[5]:
        return False
    _requeue(tx, {requeue_status(held[3], held[4], now): [lease.pk]}, now)
    tx.wake_queue()
    return True


def recover(tx: Tx, *, owner: str, now: float, lease_s: float, own: bool = True) -> list[Claim]:
    token, expires = uuid.uuid4().hex, now + lease_s
    rows = tx.all(tx.q.expired_leases + tx.SKIP_LOCKED, (own, owner, now))
    back: dict[Status, list[int]] = {}
    for pk, attempts, due_ts, attempt_open in rows:
        if not attempt_open:
            back.setdefault(requeue_status(attempts, due_ts, now), []).append(pk)
    _requeue(tx, back, now)
    if back:
        tx.wake_queue()
    opened = [row[0] for row in rows if row[3]]
    if not opened:
        return []
    values = (owner, token, expires, tx.listed(opened))
    leased = {m.pk: m for m in map(message_from_row, tx.all(tx.q.re_lease, values))}
    return [Claim(leased[pk], Lease(pk, owner, token, expires)) for pk in opened]
