"""MailProxy edge to edge with the memory store, the capture transport and a scripted one."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import pytest

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.access import ADMIN
from mailproxy.domain.errors import InvalidInput, NotFound, StorageError
from mailproxy.domain.model import Rejection, Status, SubmitResult
from mailproxy.domain.outcome import Temporary, Unknown
from mailproxy.domain.retry import RetryPolicy
from mailproxy.service import DeliveryOptions, LimitsOptions, MailProxy, unique_ids
from mailproxy.service.idempotency import RESULT_RECORD, decode_result
from mailproxy.testing import ScriptedTransport
from tests.conftest import Clock


def msg(message_id: str, **fields):
    return {
        "id": message_id,
        "from": "s@example.com",
        "to": ["r@example.com"],
        "subject": "s",
        **fields,
    }


def make_proxy(store=None, *, clock=None, scripted=None, tmp_path=Path("."), **options):
    store = store or MemoryStore()
    return MailProxy(
        store=store,
        transports={
            "smtp": scripted or ScriptedTransport(),
            "capture": CaptureTransport(tmp_path / "outbox"),
        },
        clock=clock or Clock(),
        random_unit=lambda: 0.5,
        **({"run_dispatcher": False} | options),
    )


async def setup_tenant(proxy, tenant="t1", kind="smtp", **tenant_fields):
    await proxy.put_tenant({"id": tenant, **tenant_fields})
    account = {"id": "a1", "tenant_id": tenant, "kind": kind, "is_default": True}
    if kind == "smtp":
        account |= {"host": "127.0.0.1", "port": 2525}
    await proxy.put_account(account)


async def test_capture_delivery_writes_eml_files_and_reports(tmp_path):
    async with make_proxy(tmp_path=tmp_path) as proxy:
        await setup_tenant(proxy, kind="capture")
        result = await proxy.submit([msg("m1", subject="Grüße"), msg("m\\2")], tenant_id="t1")
        assert (result.queued, result.rejected) == (2, [])
        assert await proxy.run_until_idle() == 2
        assert await proxy.counts("t1") == {Status.SENT: 2}
        reports = await proxy.outbox.pending_reports("t1", 10)
        assert sorted(r.event.id for r in reports) == ["m1", "m\\2"]
    files = sorted((tmp_path / "outbox" / "t1" / "a1").glob("*.eml"))
    assert [f.name for f in files] == ["m%5C2.eml", "m1.eml"]
    parsed = email.message_from_bytes(files[1].read_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == "Grüße"


async def test_bad_messages_are_rejected_and_the_rest_queued():
    async with make_proxy() as proxy:
        await setup_tenant(proxy)
        await proxy.put_tenant({"id": "t2"})
        result = await proxy.submit(
            [
                msg("ok"),
                msg("ok"),
                msg("bad", to="nobody"),
                msg("x", tenant_id="zzz"),
                msg("y", account_id="nope"),
                msg("att", attachments=[{"filename": "f.pdf", "storage_path": "/srv/f.pdf"}]),
            ],
            tenant_id="t1",
        )
        reasons = {(r.id, r.reason.split(":")[0]) for r in result.rejected}
        assert result.queued == 1
        assert ("ok", "duplicate id in request") in reasons
        assert ("bad", "invalid address in to") in reasons
        assert ("x", "invalid tenant_id") in reasons
        assert ("y", "account not found for tenant t1") in reasons
        assert ("att", "attachment source not configured") in reasons
        unscoped = await proxy.submit(
            [msg("a"), msg("b", tenant_id="zzz"), msg("c", tenant_id="t2")]
        )
        assert {r.reason.split(":")[0] for r in unscoped.rejected} == {
            "missing tenant_id",
            "unknown tenant",
            "no default account for tenant t2",
        }


async def test_a_malformed_batch_raises_and_queues_nothing():
    async with make_proxy(limits=LimitsOptions(max_batch=3)) as proxy:
        await setup_tenant(proxy)
        for bad, field in [
            ({"id": "x"}, "messages"),
            ([msg(str(i)) for i in range(4)], "messages"),
        ]:
            with pytest.raises(InvalidInput) as caught:
                await proxy.submit(bad, tenant_id="t1")
            assert caught.value.field == field
        with pytest.raises(InvalidInput, match="default_priority"):
            await proxy.submit([msg("a")], tenant_id="t1", default_priority=9)
        assert await proxy.counts("t1") == {}


async def test_send_raises_naming_the_field():
    async with make_proxy() as proxy:
        await setup_tenant(proxy)
        with pytest.raises(InvalidInput, match="missing subject"):
            await proxy.send(
                {"id": "a", "from": "s@example.com", "to": "r@example.com"}, tenant_id="t1"
            )
        message_id = await proxy.send(msg("b"), tenant_id="t1")
        assert message_id.endswith("@example.com")
        assert (await proxy.get_message("t1", "b")).message_id == message_id


async def test_priorities_go_out_in_order_with_one_slot():
    scripted = ScriptedTransport()
    async with make_proxy(scripted=scripted, delivery=DeliveryOptions(max_concurrency=1)) as proxy:
        await setup_tenant(proxy)
        await proxy.submit(
            [
                msg("low", priority="low"),
                msg("med"),
                msg("high", priority=1),
                msg("now", priority="immediate"),
                msg("med2"),
            ],
            tenant_id="t1",
        )
        await proxy.run_until_idle()
    assert scripted.sent_ids == ["now", "high", "med", "med2", "low"]


async def test_default_priority_applies_to_messages_without_one():
    async with make_proxy() as proxy:
        await setup_tenant(proxy)
        await proxy.submit(
            [msg("a"), msg("b", priority=3)], tenant_id="t1", default_priority="high"
        )
        assert (await proxy.get_message("t1", "a")).priority == 1
        assert (await proxy.get_message("t1", "b")).priority == 3


async def test_a_temporary_failure_is_retried_after_the_backoff():
    clock, scripted = Clock(), ScriptedTransport()
    scripted.script["m1"] = [Temporary("SMTP 451 at DATA: later", 451)]
    async with make_proxy(clock=clock, scripted=scripted) as proxy:
        await setup_tenant(proxy)
        await proxy.submit([msg("m1")], tenant_id="t1")
        await proxy.run_until_idle()
        deferred = await proxy.get_message("t1", "m1")
        assert (deferred.status, deferred.due_ts - clock.now) == (Status.DEFERRED, 60.0)
        assert "451" in deferred.error
        assert await proxy.run_until_idle() == 0
        clock.advance(60)
        assert await proxy.run_until_idle() == 1
        done = await proxy.get_message("t1", "m1")
        assert (done.status, done.attempts) == (Status.SENT, 2)
        events = [r.event.event for r in await proxy.outbox.pending_reports("t1", 10)]
        assert events == ["deferred", "sent"]


async def test_unknown_outcomes_follow_the_tenant_policy():
    scripted = ScriptedTransport()
    scripted.script["m1"] = [Unknown("EOF after the final dot")]
    scripted.script["m2"] = [Unknown("EOF after the final dot")]
    clock = Clock()
    async with make_proxy(clock=clock, scripted=scripted) as proxy:
        await setup_tenant(proxy)
        await setup_tenant(proxy, tenant="strict", unknown_policy="at_most_once")
        await proxy.submit([msg("m1")], tenant_id="t1")
        await proxy.submit([msg("m2")], tenant_id="strict")
        await proxy.run_until_idle()
        assert (await proxy.get_message("strict", "m2")).status is Status.UNKNOWN
        retried = await proxy.get_message("t1", "m1")
        assert (retried.status, retried.possible_duplicate) == (Status.DEFERRED, True)
        clock.advance(3600)
        await proxy.run_until_idle()
        events = [
            (r.event.event, r.event.possible_duplicate)
            for r in await proxy.outbox.pending_reports("t1", 10)
        ]
        assert events == [("unknown", False), ("sent", True)]


async def test_an_unexpected_exception_fails_one_message_not_the_loop():
    scripted = ScriptedTransport()
    scripted.script["boom"] = [RuntimeError("bug")]
    async with make_proxy(
        scripted=scripted, delivery=DeliveryOptions(retry_policy=RetryPolicy(max_retries=0))
    ) as proxy:
        await setup_tenant(proxy)
        await proxy.submit([msg("boom"), msg("fine")], tenant_id="t1")
        await proxy.run_until_idle()
        boom = await proxy.get_message("t1", "boom")
        assert boom.status is Status.ERROR
        assert "internal error: RuntimeError: bug" in boom.error
        assert (await proxy.get_message("t1", "fine")).status is Status.SENT


async def test_scheduled_messages_wait_for_their_time():
    clock = Clock()
    async with make_proxy(clock=clock) as proxy:
        await setup_tenant(proxy)
        await proxy.submit([msg("later", deferred_ts=int(clock.now) + 120)], tenant_id="t1")
        assert (await proxy.get_message("t1", "later")).status is Status.SCHEDULED
        assert await proxy.run_until_idle() == 0
        clock.advance(120)
        assert await proxy.run_until_idle() == 1


async def test_restart_settles_interrupted_attempts(tmp_path):
    clock = Clock()
    store = SqliteStore(tmp_path / "q.db")
    async with make_proxy(store, clock=clock, worker_id="host:a") as proxy:
        await setup_tenant(proxy)
        await proxy.submit([msg("started"), msg("claimed")], tenant_id="t1")
        claims = await store.claim_due(now=clock.now, limit=2, owner="host:a", lease_s=300)
        await store.mark_sending(claims[0].lease, clock.now)  # then the process "dies"
    store = SqliteStore(tmp_path / "q.db")
    async with make_proxy(store, clock=clock, worker_id="host:a") as proxy:
        started = await proxy.get_message("t1", "started")
        assert (started.status, started.possible_duplicate) == (Status.DEFERRED, True)
        assert (await proxy.get_message("t1", "claimed")).status is Status.PENDING
        events = [r.event.event for r in await proxy.outbox.pending_reports("t1", 10)]
        assert events == ["unknown"]


async def test_the_dispatcher_sends_a_new_message_without_any_poll(tmp_path):
    scripted = ScriptedTransport()
    store = MemoryStore()
    proxy = MailProxy(store=store, transports={"smtp": scripted})
    async with proxy:
        await setup_tenant(proxy)
        await proxy.submit([msg("urgent", priority=0)], tenant_id="t1")
        await asyncio.wait_for(scripted.handed_over.wait(), timeout=5)
    assert scripted.sent_ids == ["urgent"]


async def test_configuration_errors_name_what_is_wrong():
    async with make_proxy() as proxy:
        with pytest.raises(NotFound, match="tenant not found: ghost"):
            await proxy.put_account({"id": "a", "tenant_id": "ghost", "kind": "capture"})
        await proxy.put_tenant({"id": "t1"})
        with pytest.raises(InvalidInput, match="port"):
            await proxy.put_account({"id": "a", "tenant_id": "t1", "host": "h", "port": "x"})
        with pytest.raises(NotFound):
            await proxy.get_message("t1", "nothing")
        with pytest.raises(InvalidInput, match="limit"):
            await proxy.list_messages("t1", limit=0)


def test_generated_ids_are_32_hex_digits_unique_within_and_across_processes():
    first, second = unique_ids(), unique_ids()
    ids = [first() for _ in range(10_000)] + [second() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


class SteppingClock:
    """Wall time that moves on by ``step`` seconds every time it is read."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_a_message_coming_due_while_the_loop_looks_for_the_next_is_not_left_behind(
    tmp_path,
):
    clock = SteppingClock(1_800_000_000.0)
    store = MemoryStore()
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path)}, clock=clock,
    )  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_account({"id": "a1", "tenant_id": "t1", "kind": "capture"})
        await asyncio.sleep(0.05)  # the loop found nothing to do and sleeps
        message = {"id": "m1", "from": "s@example.com", "to": ["r@example.com"],
                   "subject": "s", "account_id": "a1", "deferred_ts": int(clock.now) + 2}  # fmt: skip
        result = await proxy.submit([message], tenant_id="t1")
        assert result.rejected == []
        # From now on the claim reads +1 s (not due yet) and the look for the next due
        # message +2 s (due by then): the message must not wait for the next sweep.
        clock.step = 1.0
        for _ in range(100):
            await asyncio.sleep(0.02)
            if (await proxy.get_message("t1", "m1")).status is Status.SENT:
                break
        assert (await proxy.get_message("t1", "m1")).status is Status.SENT


async def test_a_message_due_before_the_loop_s_timer_is_sent_at_its_time(tmp_path):
    # The loop sleeps until the message due in a minute; one due in a second must wake
    # it (a message due after its timer, or suspended, need not).
    proxy = MailProxy(store=MemoryStore(), transports={"capture": CaptureTransport(tmp_path)})
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_account({"id": "a1", "tenant_id": "t1", "kind": "capture"})
        base = {
            "from": "s@example.com",
            "to": ["r@example.com"],
            "subject": "s",
            "account_id": "a1",
        }
        soon, later = int(proxy.now()) + 2, int(proxy.now()) + 60
        await proxy.submit([{**base, "id": "later", "deferred_ts": later}], tenant_id="t1")
        await asyncio.sleep(0.05)  # the loop sleeps until "later"
        await proxy.submit([{**base, "id": "soon", "deferred_ts": soon}], tenant_id="t1")
        for _ in range(200):
            if (await proxy.get_message("t1", "soon")).status is Status.SENT:
                break
            await asyncio.sleep(0.05)
        assert (await proxy.get_message("t1", "soon")).status is Status.SENT
        assert (await proxy.get_message("t1", "later")).status is Status.SCHEDULED


async def test_an_idempotent_submission_stores_its_result_and_replays_it():
    async with make_proxy() as proxy:
        await setup_tenant(proxy)
        first = await proxy.submit_once(
            [msg("m1", tenant_id="t1"), msg("m2", tenant_id="nobody")],
            caller=ADMIN, idempotency_key="k", fingerprint="f",
        )  # fmt: skip
        assert first == SubmitResult(queued=1, rejected=[Rejection("m2", "unknown tenant: nobody")])
        repeat = await proxy.submit_once([], caller=ADMIN, idempotency_key="k", fingerprint="f")
        assert repeat == first
        start = await proxy.access.begin_idempotent(
            "admin", "k", "f", proxy.now(), ttl_s=60, stale_s=60
        )
        assert (start.status, decode_result(start.status, start.body)) == (RESULT_RECORD, first)


async def test_an_idempotency_record_of_an_unknown_kind_is_refused_not_run_again():
    async with make_proxy() as proxy:
        await setup_tenant(proxy)
        await proxy.access.begin_idempotent("admin", "k", "f", proxy.now(), ttl_s=60, stale_s=60)
        await proxy.access.finish_idempotent("admin", "k", 7, b"\x00")
        with pytest.raises(StorageError, match="unreadable idempotency record"):
            await proxy.submit_once(
                [msg("m1", tenant_id="t1")], caller=ADMIN, idempotency_key="k", fingerprint="f"
            )
        assert await proxy.counts("t1") == {}


def test_delivery_options_refuse_fewer_than_one_send_slot():
    with pytest.raises(InvalidInput, match="max_concurrency"):
        DeliveryOptions(max_concurrency=0)
    with pytest.raises(InvalidInput, match="tenant_concurrency"):
        DeliveryOptions(tenant_concurrency=0)
    assert DeliveryOptions(max_concurrency=5).sends_per_tenant == 2  # half by default
    assert DeliveryOptions(max_concurrency=1).sends_per_tenant == 1
