"""Delivery metrics after a scripted run against aiosmtpd, scraped from ``GET /metrics``
of the real app: exact counter values by tenant and account, the histograms' counts and
the queue gauges."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from tests.conftest import Clock

pytestmark = pytest.mark.system


def msg(message_id: str, to: str = "r@example.com", **fields) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": [to], "subject": "s", **fields}


async def test_counters_and_histograms_after_a_scripted_run(sink):
    handler, port = sink
    handler.replies["RCPT:busy@example.com"] = "451 4.3.0 later"
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    metrics = PrometheusMetrics()
    store = MemoryStore()
    proxy = MailProxy(
        store=store, config=store, outbox=store,
        transports={"smtp": SmtpTransport(connect_timeout_s=2, command_timeout_s=2)},
        events=metrics, clock=Clock(), random_unit=lambda: 0.5, run_dispatcher=False,
    )  # fmt: skip
    settings = load_settings(environ={"GMP_API_TOKEN": "metrics-test-token"})
    async with proxy, AsyncTestClient(create_app(proxy, settings)) as client:
        await proxy.put_tenant({"id": "t1"})
        smtp = {"host": "127.0.0.1", "port": port, "use_tls": False, "tenant_id": "t1"}
        await proxy.put_account({"id": "a1", **smtp, "is_default": True})
        await proxy.put_account({"id": "a2", **smtp, "limit_per_minute": 1, "max_connections": 1})
        await proxy.submit(
            [
                msg("ok1"),
                msg("ok2"),
                msg("busy", "busy@example.com"),
                msg("gone", "gone@example.com"),
            ],
            tenant_id="t1",
        )
        await proxy.submit([msg("r1", account_id="a2"), msg("r2", account_id="a2")], tenant_id="t1")
        await proxy.run_until_idle()
        scraped = (await client.get("/metrics")).text
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    a1 = {"tenant_id": "t1", "account_id": "a1"}
    a2 = {"tenant_id": "t1", "account_id": "a2"}
    assert value("gmp_sent_total", **a1) == 2
    assert value("gmp_deferred_total", **a1) == 1
    assert value("gmp_errors_total", **a1) == 1
    assert value("gmp_sent_total", **a2) == 1
    assert value("gmp_rate_limited_total", **a2) == 1
    assert value("gmp_unknown_total", **a1) is None
    assert value("gmp_smtp_transaction_seconds_count", **a1) == 4
    assert value("gmp_smtp_transaction_seconds_count", **a2) == 1  # r2 never went out
    assert value("gmp_accept_to_sent_seconds_count", tenant_id="t1") == 3
    assert value("gmp_enqueue_seconds_count", tenant_id="t1") == 2
    assert value("gmp_pending_messages", status="sent") == 3
    assert value("gmp_pending_messages", status="error") == 1


async def test_each_attempt_is_one_structured_log_line(sink, caplog):
    handler, port = sink
    handler.replies["RCPT:busy@example.com"] = "451 4.3.0 later"
    store = MemoryStore()
    proxy = MailProxy(
        store=store, config=store, outbox=store,
        transports={"smtp": SmtpTransport(connect_timeout_s=2, command_timeout_s=2)},
        clock=Clock(), random_unit=lambda: 0.5, run_dispatcher=False,
    )  # fmt: skip
    caplog.set_level("INFO", logger="mailproxy")
    async with proxy:
        await proxy.put_tenant({"id": "t1"})
        await proxy.put_account(
            {"id": "a1", "tenant_id": "t1", "host": "127.0.0.1", "port": port, "use_tls": False}
        )
        await proxy.submit([msg("ok"), msg("busy", "busy@example.com")], tenant_id="t1")
        await proxy.run_until_idle()
    lines = {r.message_id: r for r in caplog.records if r.getMessage().startswith("delivery.")}
    sent, deferred = lines["ok"], lines["busy"]
    assert (sent.getMessage(), sent.tenant, sent.account, sent.attempt, sent.smtp_code) == (
        "delivery.sent", "t1", "a1", 1, 250
    )  # fmt: skip
    assert sent.next_attempt_ts is None
    assert sent.ms > 0
    assert (deferred.getMessage(), deferred.smtp_code) == ("delivery.deferred", 451)
    assert deferred.next_attempt_ts == int(Clock().now + 60)
    assert "451" in deferred.error
