"""PEC receipts: reading each kind as the certified-mail rules lay it out, and the service
edge to edge (a SQLite file, the SMTP transport to an aiosmtpd sink on loopback, the
account's mailbox in memory): receipts become ``pec_*`` report entries of the message
they name, and a message whose receipts are late gets one ``pec_timeout``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.pec import overdue, read_receipt, receipt_mark
from mailproxy.service import MailProxy
from tests.conftest import Clock
from tests.pec_mail import ACCEPTANCE_S, DELIVERY_S, daticert, pec_service, receipt
from tests.unit.conftest import MemoryMailboxes

SENT_ID = "invoice-7@shop.example.it"


@pytest.mark.parametrize(
    ("kind", "event", "mark"),
    [
        ("accettazione", "pec_acceptance", "accepted"),
        ("avvenuta-consegna", "pec_delivery", "done:jane@pec.example.it"),
        ("errore-consegna", "pec_error", "done:jane@pec.example.it"),
        ("preavviso-errore-consegna", "pec_error", None),
        ("non-accettazione", "pec_error", "refused"),
        ("presa-in-carico", None, None),
    ],
)
def test_each_kind_of_receipt_is_read(kind, event, mark):
    read = read_receipt(receipt(kind, SENT_ID, recipient="jane@pec.example.it"))
    assert read is not None
    assert (read.receipt, read.kind, read.message_id, read.recipient) == (
        kind, event, SENT_ID, "jane@pec.example.it",
    )  # fmt: skip
    assert read.ts == datetime(2026, 12, 7, 8, 15, 2, tzinfo=UTC).timestamp()
    assert receipt_mark(read) == mark


@pytest.mark.parametrize(
    ("acceptance_due", "marks", "now", "expected"),
    [
        (100.0, set(), 99.0, (None, "keep")),
        (100.0, set(), 100.0, ("acceptance", "forget")),
        (100.0, {"accepted"}, 100.0, (None, "stop_acceptance")),
        (100.0, {"done:a"}, 100.0, (None, "stop_acceptance")),  # delivery implies it
        (None, {"accepted", "done:a"}, 1000.0, ("delivery", "forget")),
        (None, {"accepted", "done:a", "done:b"}, 1000.0, (None, "forget")),
        (100.0, {"refused"}, 50.0, (None, "forget")),
    ],
)
def test_what_a_passed_deadline_means(acceptance_due, marks, now, expected):
    assert overdue(acceptance_due, 1000.0, 2, marks, now) == expected


def test_a_message_that_crashes_the_mail_parser_is_not_a_receipt():
    nested = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for depth in range(1, 1200):
        nested += (
            f"--b{depth - 1}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n".encode()
        )
    head = b"X-Ricevuta: accettazione\r\nX-Riferimento-Message-ID: <a@b>\r\n"
    assert read_receipt(head + nested) is None  # the parser gives up: not read, not raised
    hostile = (
        b"X-Ricevuta: accettazione\r\nX-Riferimento-Message-ID: <" + b"a" * 2000 + b"@b>\r\n\r\n"
    )
    assert read_receipt(hostile) is None


def test_the_error_text_is_the_receipt_s_own():
    read = read_receipt(
        receipt("errore-consegna", SENT_ID, recipient="gone@pec.example.it",
                error="5.1.1 - Utente sconosciuto")
    )  # fmt: skip
    assert read is not None
    assert read.details == "5.1.1 - Utente sconosciuto"


@pytest.mark.parametrize(
    "certified",
    [
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]><postacert>&a;</postacert>',
        b"<postacert><dati><consegna>unclosed",
        b"x" * 70_000,
    ],
)
def test_certified_data_that_cannot_be_read_safely_is_left_out(certified):
    read = read_receipt(receipt("avvenuta-consegna", SENT_ID, certified=certified))
    assert read is not None
    assert (read.kind, read.recipient, read.ts, read.details) == ("pec_delivery", None, None, None)


def test_what_is_not_a_receipt_about_a_message_is_not_read_as_one():
    assert read_receipt(b"Subject: hello\r\n\r\nbody\r\n") is None
    assert read_receipt(receipt("something-else", SENT_ID)) is None
    without_reference = receipt("accettazione", SENT_ID).replace(
        b"X-Riferimento-Message-ID", b"X-Other"
    )
    assert read_receipt(without_reference) is None


def test_a_receipt_time_in_another_zone_or_unreadable():
    western = daticert("accettazione", SENT_ID, recipient=None, error=None,
                       day="31/12/2026", clock="23:30", zone="-0300")  # fmt: skip
    read = read_receipt(receipt("accettazione", SENT_ID, certified=western))
    assert read is not None
    assert read.ts == datetime(2027, 1, 1, 2, 30, tzinfo=UTC).timestamp()
    bad_day = daticert("accettazione", SENT_ID, recipient=None, error=None,
                       day="31/02/2026", clock="10:00", zone="+0100")  # fmt: skip
    assert read_receipt(receipt("accettazione", SENT_ID, certified=bad_day)).ts is None


# --- the service -----------------------------------------------------------------------


@pytest.fixture
async def proxy(tmp_path: Path, sink) -> AsyncIterator[MailProxy]:
    mailboxes, clock, metrics = MemoryMailboxes(), Clock(), PrometheusMetrics()
    mailbox = {"host": "imap.pec.example", "user": "shop"}
    async with pec_service(
        tmp_path, sink[1], mailboxes.open, mailbox, clock, run_dispatcher=False, events=metrics
    ) as service:
        service.test_clock, service.mailbox = clock, mailboxes.by_host  # type: ignore[attr-defined]
        service.metrics = metrics  # type: ignore[attr-defined]
        yield service


async def send(proxy, message_id: str, *recipients: str) -> str:
    """Send one message through the PEC account; its Message-ID."""
    message = {"id": message_id, "from": "shop@pec.example.it", "to": list(recipients),
               "subject": "Invoice 7"}  # fmt: skip
    await proxy.submit([message], tenant_id="acme")
    await proxy.run_until_idle()
    sent = await proxy.get_message("acme", message_id)
    assert sent.status.value == "sent"
    return sent.message_id


async def read_receipts(proxy, *receipts: bytes) -> int:
    mailbox = proxy.mailbox.setdefault("imap.pec.example", MemoryMailbox("shop@imap.pec.example"))
    for raw in receipts:
        mailbox.deliver(raw)
    session = await mailbox.open()
    try:
        return await proxy.bounce_mailboxes.run_pass(
            mailbox.key, session, "acme", pec_account="pec"
        )
    finally:
        await session.close()


async def pec_entries(proxy) -> list:
    return [
        r.event for r in await proxy.outbox.pending_reports("acme", 100)
        if r.event.event.startswith("pec_")
    ]  # fmt: skip


async def test_receipts_become_report_entries_of_the_message_they_name(proxy):
    message_id = await send(proxy, "m1", "jane@pec.example.it", "gone@pec.example.it")
    assert await read_receipts(
        proxy,
        receipt("accettazione", message_id),
        receipt("presa-in-carico", message_id, recipient="jane@pec.example.it"),
        receipt("avvenuta-consegna", message_id, recipient="jane@pec.example.it"),
        receipt("errore-consegna", message_id, recipient="gone@pec.example.it",
                error="5.1.1 - Utente sconosciuto"),
        receipt("accettazione", "someone-else@shop.example.it"),
    ) == 5  # fmt: skip
    entries = await pec_entries(proxy)
    assert [(e.event, e.id, e.account_id, e.recipient, e.pec_details) for e in entries] == [
        ("pec_acceptance", "m1", "pec", msgspec.UNSET, None),
        ("pec_delivery", "m1", "pec", "jane@pec.example.it", None),
        ("pec_error", "m1", "pec", "gone@pec.example.it", "5.1.1 - Utente sconosciuto"),
    ]  # fmt: skip
    when = round(datetime(2026, 12, 7, 8, 15, 2, tzinfo=UTC).timestamp())
    assert (entries[0].pec_acceptance_ts, entries[1].pec_delivery_ts) == (when, when)
    # As the application gets it: no recipient when the receipt names none, the details
    # null when there are none.
    sent = msgspec.json.decode(msgspec.json.encode(entries[0]))
    assert "recipient" not in sent
    assert sent["pec_details"] is None
    sample = proxy.metrics.registry.get_sample_value
    assert sample("gmp_pec_receipts_total", {"kind": "avvenuta-consegna"}) == 1
    # Every recipient answered for: nothing is late, ever.
    proxy.test_clock.advance(DELIVERY_S + 1)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 0


async def test_a_message_without_receipts_gets_one_timeout_per_missing_stage(proxy):
    silent = await send(proxy, "silent", "jane@pec.example.it")
    half = await send(proxy, "half", "jane@pec.example.it", "joe@pec.example.it")
    await read_receipts(
        proxy, receipt("accettazione", half),
        receipt("avvenuta-consegna", half, recipient="jane@pec.example.it"),
    )  # fmt: skip
    assert silent != half
    proxy.test_clock.advance(ACCEPTANCE_S - 1)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 0
    proxy.test_clock.advance(2)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 1
    proxy.test_clock.advance(DELIVERY_S)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 1
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 0
    timeouts = [e for e in await pec_entries(proxy) if e.event == "pec_timeout"]
    assert [(e.id, e.pec_details) for e in timeouts] == [
        ("silent", "no acceptance receipt within 1800 s"),
        ("half", "no delivery receipt within 86400 s"),
    ]
    sample = proxy.metrics.registry.get_sample_value
    assert sample("gmp_pec_receipts_total", {"kind": "timeout"}) == 2


async def test_a_refused_message_waits_for_nothing_more(proxy):
    refused = await send(proxy, "refused", "jane@pec.example.it")
    await read_receipts(proxy, receipt("non-accettazione", refused, error="virus"))
    proxy.test_clock.advance(DELIVERY_S + 1)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 0
    (entry,) = await pec_entries(proxy)
    assert (entry.event, entry.pec_details) == ("pec_error", "virus")


async def test_a_pec_account_needs_the_mailbox_its_receipts_arrive_in(proxy, sink):
    with pytest.raises(InvalidInput, match="bounce_mailbox"):
        await proxy.put_account(
            {"id": "nobox", "tenant_id": "acme", "host": "127.0.0.1", "port": sink[1],
             "use_tls": False, "pec": True}
        )  # fmt: skip
