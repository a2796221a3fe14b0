"""Contract of the BounceStore port, run against every store adapter."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from mailproxy.domain.bounces import (
    DAY_S,
    BounceRecord,
    MailboxEntry,
    Suppression,
    SuppressionSettings,
)
from mailproxy.domain.model import PecWatch, RefusedRecipient
from mailproxy.domain.outcome import Delivered, Permanent
from mailproxy.domain.pec import PecReceipt
from mailproxy.domain.report_events import bounce_event
from tests.conftest import NOW_T, new_message, transition_for

pytestmark = pytest.mark.usefixtures("accounts")


async def sent_message(store, message_id="m1", tenant_id="t1", outcome=None):
    await store.enqueue([new_message(message_id, tenant_id=tenant_id)], NOW_T)
    (claim,) = await store.claim_due(now=NOW_T, limit=1, owner="w", lease_s=60)
    transition = transition_for(
        claim, outcome or Delivered(250), now=NOW_T, event_id=f"e-{message_id}"
    )
    assert await store.complete(claim.lease, transition, NOW_T)
    return await store.get_message(tenant_id, message_id)


def bounce(recipient, kind="bounce", type_="hard", ts=NOW_T + 10, **extra):
    return BounceRecord(kind=kind, recipient=recipient, ts=ts, type=type_, **extra)


def entry_for(message, records, uid=1, mailbox="box", uidvalidity=7, **extra):
    events = tuple(bounce_event(message, r, f"b-{uid}-{n}") for n, r in enumerate(records))
    return MailboxEntry(
        mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, outcome="applied",
        tenant_id=message.tenant_id, message_pk=message.pk, message_id=message.id,
        records=tuple(records), events=events, **extra,
    )  # fmt: skip


async def test_the_instance_secret_is_decided_once(store):
    assert await store.instance_secret("correlation", "first") == "first"
    assert await store.instance_secret("correlation", "second") == "first"
    assert await store.instance_secret("other", "x") == "x"


async def test_a_message_is_found_by_its_store_key(store):
    message = await sent_message(store)
    assert (await store.message_by_pk(message.pk)).id == "m1"
    assert await store.message_by_pk(message.pk + 1000) is None


async def test_a_mailbox_entry_is_applied_once_with_its_records_events_and_suppression(store):
    message = await sent_message(store)
    entry = entry_for(message, [bounce("Bob@Example.com", status="5.1.1", diagnostic="no")])
    assert await store.mailbox_seen("box", 7, [1, 2]) == {}
    assert await store.record_mailbox_entry(entry, NOW_T + 10)
    assert not await store.record_mailbox_entry(entry, NOW_T + 11)
    assert await store.mailbox_seen("box", 7, [1, 2]) == {1: "applied"}
    assert await store.mailbox_seen("box", 8, [1]) == {}  # a new UIDVALIDITY
    (kept,) = (await store.bounces_of("t1", ["m1"])).get("m1", [])
    assert (kept.recipient, kept.type, kept.status) == ("Bob@Example.com", "hard", "5.1.1")
    bounced = [r.event for r in await store.pending_reports("t1", 10) if r.event.event == "bounced"]
    assert [(e.recipient, e.bounce_type, e.event_id) for e in bounced] == [
        ("Bob@Example.com", "hard", "b-1-0")
    ]
    assert await store.suppressed_among("t1", ["bob@example.COM", "Bob@EXAMPLE.com"], NOW_T) == {
        "Bob@EXAMPLE.com"
    }  # the local part is compared exactly, the domain without case
    assert await store.suppressed_among("t2", ["Bob@example.com"], NOW_T) == set()
    (entry_kept,) = (await store.list_suppressions("t1", now=NOW_T)).suppressions
    assert (entry_kept.reason, entry_kept.source_message_id) == ("hard_bounce", "m1")
    assert (await store.get_message("t1", "m1")).status == "sent"


async def test_the_same_fact_read_again_under_another_key_is_kept_once(store):
    # One report seen in two mailboxes (or sent twice): news only the first time, apart
    # from delays, which a server repeats as they go on.
    message = await sent_message(store)
    dead = bounce("bob@Example.com", status="5.1.1")
    delay = BounceRecord(kind="delay", recipient="bob@example.com", ts=NOW_T, status="4.4.7")
    await store.record_mailbox_entry(entry_for(message, [dead, delay]), NOW_T + 10)
    again = [
        bounce("bob@example.COM", status="5.1.1"),
        delay,
        bounce("bob@example.com", "complaint", None),
    ]
    assert await store.record_mailbox_entry(
        entry_for(message, again, uid=9, mailbox="shared"), NOW_T + 20
    )
    kept = (await store.bounces_of("t1", ["m1"])).get("m1", [])
    assert [r.kind for r in kept] == ["bounce", "delay", "delay", "complaint"]
    events = [r.event.event for r in await store.pending_reports("t1", 10)]
    assert events.count("bounced") == 1
    assert (events.count("delayed"), events.count("complained")) == (2, 1)


async def test_soft_bounces_suppress_for_a_while_once_they_reach_the_limit(store):
    settings = SuppressionSettings(soft_bounce_limit=2, soft_bounce_window_s=DAY_S)
    first = await sent_message(store, "m1")
    second = await sent_message(store, "m2")
    soft = [bounce("x@example.com", type_="soft", status="4.2.2")]
    await store.record_mailbox_entry(entry_for(first, soft, uid=1, settings=settings), NOW_T + 10)
    assert await store.suppressed_among("t1", ["x@example.com"], NOW_T + 10) == set()
    await store.record_mailbox_entry(entry_for(second, soft, uid=2, settings=settings), NOW_T + 10)
    assert await store.suppressed_among("t1", ["x@example.com"], NOW_T + 10) == {"x@example.com"}
    (entry,) = (await store.list_suppressions("t1", now=NOW_T + 10)).suppressions
    assert entry.reason == "soft_bounce"
    assert entry.expires_ts == NOW_T + 10 + settings.soft_bounce_suppress_s
    later = entry.expires_ts + 1
    assert await store.suppressed_among("t1", ["x@example.com"], later) == set()
    assert (await store.list_suppressions("t1", now=later)).suppressions == []


async def test_delays_are_kept_and_reported_but_never_suppress(store):
    message = await sent_message(store)
    delay = BounceRecord(kind="delay", recipient="d@example.com", ts=NOW_T, status="4.4.7")
    await store.record_mailbox_entry(entry_for(message, [delay]), NOW_T)
    assert [r.kind for r in (await store.bounces_of("t1", ["m1"])).get("m1", [])] == ["delay"]
    assert await store.suppressed_among("t1", ["d@example.com"], NOW_T) == set()


async def test_a_complaint_suppresses_and_outranks_a_manual_entry(store):
    message = await sent_message(store)
    manual = Suppression(
        tenant_id="t1", address="c@example.com", reason="manual", created_ts=NOW_T,
        expires_ts=NOW_T + 100,
    )  # fmt: skip
    assert await store.add_suppressions([manual], NOW_T) == 1
    assert await store.add_suppressions([manual], NOW_T) == 0
    complaint = BounceRecord(
        kind="complaint", recipient="c@example.com", ts=NOW_T, feedback_type="abuse"
    )
    await store.record_mailbox_entry(entry_for(message, [complaint]), NOW_T)
    (entry,) = (await store.list_suppressions("t1", now=NOW_T)).suppressions
    assert (entry.reason, entry.expires_ts) == ("complaint", None)
    # A weaker reason later keeps the stronger one.
    assert await store.add_suppressions([manual], NOW_T) == 0
    (entry,) = (await store.list_suppressions("t1", now=NOW_T)).suppressions
    assert entry.reason == "complaint"


async def test_unparsed_and_unmatched_entries_are_kept_without_effects(store):
    for uid, outcome in ((1, "unparsed"), (2, "unmatched"), (3, "ignored")):
        entry = MailboxEntry(
            mailbox="box", uidvalidity=1, uid=uid, outcome=outcome, summary=f"s{uid}",
            mailbox_tenant_id="t1",
        )  # fmt: skip
        assert await store.record_mailbox_entry(entry, NOW_T + uid)
    assert await store.mailbox_seen("box", 1, [1, 2, 3, 4]) == {
        1: "unparsed", 2: "unmatched", 3: "ignored",
    }  # fmt: skip
    (unparsed,) = await store.unparsed_reports(None, 10)
    assert (unparsed.uid, unparsed.summary, unparsed.tenant_id) == (1, "s1", "t1")
    assert await store.unparsed_reports("t1", 10) == [unparsed]
    assert await store.unparsed_reports("t2", 10) == []
    assert await store.pending_reports("t1", 10) == []


async def test_manual_entries_are_listed_filtered_paged_and_removed(store):
    entries = [
        Suppression(
            tenant_id="t1", address=f"user{i}@Example.com", reason="manual", created_ts=NOW_T
        )
        for i in range(5)
    ] + [
        Suppression(tenant_id="t2", address="other@example.com", reason="manual", created_ts=NOW_T)
    ]
    assert await store.add_suppressions(entries, NOW_T) == 6
    first = await store.list_suppressions("t1", now=NOW_T, limit=3)
    assert [e.address for e in first.suppressions] == [f"user{i}@Example.com" for i in range(3)]
    rest = await store.list_suppressions("t1", now=NOW_T, limit=3, cursor=first.next_cursor)
    assert [e.address for e in rest.suppressions] == ["user3@Example.com", "user4@Example.com"]
    assert rest.next_cursor is None
    found = await store.list_suppressions("t1", now=NOW_T, q="USER3@example")
    assert [e.address for e in found.suppressions] == ["user3@Example.com"]
    assert (await store.list_suppressions("t1", now=NOW_T, q="%")).suppressions == []
    assert (await store.list_suppressions("t1", now=NOW_T, reason="hard_bounce")).suppressions == []
    assert await store.count_suppressions(NOW_T) == {"t1": 5, "t2": 1}
    assert await store.remove_suppression("t1", "user0@EXAMPLE.com", NOW_T)
    assert not await store.remove_suppression("t1", "user0@example.com", NOW_T)
    assert not await store.remove_suppression("t1", "other@example.com", NOW_T)
    assert await store.count_suppressions(NOW_T) == {"t1": 4, "t2": 1}


async def test_a_hard_refusal_at_rcpt_is_kept_reported_and_suppressed(store):
    refused = (RefusedRecipient("gone@example.com", 550, "5.1.1 no such user"),)
    await sent_message(store, outcome=Delivered(250, refused))
    (kept,) = (await store.bounces_of("t1", ["m1"])).get("m1", [])
    assert (kept.recipient, kept.source, kept.status) == ("gone@example.com", "smtp", "5.1.1")
    events = [r.event.event for r in await store.pending_reports("t1", 10)]
    assert events == ["sent", "bounced"]
    assert await store.suppressed_among("t1", ["gone@example.com"], NOW_T) == {"gone@example.com"}


async def test_a_policy_refusal_is_not_a_bounce(store):
    refused = (RefusedRecipient("p@example.com", 550, "5.7.1 relaying denied"),)
    await sent_message(store, outcome=Permanent("all refused", 550, refused))
    assert (await store.bounces_of("t1", ["m1"])).get("m1", []) == []
    assert await store.suppressed_among("t1", ["p@example.com"], NOW_T) == set()


async def test_deleting_a_tenant_or_purging_removes_its_bounce_data(store):
    message = await sent_message(store)
    await store.record_mailbox_entry(entry_for(message, [bounce("z@example.com")]), NOW_T)
    await store.acknowledge_reports(
        "t1", [r.event.event_id for r in await store.pending_reports("t1", 10)], NOW_T
    )
    assert await store.purge_final("t1", NOW_T + 1) == 1
    assert (await store.bounces_of("t1", ["m1"])).get("m1", []) == []
    assert await store.suppressed_among("t1", ["z@example.com"], NOW_T) == {"z@example.com"}
    assert await store.delete_tenant("t1")
    assert await store.suppressed_among("t1", ["z@example.com"], NOW_T) == set()
    assert await store.count_suppressions(NOW_T) == {}


async def test_a_claim_says_which_of_its_recipients_are_suppressed(store):
    # new_message goes to r@example.com; the list is read in the claim's transaction.
    other_local_part = Suppression(
        tenant_id="t1", address="R@EXAMPLE.com", reason="manual", created_ts=NOW_T
    )
    await store.add_suppressions([other_local_part], NOW_T)
    await store.enqueue([new_message("m1"), new_message("m2", tenant_id="t2")], NOW_T)
    claims = await store.claim_due(now=NOW_T, limit=5, owner="w", lease_s=60)
    assert {c.message.tenant_id: c.suppressed for c in claims} == {
        "t1": frozenset(),  # the local part is compared exactly
        "t2": frozenset(),  # another tenant's list
    }
    await store.add_suppressions(
        [Suppression(tenant_id="t1", address="r@EXAMPLE.com", reason="manual", created_ts=NOW_T)],
        NOW_T,
    )
    await store.enqueue([new_message("m3")], NOW_T)
    (claim,) = await store.claim_due(now=NOW_T, limit=5, owner="w", lease_s=60)
    assert claim.suppressed == frozenset({"r@example.com"})


async def pec_message(store, message_id, recipients=2):
    """A message sent by a PEC account: its receipts are awaited from NOW_T."""
    await store.enqueue([new_message(message_id)], NOW_T)
    (claim,) = await store.claim_due(now=NOW_T, limit=1, owner="w", lease_s=60)
    transition = transition_for(claim, Delivered(250), now=NOW_T, event_id=f"e-{message_id}")
    watch = PecWatch(
        acceptance_due_ts=NOW_T + 100, delivery_due_ts=NOW_T + 1000, recipients=recipients
    )
    sent = msgspec.structs.replace(transition, pec_watch=watch)
    assert await store.complete(claim.lease, sent, NOW_T)
    return await store.get_message("t1", message_id)


def receipt_entry(message, kind, uid, recipient=None):
    read = PecReceipt(receipt=kind, kind=None, message_id=message.message_id, recipient=recipient)
    return MailboxEntry(
        mailbox="pec", uidvalidity=1, uid=uid, outcome="applied", tenant_id=message.tenant_id,
        message_pk=message.pk, message_id=message.id, pec=read,
    )  # fmt: skip


async def timeouts(store):
    return [
        (r.event.id, r.event.pec_details) for r in await store.pending_reports("t1", 50)
        if r.event.event == "pec_timeout"
    ]  # fmt: skip


async def test_a_pec_message_is_found_by_its_message_id_within_its_account(store):
    message = await pec_message(store, "m1")
    found = await store.message_by_message_id("t1", "a1", message.message_id)
    assert found is not None
    assert found.pk == message.pk
    assert await store.message_by_message_id("t1", "other", message.message_id) is None
    assert await store.message_by_message_id("t2", "a1", message.message_id) is None


async def test_late_receipts_time_out_once_per_message_and_receipts_move_the_wait(store):
    silent = await pec_message(store, "silent")
    accepted = await pec_message(store, "accepted")
    done = await pec_message(store, "done", recipients=2)
    twice = await pec_message(store, "twice", recipients=2)
    refused = await pec_message(store, "refused")
    uid = iter(range(1, 100))

    async def read(message, kind, recipient=None):
        entry = receipt_entry(message, kind, next(uid), recipient)
        assert await store.record_mailbox_entry(entry, NOW_T)

    await read(accepted, "accettazione")
    await read(done, "avvenuta-consegna", "a@pec.example.it")
    await read(done, "preavviso-errore-consegna", "b@pec.example.it")
    await read(done, "errore-consegna", "B@pec.example.it")
    # One recipient's receipt read twice, and a virus notice then its error: once each.
    await read(twice, "avvenuta-consegna", "a@pec.example.it")
    await read(twice, "avvenuta-consegna", "a@pec.example.it")
    await read(refused, "non-accettazione")
    assert await store.expire_pec_watches(NOW_T + 99, 10) == 0
    assert await store.expire_pec_watches(NOW_T + 100, 10) == 1
    assert await store.expire_pec_watches(NOW_T + 999, 10) == 0
    assert await store.expire_pec_watches(NOW_T + 1000, 10) == 2
    assert await store.expire_pec_watches(NOW_T + 5000, 10) == 0
    assert await timeouts(store) == [
        ("silent", "no acceptance receipt within 100 s"),
        ("accepted", "no delivery receipt within 1000 s"),
        ("twice", "no delivery receipt within 1000 s"),
    ]
    assert silent.pk != refused.pk


async def test_a_receipt_read_before_the_wait_began_still_counts(store):
    await store.enqueue([new_message("early")], NOW_T)
    (claim,) = await store.claim_due(now=NOW_T, limit=1, owner="w", lease_s=60)
    leased = await store.get_message("t1", "early")
    # The provider's acceptance is read while the attempt is still being settled.
    assert await store.record_mailbox_entry(receipt_entry(leased, "accettazione", 1), NOW_T)
    transition = transition_for(claim, Delivered(250), now=NOW_T, event_id="e-early")
    watch = PecWatch(acceptance_due_ts=NOW_T + 100, delivery_due_ts=NOW_T + 1000, recipients=1)
    sent = msgspec.structs.replace(transition, pec_watch=watch)
    assert await store.complete(claim.lease, sent, NOW_T)
    assert await store.expire_pec_watches(NOW_T + 100, 10) == 0
    assert await store.expire_pec_watches(NOW_T + 1000, 10) == 1
    assert await timeouts(store) == [("early", "no delivery receipt within 1000 s")]


async def test_a_timeout_is_reported_once_whoever_asks(store):
    await pec_message(store, "m1")
    found = await asyncio.gather(*(store.expire_pec_watches(NOW_T + 100, 10) for _ in range(4)))
    assert sum(found) == 1
    assert await timeouts(store) == [("m1", "no acceptance receipt within 100 s")]
