"""The SMTP transport against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.mime import AttachmentContent, Outgoing, render
from mailproxy.domain.model import Account
from mailproxy.domain.outcome import AccountBroken, Delivered, Permanent, Temporary, Unknown
from mailproxy.domain.validation import decode_inline, parse_message
from tests.smtp_sink import free_port

pytestmark = pytest.mark.system

BASE = {
    "id": "m1",
    "from": "Sender <s@example.com>",
    "to": ["r@example.com"],
    "subject": "hi",
    "body": "hello",
}


def outgoing(**fields) -> Outgoing:
    spec = parse_message({**BASE, **fields})
    inline = [
        AttachmentContent(a.filename, decode_inline(a.storage_path)) for a in spec.attachments
    ]
    rendered = render(spec, message_id=f"{spec.id}@example.com", date_ts=0, attachments=inline)
    return Outgoing("t1", spec.id, rendered)


def account(port: int, **fields) -> Account:
    return Account(id="a1", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False, **fields)


@pytest.fixture
async def transport():
    t = SmtpTransport(
        connect_timeout_s=2,
        command_timeout_s=2,
        data_timeout_s=0.5,
        egress_allow=parse_networks("127.0.0.0/8"),
    )
    yield t
    await t.close()


async def test_a_rich_message_arrives_intact_with_bcc_only_in_the_envelope(sink, transport):
    handler, port = sink
    message = outgoing(
        subject="Grüße, 你好 — report",
        cc=["c@example.com"],
        bcc=["hidden@example.com"],
        body="text",
        body_html="<p>html</p>",
        headers={"X-Campaign": "spring"},
        attachments=[
            {
                "filename": "données.txt",
                "storage_path": "base64:" + base64.b64encode(b"payload").decode(),
            }
        ],
    )
    outcome = await transport.send(account(port), message)
    assert outcome == Delivered(250)
    (got,) = handler.received
    assert got.mail_from == "s@example.com"
    assert got.rcpt_tos == ["r@example.com", "c@example.com", "hidden@example.com"]
    msg = email.message_from_bytes(got.content, policy=email.policy.default)
    assert str(msg["Subject"]) == "Grüße, 你好 — report"
    assert msg["Bcc"] is None
    assert b"hidden@example.com" not in got.content
    assert msg["X-Campaign"] == "spring"
    assert msg["Message-ID"] == "<m1@example.com>"
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "données.txt"
    assert attachment.get_payload(decode=True) == b"payload"
    body = msg.get_body(("plain",))
    assert body.get_content().strip() == "text"


async def test_connections_are_reused_per_account(sink, transport):
    handler, port = sink
    sessions_before = handler.sessions  # the sink's own readiness probe opened one
    for n in range(3):
        assert isinstance(await transport.send(account(port), outgoing(id=f"m{n}")), Delivered)
    assert len(handler.received) == 3
    assert handler.sessions - sessions_before == 1


async def test_a_refused_recipient_is_listed_while_the_others_get_it(sink, transport):
    handler, port = sink
    handler.replies["RCPT:bad@example.com"] = "550 5.1.1 no such user"
    outcome = await transport.send(account(port), outgoing(to=["r@example.com", "bad@example.com"]))
    assert isinstance(outcome, Delivered)
    assert [(r.address, r.code) for r in outcome.refused] == [("bad@example.com", 550)]
    assert handler.received[0].rcpt_tos == ["r@example.com"]


@pytest.mark.parametrize(
    ("command", "reply", "expected", "code"),
    [
        ("MAIL", "451 4.3.0 try later", Temporary, 451),
        ("MAIL", "553 5.1.8 bad sender", Permanent, 553),
        ("RCPT", "450 4.2.1 busy", Temporary, 450),
        ("RCPT", "550 5.1.1 unknown", Permanent, 550),
        ("DATA", "451 4.3.0 local error", Temporary, 451),
        ("DATA", "554 5.7.1 rejected as spam", Permanent, 554),
    ],
)
async def test_reply_codes_at_each_phase(sink, transport, command, reply, expected, code):
    handler, port = sink
    handler.replies[command] = reply
    outcome = await transport.send(account(port), outgoing())
    assert type(outcome) is expected
    assert outcome.smtp_code == code
    assert handler.received == []
    handler.replies.clear()  # the connection stays usable after a refusal
    assert isinstance(await transport.send(account(port), outgoing(id="m2")), Delivered)


async def test_disconnect_after_the_final_dot_is_unknown(sink, transport):
    handler, port = sink
    handler.after_dot = "drop"
    outcome = await transport.send(account(port), outgoing())
    assert isinstance(outcome, Unknown)
    assert len(handler.received) == 1  # the server kept it: a retry may duplicate


async def test_timeout_after_the_final_dot_is_unknown(sink, transport):
    handler, port = sink
    handler.after_dot, handler.stall_s = "stall", 1.5
    outcome = await transport.send(account(port), outgoing())
    assert isinstance(outcome, Unknown)


async def test_a_refused_connection_is_a_temporary_account_failure(transport):
    outcome = await transport.send(account(free_port()), outgoing())
    assert isinstance(outcome, Temporary)
    assert outcome.account_level


async def test_required_tls_without_starttls_never_falls_back_to_plaintext(sink, transport):
    handler, port = sink
    required = Account(id="a1", tenant_id="t1", host="127.0.0.1", port=port, use_tls=True)
    outcome = await transport.send(required, outgoing())
    assert isinstance(outcome, AccountBroken)
    assert handler.received == []


async def test_credentials_without_auth_on_offer_never_send_unauthenticated(sink, transport):
    handler, port = sink
    outcome = await transport.send(account(port, user="u", password="p"), outgoing())
    assert isinstance(outcome, AccountBroken)
    assert handler.received == []


async def test_utf8_local_part_needs_a_server_offering_smtputf8(sink, utf8_sink, transport):
    _, plain_port = sink
    utf8_handler, utf8_port = utf8_sink
    message = outgoing(to=["δοκιμή@παράδειγμα.δοκιμή"])
    assert isinstance(await transport.send(account(plain_port), message), Permanent)
    assert isinstance(await transport.send(account(utf8_port), message), Delivered)
    assert utf8_handler.received[0].rcpt_tos == ["δοκιμή@παράδειγμα.δοκιμή"]
    assert "SMTPUTF8" in utf8_handler.received[0].mail_options


async def test_idn_domain_goes_out_as_punycode_without_smtputf8(sink, transport):
    handler, port = sink
    assert isinstance(
        await transport.send(account(port), outgoing(to=["user@bücher.example"])), Delivered
    )
    assert handler.received[0].rcpt_tos == ["user@xn--bcher-kva.example"]
