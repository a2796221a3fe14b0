"""SMTP submission from real clients (Python's smtplib, swaks) against ``mail-proxy serve``:
AUTH, the per-recipient refusals, the limits, STARTTLS, pipelining, 8BITMIME and SMTPUTF8,
and what the message looks like when it reaches the sink and the API."""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
import ssl
import subprocess

import pytest

from tests.conftest import until
from tests.mailservers import install_packages, missing_server
from tests.report_receiver import running_receiver
from tests.system.conftest import SUBMISSION_MAX_BYTES, SUBMISSION_MAX_RECIPIENTS, Submission

pytestmark = pytest.mark.system

SWAKS = "/usr/bin/swaks"
#: The clients' own name: given, so that smtplib never asks the system's resolver for it.
LOCAL_NAME = "client.test"
#: A bound against a hang, not a measurement.
WITHIN_S = 30.0


def connected(served: Submission, *, login: tuple[str, str] | None = None) -> smtplib.SMTP:
    """An smtplib client after EHLO and STARTTLS (verifying the test CA), logged in as
    ``login`` when given."""
    client = smtplib.SMTP("127.0.0.1", served.smtp_port, LOCAL_NAME, timeout=WITHIN_S)
    client.ehlo("client.test")
    client.starttls(context=ssl.create_default_context(cafile=str(served.ca_file)))
    client.ehlo("client.test")
    if login is not None:
        client.login(*login)
    return client


def queued_id(reply: bytes) -> str:
    text = reply.decode()
    assert text.startswith("2.0.0 queued as "), text
    return text.removeprefix("2.0.0 queued as ")


async def delivered(served: Submission, marker: bytes) -> bytes:
    """The content of the one message the sink received that contains ``marker``."""

    async def arrived() -> bool:
        return any(marker in r.content for r in served.sink.received)

    await until(arrived, WITHIN_S)
    (content,) = [r.content for r in served.sink.received if marker in r.content]
    return content


async def test_a_submitted_message_is_committed_before_its_250_and_sent_as_it_came(served):
    message = (
        b"From: App <app@example.com>\r\n"
        b"To: jane@example.com\r\n"
        b"Bcc: audit@example.com\r\n"
        b"Subject: as it came\r\n"
        b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <as-it-came@example.com>\r\n"
        b"X-Mail-Proxy-Priority: high\r\n"
        b"X-Mail-Proxy-Batch: december\r\n"
        b'X-Mail-Proxy-Metadata: {"order": 42}\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"unchanged  spacing\tand tabs\r\n"
        b".a line that starts with a dot\r\n"
    )
    with connected(served, login=("acme", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        client.rcpt("audit@example.com")
        code, reply = client.data(message)
    assert code == 250
    message_id = queued_id(reply)
    # Committed before the 250: the API has it at once.
    with served.api() as api:
        record = api.get(f"/messages/{message_id}", params={"tenant_id": "acme"}).json()["message"]
    assert record["priority"] == 1
    assert record["batch_code"] == "december"
    assert record["metadata"] == {"order": 42}
    assert record["message_id"] == "as-it-came@example.com"
    content = await delivered(served, b"as it came")
    dropped = (b"Bcc:", b"X-Mail-Proxy-Priority:", b"X-Mail-Proxy-Batch:", b"X-Mail-Proxy-Meta")
    expected = b"".join(
        line for line in message.splitlines(keepends=True) if not line.startswith(dropped)
    )
    # Byte for byte, but for the correlation header that every sent message carries first
    # (it maps a bounce that quotes the headers back to the message).
    correlation, rest = content.split(b"\r\n", 1)
    assert correlation.startswith(b"X-Mail-Proxy-Ref: ")
    assert rest == expected
    (received,) = [r for r in served.sink.received if b"as it came" in r.content]
    assert sorted(received.rcpt_tos) == ["audit@example.com", "jane@example.com"]

    with served.api() as api:

        async def sent() -> bool:
            answer = api.get(f"/messages/{message_id}", params={"tenant_id": "acme"})
            return answer.json()["message"]["status"] == "sent"

        await until(sent, WITHIN_S)


async def test_a_message_without_message_id_and_date_gets_both(served):
    with connected(served, login=("acme", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, reply = client.data(b"Subject: bare\r\n\r\nbody\r\n")
    assert code == 250
    message_id = queued_id(reply)
    content = await delivered(served, b"Subject: bare")
    with served.api() as api:
        record = api.get(f"/messages/{message_id}", params={"tenant_id": "acme"}).json()["message"]
    assert f"Message-ID: <{record['message_id']}>\r\n".encode() in content
    assert b"\r\nDate: " in content or content.startswith(b"Date: ")
    assert content.endswith(b"\r\n\r\nbody\r\n")
    assert content.count(b"Message-ID:") == 1


async def test_the_implicit_tls_port_speaks_tls_from_the_first_byte(served):
    context = ssl.create_default_context(cafile=str(served.ca_file))
    with smtplib.SMTP_SSL(
        "127.0.0.1", served.tls_port, LOCAL_NAME, context=context, timeout=WITHIN_S
    ) as client:
        client.ehlo("client.test")
        assert "starttls" not in client.esmtp_features  # already TLS
        client.login("acme", served.key)
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, reply = client.data(b"Subject: over implicit TLS\r\n\r\nbody\r\n")
    assert code == 250, reply
    await delivered(served, b"over implicit TLS")


def test_auth_login_works_too(served):
    with connected(served) as client:
        client.user, client.password = "acme", served.key
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("acme", "not-a-key"),
        ("other", "KEY"),  # the right key under another tenant's name
        ("acme/", "KEY"),  # an empty account name
        ("", "KEY"),
    ],
)
def test_wrong_credentials_get_535(served, user, password):
    with connected(served) as client, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        client.login(user, password.replace("KEY", served.key))
    assert refused.value.smtp_code == 535


def test_nothing_is_accepted_without_auth(served):
    with connected(served) as client:
        code, reply = client.mail("app@example.com")
    assert code == 530, reply


def test_auth_is_offered_over_starttls_and_to_loopback_clients(served):
    with smtplib.SMTP("127.0.0.1", served.smtp_port, LOCAL_NAME, timeout=WITHIN_S) as client:
        client.ehlo("client.test")
        # A loopback client may authenticate before TLS (nothing crosses a network);
        # other addresses are offered AUTH only after STARTTLS (unit tests).
        assert "starttls" in client.esmtp_features
        assert {"PLAIN", "LOGIN"} <= set(client.esmtp_features["auth"].split())
        for extension in ("size", "8bitmime", "smtputf8", "pipelining"):
            assert extension in client.esmtp_features
        assert client.esmtp_features["size"] == str(SUBMISSION_MAX_BYTES)


async def test_an_account_is_picked_with_tenant_slash_account(served):
    with served.api() as api:
        account = {"id": "second", "tenant_id": "acme", "host": "127.0.0.1",
                   "port": served.sink_port, "use_tls": False}  # fmt: skip
        assert api.post("/account", json=account).status_code == 200
    with connected(served, login=("acme/second", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, reply = client.data(b"Subject: through second\r\n\r\nbody\r\n")
    assert code == 250
    with served.api() as api:
        record = api.get(f"/messages/{queued_id(reply)}", params={"tenant_id": "acme"}).json()[
            "message"
        ]
    assert record["account_id"] == "second"


def test_an_unknown_account_is_refused_and_nothing_is_queued(served):
    with connected(served, login=("acme/nosuch", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, reply = client.data(b"Subject: nowhere\r\n\r\nbody\r\n")
    assert code == 554, reply
    assert b"nosuch" in reply


async def test_each_recipient_is_judged_alone_and_the_others_are_accepted(served):
    with served.api() as api:
        answer = api.post(
            "/suppressions",
            json={"tenant_id": "acme", "entries": [{"address": "gone@example.com"}]},
        )
        assert answer.status_code == 200, answer.text
    with connected(served, login=("acme", served.key)) as client:
        client.mail("app@example.com")
        assert client.rcpt("gone@example.com")[0] == 550
        assert client.rcpt("no-at-sign")[0] == 501
        accepted = [f"r{n}@example.com" for n in range(SUBMISSION_MAX_RECIPIENTS)]
        for address in accepted:
            assert client.rcpt(address)[0] == 250
        assert client.rcpt("one-too-many@example.com")[0] == 452
        code, _ = client.data(b"Subject: judged alone\r\n\r\nbody\r\n")
    assert code == 250
    await delivered(served, b"judged alone")
    (received,) = [r for r in served.sink.received if b"judged alone" in r.content]
    assert sorted(received.rcpt_tos) == sorted(accepted)


def test_a_message_over_the_size_limit_is_refused_552_before_and_after_data(served):
    large = b"Subject: large\r\n\r\n" + (b"x" * 998 + b"\r\n") * (SUBMISSION_MAX_BYTES // 1000 + 1)
    with connected(served, login=("acme", served.key)) as client:
        # Announced with SIZE: refused at MAIL.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("app@example.com", ["jane@example.com"], large)
        assert refused.value.smtp_code == 552
        client.rset()
        # Not announced: read to the end, then refused.
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, _ = client.data(large)
    assert code == 552


async def test_smtputf8_and_8bitmime_arrive_byte_for_byte(served):
    message = (
        "From: Jürgen <jürgen@exämple.com>\r\nTo: zoë@exämple.com\r\n"
        "Subject: grüße aus Köln\r\n\r\nÄrger über Öl — 8 bits\r\n"
    ).encode()
    with connected(served, login=("acme", served.key)) as client:
        client.sendmail(
            "jürgen@exämple.com", ["zoë@exämple.com"], message,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )  # fmt: skip
    content = await delivered(served, "grüße aus Köln".encode())
    assert content.endswith("\r\n\r\nÄrger über Öl — 8 bits\r\n".encode())
    (received,) = [r for r in served.sink.received if "grüße".encode() in r.content]
    assert received.rcpt_tos == ["zoë@exämple.com"]


@pytest.fixture(scope="module")
def swaks() -> str:
    """The swaks client (Debian's package, installed when missing and possible)."""
    reason = install_packages(SWAKS, ("swaks",))
    if reason is not None:
        missing_server(reason)
    return SWAKS


async def test_swaks_with_starttls_auth_plain_pipelining_and_an_8bit_body(served, swaks):
    done = await asyncio.to_thread(
        subprocess.run,
        [swaks, "--server", f"127.0.0.1:{served.smtp_port}", "--ehlo", "swaks.test",
         "--tls", "--tls-verify", "--tls-ca-path", str(served.ca_file),
         "--auth", "PLAIN", "--auth-user", "acme", "--auth-password", served.key,
         "--pipeline", "--from", "app@example.com", "--to", "jane@example.com,bob@example.com",
         "--header", "Subject: from swaks", "--body", "Grüße, 8 bits\n"],
        capture_output=True, timeout=WITHIN_S,
    )  # fmt: skip
    transcript = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, transcript[-3000:]
    assert "PIPELINING" in transcript
    assert "queued as" in transcript
    content = await delivered(served, b"from swaks")
    assert "Grüße, 8 bits".encode() in content
    (received,) = [r for r in served.sink.received if b"from swaks" in r.content]
    assert sorted(received.rcpt_tos) == ["bob@example.com", "jane@example.com"]


def test_swaks_without_auth_is_refused_530(served, swaks):
    done = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{served.smtp_port}", "--ehlo", "swaks.test",
         "--from", "app@example.com", "--to", "jane@example.com"],
        capture_output=True, timeout=WITHIN_S,
    )  # fmt: skip
    assert done.returncode != 0
    assert "530 5.7.0" in done.stdout.decode()


def test_a_store_that_cannot_write_answers_451_and_keeps_nothing(served):
    database = sqlite3.connect(served.folder / "mailproxy.db", isolation_level=None)
    with served.api() as api:
        before = len(api.get("/messages", params={"tenant_id": "acme"}).json()["messages"])
    try:
        database.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        with connected(served, login=("acme", served.key)) as client:
            client.mail("app@example.com")
            client.rcpt("jane@example.com")
            code, reply = client.data(b"Subject: locked out\r\n\r\nbody\r\n")
        assert code == 451, reply
    finally:
        database.execute("ROLLBACK")
        database.close()
    with served.api() as api:
        after = len(api.get("/messages", params={"tenant_id": "acme"}).json()["messages"])
    assert after == before
    # The client tries again, as a 451 tells it to, and it is taken.
    with connected(served, login=("acme", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        code, _ = client.data(b"Subject: locked out\r\n\r\nbody\r\n")
    assert code == 250


def test_the_metrics_count_sessions_refusals_failures_and_acceptances(served):
    with connected(served, login=("acme", served.key)) as client:
        client.mail("app@example.com")
        client.rcpt("jane@example.com")
        assert client.data(b"Subject: counted\r\n\r\nbody\r\n")[0] == 250
    with connected(served) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("acme", "wrong")
    with served.api() as api:
        metrics = api.get("/metrics").text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gmp_submission_")
    }
    assert values["gmp_submission_sessions_total"] >= 2
    assert values['gmp_submission_accepted_total{tenant_id="acme"}'] >= 1
    assert values['gmp_submission_auth_failures_total{outcome="wrong"}'] >= 1
    assert values['gmp_submission_refused_total{code="535"}'] >= 1


async def test_downstream_a_submitted_message_is_one_posted_over_rest(served):
    """The same message over SMTP and over REST: the same record fields, the same report
    entry fields, both delivered (the reports carry the metadata either way)."""
    with running_receiver() as receiver, served.api() as api:
        tenant = {"id": "twins", "client_base_url": receiver.url}
        key = api.post("/tenant", json=tenant).json()["api_key"]
        account = {"id": "main", "tenant_id": "twins", "host": "127.0.0.1",
                   "port": served.sink_port, "use_tls": False, "is_default": True}  # fmt: skip
        assert api.post("/account", json=account).status_code == 200
        with connected(served, login=("twins", key)) as client:
            client.mail("app@example.com")
            client.rcpt("jane@example.com")
            code, reply = client.data(
                b"From: app@example.com\r\nTo: jane@example.com\r\nSubject: twin smtp\r\n"
                b"X-Mail-Proxy-Id: over-smtp\r\nX-Mail-Proxy-Batch: twins\r\n"
                b'X-Mail-Proxy-Metadata: {"via": "either"}\r\n\r\nbody\r\n'
            )
        assert (code, queued_id(reply)) == (250, "over-smtp")
        rest = {"id": "over-rest", "tenant_id": "twins", "from": "app@example.com",
                "to": ["jane@example.com"], "subject": "twin rest", "body": "body",
                "batch_code": "twins", "metadata": {"via": "either"}}  # fmt: skip
        assert api.post("/commands/add-messages", json={"messages": [rest]}).status_code == 200

        def entries() -> dict[str, dict]:
            return {e["id"]: e for call in receiver.calls for e in call.entries}

        async def both_reported() -> bool:
            return {"over-smtp", "over-rest"} <= {
                i for i, e in entries().items() if e.get("sent_ts") is not None
            }

        await until(both_reported, WITHIN_S)
        smtp_entry, rest_entry = entries()["over-smtp"], entries()["over-rest"]
        assert smtp_entry.keys() == rest_entry.keys()
        assert smtp_entry["metadata"] == rest_entry["metadata"] == {"via": "either"}
        records = [
            api.get(f"/messages/{i}", params={"tenant_id": "twins"}).json()["message"]
            for i in ("over-smtp", "over-rest")
        ]
        assert records[0].keys() == records[1].keys()
        for field in ("status", "priority", "batch_code", "account_id", "metadata"):
            assert records[0][field] == records[1][field], field


async def test_a_connection_past_the_per_address_cap_is_told_421(served):
    """On the event loop ``serve`` runs (uvloop where installed)."""
    held = []
    try:
        for _ in range(20):  # the default max_sessions_per_address
            reader, writer = await asyncio.open_connection("127.0.0.1", served.smtp_port)
            assert (await reader.readline()).startswith(b"220 ")
            held.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.smtp_port)
        held.append(writer)
        assert (await reader.readline()).startswith(b"421 4.7.0 Too many connections")
        assert await reader.read() == b""
    finally:
        for writer in held:
            writer.close()
            await writer.wait_closed()
