"""What the REST API answers tells the truth and names what it is about, through the real
Litestar app over a real SQLite file: one rounding for every instant something is due,
error texts that name their object and list the allowed values, the schema of every
answer, and request bodies checked field by field (a top-level ``tenant_id`` in
add-messages, unknown fields refused everywhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from tests.conftest import Clock

TOKEN = "admin-token-for-answers"


@dataclass
class Api:
    client: AsyncTestClient
    proxy: MailProxy
    clock: Clock
    tenant_key: str

    async def admin(self, method: str, path: str, **kwargs: Any):
        return await self.client.request(method, path, headers={"X-API-Token": TOKEN}, **kwargs)

    async def tenant(self, method: str, path: str, **kwargs: Any):
        headers = {"Authorization": f"Bearer {self.tenant_key}"}
        return await self.client.request(method, path, headers=headers, **kwargs)


def message(message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": message_id,
        "from": "app@example.com",
        "to": ["someone@example.com"],
        "subject": "Hello",
        **fields,
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """Tenant ``acme`` with a capture account ``main`` (the default) limited to one message
    a minute, on a clock half-way through a second."""
    clock = Clock(1_800_000_000.5)
    proxy = MailProxy(
        store=SqliteStore(tmp_path / "api.db"),
        transports={"capture": CaptureTransport(tmp_path / "outbox")},
        events=PrometheusMetrics(),
        run_dispatcher=False,
        clock=clock,
    )
    settings = load_settings(environ={"GMP_API_TOKEN": TOKEN, "GMP_DB_PATH": str(tmp_path)})
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        api = Api(client, proxy, clock, "")
        created = await api.admin("POST", "/tenant", json={"id": "acme"})
        assert created.status_code == 200, created.text
        api.tenant_key = created.json()["api_key"]
        account = {"id": "main", "tenant_id": "acme", "kind": "capture", "is_default": True}
        added = await api.admin("POST", "/account", json=account | {"limit_per_minute": 1})
        assert added.status_code == 200, added.text
        yield api


# --- instants -------------------------------------------------------------------------------


async def test_a_rate_limited_message_shows_one_next_attempt_everywhere(api):
    queued = await api.tenant(
        "POST", "/commands/add-messages", json={"messages": [message("m1"), message("m2")]}
    )
    assert queued.json()["queued"] == 2
    await api.proxy.run_until_idle()
    record = (await api.tenant("GET", "/messages/m2")).json()["message"]
    assert record["status"] == "deferred"
    assert record["why"]["reason"] == "rate_limit"
    # Due half-way through a second: shown as the next whole second, never earlier.
    assert record["deferred_ts"] == record["why"]["next_attempt_ts"] == 1_800_000_061
    reports = await api.proxy.outbox.pending_reports("acme", 10)
    deferred = [r.event for r in reports if r.event.event == "deferred"]
    assert [e.deferred_ts for e in deferred] == [record["deferred_ts"]]


async def test_the_metrics_content_type_is_prometheus_own_with_one_charset(api):
    answer = await api.admin("GET", "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    assert answer.headers["content-type"].count("charset") == 1


# --- the schema -----------------------------------------------------------------------------


async def test_every_json_answer_in_the_schema_names_its_body(api):
    schema = (await api.client.get("/schema/openapi.json")).json()
    untyped = [
        f"{method.upper()} {path} {status}"
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        for media_type, content in answer.get("content", {}).items()
        if "json" in media_type and "$ref" not in content["schema"]
    ]
    assert untyped == []
    add = schema["paths"]["/commands/add-messages"]["post"]["responses"]
    for status in ("200", "400"):
        body = add[status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/AddMessagesAnswer"}
    health = schema["paths"]["/health"]["get"]["responses"]["503"]
    assert health["content"]["application/json"]["schema"]["$ref"].endswith("/HealthAnswer")
    answer = schema["components"]["schemas"]["AddMessagesAnswer"]
    assert {"ok", "queued", "rejected", "error"} <= set(answer["properties"])
