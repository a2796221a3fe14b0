"""Delivery reports from the service to a real HTTP receiver on 127.0.0.1, for messages
sent to a real aiosmtpd: every entry kind and field, auth and signatures, failures and
retries with the same event ids, timeouts, redirects, isolation between tenants, the sync
protocol and heartbeats (time injected)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator

import pytest

from mailproxy.service import MailProxy, ReportingOptions
from tests.conftest import Clock
from tests.report_receiver import Receiver, Reply, running_receiver
from tests.system.conftest import reporting_service as make_proxy

pytestmark = pytest.mark.system

SECRET = "whsec-test-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
async def proxy(tmp_path, sink) -> AsyncIterator[MailProxy]:
    async with make_proxy(tmp_path, Clock(), run_dispatcher=False) as proxy:
        yield proxy


async def add_tenant(proxy: MailProxy, tenant_id: str, url: str, smtp_port: int, **fields):
    await proxy.put_tenant(
        {"id": tenant_id, "client_base_url": url, "webhook_secret": SECRET, **fields}
    )
    await proxy.put_account(
        {"id": "main", "tenant_id": tenant_id, "host": "127.0.0.1", "port": smtp_port,
         "use_tls": False, "is_default": True}
    )  # fmt: skip


def msg(message_id: str, to: str = "r@example.com", **fields) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": [to], "subject": "s", **fields}


async def test_every_outcome_reaches_the_receiver_with_its_fields(proxy, sink, receiver):
    handler, smtp_port = sink
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    handler.replies["RCPT:busy@example.com"] = "451 4.3.0 try later"
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    await proxy.submit(
        [
            msg("ok", metadata={"order": 1}),
            msg("gone", "gone@example.com"),
            msg("busy", "busy@example.com"),
        ],
        tenant_id="acme",
    )
    await proxy.run_until_idle()
    handler.after_dot = "drop"
    await proxy.submit([msg("lost")], tenant_id="acme")
    await proxy.run_until_idle()
    assert await proxy.report_once() == 1

    (call,) = receiver.calls
    assert call.path == "/mail-proxy/sync"
    entries = {e["id"]: e for e in call.entries if e["event"] != "bounced"}
    (bounced,) = [e for e in call.entries if e["event"] == "bounced"]
    assert (bounced["id"], bounced["recipient"], bounced["bounce_type"], bounced["status"]) == (
        "gone", "gone@example.com", "hard", "5.1.1",
    )  # fmt: skip
    common = {"tenant_id": "acme", "account_id": "main", "attempt": 1}
    assert entries["ok"] | common == entries["ok"]
    assert (entries["ok"]["event"], entries["ok"]["metadata"]) == ("sent", {"order": 1})
    assert isinstance(entries["ok"]["sent_ts"], int)
    assert (entries["gone"]["event"], entries["gone"]["smtp_code"]) == ("error", 550)
    assert "550" in entries["gone"]["error"]
    assert isinstance(entries["gone"]["error_ts"], int)
    busy = entries["busy"]
    assert (busy["event"], busy["smtp_code"]) == ("deferred", 451)
    assert busy["deferred_ts"] > proxy.now()
    assert "451" in busy["deferred_reason"]
    lost = entries["lost"]
    assert lost["event"] == "unknown"
    assert isinstance(lost["unknown_ts"], int)
    assert (
        len({e["event_id"] for e in call.entries}) == 5
    )  # four messages, and the bounce of "gone"
    assert (await proxy.outbox.report_backlog("acme")).count == 0

    handler.after_dot = None  # the retry of the unknown attempt goes through
    proxy._clock.advance(3600)
    await proxy.run_until_idle()
    await proxy.report_once()
    retried = {e["id"]: e for e in receiver.calls[-1].entries}["lost"]
    assert (retried["event"], retried["attempt"], retried["possible_duplicate"]) == (
        "sent", 2, True
    )  # fmt: skip


async def test_signature_and_auth_headers(proxy, sink, receiver):
    _, smtp_port = sink
    await add_tenant(
        proxy, "acme", receiver.url, smtp_port,
        client_auth={"method": "bearer", "token": "callback-token"},
    )  # fmt: skip
    await proxy.submit([msg("m1")], tenant_id="acme")
    await proxy.run_until_idle()
    await proxy.report_once()
    (call,) = receiver.calls
    assert call.headers["Authorization"] == "Bearer callback-token"
    timestamp = call.headers["X-Mail-Proxy-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + call.body, hashlib.sha256)
    assert call.headers["X-Mail-Proxy-Signature"] == f"v1={expected.hexdigest()}"

    await proxy.put_tenant(
        {"id": "acme", "client_base_url": receiver.url, "client_sync_path": "/hooks/mail",
         "client_auth": {"method": "basic", "user": "app", "password": "pw"}}
    )  # fmt: skip
    proxy.run_now("acme")
    await proxy.report_once()
    basic = receiver.calls[-1]
    assert basic.path == "/hooks/mail"
    assert basic.headers["Authorization"] == "Basic " + base64.b64encode(b"app:pw").decode()
    assert "X-Mail-Proxy-Signature" not in basic.headers  # no secret any more


async def test_failed_calls_resend_the_same_events_with_backoff_and_nothing_is_lost(
    proxy, sink, receiver
):
    _, smtp_port = sink
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    await proxy.submit([msg(f"m{n}") for n in range(3)], tenant_id="acme")
    await proxy.run_until_idle()
    receiver.replies = [Reply(500), Reply(500), Reply(503)]
    clock = proxy._clock
    for delay in (0, 1, 2):  # 1 s, then 2 s, then 4 s between tries
        clock.advance(delay)
        assert await proxy.report_once() == 1
        assert await proxy.report_once() == 0  # backing off: not due yet
    clock.advance(4)
    assert await proxy.report_once() == 1
    ids = [call.entries for call in receiver.calls]
    assert len(ids) == 4
    assert all(
        sorted(e["event_id"] for e in c) == sorted(x["event_id"] for x in ids[0]) for c in ids
    )
    assert (await proxy.outbox.report_backlog("acme")).count == 0
    clock.advance(1)
    assert await proxy.report_once() == 0  # acknowledged: not sent again
    status = {t.id: s for t, s, _, _ in await proxy.sync_status()}
    assert (status["acme"].failures, status["acme"].last_error) == (0, None)


async def test_a_receiver_down_for_a_while_gets_every_entry_once_it_is_back(tmp_path, sink):
    _, smtp_port = sink
    with running_receiver() as receiver:
        pass  # bound a port, then went down: nothing listens there now
    async with make_proxy(tmp_path, Clock(), run_dispatcher=False) as proxy:
        await add_tenant(proxy, "acme", receiver.url, smtp_port)
        await proxy.submit([msg(f"m{n}") for n in range(5)], tenant_id="acme")
        await proxy.run_until_idle()
        for _ in range(4):  # refused, backing off 1, 2, 4 s
            await proxy.report_once()
            proxy._clock.advance(8)
        assert (await proxy.outbox.report_backlog("acme")).count == 5
        with running_receiver(receiver.port, receiver):
            await proxy.submit([msg("m5")], tenant_id="acme")
            await proxy.run_until_idle()
            await proxy.report_once()
        assert (await proxy.outbox.report_backlog("acme")).count == 0
    (call,) = receiver.calls
    assert sorted(e["id"] for e in call.entries) == [f"m{n}" for n in range(6)]
    assert len(set(receiver.event_ids())) == 6


async def test_a_slow_receiver_within_the_timeout_is_called_once(proxy, sink, receiver):
    _, smtp_port = sink
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    await proxy.submit([msg("m1"), msg("m2")], tenant_id="acme")
    await proxy.run_until_idle()
    receiver.replies = [Reply(200, delay_s=0.3)]  # the sender waits 0.5 s
    await proxy.report_once()
    proxy._clock.advance(60)
    await proxy.report_once()
    assert len(receiver.calls) == 1
    assert (await proxy.outbox.report_backlog("acme")).count == 0


async def test_a_hanging_receiver_times_out_and_the_events_stay(proxy, sink, receiver):
    _, smtp_port = sink
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    await proxy.submit([msg("m1")], tenant_id="acme")
    await proxy.run_until_idle()
    receiver.replies = [Reply(200, delay_s=1.5)]
    await proxy.report_once()
    state = {t.id: s for t, s, _, _ in await proxy.sync_status()}["acme"]
    assert "Timeout" in state.last_error
    assert (await proxy.outbox.report_backlog("acme")).count == 1
    proxy._clock.advance(1)
    await proxy.report_once()
    assert (await proxy.outbox.report_backlog("acme")).count == 0
    assert receiver.event_ids()[0] == receiver.event_ids()[-1]


async def test_redirects_are_not_followed(proxy, sink, receiver, other_receiver):
    _, smtp_port = sink
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    await proxy.submit([msg("m1")], tenant_id="acme")
    await proxy.run_until_idle()
    receiver.replies = [Reply(307, location=f"{other_receiver.url}/steal")]
    await proxy.report_once()
    assert other_receiver.calls == []
    state = {t.id: s for t, s, _, _ in await proxy.sync_status()}["acme"]
    assert state.last_error == "HTTP 307"
    assert (await proxy.outbox.report_backlog("acme")).count == 1


async def test_a_callback_to_a_private_address_needs_the_operator(tmp_path, sink, receiver):
    _, smtp_port = sink
    async with make_proxy(tmp_path, Clock(), allow="", run_dispatcher=False) as proxy:
        await add_tenant(proxy, "acme", receiver.url, smtp_port)
        await proxy.submit([msg("m1")], tenant_id="acme")
        await proxy.run_until_idle()
        await proxy.report_once()
        state = {t.id: s for t, s, _, _ in await proxy.sync_status()}["acme"]
    assert receiver.calls == []
    assert "not allowed" in state.last_error
    assert "egress_allow" in state.last_error


async def test_sync_answers_and_heartbeats(proxy, sink, receiver):
    _, smtp_port = sink
    await add_tenant(proxy, "acme", receiver.url, smtp_port)
    clock = proxy._clock
    assert await proxy.report_once() == 1  # first contact: a heartbeat
    assert receiver.calls[0].entries == []
    assert await proxy.report_once() == 0
    clock.advance(299)
    assert await proxy.report_once() == 0
    receiver.replies = [Reply(200, {"ok": True, "next_sync_after": clock.now + 1000})]
    clock.advance(1)
    assert await proxy.report_once() == 1  # 300 s later: the next heartbeat
    clock.advance(600)
    assert await proxy.report_once() == 0  # the application asked for quiet
    await proxy.submit([msg("m1")], tenant_id="acme")
    await proxy.run_until_idle()
    assert await proxy.report_once() == 1  # real reports are never held back
    assert [e["id"] for e in receiver.calls[-1].entries] == ["m1"]
    proxy.run_now("acme")
    assert await proxy.report_once() == 1  # run-now calls at once
    clock.advance(299)
    assert await proxy.report_once() == 0  # last call just now: next heartbeat in 300 s
    clock.advance(1)
    assert await proxy.report_once() == 1


async def test_a_full_batch_or_queued_calls_again_at_once(tmp_path, sink, receiver):
    _, smtp_port = sink
    async with make_proxy(
        tmp_path, Clock(), run_dispatcher=False, reporting=ReportingOptions(batch=2)
    ) as proxy:
        await add_tenant(proxy, "acme", receiver.url, smtp_port)
        await proxy.submit([msg(f"m{n}") for n in range(5)], tenant_id="acme")
        await proxy.run_until_idle()
        await proxy.report_once()
    assert [len(call.entries) for call in receiver.calls] == [2, 2, 1]
    assert sorted(e["id"] for c in receiver.calls for e in c.entries) == [f"m{n}" for n in range(5)]


async def test_a_tenant_whose_receiver_is_down_never_delays_another(tmp_path, sink, receiver):
    _, smtp_port = sink
    async with make_proxy(tmp_path, Clock(), run_dispatcher=True) as proxy:
        # Nothing listens on the first receiver's port once it is closed.
        with running_receiver() as gone:
            dead_url = gone.url
        await add_tenant(proxy, "down", dead_url, smtp_port)
        await add_tenant(proxy, "up", receiver.url, smtp_port)
        await proxy.submit([msg("d1")], tenant_id="down")
        await asyncio.sleep(0.3)
        receiver.arrived.clear()
        await proxy.submit([msg("u1")], tenant_id="up")
        await asyncio.wait_for(asyncio.to_thread(wait_for_entry, receiver, "u1"), timeout=1.0)
        down = {t.id: s for t, s, _, _ in await proxy.sync_status()}["down"]
    assert down.failures >= 1
    assert "ConnectError" in down.last_error


async def test_entries_written_close_together_share_one_call(tmp_path, sink, receiver):
    _, smtp_port = sink
    async with make_proxy(tmp_path, Clock(), reporting=ReportingOptions(gather_s=1.0)) as proxy:
        await add_tenant(proxy, "acme", receiver.url, smtp_port)
        for n in range(10):  # delivered one by one, each waking the report loop
            await proxy.submit([msg(f"m{n}")], tenant_id="acme")
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.to_thread(wait_for_entry, receiver, "m9"), timeout=5.0)
    assert sorted(e["id"] for c in receiver.calls for e in c.entries) == [
        f"m{n}" for n in range(10)
    ]
    assert len(receiver.calls) <= 2


def wait_for_entry(receiver: Receiver, message_id: str) -> None:
    while not any(e["id"] == message_id for c in receiver.calls for e in c.entries):
        receiver.arrived.wait(0.05)
        receiver.arrived.clear()
