"""Mail submitted as it is (the service side of SMTP submission), edge to edge: the
service over a real SQLite file sends to an aiosmtpd sink on loopback; what arrives is
the client's bytes, less the control fields and Bcc, plus Message-ID and Date when they
were missing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.errors import InvalidInput, StorageError
from mailproxy.domain.submitted import MAX_HEADER_BYTES, completed, read_submitted
from mailproxy.service import MailProxy
from mailproxy.service.suppressions import LIST_STATE_BELIEVED_S
from tests.conftest import Clock
from tests.unit.conftest import proxy_to_sink

MESSAGE = (
    b"From: Shop <shop@example.com>\r\n"
    b"To: Jane <jane@example.com>\r\n"
    b"Bcc: audit@example.com,\r\n"
    b"  archive@example.com\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n"
    b"X-Mail-Proxy-Priority: high\r\n"
    b"X-Mail-Proxy-Batch: spring\r\n"
    b'X-Mail-Proxy-Metadata: {"order":\r\n'
    b" 7}\r\n"
    b"X-Keep: yes\r\n"
    b"\r\n"
    b"Hello Jane,\r\n"
    b".a line with a dot\r\n"
    b"Bcc: in the body stays\r\n"
)


@pytest.fixture
async def proxy(tmp_path: Path, sink) -> AsyncIterator[MailProxy]:
    async with proxy_to_sink(tmp_path, sink[1]) as proxy:
        yield proxy


async def submit(proxy, raw=MESSAGE, **options):
    envelope = {
        "tenant_id": "acme", "account_id": None, "mail_from": "shop@example.com",
        "recipients": ["jane@example.com", "audit@example.com", "archive@example.com"],
    } | options  # fmt: skip
    return await proxy.submit_raw(raw, **envelope)


async def test_the_message_goes_out_as_submitted_less_control_fields_and_bcc(proxy, sink):
    handler, _ = sink
    accepted = await submit(proxy)
    await proxy.run_until_idle()
    (received,) = handler.received
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ["jane@example.com", "audit@example.com", "archive@example.com"]
    sent = received.content.split(b"\r\n", 1)[1]  # after our correlation header
    head, body = sent.split(b"\r\n\r\n", 1)
    assert head.startswith(f"Message-ID: <{accepted.message_id}>\r\nDate: ".encode())
    assert b"Bcc" not in head
    assert b"X-Mail-Proxy-Priority" not in head and b"archive@" not in head  # noqa: PT018
    assert head.endswith(
        b"From: Shop <shop@example.com>\r\nTo: Jane <jane@example.com>\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?=\r\nX-Keep: yes"
    )
    assert body == b"Hello Jane,\r\n.a line with a dot\r\nBcc: in the body stays\r\n"
    message = await proxy.get_message("acme", accepted.id)
    assert (message.priority, message.batch_code) == (1, "spring")
    assert message.spec.metadata == {"order": 7}
    assert message.spec.subject == "Café"
    assert message.status == "sent"


async def test_an_id_and_message_id_of_the_client_are_kept(proxy, sink):
    raw = b"Message-ID: <given@example.com>\r\nDate: Mon, 7 Dec 2026 06:00:00 +0000\r\n" + (
        b"X-Mail-Proxy-Id: order-7\r\nSubject: s\r\n\r\nbody\r\n"
    )
    accepted = await submit(proxy, raw, recipients=["jane@example.com"])
    assert (accepted.id, accepted.message_id) == ("order-7", "given@example.com")
    await proxy.run_until_idle()
    sent = sink[0].received[0].content.split(b"\r\n", 1)[1]
    assert sent == raw.replace(b"X-Mail-Proxy-Id: order-7\r\n", b"")
    with pytest.raises(InvalidInput, match="already sent"):
        await submit(proxy, raw, recipients=["jane@example.com"])


async def test_submissions_arriving_together_each_get_their_own_answer(proxy, sink):
    def raw(message_id: str) -> bytes:
        return f"X-Mail-Proxy-Id: {message_id}\r\nSubject: {message_id}\r\n\r\nbody\r\n".encode()

    # Stored together while the store is busy; the second "twice" replaces the first (as
    # it would one after the other), each of the others is stored as it came.
    answers = await asyncio.gather(
        *(submit(proxy, raw(f"c{n}"), recipients=["jane@example.com"]) for n in range(20)),
        submit(proxy, raw("twice"), recipients=["first@example.com"]),
        submit(proxy, raw("twice"), recipients=["second@example.com"]),
    )
    assert [a.id for a in answers] == [f"c{n}" for n in range(20)] + ["twice", "twice"]
    assert (await proxy.counts("acme")) == {"pending": 21}
    assert (await proxy.get_message("acme", "twice")).spec.to == ("second@example.com",)
    await proxy.run_until_idle()
    assert len(sink[0].received) == 21
    # Once sent, an id arriving beside new ones is refused alone.
    late = await asyncio.gather(
        submit(proxy, raw("c3"), recipients=["jane@example.com"]),
        submit(proxy, raw("new"), recipients=["jane@example.com"]),
        return_exceptions=True,
    )
    assert isinstance(late[0], InvalidInput) and "already sent" in str(late[0])  # noqa: PT018
    assert not isinstance(late[1], BaseException) and late[1].id == "new"  # noqa: PT018


async def test_a_store_that_cannot_commit_fails_each_waiting_submission_and_keeps_none(
    tmp_path, sink
):
    async with proxy_to_sink(tmp_path, sink[1], busy_timeout_s=0.2) as proxy:
        locker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the file
        try:
            answers = await asyncio.gather(
                *(submit(proxy, recipients=[f"r{n}@example.com"]) for n in range(5)),
                return_exceptions=True,
            )
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert all(isinstance(a, StorageError) for a in answers), answers
        assert (await proxy.counts("acme")) == {}
        # The store back, the next submission is stored.
        assert (await submit(proxy)).id


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (b"X-Mail-Proxy-Metadata: [1, 2]", "x-mail-proxy-metadata"),
        (b"X-Mail-Proxy-Metadata: {nope", "x-mail-proxy-metadata"),
        (b"X-Mail-Proxy-Deferred-Until: tomorrow", "x-mail-proxy-deferred-until"),
        (b"X-Mail-Proxy-Priority: urgent", "priority"),
        (b"X-Mail-Proxy-Id: a/b", "id"),
        # Digits of other scripts are not Unix seconds nor priorities.
        ("X-Mail-Proxy-Priority: \u00b2".encode(), "priority"),
        ("X-Mail-Proxy-Deferred-Until: \u0661\u0667".encode(), "deferred-until"),
        # Nested past what the JSON reader takes, in one folded field.
        (b'X-Mail-Proxy-Metadata: {"a":' + b"\r\n [" * 40_000, "metadata"),
        (b"X-Mail-Proxy-Batch: \xff\xfe", "batch"),
        # Strict JSON, as over REST.
        (b'X-Mail-Proxy-Metadata: {"a": NaN}', "metadata"),
        (b'X-Mail-Proxy-Metadata: {"a": "\\ud800"}', "metadata"),
        (b'X-Mail-Proxy-Metadata: {"a":' + b"\r\n [" * 900 + b"]" * 900 + b"}", "metadata"),
        (b"X-Mail-Proxy-Batch: one\r\nX-Mail-Proxy-Batch: two", "given twice"),
    ],
)
async def test_a_malformed_control_field_refuses_the_message_and_queues_nothing(
    proxy, header, field
):
    with pytest.raises(InvalidInput) as refused:
        await submit(proxy, header + b"\r\nSubject: s\r\n\r\nbody\r\n")
    assert field in str(refused.value).lower()
    assert (await proxy.counts("acme")) == {}


async def test_recipients_are_checked_one_by_one(proxy):
    await proxy.suppressions.add("acme", [{"address": "gone@example.com"}])
    assert await proxy.check_recipient("acme", "jane@example.com") is None
    assert await proxy.check_recipient("acme", "gone@example.com") == "suppressed"
    assert await proxy.check_recipient("acme", "not an address") == "invalid"


async def test_an_entry_added_here_is_refused_at_once_after_the_list_was_read_empty(proxy):
    assert await proxy.check_recipient("acme", "gone@example.com") is None  # list empty
    await proxy.suppressions.add("acme", [{"address": "gone@example.com"}])
    assert await proxy.check_recipient("acme", "gone@example.com") == "suppressed"


async def test_an_entry_another_process_added_is_refused_once_the_list_is_read_again(
    tmp_path, sink
):
    clock = Clock()
    async with proxy_to_sink(tmp_path, sink[1], clock=clock) as proxy:
        assert await proxy.check_recipient("acme", "gone@example.com") is None  # list empty
        other = MailProxy(
            store=SqliteStore(tmp_path / "s.db"), transports={}, run_dispatcher=False, clock=clock
        )
        async with other:
            await other.suppressions.add("acme", [{"address": "gone@example.com"}])
        # Believed empty a few seconds more: the claim refuses the address meanwhile.
        assert await proxy.check_recipient("acme", "gone@example.com") is None
        clock.advance(LIST_STATE_BELIEVED_S)
        assert await proxy.check_recipient("acme", "gone@example.com") == "suppressed"
        await proxy.submit(
            [{"id": "late", "from": "shop@example.com", "to": ["gone@example.com"],
              "subject": "s"}], tenant_id="acme",
        )  # fmt: skip
        await proxy.run_until_idle()
        assert (await proxy.get_message("acme", "late")).error == "suppressed"


def test_bare_line_feeds_become_crlf_and_a_message_without_body_keeps_its_fields():
    mail = read_submitted(b"Subject: s\nX-Mail-Proxy-Batch: b\nTo: x@example.com\n")
    assert mail.content == b"Subject: s\r\nTo: x@example.com\r\n"
    assert mail.fields == {"batch_code": "b"}


def test_folded_fields_are_read_whole_and_every_bcc_is_dropped():
    folded_bcc = b"Bcc: a@example.com,\r\n" + b" b@example.com,\r\n" * 50_000
    mail = read_submitted(
        b"From: x@example.com\r\n" + folded_bcc
        + b"Resent-From: x@example.com\r\nResent-Bcc: hidden@example.com\r\n"
        + b"Message-ID:\r\n <folded-1234567890@example.com>\r\n"
        + b"X-Mail-Proxy-Batch: long\r\n  name\r\n\r\nbody\r\n"
    )  # fmt: skip
    assert mail.content == (
        b"From: x@example.com\r\nResent-From: x@example.com\r\n"
        b"Message-ID:\r\n <folded-1234567890@example.com>\r\n\r\nbody\r\n"
    )
    assert mail.message_id == "<folded-1234567890@example.com>"
    assert mail.fields == {"batch_code": "long name"}


def test_a_message_id_with_a_comment_is_read_and_an_unreadable_one_is_not_doubled():
    commented = read_submitted(b"Message-ID: <abc-def@example.com> (comment)\r\n\r\nx\r\n")
    assert commented.message_id == "<abc-def@example.com>"
    unreadable = read_submitted(b"Message-ID: garbage\r\n\r\nx\r\n")
    assert unreadable.message_id is None
    assert completed(unreadable, message_id="new@example.com", date_ts=0).count(b"Message-ID") == 1


def test_a_message_without_header_gets_one_in_front_of_its_body():
    mail = read_submitted(b"just a body line\r\nBcc: not a field here\r\n")
    assert mail.content == b"\r\njust a body line\r\nBcc: not a field here\r\n"
    added = completed(mail, message_id="m@example.com", date_ts=0)
    header, body = added.split(b"\r\n\r\n", 1)
    assert header.startswith(b"Message-ID: <m@example.com>\r\nDate: ")
    assert body == b"just a body line\r\nBcc: not a field here\r\n"


def test_a_header_block_past_a_mebibyte_is_refused():
    header = b"X-Long: " + b"x" * 70 + b"\r\n"
    with pytest.raises(InvalidInput, match="header"):
        read_submitted(header * (MAX_HEADER_BYTES // len(header) + 1) + b"\r\nbody\r\n")
    # A large body is no header.
    mail = read_submitted(b"Subject: s\r\n\r\n" + b"x\n" * MAX_HEADER_BYTES)
    assert mail.content == b"Subject: s\r\n\r\n" + b"x\r\n" * MAX_HEADER_BYTES
