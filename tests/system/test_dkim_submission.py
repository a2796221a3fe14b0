"""A message submitted over SMTP with an 8-bit body is DKIM-signed on its way out: the
listener and the service as ``serve`` builds them (SQLite file), the message relayed to
an aiosmtpd sink, the signature checked by dkimpy and by OpenDKIM."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.conftest import until
from tests.dkim_check import dkimpy_verifies, opendkim_says
from tests.smtp_sink import running_sink
from tests.system.test_smtp_submission_lifecycle import serving

pytestmark = pytest.mark.system

BODY = "Caffè a 2 €, tè a 1 € — grazie.\r\n.una riga che comincia col punto\r\n"
MESSAGE = (
    "From: Negozio <negozio@shop.example.com>\r\nTo: cliente@example.org\r\n"
    "Subject: Conferma\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + BODY
).encode()


async def test_a_submitted_8bit_message_goes_out_signed(tmp_path):
    with running_sink() as (handler, sink_port):
        async with serving(tmp_path, GMP_SECURITY_EGRESS_ALLOW="127.0.0.0/8") as (
            proxy, _, port, key,
        ):  # fmt: skip
            await proxy.put_account(
                {"id": "relay", "tenant_id": "acme", "host": "127.0.0.1", "port": sink_port,
                 "use_tls": False}
            )  # fmt: skip
            made, record = await proxy.dkim.add(
                "acme", {"domain": "example.com", "selector": "mp1", "algorithm": "rsa-sha256"}
            )

            def submit() -> None:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as client:
                    client.login("acme/relay", key)
                    client.sendmail(
                        "negozio@shop.example.com", ["cliente@example.org"], MESSAGE,
                        mail_options=["BODY=8BITMIME"],
                    )  # fmt: skip

            await asyncio.to_thread(submit)

            async def delivered() -> bool:
                return bool(handler.received)

            await until(delivered, 30)
            content = handler.received[-1].content
            assert content.startswith(b"DKIM-Signature:")
            assert content.endswith(BODY.encode())  # byte for byte, 8-bit as it came
            assert dkimpy_verifies(content, [record])
            assert "dkim=pass" in opendkim_says(content, [record])
            assert made.selector == "mp1"
