"""An application's own test, written as the testing guide shows: the shipped fakes put
together behind MailProxy, edge to edge, with no network and no files."""

from __future__ import annotations

import email
import email.policy

from mailproxy.domain.model import Status
from mailproxy.service import MailProxy
from mailproxy.testing import (
    MemoryAttachmentSource,
    MemoryStore,
    RecordingReportSender,
    ScriptedTransport,
)
from tests.conftest import Clock

INVOICE = b"%PDF-1.4 invoice 42"


async def test_a_message_with_a_stored_attachment_is_sent_and_reported_with_the_fakes():
    store, transport = MemoryStore(), ScriptedTransport()
    documents, reporter = MemoryAttachmentSource(), RecordingReportSender()
    documents.put("acme", "invoices/42.pdf", INVOICE)
    documents.put("other", "invoices/43.pdf", b"not acme's")
    proxy = MailProxy(
        store=store, transports={"smtp": transport},
        attachment_sources=[documents], reporter=reporter, clock=Clock(),
        random_unit=lambda: 0.5, run_dispatcher=False,
    )  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "acme", "client_base_url": "http://127.0.0.1:9/hooks"})
        await proxy.put_account(
            {"id": "a1", "tenant_id": "acme", "host": "127.0.0.1", "port": 2525}
        )
        attachment = {"filename": "42.pdf", "storage_path": "invoices/42.pdf",
                      "fetch_mode": "filesystem"}  # fmt: skip
        elsewhere = attachment | {"filename": "43.pdf", "storage_path": "invoices/43.pdf"}
        result = await proxy.submit(
            [
                {
                    "id": "inv-42",
                    "from": "billing@acme.example",
                    "to": ["ada@example.com"],
                    "subject": "Invoice",
                    "body": "attached",
                    "attachments": [attachment],
                },
                {
                    "id": "inv-43",
                    "from": "billing@acme.example",
                    "to": ["ada@example.com"],
                    "subject": "Invoice",
                    "body": "attached",
                    "attachments": [elsewhere],
                },
            ],
            tenant_id="acme",
        )
        assert result.queued == 2
        await proxy.run_until_idle()
        await proxy.report_once()

        assert transport.sent_ids == ["inv-42"]
        sent = email.message_from_bytes(
            transport.sent[0].rendered.content, policy=email.policy.default
        )
        (part,) = list(sent.iter_attachments())
        assert (part.get_filename(), part.get_content()) == ("42.pdf", INVOICE)
        assert documents.fetched == [("acme", "invoices/42.pdf")]
        assert (await proxy.get_message("acme", "inv-43")).status == Status.ERROR
        reported = {e.id: e.event for call in reporter.calls for e in call.events}
        assert reported == {"inv-42": "sent", "inv-43": "error"}
