"""Contract of a store that several processes share, on every store that can be shared
(a SQLite file, PostgreSQL; the memory store cannot): claims, lease recovery, rate-limit
reservations and the report lease hold across store instances working at the same time."""

from __future__ import annotations

import asyncio

import pytest

from mailproxy.domain.model import Account, Status
from mailproxy.domain.outcome import Delivered
from mailproxy.domain.policy import RateWindow
from tests.conftest import SHARED_KINDS, make_store, new_message, opened, transition_for

pytestmark = pytest.mark.usefixtures("accounts")

NOW = 1_800_000_000.0


@pytest.fixture(params=SHARED_KINDS)
async def store(request, tmp_path):
    """An open store of each kind that several processes can share."""
    async with opened(make_store(request.param, tmp_path)) as store:
        yield store


async def test_concurrent_claims_from_two_processes_never_take_a_message_twice(store, twin):
    await store.enqueue([new_message(f"m{n}") for n in range(60)], NOW)
    claims = await asyncio.gather(
        *(
            side.claim_due(now=NOW, limit=7, owner=f"w{n}", lease_s=60)
            for n, side in enumerate([store, twin] * 6)
        )
    )
    taken = [c.message.id for batch in claims for c in batch]
    assert len(taken) == len(set(taken))
    rest = await twin.claim_due(now=NOW, limit=100, owner="late", lease_s=60)
    assert sorted(taken + [c.message.id for c in rest]) == sorted(f"m{n}" for n in range(60))


async def test_overlapping_deletes_in_opposite_orders_from_two_processes_all_finish(store, twin):
    ids = [f"m{n:03d}" for n in range(200)]
    await store.enqueue([new_message(i) for i in ids], NOW)
    results = await asyncio.gather(
        *(
            side.delete_messages("t1", asked)
            for side, asked in [(store, ids), (twin, ids[::-1])] * 3
        )
    )
    assert sum(r.removed for r in results) == len(ids)
    assert all(r.removed + len(r.not_found) == len(ids) for r in results)
    assert (await twin.list_messages("t1")).messages == []


async def test_a_live_sweep_takes_only_expired_leases(store, twin):
    await store.enqueue([new_message("mine"), new_message("gone")], NOW)
    (mine,) = await store.claim_due(now=NOW, limit=1, owner="alive", lease_s=60)
    (gone,) = await twin.claim_due(now=NOW, limit=1, owner="killed", lease_s=10)
    assert await twin.mark_sending(gone.lease, NOW)
    assert await store.recover(owner="alive", now=NOW + 5, lease_s=60, own=False) == []
    (taken,) = await store.recover(owner="alive", now=NOW + 11, lease_s=60, own=False)
    assert taken.message.id == "gone"
    assert taken.lease.owner == "alive"
    # The killed process's late write is fenced off; the sweeper settles the message.
    outcome = transition_for(gone, Delivered(250), now=NOW + 12, event_id="late")
    assert not await twin.complete(gone.lease, outcome, NOW + 12)
    assert await store.complete(taken.lease, outcome, NOW + 12)
    assert (await store.get_message("t1", "mine")).status is Status.SENDING
    assert mine.lease.owner == "alive"


async def test_concurrent_reservations_hold_the_limit_across_processes(store, twin):
    await store.put_account(Account(id="a1", tenant_id="t1", kind="capture", max_connections=50))
    await store.enqueue([new_message(f"m{n}") for n in range(20)], NOW)
    claims = await store.claim_due(now=NOW, limit=20, owner="w", lease_s=60)
    window = RateWindow("account\x1ft1\x1fa1", 3, 60.0, "account a1: 3/minute")
    grants = await asyncio.gather(
        *(
            side.reserve_slots(c.lease, [window], NOW)
            for c, side in zip(claims, [store, twin] * 10, strict=True)
        )
    )
    assert sum(g.at_ts == NOW for g in grants) == 3
    # Every later grant is a distinct future slot: no window ever holds more than 3.
    instants = sorted(g.at_ts for g in grants)
    for n, start in enumerate(instants):
        assert sum(start <= ts < start + 60 for ts in instants[n:]) <= 3


async def test_one_process_at_a_time_delivers_a_tenants_reports(store, twin):
    assert await store.lease_reports("t1", "p1", NOW, 30)
    assert not await twin.lease_reports("t1", "p2", NOW + 1, 30)
    assert await twin.lease_reports("t2", "p2", NOW + 1, 30)  # other tenants are free
    assert await store.lease_reports("t1", "p1", NOW + 20, 30)  # renewed to NOW + 50
    assert not await twin.lease_reports("t1", "p2", NOW + 40, 30)
    assert await twin.lease_reports("t1", "p2", NOW + 50, 30)  # expired: taken over
    await store.release_reports("t1", "p1")  # not the holder any more: nothing
    assert not await store.lease_reports("t1", "p1", NOW + 51, 30)
    await twin.release_reports("t1", "p2")
    assert await store.lease_reports("t1", "p1", NOW + 52, 30)
