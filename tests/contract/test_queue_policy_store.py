"""Contract of the queue-policy methods of the MessageStore port (fair claims, rate
reservations, account pauses, suspensions, position, retention), on every store."""

from __future__ import annotations

import random

import pytest

from mailproxy.adapters.sql.rows import RESUME_CHUNK
from mailproxy.domain.errors import Conflict
from mailproxy.domain.model import Account, Status
from mailproxy.domain.outcome import AccountBroken, Delivered, Outcome, RateLimited, Temporary
from mailproxy.domain.policy import RateWindow, grant_slot
from tests.conftest import new_message, transition_for

pytestmark = pytest.mark.usefixtures("accounts")

NOW = 1_800_000_000.0
MINUTE = RateWindow("account\x1ft1\x1fa1", 2, 60.0, "account a1: 2/minute")


async def claim(store, limit=10, now=NOW, owner="w1"):
    return await store.claim_due(now=now, limit=limit, owner=owner, lease_s=60)


async def settle(store, c, outcome: Outcome, now=NOW, failover=False):
    transition = transition_for(
        c, outcome, now=now, event_id=f"e-{c.message.id}-{now}", failover=failover
    )
    assert await store.complete(c.lease, transition, now)


async def test_a_tenant_backlog_does_not_hold_back_another_tenants_message(store):
    await store.enqueue([new_message(f"bulk{n}", priority=3) for n in range(30)], NOW)
    await store.enqueue([new_message("urgent", tenant_id="t2", priority=0)], NOW + 1)
    claimed = await claim(store, limit=2)
    assert [c.message.id for c in claimed] == ["urgent", "bulk0"]


async def test_an_account_gets_two_claims_per_connection_per_owner(store):
    await store.put_account(Account(id="a1", tenant_id="t1", kind="capture", max_connections=1))
    await store.enqueue([new_message(f"m{n}") for n in range(5)], NOW)
    first = await claim(store, owner="w1")
    assert [c.message.id for c in first] == ["m0", "m1"]
    assert await claim(store, owner="w1") == []
    assert [c.message.id for c in await claim(store, owner="w2")] == ["m2", "m3"]
    await settle(store, first[0], Delivered(250))
    assert [c.message.id for c in await claim(store, owner="w1")] == ["m4"]


async def test_a_tenant_holds_at_most_its_limit_whatever_it_already_holds(store):
    await store.put_account(Account(id="a2", tenant_id="t1", kind="capture", max_connections=1000))
    await store.enqueue([new_message(f"bulk{n}") for n in range(10)], NOW)
    await store.enqueue([new_message(f"more{n}", account_id="a2") for n in range(10)], NOW)
    await store.enqueue([new_message(f"other{n}", tenant_id="t2") for n in range(2)], NOW)
    first = await store.claim_due(now=NOW, limit=20, owner="w1", lease_s=60, tenant_limit=3)
    by_tenant = [c.message.tenant_id for c in first]
    assert (by_tenant.count("t1"), by_tenant.count("t2")) == (3, 2)  # over both accounts
    again = await store.claim_due(now=NOW, limit=20, owner="w1", lease_s=60, tenant_limit=3)
    assert again == []  # t1 holds its 3, t2 has nothing more due
    other_worker = await store.claim_due(now=NOW, limit=20, owner="w2", lease_s=60, tenant_limit=3)
    assert [c.message.tenant_id for c in other_worker] == ["t1"] * 3  # per worker
    await settle(store, first[0], Delivered(250))
    after = await store.claim_due(now=NOW, limit=20, owner="w1", lease_s=60, tenant_limit=3)
    assert [c.message.tenant_id for c in after] == ["t1"]
    unlimited = await store.claim_due(now=NOW, limit=20, owner="w3", lease_s=60)
    assert len(unlimited) == 20 - 3 - 3 - 1


async def test_messages_of_an_unknown_account_are_never_claimed(store):
    await store.enqueue([new_message("orphan", account_id="gone")], NOW)
    assert await claim(store) == []


async def test_reservations_follow_the_sliding_window_and_are_kept_or_released(store):
    await store.enqueue([new_message(f"m{n}") for n in range(4)], NOW)
    c0, c1, c2, c3 = await claim(store)
    g0 = await store.reserve_slots(c0.lease, [MINUTE], NOW)
    g1 = await store.reserve_slots(c1.lease, [MINUTE], NOW + 10)
    g2 = await store.reserve_slots(c2.lease, [MINUTE], NOW + 20)
    assert (g0.at_ts, g1.at_ts) == (NOW, NOW + 10)
    assert g2.at_ts == grant_slot({MINUTE.key: [NOW, NOW + 10]}, [MINUTE], NOW + 20).at_ts
    assert (g2.at_ts, g2.window) == (NOW + 60, "account a1: 2/minute")
    # The waiting message keeps its future slot: the next one waits behind it.
    g3 = await store.reserve_slots(c3.lease, [MINUTE], NOW + 20)
    assert g3.at_ts == NOW + 70
    # Asking again returns the reservation held.
    assert (await store.reserve_slots(c2.lease, [MINUTE], NOW + 20)).at_ts == NOW + 60
    await settle(store, c0, Delivered(250))  # consumed: still counts
    await settle(store, c1, Temporary("SMTP 451 at RCPT", 451))  # released
    await settle(store, c2, RateLimited(NOW + 60, MINUTE.label), now=NOW + 20)  # kept
    await settle(store, c3, RateLimited(NOW + 70, MINUTE.label), now=NOW + 20)
    waiting = await store.get_message("t1", "m2")
    assert (waiting.status, waiting.due_ts, waiting.wait_reason) == (
        Status.DEFERRED, NOW + 60, "rate_limit"
    )  # fmt: skip
    again = {c.message.id: c for c in await claim(store, now=NOW + 60)}["m2"]
    assert (await store.reserve_slots(again.lease, [MINUTE], NOW + 60)).at_ts == NOW + 60


async def test_a_busy_key_keeps_its_count_over_many_reservations(store):
    """Hundreds of reservations and releases on one key (a store that keeps the key's
    total as deltas folds them on the way): every grant still equals grant_slot."""
    window = RateWindow("account\x1ft1\x1fa1", 100, 60.0, "account a1: 100/minute")
    await store.enqueue([new_message(f"m{n}") for n in range(130)], NOW)
    sent: list[float] = []
    for c in await claim(store, limit=130):
        grant = await store.reserve_slots(c.lease, [window], NOW)
        assert grant.at_ts == grant_slot({window.key: sent}, [window], NOW).at_ts
        if grant.at_ts > NOW:  # the 101st and later wait; giving their slot back
            await settle(store, c, Temporary("SMTP 451", 451))
        else:
            await settle(store, c, Delivered(250))
            sent.append(NOW)
    assert len(sent) == 100


@pytest.mark.parametrize("seed", range(3))
async def test_reservations_agree_with_the_domain_over_random_traffic(store, seed):
    """Sends, retries (released slots), deferrals (kept future slots) and replaced
    messages at random instants: every grant equals grant_slot over a model log."""
    rng = random.Random(seed)
    tenant_window = RateWindow("tenant\x1ft1", 3, 90.0, "tenant t1: 3/minute")
    windows = [MINUTE, tenant_window]
    log: list[tuple[float, int]] = []  # (instant, holder pk; 0 once consumed, at its end)
    now = NOW
    deferred = 0
    for step in range(60):
        now += rng.choice([0.0, 1.0, 7.0, 20.0, 45.0])
        message_id = f"m{rng.randrange(40)}"
        replaced = await store.get_message("t1", message_id)
        refused = (await store.enqueue([new_message(message_id, now=now)], now)).refused
        if replaced is not None and not refused:  # replaced: its reservation is given back
            log = [(ts, pk) for ts, pk in log if pk != replaced.pk]
        for c in await claim(store, now=now, limit=1000):
            # A claimed message is due: a slot it held has come and is checked again,
            # against the reservations up to now.
            held = any(pk == c.lease.pk for _, pk in log)
            log = [(ts, pk) for ts, pk in log if pk != c.lease.pk]
            seen = [ts for ts, _ in log if not held or ts <= now]
            expected = grant_slot({w.key: sorted(seen) for w in windows}, windows, now).at_ts
            grant = await store.reserve_slots(c.lease, windows, now)
            assert grant.at_ts == expected, f"step {step}"
            log.append((grant.at_ts, c.lease.pk))
            if grant.at_ts > now:
                deferred += 1
                await settle(store, c, RateLimited(grant.at_ts, grant.window or ""), now=now)
            elif rng.random() < 0.3:
                await settle(store, c, Temporary("SMTP 451 at RCPT", 451), now=now)
                log = [(ts, pk) for ts, pk in log if pk != c.lease.pk]
            else:
                await settle(store, c, Delivered(250), now=now)
                log = [(max(ts, now), 0) if pk == c.lease.pk else (ts, pk) for ts, pk in log]
    assert deferred >= 5  # the limits were reached, not only the fast path


async def test_a_reservation_with_a_lost_lease_is_refused(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    await settle(store, c, Delivered(250))
    assert await store.reserve_slots(c.lease, [MINUTE], NOW) is None


async def test_a_paused_account_is_skipped_then_probed_once_then_resumed(store):
    await store.enqueue([new_message(f"m{n}") for n in range(3)], NOW)
    (c0, *_rest) = await claim(store, limit=1)
    await settle(store, c0, AccountBroken("SMTP 535 at AUTH: bad credentials", 535))
    pause = await store.account_pause("t1", "a1")
    assert pause is not None
    assert (pause.failures, pause.until_ts) == (1, NOW + 60)
    assert await store.next_due_ts(NOW) == NOW + 60
    assert await claim(store, now=NOW + 30) == []
    probes = await claim(store, now=NOW + 61)
    assert len(probes) == 1
    assert probes[0].pause == pause
    await settle(store, probes[0], Delivered(250), now=NOW + 61)
    assert await store.account_pause("t1", "a1") is None
    assert len(await claim(store, now=NOW + 61)) == 2


async def test_suspend_and_activate_a_batch_and_the_tenant(store):
    await store.enqueue(
        [
            new_message("a", batch_code="spring"),
            new_message("b"),
            new_message("c", batch_code="spring"),
        ],
        NOW,
    )
    state = await store.suspend("t1", "spring", NOW)
    assert (state.suspended_batches, state.pending_messages) == (["spring"], 2)
    assert (await store.get_message("t1", "a")).status is Status.SUSPENDED
    await store.enqueue([new_message("d", batch_code="spring")], NOW)
    assert (await store.get_message("t1", "d")).status is Status.SUSPENDED
    assert [c.message.id for c in await claim(store)] == ["b"]
    whole = await store.suspend("t1", None, NOW)
    assert whole.suspended_batches == ["*", "spring"]
    assert (await store.suspend("t1", "other", NOW)).suspended_batches == ["*", "spring"]
    with pytest.raises(Conflict):
        await store.activate("t1", "spring", NOW)
    await store.activate("t1", None, NOW)
    assert (await store.get_message("t1", "a")).status is Status.SUSPENDED
    state = await store.activate("t1", "spring", NOW)
    assert state.suspended_batches == []
    assert (await store.get_message("t1", "a")).status is Status.PENDING
    assert await store.suspended_batches("t1") == []
    assert sorted(c.message.id for c in await claim(store)) == ["a", "c", "d"]


async def test_activation_resumes_every_waiting_message_however_many(store):
    # More than two of the SQL stores' resume steps, with a suspended batch spread
    # through them that must stay suspended.
    count = 2 * RESUME_CHUNK + 500
    await store.enqueue(
        [new_message(f"m{n}", batch_code="held" if n % 7 == 0 else None) for n in range(count)],
        NOW,
    )
    await store.suspend("t1", "held", NOW)
    await store.suspend("t1", None, NOW)
    await store.activate("t1", None, NOW)
    counts = await store.count_by_status("t1")
    held = len(range(0, count, 7))
    assert (counts[Status.PENDING], counts[Status.SUSPENDED]) == (count - held, held)


async def test_a_message_coming_back_to_a_suspended_tenant_is_suspended(store):
    await store.enqueue([new_message("m1")], NOW)
    (c,) = await claim(store)
    await store.suspend("t1", None, NOW)
    await settle(store, c, Temporary("SMTP 451 at RCPT", 451))
    assert (await store.get_message("t1", "m1")).status is Status.SUSPENDED
    await store.activate("t1", None, NOW)
    message = await store.get_message("t1", "m1")
    assert (message.status, message.attempts) == (Status.DEFERRED, 1)


async def test_count_ahead_counts_due_messages_of_the_account_before_it(store):
    await store.enqueue(
        [
            new_message("low", priority=3),
            new_message("m1"),
            new_message("m2"),
            new_message("t2", tenant_id="t2"),
        ],
        NOW,
    )
    await store.enqueue([new_message("later", deferred_ts=NOW + 50, priority=0)], NOW)
    assert await store.count_ahead(await store.get_message("t1", "m2"), NOW) == 1
    assert await store.count_ahead(await store.get_message("t1", "low"), NOW) == 2


async def test_retention_removes_only_acknowledged_final_messages(store):
    await store.enqueue([new_message("m1"), new_message("m2"), new_message("m3")], NOW)
    c1, c2, _c3 = await claim(store)
    await settle(store, c1, Delivered(250))
    await settle(store, c2, Delivered(250))
    await store.acknowledge_reports("t1", [f"e-m1-{NOW}"], NOW)
    assert await store.purge_final("t1", NOW) == 0  # not older than the cut-off yet
    assert await store.purge_final("t2", NOW + 100) == 0
    assert await store.purge_final(None, NOW + 100) == 1
    assert await store.get_message("t1", "m1") is None
    assert (await store.get_message("t1", "m2")).status is Status.SENT  # unreported: kept
    assert (await store.get_message("t1", "m3")).status is Status.SENDING


async def test_retention_removes_many_messages_at_once_with_their_history_and_events(store):
    await store.enqueue([new_message(f"m{i}") for i in range(30)], NOW)
    claims = await claim(store, limit=30)
    for c in claims:
        await settle(store, c, Delivered(250))
    acked = [f"e-{c.message.id}-{NOW}" for c in claims[:20]]
    assert await store.acknowledge_reports("t1", acked, NOW) == 20
    assert await store.purge_final(None, NOW + 100) == 20
    remaining = (await store.list_messages("t1", limit=100)).messages
    assert {m.id for m in remaining} == {c.message.id for c in claims[20:]}
    assert await store.history("t1", claims[0].message.id) == []
    assert len(await store.pending_reports("t1", 100)) == 10


async def test_next_due_looks_past_what_is_due_now(store):
    await store.enqueue([new_message("now"), new_message("later", deferred_ts=NOW + 5)], NOW)
    assert await store.next_due_ts(NOW) == NOW + 5
    assert await store.next_due_ts(NOW + 5) is None


async def test_a_consumed_reservation_counts_from_when_the_send_ended(store):
    """Two sends reserved at NOW (limit 2 a minute) ended at NOW + 5 and NOW + 1: as
    the server saw them, the window frees at NOW + 1 + 60, not at NOW + 60."""
    await store.enqueue([new_message(f"m{n}") for n in range(3)], NOW)
    c0, c1, c2 = await claim(store)
    assert (await store.reserve_slots(c0.lease, [MINUTE], NOW)).at_ts == NOW
    assert (await store.reserve_slots(c1.lease, [MINUTE], NOW)).at_ts == NOW
    await settle(store, c0, Delivered(250), now=NOW + 5)
    await settle(store, c1, Delivered(250), now=NOW + 1)
    assert (await store.reserve_slots(c2.lease, [MINUTE], NOW + 30)).at_ts == NOW + 61


async def test_a_slot_that_has_come_is_checked_against_sends_that_ended_late(store):
    """m2 was granted NOW + 60 while m0 and m1 were in flight; they ended at NOW + 5 and
    NOW + 1, so when m2's turn comes the window frees at NOW + 61: it waits again."""
    await store.enqueue([new_message(f"m{n}") for n in range(3)], NOW)
    c0, c1, c2 = await claim(store)
    await store.reserve_slots(c0.lease, [MINUTE], NOW)
    await store.reserve_slots(c1.lease, [MINUTE], NOW)
    assert (await store.reserve_slots(c2.lease, [MINUTE], NOW)).at_ts == NOW + 60
    await settle(store, c2, RateLimited(NOW + 60, MINUTE.label))
    await settle(store, c0, Delivered(250), now=NOW + 5)
    await settle(store, c1, Delivered(250), now=NOW + 1)
    (again,) = await claim(store, now=NOW + 60)
    grant = await store.reserve_slots(again.lease, [MINUTE], NOW + 60)
    assert (grant.at_ts, grant.window) == (NOW + 61, MINUTE.label)


async def fallbacks(store, *fallback_ids, max_connections=1000, failover_after_s=300.0):
    """t1/a1 names ``fallback_ids`` (created here, each with ``max_connections``)."""
    for fallback_id in fallback_ids:
        await store.put_account(
            Account(id=fallback_id, tenant_id="t1", kind="capture", max_connections=max_connections)
        )
    await store.put_account(
        Account(id="a1", tenant_id="t1", kind="capture", max_connections=1000,
                fallback_accounts=fallback_ids, failover_after_s=failover_after_s)
    )  # fmt: skip


async def test_a_paused_account_s_messages_go_through_its_fallback_then_come_back(store):
    await fallbacks(store, "b1")
    await store.enqueue([new_message(f"m{n}") for n in range(4)], NOW)
    (c0,) = await claim(store, limit=1)
    broken = AccountBroken("SMTP 535 at AUTH: bad credentials", 535)
    await settle(store, c0, broken, failover=True)
    routed = await claim(store, now=NOW + 1)
    assert [(c.message.id, c.message.account_id, c.message.failover_from) for c in routed] == [
        (f"m{n}", "b1", "a1") for n in range(4)
    ]  # the one that found the account broken first
    assert all(c.pause is None for c in routed)  # the fallback is not paused
    # While leased, the message reads as sent through the fallback.
    leased = await store.get_message("t1", "m1")
    assert (leased.account_id, leased.failover_from) == ("b1", "a1")
    await settle(store, routed[0], Delivered(250), now=NOW + 1)
    await settle(store, routed[1], Temporary("451 try later", 451), now=NOW + 1)
    for message_id in ("m0", "m1"):
        settled = await store.get_message("t1", message_id)
        assert (settled.account_id, settled.failover_from) == ("a1", None)
    # The fallback's success is no probe of the paused account.
    assert (await store.account_pause("t1", "a1")) is not None
    sent = [r.event for r in await store.pending_reports("t1", 10) if r.event.event == "sent"]
    assert [(e.id, e.account_id, e.failover_from) for e in sent] == [("m0", "b1", "a1")]


async def test_a_probing_account_keeps_its_probe_and_its_other_messages_fail_over(store):
    await fallbacks(store, "b1")
    await store.enqueue([new_message(f"m{n}") for n in range(4)], NOW)
    (c0,) = await claim(store, limit=1)
    await settle(store, c0, AccountBroken("SMTP 535 at AUTH: bad credentials", 535))
    probing = await claim(store, now=NOW + 61)
    senders = [(c.message.id, c.message.account_id) for c in probing]
    assert senders == [("m0", "a1"), ("m1", "b1"), ("m2", "b1"), ("m3", "b1")]
    probe = probing[0]
    assert probe.pause is not None
    await settle(store, probe, Delivered(250), now=NOW + 61)
    assert await store.account_pause("t1", "a1") is None
    for c in probing[1:]:
        assert await store.release(c.lease, NOW + 61)
    back = await claim(store, now=NOW + 62)
    assert [(c.message.account_id, c.message.failover_from) for c in back] == [("a1", None)] * 3


async def test_a_fallback_shares_its_room_and_a_paused_or_missing_fallback_is_skipped(store):
    await fallbacks(store, "gone", "b1", "b2", max_connections=1)
    assert await store.delete_account("t1", "gone")
    await store.enqueue([new_message(f"m{n}") for n in range(6)], NOW)
    (c0,) = await claim(store, limit=1)
    await settle(store, c0, AccountBroken("SMTP 535 at AUTH: bad credentials", 535), failover=True)
    await store.enqueue([new_message("b1-own", account_id="b1", now=NOW - 10)], NOW)
    # b1 (one connection: two claims) takes its own message and a1's first, in queue
    # order; "gone" is skipped.
    first = await claim(store, now=NOW + 1, owner="w1")
    assert [(c.message.id, c.message.account_id) for c in first] == [("b1-own", "b1"), ("m0", "b1")]
    # b1 paused as well: a1's messages go to b2 next.
    await settle(store, first[0], AccountBroken("TLS failed"), now=NOW + 1)
    second = await claim(store, now=NOW + 2, owner="w2")
    assert [(c.message.id, c.message.account_id) for c in second] == [("m1", "b2"), ("m2", "b2")]


async def test_full_own_rate_windows_send_the_message_back_for_a_fallback(store):
    await fallbacks(store, "b1", failover_after_s=30.0)
    await store.enqueue([new_message(f"m{n}") for n in range(3)], NOW)
    c0, c1, c2 = await claim(store)
    assert (await store.reserve_slots(c0.lease, [MINUTE], NOW)).at_ts == NOW
    assert (await store.reserve_slots(c1.lease, [MINUTE], NOW)).at_ts == NOW
    grant = await store.reserve_slots(c2.lease, [MINUTE], NOW)
    assert (grant.at_ts, grant.key) == (NOW + 60, MINUTE.key)
    await settle(store, c0, Delivered(250))
    await settle(store, c1, Delivered(250))
    await settle(store, c2, RateLimited(grant.at_ts, grant.window, failover_after_s=30.0))
    back = await store.get_message("t1", "m2")
    assert (back.status, back.due_ts, back.attempts) == (Status.PENDING, NOW, 0)
    pause = await store.account_pause("t1", "a1")
    assert (pause.failures, pause.until_ts) == (0, NOW + 30)
    (routed,) = await claim(store, now=NOW + 1)
    assert (routed.message.id, routed.message.account_id) == ("m2", "b1")
    # Once the windows would hold a message no longer than that, the account takes its
    # own again, without a probe.
    await store.enqueue([new_message("later")], NOW + 30)
    (own,) = await claim(store, now=NOW + 30)
    assert (own.message.account_id, own.message.failover_from) == ("a1", None)
