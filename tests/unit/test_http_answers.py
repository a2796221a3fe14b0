"""What the REST API answers tells the truth and names what it is about, through the real
Litestar app over a real SQLite file: one rounding for every instant something is due,
error texts that name their object and list the allowed values, the schema of every
answer, and request bodies checked field by field (a top-level ``tenant_id`` in
add-messages, unknown fields refused everywhere)."""

from __future__ import annotations

import re
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
from tests.unit.conftest import message

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


# --- add-messages: the tenant at the top, and nothing ignored --------------------------------


async def test_the_admin_may_name_the_tenant_once_at_the_top_of_add_messages(api):
    body = {"tenant_id": "acme", "messages": [message("m1"), message("m2")]}
    answer = await api.admin("POST", "/commands/add-messages", json=body)
    assert (answer.status_code, answer.json()) == (200, {"ok": True, "queued": 2, "rejected": []})
    same = await api.admin(
        "POST", "/commands/add-messages", json=body, params={"tenant_id": "acme"}
    )
    assert same.status_code == 200
    conflict = await api.admin(
        "POST", "/commands/add-messages", json=body, params={"tenant_id": "beta"}
    )
    assert conflict.status_code == 422
    assert conflict.json()["error"] == "invalid tenant_id: query 'beta' and body 'acme' differ"
    missing = await api.admin(
        "POST", "/commands/add-messages", json={"tenant_id": "nobody", "messages": [message("x")]}
    )
    assert missing.status_code == 404
    # A message naming another tenant than the request's is rejected, naming both.
    other = await api.admin(
        "POST",
        "/commands/add-messages",
        json={"tenant_id": "acme", "messages": [message("m3", tenant_id="beta")]},
    )
    assert other.json()["rejected"] == [
        {"id": "m3", "reason": "invalid tenant_id: beta is not the request's tenant acme"}
    ]


async def test_a_tenant_key_naming_another_tenant_at_the_top_is_forbidden(api):
    other = {"tenant_id": "beta", "messages": [message("m1")]}
    assert (await api.tenant("POST", "/commands/add-messages", json=other)).status_code == 403
    own = {"tenant_id": "acme", "messages": [message("m1")]}
    assert (await api.tenant("POST", "/commands/add-messages", json=own)).json()["queued"] == 1


UNKNOWN_FIELD_ROUTES = [
    ("POST", "/commands/add-messages", {"messages": [], "tenant": "acme"}),
    ("POST", "/commands/delete-messages", {"ids": ["m1"], "tenant": "acme"}),
    ("POST", "/commands/cleanup-messages", {"older_than_seconds": 0, "tenant": "acme"}),
    ("POST", "/commands/run-now", {"tenant": "acme"}),
    ("POST", "/commands/suspend", {"tenant": "acme"}),
    ("POST", "/commands/activate", {"tenant": "acme"}),
    ("POST", "/account", {"id": "other", "kind": "capture", "tenant": "acme"}),
    ("POST", "/tenant", {"id": "beta", "tenant": "acme"}),
    ("PUT", "/tenant/acme", {"name": "Acme", "tenant": "acme"}),
    ("POST", "/tenant/acme/api-key", {"tenant": "acme"}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_FIELD_ROUTES)
async def test_every_route_that_reads_a_body_refuses_an_unknown_field(api, method, path, body):
    params = {"tenant_id": "acme"} if path.startswith(("/commands", "/account")) else {}
    before = (await api.admin("GET", "/tenants")).json()
    answer = await api.admin(method, path, json=body, params=params)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["errors"][0]["field"] == "tenant"
    assert problem["error"].replace("invalid request: ", "").startswith("unknown field: tenant")
    assert (await api.admin("GET", "/tenants")).json() == before


async def test_a_command_body_with_its_query_parameter_is_refused_not_ignored(api):
    answer = await api.tenant("POST", "/commands/suspend", json={"batch_code": "b1"})
    assert answer.status_code == 422
    assert "batch_code go in the query" in answer.json()["error"]
    tenant = (await api.tenant("GET", "/tenant/acme")).json()["tenant"]
    assert tenant["suspended_batches"] == []
    for empty in (b"", b"{}"):
        done = await api.client.post(
            "/commands/run-now", content=empty, headers={"X-API-Token": TOKEN}
        )
        assert done.status_code == 200


# --- errors name their object and the values allowed ------------------------------------------


async def test_a_rejected_message_without_an_id_is_named_by_its_place(api):
    nameless = {k: v for k, v in message("x").items() if k != "id"}
    answer = await api.tenant(
        "POST", "/commands/add-messages", json={"messages": [message("m1", to=[]), nameless]}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "no message queued: m1: missing to"
    answer = await api.tenant(
        "POST", "/commands/add-messages", json={"messages": [message("m1"), message("")]}
    )
    assert answer.json()["queued"] == 1
    answer = await api.tenant(
        "POST", "/commands/add-messages", json={"messages": [nameless, message("m2", to=[])]}
    )
    assert answer.json()["error"] == "no message queued: messages[0]: missing id"


async def test_rejections_name_the_tenant_and_the_account(api):
    await api.admin("POST", "/tenant", json={"id": "beta"})
    for account in ("one", "two"):
        body = {"id": account, "tenant_id": "beta", "kind": "capture"}
        assert (await api.admin("POST", "/account", json=body)).status_code == 200
    answer = await api.admin(
        "POST",
        "/commands/add-messages",
        json={
            "messages": [
                message("m1", tenant_id="acme", account_id="nope"),
                message("m2", tenant_id="zzz"),
                message("m3", tenant_id="beta"),
            ]
        },
    )
    assert answer.json()["rejected"] == [
        {"id": "m1", "reason": "account not found for tenant acme: nope"},
        {"id": "m2", "reason": "unknown tenant: zzz"},
        {
            "id": "m3",
            "reason": "no default account for tenant beta: give account_id, or make one "
            "account is_default",
        },
    ]


ENUM_ERRORS = [
    ("POST", "/account", {"json": {"id": "a2", "tenant_id": "acme", "kind": "smtps"}}, "kind",
     "'smtps' (expected one of: capture, smtp)"),
    ("POST", "/account", {"json": {"id": "a2", "tenant_id": "acme", "kind": "capture",
                                   "limit_behavior": "drop"}}, "limit_behavior",
     "'drop' (expected one of: defer, reject)"),
    ("PUT", "/tenant/acme", {"json": {"client_auth": {"method": "oauth"}}}, "client_auth.method",
     "'oauth' (expected one of: basic, bearer, none)"),
    ("PUT", "/tenant/acme", {"json": {"unknown_policy": "maybe"}}, "unknown_policy",
     "'maybe' (expected one of: at_least_once, at_most_once)"),
    ("GET", "/messages", {"params": {"tenant_id": "acme", "status": "lost"}}, "status",
     "'lost' (expected one of: pending, scheduled, deferred, sending, sent, error, suspended, "
     "unknown)"),
    ("POST", "/commands/add-messages", {"json": {"messages": [], "default_priority": "urgent"},
                                         "params": {"tenant_id": "acme"}}, "default_priority",
     "'urgent' (expected one of: 0, 1, 2, 3, immediate, high, medium, low)"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "request_", "field", "expected"), ENUM_ERRORS)
async def test_a_value_outside_an_enumeration_is_answered_with_the_values_allowed(
    api, method, path, request_, field, expected
):
    answer = await api.admin(method, path, **request_)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["errors"] == [{"field": field, "message": f"invalid {field}: {expected}"}]
    assert problem["error"].endswith(f"invalid {field}: {expected}")


MESSAGE_ENUMS = [
    ({"priority": 7}, "invalid priority: 7 (expected one of: 0, 1, 2, 3, immediate, high, "
                      "medium, low)"),
    ({"content_type": "rtf"}, "invalid content_type: 'rtf' (expected one of: html, plain)"),
    ({"attachments": [{"filename": "a.txt", "storage_path": "x", "fetch_mode": "ftp"}]},
     "invalid attachments[0].fetch_mode: 'ftp' (expected one of: base64, endpoint, "
     "filesystem, http_url)"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "reason"), MESSAGE_ENUMS)
async def test_a_message_field_outside_its_enumeration_is_rejected_with_the_values(
    api, fields, reason
):
    answer = await api.tenant(
        "POST", "/commands/add-messages", json={"messages": [message("m1", **fields)]}
    )
    assert answer.json()["rejected"] == [{"id": "m1", "reason": reason}]


async def test_a_kind_this_instance_cannot_send_with_lists_the_kinds_it_can(api):
    body = {"id": "relay", "tenant_id": "acme", "kind": "smtp", "host": "127.0.0.1", "port": 25}
    answer = await api.admin("POST", "/account", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"] == (
        "invalid kind: no transport for 'smtp' on this instance (expected one of: capture)"
    )


async def test_the_api_docs_page_loads_only_files_the_service_serves(api):
    page = await api.client.get("/schema")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'unsafe-inline'" in policy
    links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(links) == 4  # the UI's script, its preset, its stylesheet and the icon
    for link in links:
        assert link.startswith("/schema/assets/"), link
        asset = await api.client.get(link)
        assert asset.status_code == 200, link
        assert len(asset.content) > 0


async def test_the_frameworks_own_errors_say_what_they_are_about(api):
    nowhere = await api.admin("GET", "/nothing")
    assert (nowhere.status_code, nowhere.json()["error"]) == (
        404, "no such route: GET /nothing (the routes are listed at /schema)"
    )  # fmt: skip
    wrong = await api.admin("GET", "/commands/run-now")
    assert (wrong.status_code, wrong.json()["error"]) == (
        405, "method not allowed: GET /commands/run-now (allowed: POST, OPTIONS)"
    )  # fmt: skip
    huge = await api.admin("POST", "/tenant", content=b" " * (10 * 1024 * 1024 + 1))
    assert (huge.status_code, huge.json()["error"]) == (
        413, "body too large: more than 10485760 bytes (server.max_body_bytes)"
    )  # fmt: skip
    missing = await api.admin("POST", "/commands/add-messages", json={"tenant_id": "acme"})
    assert missing.json()["errors"] == [{"field": "messages", "message": "missing messages"}]
    nameless = await api.admin("POST", "/tenant", json={"name": "Beta"})
    assert nameless.json()["errors"] == [{"field": "id", "message": "missing id"}]


async def test_every_operation_has_a_readable_summary_a_description_and_body_examples(api):
    schema = (await api.client.get("/schema/openapi.json")).json()
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(operations) >= 25
    for name, operation in operations:
        summary = operation.get("summary", "")
        # Words a person reads ("Queue messages"), not the handler's name ("AddMessages").
        assert re.fullmatch(r"[A-Z][a-z-]*( [\w-]+)+", summary), f"{name}: {summary!r}"
        assert operation.get("description", "").strip(), f"{name}: no description"
        assert ":func:" not in operation["description"]
        for content in operation.get("requestBody", {}).get("content", {}).values():
            assert content["schema"].get("examples"), f"{name}: no request example"
    summaries = [operation["summary"] for _, operation in operations]
    assert len(set(summaries)) == len(summaries)
