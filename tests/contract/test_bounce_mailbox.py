"""Contract of the bounce-mailbox port (``ports/mailbox.py``), on every mailbox: the
in-memory one, and the IMAP one on a real Dovecot over loopback — implicit TLS with IDLE
and MOVE, STARTTLS with the keyword instead of a processed folder, and a server that
offers neither IDLE nor MOVE (polling; COPY, ``\\Deleted`` and ``UID EXPUNGE``).

Mail arrives as a delivery agent would put it there (into the maildir), never through
the adapter under test, and what was set aside is read back independently (stdlib
imaplib for Dovecot).
"""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from mailproxy.adapters.imap import PROCESSED_KEYWORD, ImapMailbox
from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import MailboxUnavailable
from tests.mailservers import Dovecot, running_dovecot

MAILBOX_KINDS = ["memory", "imap-tls", "imap-starttls-keyword", "imap-polling"]
#: Bounds for a broken build (a wait that never returns), not measurements.
LIVENESS_S = 60.0
#: A Dovecot that announces neither IDLE nor MOVE after login.
WITHOUT_IDLE_AND_MOVE = "IMAP4rev1 LITERAL+ SASL-IR UIDPLUS ENABLE"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot({}, spares=64) as server:
        yield server


@pytest.fixture(scope="module")
def plain_dovecot() -> Iterator[Dovecot]:
    with running_dovecot({}, spares=32, capabilities=WITHOUT_IDLE_AND_MOVE) as server:
        yield server


@dataclass
class Harness:
    """A mailbox of one kind with what the suite needs around it: putting mail in, and
    reading back what was set aside, without the adapter."""

    mailbox: MemoryMailbox | ImapMailbox
    deliver: Callable[[bytes], object]
    set_aside_contents: Callable[[], list[bytes]]
    #: The same mailbox with a wrong password (or otherwise impossible to open).
    broken: MemoryMailbox | ImapMailbox


def imap_set_aside(server: Dovecot, user: str, processed: str | None) -> list[bytes]:
    """What was set aside, read with the standard library's IMAP client: the processed
    folder's messages, or the folder's messages with the keyword."""
    with imaplib.IMAP4_SSL(
        "127.0.0.1",
        server.imaps_port,
        ssl_context=ssl.create_default_context(cafile=server.ca_file),
    ) as client:
        client.login(user, server.users[user])
        if processed is not None:
            status, _ = client.select(processed, readonly=True)
            if status != "OK":
                return []
            _, data = client.uid("SEARCH", None, "ALL")
        else:
            client.select("INBOX", readonly=True)
            _, data = client.uid("SEARCH", None, "KEYWORD", PROCESSED_KEYWORD)
        contents = []
        for uid in data[0].split():
            _, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            contents.append(bytes(fetched[0][1]))
        return contents


def imap_harness(
    server: Dovecot, *, tls: str, processed: str | None, poll_interval_s: float = 30.0
) -> Harness:
    user, password = server.add_user()
    port = server.imaps_port if tls == "implicit" else server.imap_port

    def mailbox(password: str) -> ImapMailbox:
        return ImapMailbox(
            host="127.0.0.1",
            port=port,
            user=user,
            password=password,
            tls=tls,  # type: ignore[arg-type]
            processed_folder=processed,
            ca_file=str(server.ca_file),
            egress_allow=parse_networks("127.0.0.0/8"),
            connect_timeout_s=10,
            command_timeout_s=10,
            poll_interval_s=poll_interval_s,
        )

    return Harness(
        mailbox=mailbox(password),
        deliver=lambda raw: server.deliver(user, raw),
        set_aside_contents=lambda: imap_set_aside(server, user, processed),
        broken=mailbox("not-" + password),
    )


@pytest.fixture(params=MAILBOX_KINDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    kind = request.param
    if kind == "memory":
        memory = MemoryMailbox()
        broken = MemoryMailbox()
        broken.unavailable = "login refused"

        return Harness(
            mailbox=memory,
            deliver=memory.deliver,
            set_aside_contents=lambda: list(memory.processed),
            broken=broken,
        )
    if kind == "imap-tls":
        server = request.getfixturevalue("dovecot")
        return imap_harness(server, tls="implicit", processed="Processed")
    if kind == "imap-starttls-keyword":
        server = request.getfixturevalue("dovecot")
        return imap_harness(server, tls="starttls", processed=None)
    server = request.getfixturevalue("plain_dovecot")
    return imap_harness(server, tls="starttls", processed="Done.Bounces", poll_interval_s=0.2)


@pytest.fixture
async def session(harness: Harness) -> AsyncIterator[object]:
    opened = await harness.mailbox.open()
    try:
        yield opened
    finally:
        await opened.close()


def message(n: int) -> bytes:
    """A small RFC 5322 message, CRLF line ends, with a line that starts with a dot."""
    return (
        f"From: MAILER-DAEMON@bounce.test\r\nTo: bounces+t{n}@bounce.test\r\n"
        f"Subject: report {n}\r\nMessage-ID: <r{n}@bounce.test>\r\n\r\n"
        f"line one of {n}\r\n.a line with a dot\r\n\r\nlast\r\n"
    ).encode()


async def test_uidvalidity_is_positive_and_stays_the_same_across_sessions(harness, session):
    harness.deliver(message(1))
    assert session.uidvalidity > 0
    again = await harness.mailbox.open()
    try:
        assert again.uidvalidity == session.uidvalidity
    finally:
        await again.close()


async def test_uids_ascend_and_list_new_deliveries(harness, session):
    assert await session.uids() == []
    for n in range(3):
        harness.deliver(message(n))
    first = await session.uids()
    assert len(first) == 3
    assert first == sorted(first)
    assert len(set(first)) == 3
    harness.deliver(message(3))
    second = await session.uids()
    assert second[:3] == first
    assert len(second) == 4
    assert second[3] > first[2]


async def test_fetch_returns_the_exact_bytes_and_leaves_the_message_listed(harness, session):
    for n in range(2):
        harness.deliver(message(n))
    uids = await session.uids()
    assert [await session.fetch(uid) for uid in uids] == [message(0), message(1)]
    assert await session.uids() == uids
    assert harness.set_aside_contents() == []


async def test_fetch_of_a_uid_that_is_not_there_is_none(harness, session):
    harness.deliver(message(1))
    [uid] = await session.uids()
    assert await session.fetch(uid + 1000) is None


async def test_set_aside_messages_leave_the_listing_and_are_kept_as_processed(harness, session):
    for n in range(3):
        harness.deliver(message(n))
    uids = await session.uids()
    await session.set_aside(uids[:2])
    assert await session.uids() == uids[2:]
    assert sorted(harness.set_aside_contents()) == [message(0), message(1)]
    assert await session.fetch(uids[2]) == message(2)


async def test_set_aside_is_idempotent(harness, session):
    for n in range(2):
        harness.deliver(message(n))
    uids = await session.uids()
    await session.set_aside(uids[:1])
    await session.set_aside(uids[:1])
    await session.set_aside([uids[0], uids[1] + 1000])
    await session.set_aside([])
    assert await session.uids() == uids[1:]
    assert harness.set_aside_contents() == [message(0)]


async def test_what_was_set_aside_stays_aside_in_the_next_session(harness, session):
    for n in range(2):
        harness.deliver(message(n))
    uids = await session.uids()
    await session.set_aside(uids[:1])
    await session.close()
    again = await harness.mailbox.open()
    try:
        assert await again.uids() == uids[1:]
        assert again.uidvalidity == session.uidvalidity
    finally:
        await again.close()


async def test_wait_returns_when_mail_arrives(harness, session):
    assert await session.uids() == []

    async def deliver_soon() -> None:
        await asyncio.sleep(0.3)
        harness.deliver(message(1))

    delivery = asyncio.ensure_future(deliver_soon())
    async with asyncio.timeout(LIVENESS_S):
        await session.wait(600)
    await delivery
    assert len(await session.uids()) == 1


async def test_wait_returns_at_once_for_mail_that_came_after_the_last_listing(harness, session):
    harness.deliver(message(1))
    assert len(await session.uids()) == 1
    harness.deliver(message(2))
    async with asyncio.timeout(LIVENESS_S):
        await session.wait(600)
    assert len(await session.uids()) == 2


async def test_wait_returns_after_its_timeout_when_nothing_arrives(harness, session):
    harness.deliver(message(1))
    listed = await session.uids()
    async with asyncio.timeout(LIVENESS_S):
        await session.wait(0.5)
    assert await session.uids() == listed
    assert await session.fetch(listed[0]) == message(1)


async def test_close_is_idempotent_and_a_closed_session_is_unavailable(harness):
    opened = await harness.mailbox.open()
    await opened.close()
    await opened.close()
    with pytest.raises(MailboxUnavailable):
        await opened.uids()


async def test_a_mailbox_that_cannot_be_opened_is_unavailable_under_its_key(harness):
    with pytest.raises(MailboxUnavailable) as raised:
        await harness.broken.open()
    assert raised.value.mailbox == harness.broken.key
    assert raised.value.reason
