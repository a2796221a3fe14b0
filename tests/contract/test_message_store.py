"""Contract of the MessageStore port, run against every store adapter."""

from __future__ import annotations

import random

import pytest

from mailproxy.domain.lifecycle import decide
from mailproxy.domain.model import Lease, MinuteCount, Status, minute_start
from mailproxy.domain.outcome import Delivered, Permanent, Temporary, Unknown
from mailproxy.domain.policy import queue_order
from mailproxy.domain.retry import RetryPolicy
from tests.conftest import new_message, transition_for

NOW = 1_800_000_000.0

pytestmark = pytest.mark.usefixtures("accounts")


def sent(message, event_id="e1"):
    return decide(
        message,
        Delivered(250),
        now=NOW,
        policy=RetryPolicy(),
        unknown_policy="at_least_once",
        jitter_sample=0.0,
        event_id=event_id,
    )


async def claim(store, limit=10, now=NOW, owner="w1"):
    return await store.claim_due(now=now, limit=limit, owner=owner, lease_s=60)


async def test_enqueued_message_reads_back_with_its_fields(store):
    assert (await store.enqueue([new_message("m1", batch_code="b")], NOW)).refused == []
    message = await store.get_message("t1", "m1")
    assert message.status is Status.PENDING
    assert message.message_id == "m1@example.com"
    assert message.batch_code == "b"
    assert message.spec.metadata == {"n": "m1"}
    assert message.created_ts == NOW
    assert [h.event for h in await store.history("t1", "m1")] == ["queued"]


async def test_claim_follows_priority_then_acceptance_order(store):
    rng = random.Random(7)
    batch = [new_message(f"m{i}", priority=rng.randrange(4)) for i in range(40)]
    await store.enqueue(batch[:20], NOW)
    await store.enqueue(batch[20:], NOW)
    claimed = []
    while claims := await claim(store, limit=7):
        claimed.extend(c.message for c in claims)
    assert len(claimed) == 40
    assert claimed == sorted(claimed, key=queue_order)
    expected = sorted(batch, key=lambda m: (m.priority, int(m.id[1:])))
    assert [m.id for m in claimed] == [m.id for m in expected]


async def test_a_claimed_message_is_not_claimed_again(store):
    await store.enqueue([new_message("m1"), new_message("m2")], NOW)
    first = await claim(store, limit=1)
    second = await claim(store, limit=5, owner="w2")
    assert [c.message.id for c in first] == ["m1"]
    assert [c.message.id for c in second] == ["m2"]
    assert await claim(store) == []
    assert first[0].message.status is Status.SENDING


async def test_scheduled_message_is_claimed_only_when_due(store):
    await store.enqueue([new_message("later", deferred_ts=NOW + 100)], NOW)
    assert (await store.get_message("t1", "later")).status is Status.SCHEDULED
    assert await store.next_due_ts(NOW) == NOW + 100
    assert await claim(store, now=NOW + 99) == []
    assert [c.message.id for c in await claim(store, now=NOW + 100)] == ["later"]


async def test_writes_with_a_lost_lease_change_nothing(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    stale = Lease(c.lease.pk, c.lease.owner, "not-the-token", c.lease.expires_ts)
    assert await store.mark_sending(stale, NOW) is False
    assert await store.complete(stale, sent(c.message), NOW) is False
    assert await store.release(stale, NOW) is False
    assert (await store.get_message("t1", "m1")).status is Status.SENDING
    assert await store.pending_reports("t1", 10) == []


async def test_complete_applies_the_transition_with_its_report_and_history(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    assert await store.mark_sending(c.lease, NOW)
    assert await store.complete(c.lease, sent(c.message, "ev-1"), NOW + 1)
    message = await store.get_message("t1", "m1")
    assert message.status is Status.SENT
    assert message.attempts == 1
    assert message.sent_ts == NOW
    assert message.lease_token is None
    reports = await store.pending_reports("t1", 10)
    assert [(r.event.event, r.event.event_id, r.event.id) for r in reports] == [
        ("sent", "ev-1", "m1")
    ]
    assert [h.event for h in await store.history("t1", "m1")] == ["queued", "sending", "sent"]
    assert await store.complete(c.lease, sent(c.message, "ev-2"), NOW + 2) is False


async def test_deferred_message_comes_back_when_due(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    transition = decide(
        c.message,
        Temporary("SMTP 451", 451),
        now=NOW,
        policy=RetryPolicy(),
        unknown_policy="at_least_once",
        jitter_sample=0.0,
        event_id="e",
    )
    await store.complete(c.lease, transition, NOW)
    message = await store.get_message("t1", "m1")
    assert message.status is Status.DEFERRED
    assert message.due_ts == NOW + 60
    assert await claim(store, now=NOW + 59) == []
    (again,) = await claim(store, now=NOW + 60)
    assert again.message.attempts == 1


async def test_release_puts_an_unstarted_claim_back(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    assert await store.release(c.lease, NOW)
    assert (await store.get_message("t1", "m1")).status is Status.PENDING
    (again,) = await claim(store)
    assert await store.mark_sending(again.lease, NOW)
    assert await store.release(again.lease, NOW) is False


async def test_recover_requeues_unstarted_and_returns_started_attempts(store):
    await store.enqueue([new_message(f"m{i}") for i in range(4)], NOW)
    mine = await claim(store, limit=2, owner="me")
    others = await claim(store, limit=2, owner="other")
    await store.mark_sending(mine[1].lease, NOW)
    await store.mark_sending(others[1].lease, NOW)
    recovered = await store.recover(owner="me", now=NOW + 1, lease_s=60)
    assert [c.message.id for c in recovered] == ["m1"]
    assert recovered[0].lease.owner == "me"
    assert (await store.get_message("t1", "m0")).status is Status.PENDING
    assert (await store.get_message("t1", "m2")).status is Status.SENDING  # live, not mine
    # After the other worker's lease expires, its leases are recovered too.
    expired = await store.recover(owner="me", now=NOW + 61, lease_s=60)
    assert {c.message.id for c in expired} >= {"m3"}
    assert (await store.get_message("t1", "m2")).status is Status.PENDING
    # The old lease is fenced out.
    assert await store.complete(others[1].lease, sent(others[1].message), NOW) is False


async def test_resubmission_replaces_unsent_and_refuses_sent_or_in_flight(store):
    await store.enqueue([new_message(m) for m in ("pending", "sent", "sending")], NOW)
    claims = {c.message.id: c for c in await claim(store)}
    await store.complete(claims["sent"].lease, sent(claims["sent"].message), NOW)
    await store.release(claims["pending"].lease, NOW)
    await store.mark_sending(claims["sending"].lease, NOW)
    replacement = new_message("pending", priority=0)
    enqueued = await store.enqueue(
        [replacement, new_message("sent"), new_message("sending"), new_message("fresh")], NOW + 5
    )
    assert {(r.id, r.reason) for r in enqueued.refused} == {
        ("sent", "already sent"),
        ("sending", "in flight"),
    }
    replaced = await store.get_message("t1", "pending")
    assert replaced.priority == 0
    assert replaced.created_ts == NOW + 5
    assert (await store.get_message("t1", "sent")).status is Status.SENT
    assert await store.get_message("t1", "fresh") is not None


async def test_enqueue_tells_when_a_claim_may_first_take_what_it_stored(store):
    later = new_message("later", deferred_ts=NOW + 30)
    assert (await store.enqueue([later], NOW)).next_due_ts == NOW + 30
    both = await store.enqueue(
        [new_message("now"), new_message("later2", deferred_ts=NOW + 9)], NOW
    )
    assert both.next_due_ts == NOW
    await store.suspend("t1", None, NOW)
    # Suspended: no claim takes it until the tenant is activated, whenever it is due.
    assert (await store.enqueue([new_message("held")], NOW)).next_due_ts is None
    await store.suspend("t2", "b1", NOW)
    mixed = [new_message("x", tenant_id="t2", batch_code="b1"), new_message("y", tenant_id="t2")]
    assert (await store.enqueue(mixed, NOW + 1)).next_due_ts == NOW  # y, due since NOW


async def test_resubmission_never_replaces_a_message_the_server_may_already_have(store):
    # An attempt that ended unknown leaves the message deferred under at-least-once; a
    # replacement would go out under another Message-ID without possible_duplicate.
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    await store.mark_sending(c.lease, NOW)
    unknown = transition_for(
        c, Unknown("connection lost after the final dot"), now=NOW, event_id="u1"
    )
    assert await store.complete(c.lease, unknown, NOW)
    before = await store.get_message("t1", "m1")
    assert (before.status, before.possible_duplicate) == (Status.DEFERRED, True)
    enqueued = await store.enqueue([new_message("m1", priority=0)], NOW + 5)
    assert [(r.id, r.reason) for r in enqueued.refused] == [("m1", "in flight")]
    assert enqueued.next_due_ts is None  # nothing stored
    after = await store.get_message("t1", "m1")
    assert (after.message_id, after.possible_duplicate, after.priority) == (
        before.message_id,
        True,
        before.priority,
    )


async def test_same_id_in_two_tenants_are_two_messages(store):
    await store.enqueue([new_message("m1", tenant_id="t1"), new_message("m1", tenant_id="t2")], NOW)
    assert (await store.get_message("t1", "m1")).tenant_id == "t1"
    assert (await store.get_message("t2", "m1")).tenant_id == "t2"
    result = await store.delete_messages("t2", ["m1"])
    assert result.removed == 1
    assert await store.get_message("t1", "m1") is not None
    assert (await store.delete_messages("t2", ["m1"])).not_found == ["m1"]


async def test_list_filters_and_pages_with_a_cursor(store):
    await store.enqueue(
        [new_message(f"m{i:02d}", batch_code="odd" if i % 2 else "even") for i in range(25)], NOW
    )
    (c,) = await claim(store, limit=1)
    await store.complete(c.lease, sent(c.message), NOW)
    seen, cursor = [], None
    while True:
        page = await store.list_messages("t1", limit=10, cursor=cursor)
        seen.extend(m.id for m in page.messages)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"m{i:02d}" for i in range(25)]
    odd = await store.list_messages("t1", batch_code="odd", limit=100)
    assert len(odd.messages) == 12
    done = await store.list_messages("t1", statuses=[Status.SENT])
    assert [m.id for m in done.messages] == ["m00"]
    active = await store.list_messages("t1", active_only=True, limit=100)
    assert len(active.messages) == 24
    assert (await store.list_messages("t2")).messages == []


async def test_delete_keeps_messages_being_sent(store):
    await store.enqueue([new_message("a"), new_message("b")], NOW)
    await claim(store, limit=1)
    result = await store.delete_messages("t1", ["a", "b", "nope"])
    assert (result.removed, result.not_found, result.in_flight) == (1, ["nope"], ["a"])
    assert await store.history("t1", "b") == []


async def test_many_messages_deleted_at_once_are_reported_in_the_order_asked(store):
    await store.enqueue([new_message(f"m{i:02d}") for i in range(40)], NOW)
    in_flight = {c.message.id for c in await claim(store, limit=3)}
    await store.enqueue([new_message("m10", tenant_id="t2")], NOW)
    # Repeated ids count once; an id with a NUL names no message (not the id before it).
    asked = [f"m{i:02d}" for i in reversed(range(39))] + ["m05", "nope", "m39\x00", "gone"]
    result = await store.delete_messages("t1", asked)
    assert result.removed == 36
    assert result.not_found == ["nope", "m39\x00", "gone"]
    assert result.in_flight == [i for i in dict.fromkeys(asked) if i in in_flight]
    remaining = (await store.list_messages("t1", limit=100)).messages
    assert {m.id for m in remaining} == in_flight | {"m39"}
    assert await store.history("t1", "m10") == []
    assert (await store.get_message("t2", "m10")).status is Status.PENDING


async def test_a_batch_over_two_tenants_reads_back_each_tenants_own_message(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    await store.complete(c.lease, sent(c.message), NOW)
    batch = [new_message("m1", tenant_id="t2"), new_message("m1"), new_message("m2")]
    enqueued = await store.enqueue(batch, NOW + 5)
    assert [(r.id, r.reason) for r in enqueued.refused] == [("m1", "already sent")]
    assert (await store.get_message("t1", "m1")).status is Status.SENT
    assert (await store.get_message("t2", "m1")).status is Status.PENDING
    assert [h.event for h in await store.history("t2", "m1")] == ["queued"]
    assert [h.event for h in await store.history("t1", "m2")] == ["queued"]


async def test_counts_by_status(store):
    await store.enqueue([new_message("a"), new_message("b"), new_message("c", tenant_id="t2")], NOW)
    await claim(store, limit=1)
    assert await store.count_by_status("t1") == {Status.SENDING: 1, Status.PENDING: 1}
    assert sum((await store.count_by_status()).values()) == 3


async def test_the_oldest_message_not_yet_final_is_dated_per_tenant_in_one_read(store):
    assert await store.oldest_not_final() == {}
    await store.enqueue([new_message("a"), new_message("c", tenant_id="t2")], NOW)
    await store.enqueue([new_message("b")], NOW + 10)
    assert await store.oldest_not_final() == {"t1": NOW, "t2": NOW}
    claims = {c.message.id: c for c in await claim(store)}
    assert await store.complete(claims["a"].lease, sent(claims["a"].message), NOW)
    assert await store.oldest_not_final() == {"t1": NOW + 10, "t2": NOW}  # sending is not final


async def test_next_due_is_none_for_an_empty_queue(store):
    assert await store.next_due_ts(NOW) is None


async def test_finished_messages_are_counted_per_minute_tenant_and_status(store):
    await store.enqueue(
        [new_message(f"m{n}") for n in range(4)] + [new_message("x", tenant_id="t2")], NOW
    )
    claims = {c.message.id: c for c in await claim(store)}
    failed = transition_for(claims["m1"], Permanent("no such user", 550), now=NOW, event_id="f")
    assert await store.complete(claims["m1"].lease, failed, NOW)
    for message_id, at in (("m0", NOW), ("m2", NOW + 61), ("m3", NOW + 65), ("x", NOW + 70)):
        done = sent(claims[message_id].message, event_id=f"e-{message_id}")
        assert await store.complete(claims[message_id].lease, done, at)
    minute = minute_start(NOW)
    assert await store.finished_per_minute(NOW - 300) == [
        MinuteCount(minute, "t1", Status.ERROR, 1),
        MinuteCount(minute, "t1", Status.SENT, 1),
        MinuteCount(minute + 60, "t1", Status.SENT, 2),
        MinuteCount(minute + 60, "t2", Status.SENT, 1),
    ]
    assert await store.finished_per_minute(NOW + 62) == [
        MinuteCount(minute + 60, "t1", Status.SENT, 1),
        MinuteCount(minute + 60, "t2", Status.SENT, 1),
    ]


async def test_a_nul_in_a_lookup_or_a_servers_reply_fails_nothing(store):
    assert await store.get_message("t1", "m\x00") is None
    assert await store.history("t1", "m\x00") == []
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    failed = transition_for(c, Permanent("550 no\x00such user", 550), now=NOW, event_id="n")
    assert await store.complete(c.lease, failed, NOW)
    stored = await store.get_message("t1", "m1")
    assert (stored.status, stored.error.startswith("550 no")) == (Status.ERROR, True)


async def recount(store, tenant_id):
    counts: dict[Status, int] = {}
    page = await store.list_messages(tenant_id, limit=1000)
    for message in page.messages:
        counts[message.status] = counts.get(message.status, 0) + 1
    return counts


async def test_status_counts_follow_every_change(store):
    async def check():
        for tenant_id in ("t1", "t2"):
            assert await store.count_by_status(tenant_id) == await recount(store, tenant_id)
        expected: dict[Status, int] = {}
        for tenant_id in ("t1", "t2"):
            for status, n in (await recount(store, tenant_id)).items():
                expected[status] = expected.get(status, 0) + n
        assert await store.count_by_status() == expected

    await store.enqueue(
        [new_message(f"m{n}") for n in range(8)] + [new_message("x", tenant_id="t2")], NOW
    )
    await check()
    c0, c1, c2, c3, *_ = await claim(store, limit=5)
    await check()
    assert await store.complete(c0.lease, sent(c0.message, "e0"), NOW)
    failed = transition_for(c1, Permanent("550 no", 550), now=NOW, event_id="e1")
    assert await store.complete(c1.lease, failed, NOW)
    later = transition_for(c2, Temporary("451 later", 451), now=NOW, event_id="e2")
    assert await store.complete(c2.lease, later, NOW)
    assert await store.release(c3.lease, NOW)
    await check()
    await store.enqueue([new_message("m1"), new_message("m2")], NOW + 1)  # replaced
    await store.suspend("t1", None, NOW + 1)
    await check()
    await store.activate("t1", None, NOW + 2)
    await store.delete_messages("t1", ["m5", "m6"])
    await check()
    assert await store.purge_final(None, NOW + 10) >= 0
    await store.delete_tenant("t2")
    await check_totals_without(store, "t2")


async def check_totals_without(store, gone):
    assert await store.count_by_status(gone) == {}
    assert await store.count_by_status() == await store.count_by_status("t1")
