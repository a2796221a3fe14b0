"""The Django email backend's refusals and per-message fields, against a real
``mail-proxy serve`` (Django configured in this process, settings overridden per test)."""

from __future__ import annotations

import time

import django
import pytest
from django.conf import settings

from mailproxy.client import Client, Rejected
from tests.system.conftest import TOKEN

pytestmark = pytest.mark.system

if not settings.configured:
    settings.configure(EMAIL_BACKEND="mailproxy.contrib.django.EmailBackend")
    django.setup()

from django.core.mail import EmailMessage, get_connection  # noqa: E402
from django.test import override_settings  # noqa: E402


@pytest.fixture
def backend_for(server, sink):
    """A tenant ``acme`` sending to the sink, and Django set to send as it."""
    url, _ = server
    with Client(url, token=TOKEN) as admin:
        created = admin.create_tenant({"id": "acme"})
        for account in ("main", "bulk"):
            admin.put_account(
                {"id": account, "host": "127.0.0.1", "port": sink[1], "use_tls": False,
                 "is_default": account == "main"}, tenant_id="acme",
            )  # fmt: skip
    with (
        override_settings(MAILPROXY_URL=url, MAILPROXY_TOKEN=created.api_key),
        Client(url, token=created.api_key) as client,
    ):
        yield client


def test_a_refused_message_raises_with_its_reason_and_the_others_are_queued(backend_for):
    good = EmailMessage("Hi", "body", "shop@example.com", ["ada@example.org"])
    good.mailproxy_id = "good"
    bad = EmailMessage("Hi", "body", "not an address", ["ada@example.org"])
    bad.mailproxy_id = "bad"
    with pytest.raises(Rejected) as refused:
        get_connection().send_messages([good, bad])
    assert [(r.id, r.reason.split(":")[0]) for r in refused.value.rejected] == [
        ("bad", "invalid address in from")
    ]
    assert "bad: invalid address in from" in str(refused.value)
    assert backend_for.get_message("good").id == "good"
    again = EmailMessage("Hi", "body", "not an address", ["ada@example.org"])
    assert get_connection(fail_silently=True).send_messages([again]) == 0


def test_mailproxy_fields_travel_as_message_attributes(backend_for):
    later = int(time.time()) + 3600
    message = EmailMessage("Campaign", "body", "shop@example.com", ["ada@example.org"])
    message.mailproxy_id = "c1"
    message.priority = "low"
    message.batch_code = "spring"
    message.deferred_ts = later
    message.account_id = "bulk"
    message.metadata = {"campaign": 9}
    assert message.send() == 1
    stored = backend_for.get_message("c1")
    assert (stored.priority, stored.batch_code, stored.account_id) == (3, "spring", "bulk")
    assert (stored.status, stored.deferred_ts, stored.metadata) == (
        "scheduled", later, {"campaign": 9},
    )  # fmt: skip


def test_an_unreachable_service_raises_unless_silent(backend_for):
    message = EmailMessage("Hi", "body", "shop@example.com", ["ada@example.org"])
    # Nothing listens on the discard port; no retries, so that the test does not wait.
    with override_settings(MAILPROXY_URL="http://127.0.0.1:9", MAILPROXY_RETRIES=0):
        assert get_connection(fail_silently=True).send_messages([message]) == 0
        with pytest.raises(Exception, match="onnect"):
            get_connection().send_messages([message])


def test_extra_headers_are_read_as_django_means_them_whatever_their_case(backend_for, sink):
    message = EmailMessage(
        "Headers", "body", "bounce@mailer.example", ["ada@example.org"],
        headers={"from": "Shop <shop@example.com>", "message-id": "<own@example.com>",
                 "Reply-to": "help@example.com", "X-Campaign": "spring"},
    )  # fmt: skip
    message.mailproxy_id = "h1"
    assert message.send() == 1
    stored = backend_for.get_message("h1")
    assert stored.message_id == "own@example.com"
    deadline = time.monotonic() + 30
    while stored.status != "sent" and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = backend_for.get_message("h1")
    (received,) = [r for r in sink[0].received if b"own@example.com" in r.content]
    assert received.mail_from == "bounce@mailer.example"
    header = received.content.split(b"\r\n\r\n", 1)[0]
    assert b"From: Shop <shop@example.com>" in header
    assert b"Reply-To: help@example.com" in header
    assert b"X-Campaign: spring" in header
    for name in ("To", "date"):
        refused = EmailMessage("x", "y", "shop@example.com", ["ada@example.org"],
                               headers={name: "something"})  # fmt: skip
        with pytest.raises(ValueError, match=f"extra header {name}"):
            refused.send()
