"""Every configured account has its delivery counters in ``GET /metrics`` from the start,
at 0 (Prometheus' advice on series that would appear with their first event): those
configured before the service started, those added while it runs, until they are
deleted. Through the real app over a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy

TOKEN = "admin-token-for-metrics"
COUNTERS = ("gmp_sent_total", "gmp_errors_total", "gmp_deferred_total", "gmp_unknown_total",
            "gmp_rate_limited_total")  # fmt: skip


def proxy_on(path: Path) -> MailProxy:
    return MailProxy(
        store=SqliteStore(path / "metrics.db"),
        transports={"capture": CaptureTransport(path / "outbox")},
        events=PrometheusMetrics(),
        run_dispatcher=False,
    )


def counters_of(exposition: str) -> dict[tuple[str, str], dict[str, float]]:
    """(tenant, account) → {counter: value} of the delivery counters exposed."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in COUNTERS:
                key = (sample.labels["tenant_id"], sample.labels["account_id"])
                found.setdefault(key, {})[sample.name] = sample.value
    return found


async def test_accounts_have_their_counters_at_zero_from_start_until_deleted(tmp_path):
    async with proxy_on(tmp_path) as before:
        await before.put_tenant({"id": "acme"})
        await before.put_account({"id": "main", "tenant_id": "acme", "kind": "capture"})
    proxy = proxy_on(tmp_path)  # a restart: the account was configured by an earlier run
    settings = load_settings(environ={"GMP_API_TOKEN": TOKEN, "GMP_DB_PATH": str(tmp_path)})
    headers = {"X-API-Token": TOKEN}
    async with AsyncTestClient(create_app(proxy, settings)) as client:

        async def exposed() -> dict[tuple[str, str], dict[str, float]]:
            return counters_of((await client.get("/metrics", headers=headers)).text)

        zero = dict.fromkeys(COUNTERS, 0.0)
        assert await exposed() == {("acme", "main"): zero}
        added = {"id": "backup", "tenant_id": "acme", "kind": "capture"}
        assert (await client.post("/account", json=added, headers=headers)).status_code == 200
        assert await exposed() == {("acme", "main"): zero, ("acme", "backup"): zero}
        deleted = await client.delete("/account/backup?tenant_id=acme", headers=headers)
        assert deleted.status_code == 200
        assert await exposed() == {("acme", "main"): zero}
        assert (await client.delete("/tenant/acme", headers=headers)).status_code == 200
        assert await exposed() == {}
