"""Queue policy through MailProxy, edge to edge with the memory store, a scripted
transport and a controllable clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailproxy.adapters.memory import MemoryStore
from mailproxy.domain.access import ADMIN
from mailproxy.domain.errors import Conflict
from mailproxy.domain.model import Status
from mailproxy.domain.outcome import AccountBroken
from mailproxy.domain.policy import WindowLengths
from mailproxy.service import DeliveryOptions
from mailproxy.testing import ScriptedTransport
from tests.conftest import Clock
from tests.unit.test_service import make_proxy, msg

SHORT = WindowLengths(minute_s=2, hour_s=4, day_s=8)


async def add_account(proxy, tenant="t1", account="a1", **fields):
    await proxy.put_account(
        {"id": account, "tenant_id": tenant, "host": "127.0.0.1", "port": 2525, **fields}
    )


async def test_with_one_connection_the_server_sees_priorities_in_order():
    scripted = ScriptedTransport()
    async with make_proxy(scripted=scripted) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, max_connections=1, is_default=True)
        labels = ["low", "medium", "immediate", "high", "low", "immediate"]
        await proxy.submit([msg(f"m{n}", priority=p) for n, p in enumerate(labels)], tenant_id="t1")
        await proxy.submit(
            [msg("plain"), msg("urgent", priority=1)], tenant_id="t1", default_priority=3
        )
        await proxy.run_until_idle()
    assert scripted.sent_ids == ["m2", "m5", "m3", "urgent", "m1", "m0", "m4", "plain"]


async def test_another_tenants_immediate_message_goes_next_despite_a_backlog():
    scripted = ScriptedTransport()
    async with make_proxy(scripted=scripted) as proxy:
        for tenant in ("bulk", "shop"):
            await proxy.put_tenant({"id": tenant})
            await add_account(proxy, tenant=tenant, max_connections=1, is_default=True)
        await proxy.submit([msg(f"b{n}", priority="low") for n in range(50)], tenant_id="bulk")
        await proxy.dispatch_once()
        await proxy.submit([msg("receipt", priority="immediate")], tenant_id="shop")
        await proxy.dispatch_once()
    # The bulk account holds two claims per connection; the receipt comes right after.
    assert scripted.sent_ids == ["b0", "b1", "receipt", "b2", "b3"]


async def test_an_account_limit_defers_to_the_free_slot_without_using_an_attempt():
    clock = Clock()
    scripted = ScriptedTransport()
    async with make_proxy(
        scripted=scripted, clock=clock, delivery=DeliveryOptions(window_lengths=SHORT)
    ) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, limit_per_minute=2, is_default=True)
        await proxy.submit([msg("m1"), msg("m2"), msg("m3")], tenant_id="t1")
        await proxy.run_until_idle()
        assert scripted.sent_ids == ["m1", "m2"]
        waiting = await proxy.get_message("t1", "m3")
        assert (waiting.status, waiting.attempts, waiting.due_ts) == (
            Status.DEFERRED,
            0,
            clock.now + 2,
        )
        why = await proxy.why("t1", "m3")
        assert (why.reason, why.detail, why.next_attempt_ts) == (
            "rate_limit", "account a1: 2/minute", int(clock.now + 2)
        )  # fmt: skip
        reports = [r.event for r in await proxy.outbox.pending_reports("t1", 10)]
        deferred = [e for e in reports if e.event == "deferred"]
        assert [(e.id, e.deferred_reason, e.attempt) for e in deferred] == [("m3", "rate_limit", 0)]
        clock.advance(1.9)
        assert await proxy.run_until_idle() == 0
        clock.advance(0.1)
        await proxy.run_until_idle()
        assert scripted.sent_ids == ["m1", "m2", "m3"]
        assert (await proxy.get_message("t1", "m3")).attempts == 1


async def test_reject_behaviour_fails_the_message_over_the_limit():
    async with make_proxy(delivery=DeliveryOptions(window_lengths=SHORT)) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, limit_per_minute=1, limit_behavior="reject", is_default=True)
        await proxy.submit([msg("m1"), msg("m2")], tenant_id="t1")
        await proxy.run_until_idle()
        failed = await proxy.get_message("t1", "m2")
        assert failed.status is Status.ERROR
        assert failed.error == "rate_limit_exceeded: account a1: 1/minute"


async def test_a_tenant_limit_holds_across_its_accounts_but_not_other_tenants():
    scripted = ScriptedTransport()
    async with make_proxy(
        scripted=scripted, delivery=DeliveryOptions(window_lengths=SHORT)
    ) as proxy:
        await proxy.put_tenant({"id": "t1", "rate_limits": {"per_minute": 1}})
        await proxy.put_tenant({"id": "t2"})
        await add_account(proxy, account="main")
        await add_account(proxy, account="other")
        await add_account(proxy, tenant="t2", account="main")
        await proxy.submit(
            [msg("x", account_id="main"), msg("y", account_id="other")], tenant_id="t1"
        )
        await proxy.submit([msg("z", account_id="main")], tenant_id="t2")
        await proxy.run_until_idle()
        assert sorted(scripted.sent_ids) == ["x", "z"]
        assert (await proxy.why("t1", "y")).detail == "tenant t1: 1/minute"


async def test_an_account_failure_pauses_the_account_and_a_probe_resumes_it():
    clock = Clock()
    scripted = ScriptedTransport()
    scripted.script["m1"] = [AccountBroken("SMTP 535 at AUTH: authentication failed", 535)]
    async with make_proxy(scripted=scripted, clock=clock) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, max_connections=1, is_default=True)
        await proxy.submit([msg("m1"), msg("m2"), msg("m3")], tenant_id="t1")
        await proxy.run_until_idle()
        assert scripted.sent_ids == ["m1", "m2"]  # claimed together, before the failure
        first = await proxy.get_message("t1", "m1")
        assert (first.status, first.attempts, first.wait_reason) == (
            Status.DEFERRED,
            0,
            "account_paused",
        )
        why = await proxy.why("t1", "m3")
        assert why.reason == "account_paused"
        assert "535" in why.detail
        assert why.next_attempt_ts == int(clock.now + 60)
        clock.advance(60)
        await proxy.run_until_idle()
        assert scripted.sent_ids == ["m1", "m2", "m1", "m3"]
        assert await proxy.store.account_pause("t1", "a1") is None


async def test_suspend_keeps_messages_and_activation_sends_them_at_once():
    scripted = ScriptedTransport()
    store = MemoryStore()
    proxy = make_proxy(store, scripted=scripted, run_dispatcher=True, clock=time.time)
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_tenant({"id": "t2"})
        await add_account(proxy, is_default=True)
        await add_account(proxy, tenant="t2", is_default=True)
        state = await proxy.suspend("t1")
        assert (state.tenant_id, state.suspended_batches, state.pending_messages) == (
            "t1",
            ["*"],
            0,
        )
        await proxy.submit([msg("held"), msg("b1", batch_code="spring")], tenant_id="t1")
        await proxy.submit([msg("free")], tenant_id="t2")
        await asyncio.wait_for(_until(lambda: "free" in scripted.sent_ids), 1)
        assert (await proxy.get_message("t1", "held")).status is Status.SUSPENDED
        assert (await proxy.why("t1", "held")).reason == "suspended"
        assert (await proxy.suspend("t1", "spring")).suspended_batches == ["*"]
        await proxy.suspend("t2", "spring")
        with pytest.raises(Conflict, match="activate the tenant first"):
            await proxy.activate("t1", "spring")
        state = await proxy.activate("t1")
        assert state.pending_messages == 2
        await asyncio.wait_for(_until(lambda: {"held", "b1"} <= set(scripted.sent_ids)), 1)


async def test_a_scheduled_message_goes_out_on_time_without_polling():
    scripted = ScriptedTransport()
    proxy = make_proxy(scripted=scripted, run_dispatcher=True, clock=time.time)
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, is_default=True)
        await proxy.submit([msg("later", deferred_ts=int(time.time()) + 1)], tenant_id="t1")
        assert (await proxy.get_message("t1", "later")).status is Status.SCHEDULED
        assert (await proxy.why("t1", "later")).reason == "scheduled"
        await asyncio.wait_for(_until(lambda: scripted.sent_ids == ["later"]), 2.5)


async def test_cleanup_removes_acknowledged_final_messages_only():
    clock = Clock()
    async with make_proxy(clock=clock) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, is_default=True)
        await proxy.submit([msg("a"), msg("b")], tenant_id="t1")
        await proxy.run_until_idle()
        reports = await proxy.outbox.pending_reports("t1", 10)
        acked = [r.event.event_id for r in reports if r.event.id == "a"]
        await proxy.outbox.acknowledge_reports("t1", acked, clock.now)
        clock.advance(10)
        assert await proxy.cleanup("t1", older_than_s=60) == 0
        assert await proxy.cleanup("t1", older_than_s=5) == 1
        assert [m.id for m in (await proxy.list_messages("t1")).messages] == ["b"]


async def _until(condition) -> None:
    while not condition():  # noqa: ASYNC110 - the fake transport has no event per message
        await asyncio.sleep(0.01)


class _HeldTenantReads(MemoryStore):
    """A memory store whose tenant reads, once held, wait until let go: a read under way
    while the tenant changes."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.let_go = asyncio.Event()

    async def get_tenant(self, tenant_id):
        tenant = await super().get_tenant(tenant_id)
        if self.hold:
            await self.let_go.wait()
        return tenant


async def test_a_tenant_read_under_way_during_a_change_does_not_bring_the_old_tenant_back():
    store, scripted = _HeldTenantReads(), ScriptedTransport()
    async with make_proxy(
        store, scripted=scripted, delivery=DeliveryOptions(window_lengths=SHORT)
    ) as proxy:
        await proxy.put_tenant({"id": "t1"})
        await add_account(proxy, is_default=True)
        store.hold = True
        read = asyncio.create_task(proxy.get_tenant("t1"))  # reads the unlimited tenant
        await asyncio.sleep(0)
        store.hold = False
        await proxy.update_tenant("t1", {"rate_limits": {"per_minute": 1}}, ADMIN)
        store.let_go.set()
        assert (await read).rate_limits is None
        await proxy.submit([msg("m1"), msg("m2"), msg("m3")], tenant_id="t1")
        await proxy.run_until_idle()
        assert scripted.sent_ids == ["m1"]
