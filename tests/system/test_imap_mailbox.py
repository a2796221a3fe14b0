"""The IMAP bounce mailbox against real servers on loopback: how each failure reads
(refused login, certificates, nothing listening, STARTTLS missing, egress rule, missing
folder, a connection that drops), and a genuine DSN — made by Postfix for an unknown
local user, delivered into Dovecot — read back through the adapter.

The failures the port's contract names (``MailboxUnavailable``) are what matters; the
reasons are checked for the words an operator needs, and never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import smtplib
from collections.abc import Sequence
from typing import Any

import pytest

from mailproxy.adapters.imap import ImapMailbox
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import MailboxUnavailable
from tests.mailservers import (
    BOUNCE_DOMAIN,
    CERTIFIED_NAME,
    LOCAL_DOMAIN,
    Dovecot,
    Postfix,
)
from tests.smtp_sink import free_port
from tests.tcp_peers import line_server

pytestmark = pytest.mark.system

LOOPBACK = parse_networks("127.0.0.0/8")
#: A bound for a broken build (a DSN that never comes), not a measurement.
DSN_WITHIN_S = 30.0


class Names:
    """A resolver (the port) that knows a few test names and nothing else: no test
    asks the system's DNS."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def __call__(self, host: str, port: int, scope: str | None = None) -> Sequence[str]:
        if host in self.names:
            return self.names[host]
        if host.replace(".", "").isdigit():
            return [host]
        raise OSError(f"{host}: name not known")


def mailbox_of(dovecot: Dovecot, user: str, password: str, **options: Any) -> ImapMailbox:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": dovecot.imaps_port,
        "user": user,
        "password": password,
        "tls": "implicit",
        "ca_file": str(dovecot.ca_file),
        "egress_allow": LOOPBACK,
        "connect_timeout_s": 5,
        "command_timeout_s": 5,
        **options,
    }
    return ImapMailbox(**settings)


async def open_and_close(mailbox: ImapMailbox) -> None:
    session = await mailbox.open()
    await session.close()


async def unavailable(mailbox: ImapMailbox) -> MailboxUnavailable:
    with pytest.raises(MailboxUnavailable) as raised:
        await open_and_close(mailbox)
    assert raised.value.mailbox == mailbox.key
    return raised.value


async def test_the_key_names_user_host_port_and_folder(dovecot):
    mailbox = mailbox_of(dovecot, "bounces", "x", port=993, folder="Bounces")
    assert mailbox.key == "bounces@127.0.0.1:993/Bounces"


async def test_a_refused_login_is_unavailable_without_the_password(dovecot):
    user, password = dovecot.add_user()
    wrong = "Wr0ng-" + password
    error = await unavailable(mailbox_of(dovecot, user, wrong))
    assert "LOGIN" in error.reason
    assert wrong not in str(error)
    assert wrong not in repr(error)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_a_certificate_from_an_unknown_ca_is_refused(dovecot, tls):
    user, password = dovecot.add_user()
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    error = await unavailable(mailbox_of(dovecot, user, password, ca_file=None, tls=tls, port=port))
    assert "certificate" in error.reason


async def test_the_certificate_is_checked_against_the_host_name_not_the_address(dovecot):
    user, password = dovecot.add_user()
    names = Names({CERTIFIED_NAME: ["127.0.0.1"], "other.mailproxy.test": ["127.0.0.1"]})
    session = await mailbox_of(dovecot, user, password, host=CERTIFIED_NAME, resolve=names).open()
    await session.close()
    error = await unavailable(
        mailbox_of(dovecot, user, password, host="other.mailproxy.test", resolve=names)
    )
    assert "certificate" in error.reason


async def test_without_verification_any_certificate_is_accepted(dovecot):
    user, password = dovecot.add_user()
    names = Names({"other.mailproxy.test": ["127.0.0.1"]})
    mailbox = mailbox_of(
        dovecot, user, password, host="other.mailproxy.test", resolve=names,
        ca_file=None, tls_verify=False,
    )  # fmt: skip
    session = await mailbox.open()
    try:
        assert await session.uids() == []
    finally:
        await session.close()


async def test_plain_imap_works_when_tls_is_off(dovecot):
    user, password = dovecot.add_user()
    dovecot.deliver(user, b"Subject: plain\r\n\r\nin the clear\r\n")
    session = await mailbox_of(dovecot, user, password, port=dovecot.imap_port, tls="none").open()
    try:
        [uid] = await session.uids()
        assert await session.fetch(uid) == b"Subject: plain\r\n\r\nin the clear\r\n"
    finally:
        await session.close()


async def test_a_port_with_nothing_listening_is_unavailable(dovecot):
    error = await unavailable(mailbox_of(dovecot, "u", "p", port=free_port()))
    assert "connection" in error.reason


async def test_a_host_the_egress_rule_forbids_is_unavailable_before_any_connection(dovecot):
    error = await unavailable(mailbox_of(dovecot, "u", "p", egress_allow=()))
    assert "not allowed" in error.reason


async def test_a_name_that_does_not_resolve_is_unavailable(dovecot):
    error = await unavailable(
        mailbox_of(dovecot, "u", "p", host="nowhere.mailproxy.test", resolve=Names({}))
    )
    assert "resolve" in error.reason


async def test_a_missing_folder_is_unavailable(dovecot):
    user, password = dovecot.add_user()
    error = await unavailable(mailbox_of(dovecot, user, password, folder="No Such Folder"))
    assert "No Such Folder" in error.reason


async def test_a_server_that_does_not_speak_imap_is_unavailable():
    with line_server([b"220 smtp.mailproxy.test ESMTP\r\n"], hold_s=5) as port:
        mailbox = ImapMailbox(
            host="127.0.0.1", port=port, user="u", password="p", tls="none",
            egress_allow=LOOPBACK, connect_timeout_s=0.5,
        )  # fmt: skip
        error = await unavailable(mailbox)
    assert "greeting" in error.reason


@pytest.mark.parametrize(
    "answer",
    [
        [b"* OK " + b"x" * (1024 * 1024)] * 3,  # a greeting line that never ends
        [b"* OK ready\r\n* 1 FETCH (BODY[] {999999999}\r\n", b"y" * 65536],  # a huge literal
    ],
    ids=["endless line", "huge literal"],
)
async def test_a_server_that_sends_too_much_is_cut_off(answer):
    with line_server(answer, hold_s=5) as port:
        mailbox = ImapMailbox(
            host="127.0.0.1", port=port, user="u", password="p", tls="none",
            egress_allow=LOOPBACK, connect_timeout_s=2,
        )  # fmt: skip
        error = await unavailable(mailbox)
    # Cut off at once, not when the server hangs up (it holds the connection open).
    assert "connection lost" in error.reason


@contextlib.asynccontextmanager
async def scripted_imap(answers: dict[str, list[bytes]], heard: list[bytes]):
    """An IMAP peer on 127.0.0.1 (its port) that greets, then answers each command
    named in ``answers`` with those lines (``{tag}`` replaced) — a command without
    answers closes the connection — and records every line it hears."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK scripted IMAP4rev1 peer ready\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                heard.append(line)
                tag, _, rest = line.decode().strip().partition(" ")
                command = rest.split(" ")[0].upper()
                if command == "UID":
                    command = "UID " + rest.split(" ")[1].upper()
                reply = answers.get(command)
                if not reply:
                    break
                for reply_line in reply:
                    writer.write(reply_line.replace(b"{tag}", tag.encode()))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


CAPABILITY_WITHOUT_STARTTLS = [
    b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
    b"{tag} OK done\r\n",
]


async def test_starttls_required_but_not_offered_is_refused_before_the_password_is_sent():
    heard: list[bytes] = []
    answers = {"CAPABILITY": CAPABILITY_WITHOUT_STARTTLS, "LOGOUT": [b"{tag} OK bye\r\n"]}
    async with scripted_imap(answers, heard) as port:
        mailbox = ImapMailbox(
            host="127.0.0.1", port=port, user="u", password="s3cret-pw", tls="starttls",
            egress_allow=LOOPBACK, connect_timeout_s=5, command_timeout_s=5,
        )  # fmt: skip
        error = await unavailable(mailbox)
    assert "STARTTLS" in error.reason
    assert not any(b"s3cret-pw" in line for line in heard)


async def test_a_connection_lost_mid_session_makes_the_session_unavailable():
    heard: list[bytes] = []
    answers = {
        "CAPABILITY": CAPABILITY_WITHOUT_STARTTLS,
        "LOGIN": [b"{tag} OK logged in\r\n"],
        "SELECT": [
            b"* 1 EXISTS\r\n",
            b"* OK [UIDVALIDITY 42] UIDs valid\r\n",
            b"* OK [UIDNEXT 2] next\r\n",
            b"{tag} OK [READ-WRITE] selected\r\n",
        ],
    }  # NOOP, the first command of uids(), closes the connection
    async with scripted_imap(answers, heard) as port:
        mailbox = ImapMailbox(
            host="127.0.0.1", port=port, user="u", password="p", tls="none",
            egress_allow=LOOPBACK, connect_timeout_s=5, command_timeout_s=30,
        )  # fmt: skip
        session = await mailbox.open()
        assert session.uidvalidity == 42
        with pytest.raises(MailboxUnavailable) as raised:
            async with asyncio.timeout(20):  # a bound for a broken build
                await session.uids()
        assert "lost" in raised.value.reason
        with pytest.raises(MailboxUnavailable):
            await session.fetch(1)
        await session.close()


def send_to_unknown_local_user(postfix: Postfix, token: str) -> None:
    message = (
        f"From: app@{BOUNCE_DOMAIN}\r\nTo: nosuchuser@{LOCAL_DOMAIN}\r\n"
        f"Subject: will bounce\r\nMessage-ID: <{token}@{BOUNCE_DOMAIN}>\r\n\r\nhello\r\n"
    )
    with smtplib.SMTP("127.0.0.1", postfix.port, "client.test", timeout=10) as client:
        client.sendmail(f"bounces+{token}@{BOUNCE_DOMAIN}", [f"nosuchuser@{LOCAL_DOMAIN}"], message)


async def test_postfix_bounces_an_unknown_user_and_the_dsn_is_read_over_imap(dovecot, postfix):
    user = postfix.mailbox_user
    session = await mailbox_of(
        dovecot, user, dovecot.users[user], processed_folder="Processed"
    ).open()
    try:
        assert await session.uids() == []
        send_to_unknown_local_user(postfix, "xyz")
        async with asyncio.timeout(DSN_WITHIN_S):
            while not (uids := await session.uids()):
                await session.wait(DSN_WITHIN_S)
        [uid] = uids
        raw = await session.fetch(uid)
        assert raw is not None
        report = email.message_from_bytes(raw, policy=email.policy.default)
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        assert report["To"] == f"bounces+xyz@{BOUNCE_DOMAIN}"
        status = next(
            part for part in report.walk() if part.get_content_type() == "message/delivery-status"
        )
        fields = status.as_bytes()
        assert b"Status: 5.1.1" in fields
        assert f"Final-Recipient: rfc822; nosuchuser@{LOCAL_DOMAIN}".encode() in fields
        await session.set_aside([uid])
        assert await session.uids() == []
    finally:
        await session.close()


async def test_a_wait_cancelled_while_idling_leaves_a_working_session(dovecot):
    user, password = dovecot.add_user()
    session = await mailbox_of(dovecot, user, password).open()
    try:
        waiter = asyncio.ensure_future(session.wait(600))
        await asyncio.sleep(0.3)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        dovecot.deliver(user, b"Subject: after\r\n\r\nidle\r\n")
        [uid] = await session.uids()
        assert await session.fetch(uid) == b"Subject: after\r\n\r\nidle\r\n"
    finally:
        await session.close()
