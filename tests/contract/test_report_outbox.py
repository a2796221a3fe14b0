"""Contract of the ReportOutbox port, run against every store adapter."""

from __future__ import annotations

import pytest

from mailproxy.domain.model import ReportBacklog
from mailproxy.domain.outcome import Delivered, Unknown
from tests.conftest import NOW_T, new_message, transition_for

pytestmark = pytest.mark.usefixtures("accounts")


async def settle(store, outcome, event_id, tenant_id="t1", count=1):
    claims = await store.claim_due(now=NOW_T, limit=count, owner="w", lease_s=60)
    for n, c in enumerate(claims):
        t = transition_for(c, outcome, now=NOW_T, event_id=f"{event_id}-{n}")
        assert await store.complete(c.lease, t, NOW_T)


async def test_events_are_pending_oldest_first_until_acknowledged(store):
    await store.enqueue([new_message(f"m{i}") for i in range(3)], NOW_T)
    await settle(store, Delivered(250), "ev", count=3)
    pending = await store.pending_reports("t1", 10)
    assert [r.event.event_id for r in pending] == ["ev-0", "ev-1", "ev-2"]
    assert [r.seq for r in pending] == sorted(r.seq for r in pending)
    assert [r.event.event_id for r in await store.pending_reports("t1", 2)] == ["ev-0", "ev-1"]
    assert await store.acknowledge_reports("t1", ["ev-0", "ev-2", "missing"], NOW_T) == 2
    assert [r.event.event_id for r in await store.pending_reports("t1", 10)] == ["ev-1"]
    assert await store.acknowledge_reports("t1", ["ev-0"], NOW_T) == 0


async def test_many_events_acknowledged_at_once_count_each_changed_event_once(store):
    await store.enqueue([new_message(f"m{i}") for i in range(40)], NOW_T)
    await store.enqueue([new_message("m0", tenant_id="t2")], NOW_T)
    for c in await store.claim_due(now=NOW_T, limit=100, owner="w", lease_s=60):
        event_id = f"{c.message.tenant_id}-{c.message.id}"
        assert await store.complete(
            c.lease, transition_for(c, Delivered(250), now=NOW_T, event_id=event_id), NOW_T
        )
    assert await store.acknowledge_reports("t1", ["t1-m0", "t1-m1"], NOW_T) == 2
    # Already acknowledged, repeated, another tenant's, unknown (a NUL names no event, not
    # the id before it): none counts.
    asked = [f"t1-m{i}" for i in reversed(range(30))] + ["t1-m5", "t2-m0", "t1-m30\x00", ""]
    assert await store.acknowledge_reports("t1", asked, NOW_T) == 28
    pending = await store.pending_reports("t1", 100)
    assert {r.event.event_id for r in pending} == {f"t1-m{i}" for i in range(30, 40)}
    assert len(await store.pending_reports("t2", 10)) == 1
    assert await store.acknowledge_reports("t1", [], NOW_T) == 0


async def test_an_unknown_attempt_writes_unknown_and_is_flagged(store):
    await store.enqueue([new_message("m1")], NOW_T)
    await settle(store, Unknown("timeout after the final dot"), "u")
    (report,) = await store.pending_reports("t1", 10)
    assert report.event.event == "unknown"
    assert report.event.metadata == {"n": "m1"}
    assert (await store.get_message("t1", "m1")).possible_duplicate


async def test_tenants_see_and_acknowledge_only_their_events(store):
    await store.enqueue(
        [new_message("m1", tenant_id="t1"), new_message("m1", tenant_id="t2")], NOW_T
    )
    await settle(store, Delivered(250), "ev", count=2)
    t1 = await store.pending_reports("t1", 10)
    t2 = await store.pending_reports("t2", 10)
    assert len(t1) == len(t2) == 1
    assert await store.acknowledge_reports("t1", [t2[0].event.event_id], NOW_T) == 0
    assert len(await store.pending_reports("t2", 10)) == 1


async def test_the_backlog_counts_unacknowledged_events_and_dates_the_oldest(store):
    assert await store.report_backlog("t1") == ReportBacklog(0, None)
    await store.enqueue([new_message("m1"), new_message("m2")], NOW_T)
    for offset, claim in enumerate(
        await store.claim_due(now=NOW_T, limit=10, owner="w", lease_s=60)
    ):
        transition = transition_for(
            claim, Delivered(250), now=NOW_T + offset, event_id=f"e{offset}"
        )
        await store.complete(claim.lease, transition, NOW_T + offset)
    assert await store.report_backlog("t1") == ReportBacklog(2, NOW_T)
    await store.acknowledge_reports("t1", ["e0"], NOW_T + 5)
    assert await store.report_backlog("t1") == ReportBacklog(1, NOW_T + 1)
    assert await store.report_backlog("t2") == ReportBacklog(0, None)


async def test_the_tenants_with_pending_events_are_found_in_one_read(store):
    assert await store.tenants_with_pending_reports() == set()
    await store.enqueue([new_message("m1"), new_message("m2", tenant_id="t2")], NOW_T)
    claims = await store.claim_due(now=NOW_T, limit=10, owner="w", lease_s=60)
    for c in claims:
        t = transition_for(c, Delivered(250), now=NOW_T, event_id=f"ev-{c.message.tenant_id}")
        assert await store.complete(c.lease, t, NOW_T)
    assert await store.tenants_with_pending_reports() == {"t1", "t2"}
    await store.acknowledge_reports("t1", ["ev-t1"], NOW_T)
    assert await store.tenants_with_pending_reports() == {"t2"}


async def test_every_tenants_backlog_is_read_at_once_and_agrees_with_each_one(store):
    assert await store.report_backlogs() == {}
    await store.enqueue(
        [new_message("m1"), new_message("m2"), new_message("m3", tenant_id="t2")], NOW_T
    )
    claims = await store.claim_due(now=NOW_T, limit=10, owner="w", lease_s=60)
    for offset, claim in enumerate(claims):
        event_id = f"ev-{claim.message.tenant_id}-{claim.message.id}"
        transition = transition_for(claim, Delivered(250), now=NOW_T + offset, event_id=event_id)
        assert await store.complete(claim.lease, transition, NOW_T + offset)
    backlogs = await store.report_backlogs()
    assert set(backlogs) == {"t1", "t2"}
    for tenant_id, backlog in backlogs.items():
        assert backlog == await store.report_backlog(tenant_id)
    assert backlogs["t1"].count == 2
    await store.acknowledge_reports("t2", ["ev-t2-m3"], NOW_T + 5)
    assert set(await store.report_backlogs()) == {"t1"}
