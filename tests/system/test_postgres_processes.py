"""Two services on one PostgreSQL schema, as two processes would run them: a message
accepted by one is sent by the other at once (LISTEN/NOTIFY, no timer), and one process
at a time calls a tenant's application with its reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.postgres import MIGRATIONS, PostgresStore
from mailproxy.domain.egress import parse_networks
from mailproxy.service import DeliveryOptions, MailProxy, ReportingOptions
from tests.conftest import drop_schema, make_store, twin_of, until
from tests.report_receiver import Reply, running_receiver

pytestmark = pytest.mark.system


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    first = make_store("postgres", tmp_path)
    second = twin_of(first)
    assert isinstance(first, PostgresStore)
    assert isinstance(second, PostgresStore)
    try:
        yield first, second
    finally:
        await drop_schema(first)


def service(store: PostgresStore, outbox: Path, name: str, **options) -> MailProxy:
    return MailProxy(
        store=store,
        transports={"capture": CaptureTransport(outbox)},
        worker_id=name, changes=store, delivery=DeliveryOptions(lease_s=600), **options,
    )  # fmt: skip


def message(n: int) -> dict[str, object]:
    return {"id": f"m{n}", "from": "a@example.com", "to": ["b@example.com"], "subject": "s"}


async def test_a_message_accepted_by_one_process_is_sent_by_another_at_once(stores, tmp_path):
    accepting, sending = stores
    outbox = tmp_path / "outbox"
    # The sender has nothing due when it starts: only a notification can wake it.
    async with (
        service(accepting, outbox, "front", run_dispatcher=False) as front,
        service(sending, outbox, "back") as back,
    ):
        await front.put_tenant({"id": "acme"})
        await front.put_account(
            {"id": "box", "tenant_id": "acme", "kind": "capture", "is_default": True}
        )
        await asyncio.sleep(0.2)  # the sender is idle now
        await front.submit([message(1)], tenant_id="acme")

        async def sent() -> bool:
            return (await back.get_message("acme", "m1")).status.value == "sent"

        await until(sent, 5)
    assert len(list(outbox.rglob("*.eml"))) == 1


async def test_one_process_at_a_time_calls_a_tenants_application(stores, tmp_path):
    with running_receiver() as receiver:
        receiver.replies.extend(Reply(delay_s=0.2) for _ in range(50))
        options = {"reporting": ReportingOptions(batch=5), "run_reporter": True}

        def reporter() -> HttpReportSender:
            return HttpReportSender(timeout_s=5, egress_allow=parse_networks("127.0.0.0/8"))

        first, second = stores
        outbox = tmp_path / "outbox"
        async with (
            service(first, outbox, "p1", reporter=reporter(), **options) as p1,
            service(second, outbox, "p2", reporter=reporter(), **options),
        ):
            await p1.put_tenant({"id": "acme", "client_base_url": receiver.url})
            await p1.put_account(
                {"id": "box", "tenant_id": "acme", "kind": "capture", "is_default": True}
            )
            await p1.submit([message(n) for n in range(30)], tenant_id="acme")

            async def all_acknowledged() -> bool:
                backlog = await first.report_backlog("acme")
                return backlog.count == 0 and len(set(receiver.event_ids())) == 30

            await until(all_acknowledged, 30)
    assert receiver.most_at_once == 1
    assert len(set(receiver.event_ids())) == 30


async def test_processes_starting_together_apply_each_migration_once(tmp_path):
    first = make_store("postgres", tmp_path)
    assert isinstance(first, PostgresStore)
    others = [twin_of(first) for _ in range(3)]
    try:
        await asyncio.gather(first.open(), *(store.open() for store in others))
        async with await psycopg.AsyncConnection.connect(
            first.dsn, options=f"-c search_path={first.schema}"
        ) as conn:
            rows = await (await conn.execute("SELECT version FROM schema_version")).fetchall()
        assert rows == [(len(MIGRATIONS),)]
    finally:
        for store in [first, *others]:
            await store.close()
        await drop_schema(first)
