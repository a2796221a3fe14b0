"""The SMTP submission guide's examples, as written, against ``mail-proxy serve``: a real
Postfix with mailproxy as its relayhost (SASL client authentication), and Django's SMTP
email backend over STARTTLS (a test CA). What they submit reaches an aiosmtpd sink."""

from __future__ import annotations

import asyncio
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import until
from tests.mailservers import relaying_postfix

pytestmark = pytest.mark.system

GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "smtp-submission.md"
#: A bound against a hang, not a measurement.
WITHIN_S = 60.0


def fenced(language: str, after: str) -> str:
    """The first ``language`` block of the guide after the heading ``after``."""
    text = GUIDE.read_text()
    section = text[text.index(f"## {after}") :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S)[1]


def received_subjects(sink) -> set[str]:
    return {
        line.split(b": ", 1)[1].decode()
        for received in sink.received
        for line in received.content.split(b"\r\n")
        if line.startswith(b"Subject: ")
    }


async def test_postfix_with_mailproxy_as_its_relayhost_as_the_guide_writes_it(served):
    smtp_port, key, sink = served.smtp_port, served.key, served.sink
    example = fenced("text", "Postfix as a relay")
    assert "smtp_sasl_auth_enable = yes" in example
    assert "smtp_sasl_security_options = noanonymous" in example
    with relaying_postfix(smtp_port, "acme", key) as postfix:
        with smtplib.SMTP("127.0.0.1", postfix.port, "client.test", timeout=10) as client:
            client.sendmail(
                "app@example.com", ["jane@example.com", "hidden@example.com"],
                b"From: app@example.com\r\nTo: jane@example.com\r\n"
                b"Subject: through postfix\r\n\r\nhello\r\n",
            )  # fmt: skip

        async def arrived() -> bool:
            return "through postfix" in received_subjects(sink)

        await until(arrived, WITHIN_S)
    (received,) = [r for r in sink.received if b"through postfix" in r.content]
    assert sorted(received.rcpt_tos) == ["hidden@example.com", "jane@example.com"]


async def test_django_as_the_guide_configures_it(served):
    smtp_port, key, sink, ca_file = served.smtp_port, served.key, served.sink, served.ca_file
    settings = fenced("python", "Django")
    settings = settings.replace('"mail-proxy.internal"', '"127.0.0.1"')
    settings = settings.replace("587", str(smtp_port))
    settings = settings.replace('"the tenant\'s API key"', repr(key))
    script = (
        "import django\nfrom django.conf import settings\n"
        "settings.configure(**{k: v for k, v in vars().items() if k.isupper()})\n"
        "django.setup()\nfrom django.core.mail import EmailMessage\n"
        # Django names the client after socket.getfqdn(): set here, so that nothing asks
        # the system's resolver.
        "from django.core.mail.utils import DNS_NAME\nDNS_NAME._fqdn = 'client.test'\n"
        "EmailMessage('from django', 'hello', 'app@example.com', ['jane@example.com'],"
        " bcc=['audit@example.com']).send()\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", settings + "\n" + script],
        env={"SSL_CERT_FILE": str(ca_file), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    async def arrived() -> bool:
        return "from django" in received_subjects(sink)

    await until(arrived, WITHIN_S)
    (received,) = [r for r in sink.received if b"from django" in r.content]
    assert sorted(received.rcpt_tos) == ["audit@example.com", "jane@example.com"]
    assert b"audit@example.com" not in received.content  # Bcc never travels
