"""Bounce mailboxes, edge to edge: the service over a real SQLite file sends through the
SMTP transport to an aiosmtpd sink (the VERP return path is what the sink saw), bounces
arrive in the in-memory mailbox, and each pass applies them exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.correlation import find_tokens, make_token, read_token
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import BounceMailboxSpec
from mailproxy.service import MailProxy
from tests import bounce_mail
from tests.conftest import Clock, until
from tests.smtp_sink import running_sink
from tests.unit.conftest import MemoryMailboxes


@pytest.fixture
def sink():
    with running_sink() as (handler, port):
        yield handler, port


async def make_proxy(tmp_path: Path, port: int, mailboxes: MemoryMailboxes, **options) -> MailProxy:
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8"))
    proxy = MailProxy(
        store=SqliteStore(tmp_path / "b.db"), transports={"smtp": transport},
        clock=options.pop("clock", Clock()), open_mailbox=mailboxes.open, **options,
    )  # fmt: skip
    await proxy.__aenter__()
    for tenant in ("acme", "other"):
        await proxy.put_tenant({"id": tenant, "suppression": {"soft_bounce_limit": 2}})
        await proxy.put_account(
            {
                "id": "main", "tenant_id": tenant, "host": "127.0.0.1", "port": port,
                "use_tls": False, "is_default": True,
                "return_path": f"bounces+{{token}}@{bounce_mail.BOUNCE_DOMAIN}",
                "bounce_mailbox": {"host": f"imap.{tenant}.example", "user": "bounces"},
            }
        )  # fmt: skip
    return proxy


@pytest.fixture
async def proxy(tmp_path: Path, sink) -> AsyncIterator[MailProxy]:
    mailboxes = MemoryMailboxes()
    proxy = await make_proxy(tmp_path, sink[1], mailboxes, run_dispatcher=False)
    proxy.mailboxes = mailboxes  # type: ignore[attr-defined]
    try:
        yield proxy
    finally:
        await proxy.__aexit__(None, None, None)


async def send(proxy, sink, message_id, *recipients, tenant="acme") -> str:
    """Send one message; the token of its VERP return path."""
    handler, _ = sink
    message = {"id": message_id, "from": "shop@example.com", "to": list(recipients), "subject": "s"}
    await proxy.submit([message], tenant_id=tenant)
    await proxy.run_until_idle()
    return handler.received[-1].mail_from.split("+", 1)[1].split("@")[0]


async def pass_over(proxy, tenant="acme", owner="acme") -> int:
    mailbox = proxy.mailboxes.by_host.setdefault(
        f"imap.{tenant}.example", MemoryMailbox(f"bounces@imap.{tenant}.example")
    )
    session = await mailbox.open()
    try:
        return await proxy.bounce_mailboxes.run_pass(mailbox.key, session, owner)
    finally:
        await session.close()


def mailbox(proxy, tenant="acme") -> MemoryMailbox:
    return proxy.mailboxes.by_host.setdefault(
        f"imap.{tenant}.example", MemoryMailbox(f"bounces@imap.{tenant}.example")
    )


async def reports(proxy, tenant="acme"):
    return [r.event for r in await proxy.outbox.pending_reports(tenant, 100)]


async def test_a_hard_bounce_is_reported_suppresses_and_keeps_the_message_sent(proxy, sink):
    token = await send(proxy, sink, "m1", "gone@example.com")
    assert read_token(token).slot == 1
    assert await proxy.check_recipient("acme", "gone@example.com") is None
    mailbox(proxy).deliver(bounce_mail.dsn(token, "gone@example.com"))
    assert await pass_over(proxy) == 1
    # An SMTP submission refuses the address at once (the list was read empty before).
    assert await proxy.check_recipient("acme", "gone@example.com") == "suppressed"
    bounced = [e for e in await reports(proxy) if e.event == "bounced"]
    assert [(e.id, e.recipient, e.bounce_type, e.status, e.source) for e in bounced] == [
        ("m1", "gone@example.com", "hard", "5.1.1", "dsn")
    ]
    assert (await proxy.get_message("acme", "m1")).status == "sent"
    (record,) = (await proxy.suppressions.bounces_of("acme", ["m1"])).get("m1", [])
    assert record.diagnostic == "550 5.1.1 user unknown"
    (entry,) = (await proxy.suppressions.page("acme")).suppressions
    assert (entry.address, entry.reason, entry.source_message_id) == (
        "gone@example.com", "hard_bounce", "m1",
    )  # fmt: skip
    assert mailbox(proxy).messages == {}  # set aside once committed
    assert len(mailbox(proxy).processed) == 1
    # The next message to the address is never handed to SMTP.
    handler, _ = sink
    before = len(handler.received)
    await proxy.submit(
        [{"id": "m2", "from": "shop@example.com", "to": ["gone@example.com"], "subject": "s"}],
        tenant_id="acme",
    )
    await proxy.run_until_idle()
    assert len(handler.received) == before
    assert (await proxy.get_message("acme", "m2")).error == "suppressed"


async def test_a_message_committed_before_a_crash_is_set_aside_and_never_applied_again(proxy, sink):
    token = await send(proxy, sink, "m1", "gone@example.com")
    box = mailbox(proxy)
    uid = box.deliver(bounce_mail.dsn(token, "gone@example.com"))
    assert await pass_over(proxy) == 1
    # The process died after the commit but before the move: the message is back.
    box.messages[uid] = box.processed.pop()
    assert await pass_over(proxy) == 0
    assert box.messages == {}
    assert [e.event for e in await reports(proxy)].count("bounced") == 1


async def test_unreadable_mail_is_left_in_place_counted_once_and_listed(tmp_path, sink):
    mailboxes, metrics = MemoryMailboxes(), PrometheusMetrics()
    proxy = await make_proxy(tmp_path, sink[1], mailboxes, run_dispatcher=False, events=metrics)
    proxy.mailboxes = mailboxes
    try:
        box = mailbox(proxy)
        box.deliver(bounce_mail.human_mail())
        await pass_over(proxy)
        await pass_over(proxy)
        assert list(box.messages) == [1]  # left for people
        assert metrics.registry.get_sample_value("gmp_bounces_unparsed_total") == 1
        (unparsed,) = await proxy.suppressions.unparsed("acme")
        assert "Question about my order" in unparsed.summary
    finally:
        await proxy.__aexit__(None, None, None)


async def test_auto_replies_are_set_aside_without_effect(proxy, sink):
    token = await send(proxy, sink, "m1", "away@example.com")
    mailbox(proxy).deliver(bounce_mail.auto_reply(token))
    await pass_over(proxy)
    assert mailbox(proxy).messages == {}
    assert [e.event for e in await reports(proxy)] == ["sent"]
    assert (await proxy.suppressions.page("acme")).suppressions == []


async def test_a_complaint_is_reported_and_suppresses(proxy, sink):
    token = await send(proxy, sink, "m1", "angry@example.com")
    mailbox(proxy).deliver(bounce_mail.arf(token, "angry@example.com"))
    await pass_over(proxy)
    (complaint,) = [e for e in await reports(proxy) if e.event == "complained"]
    assert (complaint.recipient, complaint.feedback_type) == ("angry@example.com", "abuse")
    (entry,) = (await proxy.suppressions.page("acme")).suppressions
    assert entry.reason == "complaint"


async def test_a_delay_is_reported_and_not_counted(proxy, sink):
    token = await send(proxy, sink, "m1", "slow@example.com")
    delayed = bounce_mail.dsn(token, "slow@example.com", action="delayed", status="4.4.7")
    mailbox(proxy).deliver(delayed)
    await pass_over(proxy)
    (delay,) = [e for e in await reports(proxy) if e.event == "delayed"]
    assert (delay.recipient, delay.status) == ("slow@example.com", "4.4.7")
    assert (await proxy.suppressions.page("acme")).suppressions == []


async def test_a_bounce_of_another_tenants_message_or_a_forged_token_matches_nothing(proxy, sink):
    theirs = await send(proxy, sink, "t1", "x@example.com", tenant="other")
    ref = read_token(theirs)
    forged = make_token(b"not the key", pk=ref.pk, slot=1, tenant_id="other", message_id="t1")
    mailbox(proxy).deliver(bounce_mail.dsn(theirs, "x@example.com"))
    mailbox(proxy).deliver(bounce_mail.dsn(forged, "x@example.com"))
    await pass_over(proxy)  # acme's mailbox: other's message is out of its reach
    assert [e.event for e in await reports(proxy, "other")] == ["sent"]
    mailbox(proxy, "other").deliver(bounce_mail.dsn(forged, "x@example.com"))
    await pass_over(proxy, "other", "other")
    assert [e.event for e in await reports(proxy, "other")] == ["sent"]
    seen = await proxy.bounce_store.mailbox_seen(mailbox(proxy).key, 1, [1, 2])
    assert seen == {1: "unmatched", 2: "unmatched"}


async def test_the_quoted_correlation_header_maps_a_bounce_without_verp(proxy, sink):
    handler, _ = sink
    await send(proxy, sink, "m1", "gone@example.com", "second@example.com")
    (header_token,) = find_tokens(handler.received[-1].content.split(b"\r\n", 1)[0].decode())
    assert read_token(header_token).slot == 0
    relayed = bounce_mail.dsn("norewrite", "gone@example.com").replace(
        b"Subject: hello", f"Subject: hello\nX-Mail-Proxy-Ref: {header_token}".encode()
    )
    mailbox(proxy).deliver(relayed)
    await pass_over(proxy)
    (bounce,) = [e for e in await reports(proxy) if e.event == "bounced"]
    assert (bounce.id, bounce.recipient) == ("m1", "gone@example.com")


async def test_a_broken_mailbox_stops_neither_another_nor_delivery(tmp_path, sink):
    mailboxes = MemoryMailboxes()
    broken = mailboxes.by_host["imap.other.example"] = MemoryMailbox("broken")
    broken.unavailable = "login refused"
    proxy = await make_proxy(tmp_path, sink[1], mailboxes)
    proxy.mailboxes = mailboxes
    try:
        handler, _ = sink
        await proxy.submit(
            [{"id": "m1", "from": "s@example.com", "to": ["gone@example.com"], "subject": "s"}],
            tenant_id="acme",
        )
        await until(lambda: _true(handler.received), 30)
        token = handler.received[-1].mail_from.split("+", 1)[1].split("@")[0]
        mailbox(proxy).deliver(bounce_mail.dsn(token, "gone@example.com"))

        async def suppressed() -> bool:
            return bool((await proxy.suppressions.page("acme")).suppressions)

        await until(suppressed, 30)
        watches = {w.key: w for w in proxy.bounce_mailboxes.watches}
        assert "login refused" in (watches["broken"].last_error or "")
        assert watches[mailbox(proxy).key].applied == 1
    finally:
        await proxy.__aexit__(None, None, None)


async def test_an_entry_recorded_for_a_purged_message_is_unmatched(proxy, sink):
    token = await send(proxy, sink, "m1", "gone@example.com")
    await proxy.delete_messages("acme", ["m1"])
    mailbox(proxy).deliver(bounce_mail.dsn(token, "gone@example.com"))
    await pass_over(proxy)
    seen = await proxy.bounce_store.mailbox_seen(mailbox(proxy).key, 1, [1])
    assert seen == {1: "unmatched"}


async def _true(value: object) -> bool:
    return bool(value)


async def test_a_bounce_mailbox_on_a_forbidden_address_is_refused_when_stored(proxy):
    account = {
        "id": "inside", "tenant_id": "acme", "host": "127.0.0.1", "port": 25,
        "bounce_mailbox": {"host": "10.1.2.3", "user": "u"},
    }  # fmt: skip
    with pytest.raises(InvalidInput, match=r"bounce_mailbox\.host"):
        await proxy.put_account(account)


async def test_a_bounce_entry_says_null_where_the_report_gave_nothing(proxy, sink):
    token = await send(proxy, sink, "m1", "gone@example.com")
    mailbox(proxy).deliver(
        bounce_mail.dsn(token, "gone@example.com", status="5.0.0", diagnostic="")
    )
    await pass_over(proxy)
    stored = {r.event.event: r.event for r in await proxy.outbox.pending_reports("acme", 10)}
    bounced = msgspec.json.decode(msgspec.json.encode(stored["bounced"]))
    assert bounced["diagnostic"] is None
    sent = msgspec.json.decode(msgspec.json.encode(stored["sent"]))
    assert "status" not in sent
    assert "recipient" not in sent


async def test_a_bounce_naming_addresses_the_message_never_went_to_changes_nothing(proxy, sink):
    token = await send(proxy, sink, "m1", "alice@example.com", "bob@example.com")
    forged = bounce_mail.dsn(token, "victim@partner.example")
    mailbox(proxy).deliver(forged)
    await pass_over(proxy)
    assert [e.event for e in await reports(proxy)] == ["sent"]
    assert (await proxy.suppressions.page("acme")).suppressions == []
    assert await proxy.bounce_store.mailbox_seen(mailbox(proxy).key, 1, [1]) == {1: "unmatched"}


async def test_a_recipient_token_speaks_only_for_its_recipient(proxy, sink):
    token = await send(proxy, sink, "m1", "alice@example.com")
    await send(proxy, sink, "m2", "bob@example.com")
    mailbox(proxy).deliver(bounce_mail.dsn(token, "bob@example.com"))  # m1's token, m2's address
    await pass_over(proxy)
    assert (await proxy.suppressions.page("acme")).suppressions == []


@pytest.mark.parametrize(
    ("status", "bounce_type"),
    [("4.2.2", "soft"), ("5.7.1", "hard"), ("5.2.2", "hard")],
    ids=["soft", "policy refusal", "mailbox full"],
)
async def test_bounces_that_do_not_prove_the_address_dead_count_toward_the_limit(
    proxy, sink, status, bounce_type
):
    for n in (1, 2):
        token = await send(proxy, sink, f"m{n}", "picky@example.com")
        diagnostic = f"smtp; 550 {status} refused"
        mailbox(proxy).deliver(
            bounce_mail.dsn(token, "picky@example.com", status=status, diagnostic=diagnostic)
        )
        await pass_over(proxy)
        bounced = [e for e in await reports(proxy) if e.event == "bounced"]
        assert [e.bounce_type for e in bounced] == [bounce_type] * n
        suppressed = (await proxy.suppressions.page("acme")).suppressions
        # The tenant's limit is 2 messages: the second one suppresses, for a while.
        assert [s.reason for s in suppressed] == ([] if n == 1 else ["soft_bounce"])
        assert all(s.expires_ts is not None for s in suppressed)


async def test_repeated_groups_and_repeated_reports_of_one_message_count_once(proxy, sink):
    token = await send(proxy, sink, "m1", "full@example.com")
    soft = bounce_mail.dsn(token, "full@example.com", status="4.2.2", diagnostic="smtp; 452 full")
    twice = bounce_mail.dsn(
        token, "full@example.com", status="4.2.2", diagnostic="smtp; 452 full", groups=2
    )
    mailbox(proxy).deliver(twice)
    mailbox(proxy).deliver(soft)
    await pass_over(proxy)
    assert (await proxy.suppressions.page("acme")).suppressions == []  # limit 2, one message


async def test_the_shared_mailbox_applies_each_tenant_s_bounces_to_that_tenant(tmp_path, sink):
    # [bounces]: one mailbox for the instance, matched by the VERP token alone.
    mailboxes = MemoryMailboxes()
    shared = BounceMailboxSpec(host="imap.shared.example", user="bounces")
    proxy = await make_proxy(
        tmp_path, sink[1], mailboxes, run_dispatcher=False, shared_mailbox=shared
    )
    proxy.mailboxes = mailboxes
    try:
        ours = await send(proxy, sink, "m1", "gone@example.com")
        theirs = await send(proxy, sink, "m1", "left@example.com", tenant="other")
        box = mailboxes.by_host.setdefault(shared.host, MemoryMailbox("bounces@shared"))
        box.deliver(bounce_mail.dsn(ours, "gone@example.com"))
        box.deliver(bounce_mail.dsn(theirs, "left@example.com"))
        box.deliver(bounce_mail.dsn("mp1notatoken", "gone@example.com"))
        session = await box.open()
        try:
            assert await proxy.bounce_mailboxes.run_pass(box.key, session, None) == 3
        finally:
            await session.close()
        for tenant, address in (("acme", "gone@example.com"), ("other", "left@example.com")):
            (bounce,) = [e for e in await reports(proxy, tenant) if e.event == "bounced"]
            assert (bounce.id, bounce.recipient) == ("m1", address)
            listed = (await proxy.suppressions.page(tenant)).suppressions
            assert [s.address for s in listed] == [address]
        assert box.messages == {}
        # The same report read again through the account's own mailbox (one mailbox
        # configured twice) is not applied a second time.
        mailbox(proxy).deliver(bounce_mail.dsn(ours, "gone@example.com"))
        await pass_over(proxy)
        assert [e.event for e in await reports(proxy)].count("bounced") == 1
    finally:
        await proxy.__aexit__(None, None, None)
