"""Every integer a client sends has a range, checked at the edge: the real app over a real
SQLite file answers huge, negative and non-ASCII-digit values with a 4xx naming the field,
never a 500 (SQLite integers are 64-bit; a larger Python int raised OverflowError)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.entrypoints import http
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from tests.conftest import Clock

ADMIN = {"X-API-Token": "admin-token-for-bounds"}
HUGE = [10**30, 2**63, 2**64, -(2**63) - 1, -1, 10**19]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient, str]]:
    store = SqliteStore(tmp_path / "bounds.db")
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path / "outbox")},
        run_dispatcher=False, clock=Clock(),
    )  # fmt: skip
    settings = load_settings(
        environ={"GMP_API_TOKEN": ADMIN["X-API-Token"], "GMP_DB_PATH": str(tmp_path)}
    )
    async with AsyncTestClient(create_app(proxy, settings)) as test_client:
        created = await test_client.post("/tenant", json={"id": "A"}, headers=ADMIN)
        account = {"id": "main", "tenant_id": "A", "kind": "capture", "is_default": True}
        assert (await test_client.post("/account", json=account, headers=ADMIN)).is_success
        yield test_client, created.json()["api_key"]


def message(**fields: Any) -> dict[str, Any]:
    return {"id": "m", "from": "a@example.com", "to": ["b@example.com"], "subject": "s"} | fields


def requests_with(value: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(field, method, path, request options) for every integer a client may send."""
    capture = {"id": "c", "tenant_id": "A", "kind": "capture"}
    smtp = {"id": "s", "tenant_id": "A", "host": "smtp.example.com"}
    on_a = {"params": {"tenant_id": "A"}}
    cursor = str(value) if value >= 2**63 else f"-{value}"
    return [
        ("cursor", "GET", "/messages", {"params": {"tenant_id": "A", "cursor": cursor}}),
        ("limit", "GET", "/messages", {"params": {"tenant_id": "A", "limit": str(value)}}),
        ("expires_at", "POST", "/tenant/A/api-key", {"json": {"expires_at": value}}),
        ("port", "POST", "/account", {"json": smtp | {"port": value}}),
        ("max_connections", "POST", "/account", {"json": capture | {"max_connections": value}}),
        ("limit_per_minute", "POST", "/account", {"json": capture | {"limit_per_minute": value}}),
        ("limit_per_hour", "POST", "/account", {"json": capture | {"limit_per_hour": value}}),
        ("limit_per_day", "POST", "/account", {"json": capture | {"limit_per_day": value}}),
        *(
            (f"rate_limits.{unit}", method, path, {"json": body | {"rate_limits": {unit: value}}})
            for unit in ("per_minute", "per_hour", "per_day")
            for method, path, body in (("POST", "/tenant", {"id": "X"}), ("PUT", "/tenant/A", {}))
        ),
        (
            "older_than_seconds", "POST", "/commands/cleanup-messages",
            on_a | {"json": {"older_than_seconds": value}},
        ),
        (
            "deferred_ts", "POST", "/commands/add-messages",
            on_a | {"json": {"messages": [message(deferred_ts=value)]}},
        ),
        (
            "priority", "POST", "/commands/add-messages",
            on_a | {"json": {"messages": [message(priority=value)]}},
        ),
        (
            "default_priority", "POST", "/commands/add-messages",
            on_a | {"json": {"messages": [message()], "default_priority": value}},
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("value", HUGE, ids=str)
async def test_an_integer_out_of_range_is_a_4xx_naming_the_field(client, value):
    test_client, _ = client
    for field, method, path, options in requests_with(value):
        answer = await test_client.request(method, path, headers=ADMIN, **options)
        where = f"{field}={value}: {method} {path}"
        assert 400 <= answer.status_code < 500, f"{where}: {answer.status_code} {answer.text}"
        assert field.rsplit(".", 1)[-1] in answer.text, f"{where}: {answer.text}"


@pytest.mark.parametrize("cursor", ["1" * 31, "9" * 19, "9223372036854775808", "²", "١٢"])
async def test_a_cursor_that_is_no_stored_position_is_a_422_for_a_tenant_key(client, cursor):
    test_client, key = client
    answer = await test_client.get(
        "/messages", params={"cursor": cursor}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [{"field": "cursor", "message": "invalid cursor"}]


async def test_the_largest_values_in_range_are_taken(client):
    test_client, _ = client
    account = {
        "id": "big", "tenant_id": "A", "kind": "capture", "max_connections": http.MAX_CONNECTIONS,
        "limit_per_day": http.MAX_COUNT,
    }  # fmt: skip
    assert (await test_client.post("/account", json=account, headers=ADMIN)).status_code == 200
    rotated = await test_client.post(
        "/tenant/A/api-key", json={"expires_at": http.MAX_TS}, headers=ADMIN
    )
    assert rotated.status_code == 200
    queued = await test_client.post(
        "/commands/add-messages", params={"tenant_id": "A"},
        json={"messages": [message(deferred_ts=http.MAX_TS)]}, headers=ADMIN,
    )  # fmt: skip
    assert queued.json() == {"ok": True, "queued": 1, "rejected": []}
    listed = await test_client.get(
        "/messages", params={"tenant_id": "A", "cursor": str(2**63 - 1)}, headers=ADMIN
    )
    assert listed.json() == {"ok": True, "messages": [], "next_cursor": None}


BODIES = [
    http.AccountBody, http.TenantBody, http.TenantChanges, http.RateLimitsBody,
    http.ApiKeyBody, http.CleanupBody,
]  # fmt: skip


def _ints(info: msgspec.inspect.Type) -> list[msgspec.inspect.IntType]:
    if isinstance(info, msgspec.inspect.IntType):
        return [info]
    if isinstance(info, msgspec.inspect.UnionType):
        return [i for t in info.types for i in _ints(t)]
    return []


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
def test_every_integer_field_of_a_request_body_has_both_bounds(body):
    info = msgspec.inspect.type_info(body)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _ints(f.type) for f in info.fields}
    unbounded = [n for n, ints in fields.items() for i in ints if i.ge is None or i.le is None]
    assert unbounded == []


async def test_a_tenant_key_is_held_to_the_operator_s_cap_on_connections(client):
    test_client, key = client
    tenant = {"Authorization": f"Bearer {key}"}
    account = {"id": "bulk", "tenant_id": "A", "kind": "capture"}
    too_many = await test_client.post(
        "/account", json=account | {"max_connections": 11}, headers=tenant
    )
    assert too_many.status_code == 403, too_many.text
    assert "tenant_max_connections" in too_many.text
    allowed = await test_client.post(
        "/account", json=account | {"max_connections": 10}, headers=tenant
    )
    assert allowed.status_code == 200, allowed.text
    admin = await test_client.post(
        "/account", json=account | {"max_connections": 50}, headers=ADMIN
    )
    assert admin.status_code == 200, admin.text
