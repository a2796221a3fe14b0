"""Delivery metrics after a scripted run against aiosmtpd, scraped from ``GET /metrics``
of the real app: exact counter values by tenant and account, the histograms' counts and
the queue gauges."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.config import load_settings
from mailproxy.domain.egress import parse_networks
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from mailproxy.testing import CountingStore
from tests.conftest import Clock

pytestmark = pytest.mark.system

METRICS_ADMIN = {"X-API-Token": "metrics-test-token"}


def msg(message_id: str, to: str = "r@example.com", **fields) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": [to], "subject": "s", **fields}


async def test_counters_and_histograms_after_a_scripted_run(sink):
    handler, port = sink
    handler.replies["RCPT:busy@example.com"] = "451 4.3.0 later"
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    metrics = PrometheusMetrics()
    store = MemoryStore()
    proxy = MailProxy(
        store=store,
        transports={"smtp": SmtpTransport(connect_timeout_s=2, command_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8"))},
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
        scraped = (await client.get("/metrics", headers=METRICS_ADMIN)).text
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
    assert value("gmp_unknown_total", **a1) == 0  # exported at 0 from the start
    assert value("gmp_errors_total", **a2) == 0
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
        store=store,
        transports={"smtp": SmtpTransport(connect_timeout_s=2, command_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8"))},
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


def series_of(scraped: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }


@pytest.fixture
async def scraping(tmp_path):
    """A proxy with Prometheus metrics on the capture transport (its store counts the
    calls made to it), the real app, and a scrape function (with the admin token)."""
    store = CountingStore(MemoryStore())
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path)}, events=PrometheusMetrics(),
        clock=Clock(), run_dispatcher=False,
    )  # fmt: skip
    settings = load_settings(environ={"GMP_API_TOKEN": METRICS_ADMIN["X-API-Token"]})
    async with proxy, AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as client:

        async def scrape() -> str:
            answer = await client.get("/metrics", headers=METRICS_ADMIN)
            assert answer.status_code == 200, answer.text
            return answer.text

        yield proxy, client, scrape


async def send_through(proxy: MailProxy, tenant_id: str, account_id: str) -> None:
    await proxy.submit([msg(f"{account_id}-m", account_id=account_id)], tenant_id=tenant_id)
    await proxy.run_until_idle()


async def test_a_deleted_tenant_and_a_deleted_account_leave_no_series(scraping):
    proxy, client, scrape = scraping
    for tenant in ("gone", "kept"):
        await proxy.put_tenant({"id": tenant})
        for account in ("a1", "a2"):
            await proxy.put_account({"id": account, "tenant_id": tenant, "kind": "capture"})
            await send_through(proxy, tenant, account)
    before = await scrape()
    assert 'tenant_id="gone"' in before
    assert 'account_id="a2",tenant_id="kept"' in before
    deleted = await client.delete("/tenant/gone", headers=METRICS_ADMIN)
    assert deleted.status_code == 200
    account_gone = await client.delete(
        "/account/a2", params={"tenant_id": "kept"}, headers=METRICS_ADMIN
    )
    assert account_gone.status_code == 200
    after = await scrape()
    assert "gone" not in after  # neither delivery series nor the per-tenant gauges
    assert 'account_id="a2"' not in after
    kept = {"tenant_id": "kept", "account_id": "a1"}
    assert ("gmp_sent_total", frozenset(kept.items())) in series_of(after)


async def test_a_tenant_deleted_by_another_process_loses_its_series_at_the_next_scrape(
    scraping,
):
    proxy, _, scrape = scraping
    await proxy.put_tenant({"id": "elsewhere"})
    await proxy.put_account({"id": "a1", "tenant_id": "elsewhere", "kind": "capture"})
    await send_through(proxy, "elsewhere", "a1")
    assert "elsewhere" in await scrape()
    await proxy.config.delete_tenant("elsewhere")  # as another process sharing the store
    assert "elsewhere" not in await scrape()


async def test_the_exposition_stays_bounded_while_accounts_come_and_go(scraping):
    proxy, client, scrape = scraping
    await proxy.put_tenant({"id": "t1"})
    await proxy.put_account({"id": "base", "tenant_id": "t1", "kind": "capture"})
    await send_through(proxy, "t1", "base")
    baseline = len(await scrape())
    for n in range(150):
        account = {"id": f"acc{n}", "tenant_id": "t1", "kind": "capture"}
        assert (await client.post("/account", json=account, headers=METRICS_ADMIN)).is_success
        await send_through(proxy, "t1", f"acc{n}")
        gone = await client.delete(f"/account/acc{n}", params={"tenant_id": "t1"},
                                   headers=METRICS_ADMIN)  # fmt: skip
        assert gone.status_code == 200, gone.text
    assert len(await scrape()) <= baseline + 200  # one account's worth of series is ~3 KB


async def test_metrics_need_the_admin_token_unless_made_public(tmp_path):
    store = MemoryStore()
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False)
    await proxy.put_tenant({"id": "secret-tenant-name"})
    token = {"GMP_API_TOKEN": METRICS_ADMIN["X-API-Token"]}
    app = create_app(proxy, load_settings(environ=token), own_proxy=False)
    async with AsyncTestClient(app) as client:
        anonymous = await client.get("/metrics")
        garbage = await client.get("/metrics", headers={"X-API-Token": "not-the-token"})
        admin = await client.get("/metrics", headers=METRICS_ADMIN)
    assert (anonymous.status_code, garbage.status_code, admin.status_code) == (401, 401, 200)
    assert "secret-tenant-name" not in anonymous.text
    assert 'tenant_id="secret-tenant-name"' in admin.text
    public = load_settings(environ=token | {"GMP_SECURITY_METRICS_PUBLIC": "true"})
    async with AsyncTestClient(create_app(proxy, public, own_proxy=False)) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_a_scrape_reads_the_store_as_often_for_twenty_tenants_as_for_one(scraping):
    proxy, _, scrape = scraping
    reads = []
    for tenants in (1, 20):
        for n in range(tenants):
            await proxy.put_tenant({"id": f"t{n}"})
            await proxy.put_account({"id": "a", "tenant_id": f"t{n}", "kind": "capture"})
            await proxy.submit([msg(f"m{n}")], tenant_id=f"t{n}")
        proxy.store.calls.clear()
        scraped = await scrape()
        assert f'gmp_oldest_pending_age_seconds{{tenant_id="t{tenants - 1}"}}' in scraped
        reads.append(proxy.store.calls.total())
    assert reads[0] == reads[1] <= 4
