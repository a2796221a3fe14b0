"""PEC receipts end to end with a real mailbox: the service sends through a PEC account
to an aiosmtpd sink on loopback; the provider's receipts (built as the certified-mail
rules lay them out) are delivered into a private Dovecot mailbox, which the service's own
poller reads over IMAP with implicit TLS; the application gets ``pec_acceptance``,
``pec_delivery`` and ``pec_error`` for the message they name, and one ``pec_timeout`` for
a message whose receipts never come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.adapters.imap import ImapMailbox
from mailproxy.domain.egress import parse_networks
from mailproxy.service import MailProxy
from tests.conftest import Clock, until
from tests.mailservers import Dovecot
from tests.pec_mail import ACCEPTANCE_S, DELIVERY_S, pec_service, receipt
from tests.smtp_sink import SinkHandler, running_sink

pytestmark = pytest.mark.system

LOOPBACK = parse_networks("127.0.0.0/8")
#: A bound for the poller to see new mail (IDLE brings it at once): a guard, not a timing.
READ_WITHIN_S = 30.0


@pytest.fixture
def sink():
    with running_sink() as running:
        yield running


@pytest.fixture
async def proxy(
    tmp_path: Path, dovecot: Dovecot, sink: tuple[SinkHandler, int]
) -> AsyncIterator[MailProxy]:
    user, password = dovecot.add_user()

    def open_mailbox(spec, scope, ca_file):
        return ImapMailbox(
            host=spec.host, port=spec.port, user=spec.user, password=spec.password or "",
            tls=spec.tls, folder=spec.folder, processed_folder=spec.processed_folder,
            ca_file=str(dovecot.ca_file), egress_allow=LOOPBACK, connect_timeout_s=5,
            command_timeout_s=5,
        )  # fmt: skip

    mailbox = {"host": "127.0.0.1", "port": dovecot.imaps_port, "user": user,
               "password": password, "tls": "implicit", "processed_folder": "Processed",
               "poll_s": 5}  # fmt: skip
    clock = Clock()
    async with pec_service(
        tmp_path, sink[1], open_mailbox, mailbox, clock, run_reporter=False
    ) as service:
        service.test_clock, service.mailbox_user = clock, user  # type: ignore[attr-defined]
        yield service


async def sent(proxy: MailProxy, message_id: str, *recipients: str) -> str:
    message = {"id": message_id, "from": "shop@pec.example.it", "to": list(recipients),
               "subject": "Invoice 7"}  # fmt: skip
    await proxy.submit([message], tenant_id="acme")

    async def is_sent() -> bool:
        return (await proxy.get_message("acme", message_id)).status.value == "sent"

    await until(is_sent, READ_WITHIN_S)
    return (await proxy.get_message("acme", message_id)).message_id


async def pec_entries(proxy: MailProxy) -> list:
    reports = await proxy.outbox.pending_reports("acme", 100)
    return [r.event for r in reports if r.event.event.startswith("pec_")]


async def test_receipts_in_a_real_mailbox_are_reported_and_late_ones_time_out(
    proxy, dovecot: Dovecot
):
    invoice = await sent(proxy, "invoice", "jane@pec.example.it", "gone@pec.example.it")
    silent = await sent(proxy, "silent", "joe@pec.example.it")
    user = proxy.mailbox_user
    for raw in (
        receipt("accettazione", invoice),
        receipt("avvenuta-consegna", invoice, recipient="jane@pec.example.it"),
        receipt("errore-consegna", invoice, recipient="gone@pec.example.it",
                error="5.1.1 - Utente sconosciuto"),
    ):  # fmt: skip
        dovecot.deliver(user, raw)

    async def all_read() -> bool:
        return len(await pec_entries(proxy)) == 3

    await until(all_read, READ_WITHIN_S)
    entries = await pec_entries(proxy)
    assert [(e.event, e.id, e.pec_details) for e in entries] == [
        ("pec_acceptance", "invoice", None),
        ("pec_delivery", "invoice", None),
        ("pec_error", "invoice", "5.1.1 - Utente sconosciuto"),
    ]
    # Applied receipts are set aside in the processed folder.
    assert dovecot.messages(user) == []
    assert len(dovecot.messages(user, "Processed")) == 3
    # The other message never hears from its provider.
    proxy.test_clock.advance(ACCEPTANCE_S + 1)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 1
    proxy.test_clock.advance(DELIVERY_S)
    assert await proxy.bounce_mailboxes.expire_pec_watches() == 0
    timeouts = [(e.id, e.event) for e in await pec_entries(proxy) if e.event == "pec_timeout"]
    assert timeouts == [("silent", "pec_timeout")]
    assert silent != invoice
