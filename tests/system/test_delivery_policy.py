"""The service against a programmable aiosmtpd on 127.0.0.1: what each SMTP answer
becomes (state, attempts, reports), with a controllable clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailproxy.adapters.memory import MemoryStore
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy
from tests.conftest import Clock
from tests.system.conftest import short_timeout_service

pytestmark = pytest.mark.system


def proxy_for(clock: Clock) -> MailProxy:
    return short_timeout_service(clock, MemoryStore(), run_dispatcher=False)


async def deliver(sink, messages):
    _handler, port = sink
    clock = Clock()
    proxy = proxy_for(clock)
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_account(
            {"id": "a1", "tenant_id": "t1", "host": "127.0.0.1", "port": port,
             "use_tls": False, "max_connections": 1}
        )  # fmt: skip
        await proxy.submit(messages, tenant_id="t1")
        await proxy.run_until_idle()
        states = {m["id"]: await proxy.get_message("t1", m["id"]) for m in messages}
        events = [r.event for r in await proxy.outbox.pending_reports("t1", 100)]
    return states, events


def msg(message_id: str, to: str) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": [to], "subject": "s", "body": "b"}


async def test_rcpt_answers_become_retries_or_errors(sink):
    handler, _ = sink
    handler.replies["RCPT:busy@example.com"] = "451 4.3.0 try again later"
    handler.replies["RCPT:full@example.com"] = "452 4.2.2 mailbox full"
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    states, events = await deliver(
        sink,
        [
            msg("busy", "busy@example.com"),
            msg("full", "full@example.com"),
            msg("gone", "gone@example.com"),
            msg("ok", "ok@example.com"),
        ],
    )
    assert (states["busy"].status, states["busy"].attempts, states["busy"].smtp_code) == (
        Status.DEFERRED, 1, 451
    )  # fmt: skip
    assert states["busy"].due_ts == pytest.approx(Clock().now + 60 * 1.0, abs=0.01)
    assert (states["full"].status, states["full"].smtp_code) == (Status.DEFERRED, 452)
    assert (states["gone"].status, states["gone"].smtp_code) == (Status.ERROR, 550)
    assert "550" in states["gone"].error
    assert states["ok"].status is Status.SENT
    kinds = {(e.id, e.event) for e in events}
    assert kinds == {
        ("busy", "deferred"), ("full", "deferred"), ("gone", "error"), ("ok", "sent"),
        ("gone", "bounced"),  # "no such user": a hard bounce of the address as well
    }  # fmt: skip
    assert len(handler.received) == 1


async def test_421_at_mail_is_a_retry_and_the_next_message_still_goes(sink):
    handler, _ = sink
    handler.replies["MAIL"] = "421 4.7.0 closing, too busy"
    states, events = await deliver(sink, [msg("m1", "r@example.com")])
    assert (states["m1"].status, states["m1"].attempts, states["m1"].smtp_code) == (
        Status.DEFERRED, 1, 421
    )  # fmt: skip
    assert (states["m1"].wait_reason, events[0].event) == ("retry", "deferred")


async def test_550_at_data_is_final(sink):
    handler, _ = sink
    handler.replies["DATA"] = "554 5.6.0 content rejected"
    states, events = await deliver(sink, [msg("m1", "r@example.com")])
    assert (states["m1"].status, states["m1"].smtp_code) == (Status.ERROR, 554)
    assert [e.event for e in events] == ["error"]


async def test_a_disconnect_after_the_final_dot_is_unknown_then_retried(sink):
    handler, _ = sink
    handler.after_dot = "drop"
    states, events = await deliver(sink, [msg("m1", "r@example.com")])
    message = states["m1"]
    assert (message.status, message.possible_duplicate, message.attempts) == (
        Status.DEFERRED, True, 1
    )  # fmt: skip
    assert [e.event for e in events] == ["unknown"]
    assert len(handler.received) == 1  # the server kept it: the retry may duplicate it


async def test_a_message_in_flight_when_its_account_is_deleted_fails_instead_of_waiting(sink):
    handler, port = sink
    handler.after_dot = "stall"  # the server takes it and never answers: unknown
    handler.stall_s = 1.5
    clock = Clock()
    async with proxy_for(clock) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_account({"id": "a1", "tenant_id": "t1", "host": "127.0.0.1",
                                 "port": port, "use_tls": False})  # fmt: skip
        message = {"id": "m1", "from": "s@example.com", "to": ["r@example.com"],
                   "subject": "s", "account_id": "a1"}  # fmt: skip
        await proxy.submit([message], tenant_id="t1")
        attempt = asyncio.create_task(proxy.dispatch_once())
        await asyncio.to_thread(arrived, handler)  # at the sink, its answer pending
        await proxy.delete_account("t1", "a1")  # nothing waiting: no force needed
        await attempt
        failed = await proxy.get_message("t1", "m1")
        clock.advance(86400)
        assert await proxy.run_until_idle() == 0
        reports = [r.event for r in await proxy.outbox.pending_reports("t1", 10)]
    assert (failed.status, failed.error, failed.attempts) == (Status.ERROR, "account deleted", 1)
    assert failed.possible_duplicate is True  # the server took it before the timeout
    assert [(r.event, r.error, r.possible_duplicate) for r in reports] == [
        ("error", "account deleted", True)
    ]


def arrived(handler, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not handler.received:
        assert time.monotonic() < deadline, "the message never reached the sink"
        time.sleep(0.005)
