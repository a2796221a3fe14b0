"""Where a store reproduces a domain rule (in SQL, for atomicity and speed), it agrees with
the domain function on random traffic (hypothesis draws it, and shrinks a failure to a
short walk), on every store: the resubmission rule
(lifecycle.resubmission_refusal), the status of a message accepted or sent back to the
queue in a suspended scope (storage_rules.stored_status), and when an account may be deleted
(lifecycle.account_deletion_refusal). The rate-slot grant (policy.grant_slot) has its own
model check in test_queue_policy_store.py."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailproxy.domain.errors import Conflict
from mailproxy.domain.lifecycle import decide
from mailproxy.domain.model import QUEUED_STATUSES, Account, Status, Tenant, earliest_claimable
from mailproxy.domain.outcome import Delivered, Permanent, Temporary, Unknown
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.storage_rules import (
    account_deletion_refusal,
    resubmission_refusal,
    stored_status,
)
from tests.conftest import new_message

NOW = 1_800_000_000.0
OUTCOMES = [
    Delivered(250), Temporary("SMTP 451", 451), Permanent("SMTP 550", 550), Unknown("timeout")
]  # fmt: skip


#: A tenant of its own for each example, so that examples on one store do not meet.
_TENANTS = (f"walk{n}" for n in itertools.count())
_EVENTS = itertools.count()


async def resubmit(store, tenant, rng, now):
    """Submit a random id again (sometimes for later, sometimes in a batch); check the
    store's answer and stored status against the domain."""
    message_id, batch = f"m{rng.randrange(6)}", rng.choice([None, "b1", "b2"])
    deferred = now + 30 if rng.random() < 0.3 else None
    new = new_message(message_id, tenant_id=tenant, now=now, deferred_ts=deferred, batch_code=batch)
    before = await store.get_message(tenant, message_id)
    enqueued = await store.enqueue([new], now)
    refusal = before and resubmission_refusal(before.status, before.possible_duplicate)
    assert [r.reason for r in enqueued.refused] == ([refusal] if refusal else [])
    if refusal:
        assert enqueued.next_due_ts is None
    else:
        suspended = await store.suspended_batches(tenant)
        stored = await store.get_message(tenant, message_id)
        assert stored.status == stored_status(new.status, suspended, batch)
        expected = earliest_claimable([(stored.status, new.due_ts)])
        assert enqueued.next_due_ts == expected


async def attempt(store, tenant, rng, now):
    """Claim what is due and settle it with a random outcome under a random unknown
    policy; a message sent back to the queue gets the status the domain says."""
    for claim in await store.claim_due(now=now, limit=3, owner="w1", lease_s=60):
        if rng.random() < 0.2:
            continue  # left in flight
        transition = decide(
            claim.message, rng.choice(OUTCOMES), now=now, policy=RetryPolicy(),
            unknown_policy=rng.choice(["at_least_once", "at_most_once"]),
            jitter_sample=0.0, event_id=f"e{next(_EVENTS)}", pause=claim.pause,
        )  # fmt: skip
        assert await store.complete(claim.lease, transition, now)
        suspended = await store.suspended_batches(tenant)
        stored = await store.get_message(tenant, claim.message.id)
        assert stored.status == stored_status(transition.status, suspended, stored.batch_code)


async def walk(store, tenant, rng):
    now = NOW
    for _ in range(60):
        now += rng.choice([0.0, 5.0, 40.0, 400.0])
        step = rng.random()
        if step < 0.5:
            await resubmit(store, tenant, rng, now)
        elif step < 0.8:
            await attempt(store, tenant, rng, now)
        elif step < 0.9:
            await store.suspend(tenant, rng.choice([None, "b1"]), now)
        elif "*" in await store.suspended_batches(tenant):
            await store.activate(tenant, None, now)
        else:
            await store.activate(tenant, rng.choice(["b1", "b2"]), now)
    waiting = [
        m for m in (await store.list_messages(tenant, limit=100)).messages
        if m.status in QUEUED_STATUSES or m.status is Status.SUSPENDED
    ]  # fmt: skip
    refusal = account_deletion_refusal("a1", len(waiting), force=False)
    if refusal is None:
        assert await store.delete_account(tenant, "a1")
    else:
        with pytest.raises(Conflict, match=refusal.split(" (")[0]):
            await store.delete_account(tenant, "a1")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rng=st.randoms(use_true_random=False))
async def test_the_store_agrees_with_the_domain_over_random_traffic(store, rng):
    tenant = next(_TENANTS)
    await store.put_tenant(Tenant(id=tenant))
    await store.put_account(
        Account(id="a1", tenant_id=tenant, kind="capture", max_connections=1000)
    )
    try:
        await walk(store, tenant, rng)
    finally:
        await store.delete_tenant(tenant)
