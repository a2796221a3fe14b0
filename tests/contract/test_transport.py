"""Contract of the ``Transport`` port, run against every transport: SMTP (to a real
aiosmtpd sink on 127.0.0.1), capture (to a real folder) and the scripted transport shipped
for applications' tests.

Failure handling specific to SMTP (reply codes, phases, dropped connections) is in
``tests/system/test_smtp_transport.py``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.mime import AttachmentContent, Outgoing, render
from mailproxy.domain.model import Account
from mailproxy.domain.outcome import Delivered
from mailproxy.domain.validation import parse_message
from mailproxy.ports.transport import Transport
from mailproxy.testing import ScriptedTransport
from tests.smtp_sink import running_sink


@dataclass
class Destination:
    transport: Transport
    account: Account
    #: The contents the destination holds so far, in any order.
    held: Callable[[], list[bytes]]


@pytest.fixture(params=["smtp", "capture", "scripted"])
async def destination(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Destination]:
    if request.param == "smtp":
        with running_sink() as (handler, port):
            transport = SmtpTransport(
                connect_timeout_s=2,
                command_timeout_s=2,
                data_timeout_s=2,
                egress_allow=parse_networks("127.0.0.0/8"),
            )
            account = Account(id="a1", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False)
            yield Destination(transport, account, lambda: [r.content for r in handler.received])
            await transport.close()
    elif request.param == "scripted":
        scripted = ScriptedTransport()
        account = Account(id="a1", tenant_id="t1", kind="smtp", host="smtp.example.com", port=25)
        yield Destination(scripted, account, lambda: [m.rendered.content for m in scripted.sent])
        await scripted.close()
    else:
        capture = CaptureTransport(tmp_path / "outbox")
        account = Account(id="a1", tenant_id="t1", kind="capture")
        yield Destination(
            capture,
            account,
            lambda: [p.read_bytes() for p in (tmp_path / "outbox").rglob("*.eml")],
        )
        await capture.close()


def outgoing(message_id: str, body: str = "hello", attachments=()) -> Outgoing:
    spec = parse_message(
        {
            "id": message_id,
            "from": "Sender <s@example.com>",
            "to": ["r@example.com"],
            "bcc": ["hidden@example.com"],
            "subject": f"Grüße {message_id}",
            "body": body,
        }
    )
    rendered = render(
        spec, message_id=f"{message_id}@example.com", date_ts=1_800_000_000,
        attachments=attachments,
    )  # fmt: skip
    return Outgoing("t1", message_id, rendered)


async def test_a_delivered_message_is_held_byte_for_byte(destination: Destination):
    message = outgoing("m1")

    outcome = await destination.transport.send(destination.account, message)

    assert isinstance(outcome, Delivered)
    held = destination.held()
    assert len(held) == 1
    # SMTP servers may add trace headers above ours; the message itself is unchanged.
    assert (
        held[0].replace(b"\r\n", b"\n").endswith(message.rendered.content.replace(b"\r\n", b"\n"))
    )
    assert b"hidden@example.com" not in held[0]


@pytest.mark.parametrize(
    "body",
    [".starts with a dot\n..two dots\n.\nlast line", "plain\r\nlines\nand a lone\rreturn"],
)
async def test_lines_with_dots_and_any_line_ending_arrive_intact(destination, body):
    attachment = AttachmentContent("data.bin", bytes(range(256)) * 300)
    message = outgoing("m1", body, [attachment])

    assert isinstance(await destination.transport.send(destination.account, message), Delivered)

    (held,) = destination.held()
    parsed = email.message_from_bytes(held, policy=email.policy.default)
    text, attached = list(parsed.iter_parts())
    assert text.get_content().replace("\r\n", "\n").rstrip("\n") == (
        body.replace("\r\n", "\n").replace("\r", "\n")
    )
    assert attached.get_content() == attachment.content


async def test_concurrent_sends_are_all_delivered_once(destination: Destination):
    messages = [outgoing(f"m{n}") for n in range(8)]

    outcomes = await asyncio.gather(
        *(destination.transport.send(destination.account, m) for m in messages)
    )

    assert all(isinstance(o, Delivered) for o in outcomes)
    held = destination.held()
    assert len(held) == 8
    for message in messages:
        assert sum(f"<{message.id}@example.com>".encode() in h for h in held) == 1


async def test_close_is_idempotent_and_the_transport_still_sends_afterwards(
    destination: Destination,
):
    await destination.transport.send(destination.account, outgoing("m1"))
    await destination.transport.close()
    await destination.transport.close()

    outcome = await destination.transport.send(destination.account, outgoing("m2"))

    assert isinstance(outcome, Delivered)
    assert len(destination.held()) == 2
