"""The Grafana dashboard queries only metrics that mailproxy exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from litestar.testing import AsyncTestClient

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mailproxy.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


async def test_every_metric_the_dashboard_queries_is_exported():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bgmp_[a-z_]+", target["expr"])
    }
    store = MemoryStore()
    metrics = PrometheusMetrics()
    proxy = MailProxy(store=store, transports={}, events=metrics)
    settings = load_settings(environ={"GMP_API_TOKEN": "dashboard-test-token"})
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        await proxy.put_tenant({"id": "t1"})
        for result in ("sent", "deferred", "error", "unknown", "rate_limited"):
            metrics.attempted("t1", "a1", result, 0.01)
        metrics.accepted("t1", 1, 0.001)
        metrics.delivered("t1", "a1", 1.0)
        answer = await client.get("/metrics", headers={"X-API-Token": "dashboard-test-token"})
        text = answer.text
    families = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    exported = families | {f + s for f in families for s in SUFFIXES}
    missing = queried - exported
    assert not missing, f"the dashboard queries metrics that are not exported: {missing}"
    assert len(queried) >= 10
