"""The REST API through the real Litestar app (its async test client) over a real SQLite
file and the capture transport: every route, the authorization matrix, tenant isolation,
errors, limits and idempotency."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from mailproxy.testing import CountingStore
from tests.conftest import Clock
from tests.unit.conftest import ADMIN_TOKEN, message

# --- messages -----------------------------------------------------------------------------


async def test_add_list_get_and_send_messages_as_a_tenant(api):
    answer = await api.call(
        "A",
        "POST",
        "/commands/add-messages",
        json={"messages": [message("m1", metadata={"order": 7}), message("m2", priority="low")]},
    )
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "queued": 2, "rejected": []}
    listed = (await api.call("A", "GET", "/messages", params={"include_history": "true"})).json()
    assert [m["id"] for m in listed["messages"]] == ["m1", "m2"]
    assert listed["messages"][0]["metadata"] == {"order": 7}
    assert listed["messages"][1]["priority"] == 3
    assert listed["messages"][0]["history"][0]["event"] == "queued"
    record = (await api.call("A", "GET", "/messages/m1")).json()["message"]
    assert record["status"] == "pending"
    assert record["why"] == {"reason": "queued", "ahead": 0}
    assert "@example.com" in record["message_id"]
    assert "<" not in record["message_id"]
    await api.proxy.run_until_idle()
    sent = (await api.call("A", "GET", "/messages/m1")).json()["message"]
    assert (sent["status"], sent["why"], sent["attempts"]) == ("sent", None, 1)
    status = (await api.call("A", "GET", "/status")).json()
    assert status["queue"]["sent"] == 2


async def test_rejections_name_the_problem_and_nothing_queued_is_a_400(api):
    answer = await api.call(
        "A",
        "POST",
        "/commands/add-messages",
        json={"messages": [message("ok"), message("ok"), {"id": "bad", "from": "x"}]},
    )
    assert answer.status_code == 200
    reasons = {(r["id"], r["reason"]) for r in answer.json()["rejected"]}
    assert ("ok", "duplicate id in request") in reasons
    assert any(i == "bad" for i, _ in reasons)
    nothing = await api.call(
        "A", "POST", "/commands/add-messages", json={"messages": [{"id": "x"}]}
    )
    assert nothing.status_code == 400
    assert nothing.json()["ok"] is False
    assert nothing.json()["queued"] == 0
    assert "missing" in nothing.json()["error"]


async def test_resending_a_sent_message_is_not_a_failure(api):
    await api.call("A", "POST", "/commands/add-messages", json={"messages": [message("m1")]})
    await api.proxy.run_until_idle()
    again = await api.call(
        "A", "POST", "/commands/add-messages", json={"messages": [message("m1")]}
    )
    assert again.status_code == 200
    assert again.json()["rejected"] == [{"id": "m1", "reason": "already sent"}]


async def test_admin_names_the_tenant_per_message(api):
    answer = await api.call(
        "admin",
        "POST",
        "/commands/add-messages",
        json={
            "messages": [
                message("m1", tenant_id="A"),
                message("m2"),
                message("m3", tenant_id="nobody"),
            ]
        },
    )
    assert answer.status_code == 200
    assert answer.json()["queued"] == 1
    assert {r["reason"] for r in answer.json()["rejected"]} == {
        "missing tenant_id",
        "unknown tenant: nobody",
    }


async def test_idempotency_key_replays_refuses_another_body(api):
    body = {"messages": [message("m1")]}
    headers = {**api.headers("A"), "Idempotency-Key": "order-42"}
    first = await api.client.post("/commands/add-messages", json=body, headers=headers)
    await api.proxy.run_until_idle()
    repeat = await api.client.post("/commands/add-messages", json=body, headers=headers)
    assert (repeat.status_code, repeat.json()) == (first.status_code, first.json())
    assert repeat.json()["queued"] == 1  # the stored answer, not "already sent"
    other = await api.client.post(
        "/commands/add-messages", json={"messages": [message("m2")]}, headers=headers
    )
    assert other.status_code == 422
    # Scoped per caller: tenant B may use the same key.
    b_headers = {**api.headers("B"), "Idempotency-Key": "order-42"}
    assert (await api.client.post("/commands/add-messages", json=body, headers=b_headers)).json()[
        "queued"
    ] == 1


LEGACY_ANSWERS = [
    (200, {"ok": True, "queued": 1, "rejected": []}),
    (400, {"ok": False, "queued": 0, "rejected": [{"id": "m1", "reason": "unknown tenant"}],
           "error": "no message queued: m1: unknown tenant"}),
]  # fmt: skip


@pytest.mark.parametrize(("status", "answer"), LEGACY_ANSWERS)
async def test_an_answer_stored_by_the_previous_version_replays_unchanged(api, status, answer):
    # The previous version stored the HTTP answer; its records live a day after an upgrade.
    raw = json.dumps({"messages": [message("m1")]}).encode()
    fingerprint = hashlib.sha256(b"A\n" + raw).hexdigest()
    access = api.proxy.access
    await access.begin_idempotent("tenant:A", "k", fingerprint, api.clock.now, ttl_s=60, stale_s=60)
    await access.finish_idempotent("tenant:A", "k", status, json.dumps(answer).encode())
    headers = {**api.headers("A"), "Idempotency-Key": "k", "Content-Type": "application/json"}
    replay = await api.client.post("/commands/add-messages", content=raw, headers=headers)
    assert (replay.status_code, replay.json()) == (status, answer)
    assert await api.proxy.counts("A") == {}  # replayed, not run


async def test_delete_cleanup_suspend_activate_and_run_now(api):
    await api.call(
        "A",
        "POST",
        "/commands/add-messages",
        json={"messages": [message("m1", batch_code="b1"), message("m2"), message("m3")]},
    )
    suspended = await api.call("A", "POST", "/commands/suspend", params={"batch_code": "b1"})
    assert suspended.json() == {
        "ok": True, "tenant_id": "A", "suspended_batches": ["b1"], "pending_messages": 1
    }  # fmt: skip
    why = (await api.call("A", "GET", "/messages/m1")).json()["message"]["why"]
    assert why["reason"] == "suspended"
    activated = await api.call("A", "POST", "/commands/activate", params={"batch_code": "b1"})
    assert activated.json()["suspended_batches"] == []
    assert (await api.call("A", "POST", "/commands/run-now")).json() == {"ok": True}
    deleted = await api.call("A", "POST", "/commands/delete-messages", json={"ids": ["m3", "zzz"]})
    assert deleted.json() == {"ok": True, "removed": 1, "not_found": ["zzz"], "in_flight": []}
    await api.proxy.run_until_idle()
    await api.proxy.outbox.acknowledge_reports(
        "A", [r.event.event_id for r in await api.proxy.outbox.pending_reports("A", 100)], 0.0
    )
    api.clock.advance(10)
    cleaned = await api.call(
        "A", "POST", "/commands/cleanup-messages", json={"older_than_seconds": 5}
    )
    assert cleaned.json() == {"ok": True, "removed": 2}
    empty_body = await api.call("A", "POST", "/commands/cleanup-messages")
    assert empty_body.json() == {"ok": True, "removed": 0}


# --- accounts and tenants -----------------------------------------------------------------


async def test_accounts_hide_passwords_and_delete_needs_force_while_in_use(api):
    smtp = {"id": "smtp1", "kind": "capture", "user": "u", "password": "s3cret"}
    created = (await api.call("A", "POST", "/account", json=smtp)).json()["account"]
    assert created["has_password"] is True
    assert "password" not in created
    assert "s3cret" not in (await api.call("A", "GET", "/accounts")).text
    await api.call(
        "A",
        "POST",
        "/commands/add-messages",
        json={"messages": [message("m1", account_id="smtp1")]},
    )
    busy = await api.call("A", "DELETE", "/account/smtp1")
    assert busy.status_code == 409
    forced = await api.call("A", "DELETE", "/account/smtp1", params={"force": "true"})
    assert forced.status_code == 200
    failed = (await api.call("A", "GET", "/messages/m1")).json()["message"]
    assert (failed["status"], failed["error"]) == ("error", "account deleted")
    assert (await api.call("A", "DELETE", "/account/smtp1")).status_code == 404


async def test_tenant_secrets_are_shown_once_and_keys_rotate_and_revoke(api):
    created = (
        await api.call(
            "admin",
            "POST",
            "/tenant",
            json={"id": "C", "client_auth": {"method": "bearer", "token": "cb-token"}},
        )
    ).json()
    assert created["webhook_secret"]
    assert created["tenant"]["client_auth"] == {"method": "bearer"}
    assert created["tenant"]["has_webhook_secret"] is True
    shown = (await api.call("admin", "GET", "/tenant/C")).text
    assert "cb-token" not in shown
    assert created["webhook_secret"] not in shown
    assert (await api.call("admin", "POST", "/tenant", json={"id": "C"})).status_code == 409
    old_key = created["api_key"]
    api.keys["C"] = old_key
    assert (await api.call("C", "GET", "/tenant/C")).status_code == 200
    rotated = (await api.call("admin", "POST", "/tenant/C/api-key")).json()["api_key"]
    assert (await api.call("C", "GET", "/tenant/C")).status_code == 401
    api.keys["C"] = rotated
    assert (await api.call("C", "GET", "/tenant/C")).status_code == 200
    assert (await api.call("admin", "DELETE", "/tenant/C/api-key")).status_code == 200
    assert (await api.call("C", "GET", "/tenant/C")).status_code == 401


async def test_an_expired_key_is_refused(api):
    expiring = await api.call(
        "admin", "POST", "/tenant/A/api-key", json={"expires_at": int(api.clock.now) + 60}
    )
    api.keys["A"] = expiring.json()["api_key"]
    assert (await api.call("A", "GET", "/accounts")).status_code == 200
    api.clock.advance(61)
    assert (await api.call("A", "GET", "/accounts")).status_code == 401


async def test_a_tenant_key_may_rename_its_tenant_and_nothing_else(api):
    renamed = await api.call("A", "PUT", "/tenant/A", json={"name": "Acme"})
    assert renamed.json()["tenant"]["name"] == "Acme"
    refused = await api.call(
        "A", "PUT", "/tenant/A", json={"name": "Evil", "client_base_url": "http://x.example"}
    )
    assert refused.status_code == 403
    tenant = (await api.call("admin", "GET", "/tenant/A")).json()["tenant"]
    assert (tenant["name"], tenant["client_base_url"]) == ("Acme", None)
    limited = await api.call("admin", "PUT", "/tenant/A", json={"rate_limits": {"per_minute": 5}})
    assert limited.json()["tenant"]["rate_limits"] == {
        "per_minute": 5, "per_hour": None, "per_day": None
    }  # fmt: skip


async def test_deleting_a_tenant_removes_everything_of_it(api):
    await api.call("A", "POST", "/commands/add-messages", json={"messages": [message("m1")]})
    assert (await api.call("admin", "DELETE", "/tenant/A")).status_code == 200
    assert (await api.call("admin", "GET", "/tenant/A")).status_code == 404
    assert (await api.call("A", "GET", "/accounts")).status_code == 401
    tenants = (await api.call("admin", "GET", "/tenants")).json()["tenants"]
    assert [t["id"] for t in tenants] == ["B"]


# --- isolation ----------------------------------------------------------------------------


async def test_two_tenants_with_the_same_message_id_never_see_each_other(api):
    for tenant, subject in (("A", "for A"), ("B", "for B")):
        await api.call(
            tenant,
            "POST",
            "/commands/add-messages",
            json={"messages": [message("m-1", subject=subject, metadata={"t": tenant})]},
        )
    a = (await api.call("A", "GET", "/messages/m-1")).json()["message"]
    b = (await api.call("B", "GET", "/messages/m-1")).json()["message"]
    assert (a["tenant_id"], a["metadata"], b["tenant_id"], b["metadata"]) == (
        "A", {"t": "A"}, "B", {"t": "B"}
    )  # fmt: skip
    await api.call("A", "POST", "/commands/delete-messages", json={"ids": ["m-1"]})
    assert (await api.call("B", "GET", "/messages/m-1")).status_code == 200
    listed = (await api.call("B", "GET", "/messages")).json()["messages"]
    assert {m["tenant_id"] for m in listed} == {"B"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/messages", {"params": {"tenant_id": "B"}}),
        ("GET", "/messages/m-1", {"params": {"tenant_id": "B"}}),
        ("GET", "/accounts", {"params": {"tenant_id": "nobody"}}),
        ("POST", "/commands/add-messages", {"json": {"messages": [message("x", tenant_id="B")]}}),
        ("POST", "/commands/suspend", {"params": {"tenant_id": "B"}}),
        ("GET", "/tenant/B", {}),
        ("PUT", "/tenant/B", {"json": {"name": "mine"}}),
        ("POST", "/account", {"json": {"id": "x", "tenant_id": "B", "kind": "capture"}}),
    ],
)
async def test_naming_another_tenant_is_403_and_changes_nothing(api, method, path, kwargs):
    before = await api.proxy.counts("B")
    answer = await api.call("A", method, path, **kwargs)
    assert answer.status_code == 403
    assert await api.proxy.counts("B") == before
    assert [a.id for a in await api.proxy.list_accounts("B")] == ["main"]


# --- the authorization matrix -------------------------------------------------------------

#: Every route with a request that is valid for its allowed callers, and who they are.
ROUTES = [
    ("POST", "/commands/add-messages", {"json": {"messages": [message("z")]}}, "tenant"),
    ("GET", "/messages", {}, "tenant"),
    ("GET", "/messages/none", {}, "tenant"),
    ("POST", "/commands/delete-messages", {"json": {"ids": ["x"]}}, "tenant"),
    ("POST", "/commands/cleanup-messages", {}, "tenant"),
    ("POST", "/commands/run-now", {}, "tenant"),
    ("POST", "/commands/suspend", {}, "tenant"),
    ("POST", "/commands/activate", {}, "tenant"),
    ("POST", "/account", {"json": {"id": "x", "kind": "capture"}}, "tenant"),
    ("GET", "/accounts", {}, "tenant"),
    ("DELETE", "/account/none", {}, "tenant"),
    ("POST", "/tenant", {"json": {"id": "new"}}, "admin"),
    ("GET", "/tenants", {}, "admin"),
    ("GET", "/tenants/sync-status", {}, "admin"),
    ("GET", "/tenant/{self}", {}, "tenant"),
    ("PUT", "/tenant/{self}", {"json": {"name": "n"}}, "tenant"),
    ("DELETE", "/tenant/{self}", {}, "admin"),
    ("POST", "/tenant/{self}/api-key", {}, "admin"),
    ("DELETE", "/tenant/{self}/api-key", {}, "admin"),
    ("POST", "/tenant/{self}/webhook-secret", {}, "admin"),
    ("DELETE", "/tenant/{self}/webhook-secret/previous", {}, "admin"),
    ("POST", "/tenant/{self}/dkim", {"json": {"domain": "example.com", "selector": "s"}}, "tenant"),
    ("GET", "/tenant/{self}/dkim", {}, "tenant"),
    ("DELETE", "/tenant/{self}/dkim/example.com/none", {}, "tenant"),
    ("GET", "/suppressions", {}, "tenant"),
    ("POST", "/suppressions", {"json": {"entries": [{"address": "s@example.com"}]}}, "tenant"),
    ("DELETE", "/suppressions/none@example.com", {}, "tenant"),
    ("GET", "/suppressions/export", {}, "tenant"),
    ("GET", "/status", {}, "tenant"),
    ("GET", "/instance", {}, "admin"),
    ("GET", "/health", {}, "public"),
    ("GET", "/metrics", {}, "admin"),
]
CALLERS = ["none", "garbage", "expired", "revoked", "A", "B", "admin"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "kwargs", "allowed"), ROUTES)
async def test_authorization_matrix(api, caller, method, path, kwargs, allowed):
    if caller == "expired":
        key = await api.call(
            "admin", "POST", "/tenant/B/api-key", json={"expires_at": int(api.clock.now) + 1}
        )
        api.keys["expired"] = key.json()["api_key"]
        api.clock.advance(2)
    if caller == "revoked":
        api.keys["revoked"] = api.keys["B"]
        await api.call("admin", "DELETE", "/tenant/B/api-key")
    path = path.replace("{self}", "A")
    params = dict(kwargs.get("params", {}))
    if (
        caller == "admin"
        and allowed == "tenant"
        and "{self}" not in path
        and "/tenant/" not in path
        and path != "/status"  # the admin's /status counts every tenant: no tenant_id
    ):
        params.setdefault("tenant_id", "A")
    answer = await api.call(caller, method, path, params=params, json=kwargs.get("json"))
    if allowed == "public":
        expected = {200}
    elif caller in ("none", "garbage", "expired", "revoked"):
        expected = {401}
    elif caller == "admin":
        expected = {200, 404}
    elif allowed == "admin" or (caller == "B" and path.startswith("/tenant/A")):
        expected = {403}
    else:
        expected = {200, 404}
    assert answer.status_code in expected, answer.text
    assert answer.json() if "json" in answer.headers.get("content-type", "") else True


async def test_the_authorization_matrix_covers_every_route(api):
    schema = (await api.call("admin", "GET", "/schema/openapi.json")).json()
    routes = {(method, path.replace("{self}", "A")) for method, path, _, _ in ROUTES}
    missing = []
    for template, operations in schema["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method in operations:
            if not any(m == method.upper() and pattern.match(p) for m, p in routes):
                missing.append(f"{method.upper()} {template}")
    assert missing == []


async def test_no_answer_to_any_get_carries_a_secret(api):
    secrets = {
        "webhook": "whsec-never-shown-1",
        "callback token": "cb-token-never-shown-2",
        "callback password": "cb-pass-never-shown-3",
        "smtp password": "smtp-pass-never-shown-4",
        "admin token": ADMIN_TOKEN,
    }
    created = await api.call("admin", "POST", "/tenant", json={
        "id": "C", "client_base_url": "https://app.example.com", "webhook_secret": secrets["webhook"],
        "client_auth": {"method": "bearer", "token": secrets["callback token"]}})  # fmt: skip
    secrets["tenant key"] = created.json()["api_key"]
    await api.call("admin", "PUT", "/tenant/A", json={
        "client_auth": {"method": "basic", "user": "u", "password": secrets["callback password"]}
    })  # fmt: skip
    account = {"id": "smtp1", "tenant_id": "C", "kind": "capture", "user": "u",
               "password": secrets["smtp password"]}  # fmt: skip
    assert (await api.call("admin", "POST", "/account", json=account)).status_code == 200
    await api.call("admin", "POST", "/commands/add-messages",
                   json={"messages": [message("m1", tenant_id="C", account_id="smtp1")]})  # fmt: skip
    api.keys["C"] = secrets["tenant key"]
    schema = (await api.call("admin", "GET", "/schema/openapi.json")).json()
    values = {"tenant_id": "C", "message_id": "m1", "account_id": "smtp1"}
    gets = [re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], template)
            for template, operations in schema["paths"].items() if "get" in operations]  # fmt: skip
    answers = []
    for caller in ("admin", "C", "A"):
        for path in [*gets, "/ui", "/ui/login", "/schema", "/schema/openapi.json"]:
            params = {"tenant_id": "C"} if caller == "admin" else {}
            answer = await api.call(caller, "GET", path, params=params)
            answers.append((caller, path, answer.status_code, answer.text, str(answer.headers)))
    assert len({path for _, path, _, _, _ in answers}) >= 12
    leaks = [(caller, path, name) for caller, path, _, text, headers in answers
             for name, secret in secrets.items() if secret in text or secret in headers]  # fmt: skip
    assert leaks == []


# --- bad input ----------------------------------------------------------------------------

BAD_MESSAGES = [
    message("crlf", subject="Hi\r\nBcc: victim@example.com"),
    message("lf-header", headers={"X-Ok": "a\nb"}),
    message("encoded-word", subject="=?utf-8?q?hi=0D=0ABcc:_x@example.com?="),
    message("bad-to", to=["not an address"]),
    message("bad-from", **{"from": "a@b@c"}),
    message("forbidden-header", headers={"Bcc": "x@example.com"}),
    message("nul", to=["a\x00@example.com"]),
    message("priority", priority=7),
    message("unknown-field", colour="red"),
    message("wrong-type", to=7),
    message("big-metadata", metadata={"x": "y" * 5000}),
    message(
        "deep-metadata", metadata={"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    ),
    message("x" * 300),
    message("bad-attachment", attachments=[{"filename": "a", "storage_path": "base64:***"}]),
    {"id": 5},
    {},
]


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=lambda m: str(m.get("id", "empty"))[:20])
async def test_a_bad_message_is_rejected_with_a_reason_and_the_rest_is_queued(api, bad):
    answer = await api.call(
        "A", "POST", "/commands/add-messages", json={"messages": [message("good"), bad]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["queued"] == 1
    (rejection,) = answer.json()["rejected"]
    assert rejection["reason"]


BAD_BODIES = [
    b"",
    b"not json",
    b"[]",
    b'{"messages": {}}',
    b'{"messages": [1, 2]}',
    b'{"messages": "x"}',
    b'{"messages": [], "default_priority": 9}',
    b'{"messages": [{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
    b'{"messages": [' + b"{}," * 1001 + b"{}]}",
    "\ud800".encode("utf-8", "surrogatepass"),
    b'{"messages": [{"id": "\xc3\x28"}]}',  # not UTF-8 inside a string
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=lambda b: repr(b[:20]))
async def test_a_malformed_request_is_a_422_problem_naming_the_field(api, body):
    answer = await api.client.post("/commands/add-messages", content=body, headers=api.headers("A"))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert problem["ok"] is False
    assert problem["status"] == 422
    assert problem["errors"][0]["field"]
    assert problem["error"] == problem["detail"]


async def test_a_body_over_the_limit_is_413(tmp_path):
    store = SqliteStore(tmp_path / "small.db")
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False)
    settings = load_settings(
        environ={"GMP_API_TOKEN": ADMIN_TOKEN, "GMP_SERVER_MAX_BODY_BYTES": "1000"}
    )
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        answer = await client.post(
            "/commands/add-messages",
            content=json.dumps({"messages": [message("m", body="x" * 2000)]}),
            headers={"X-API-Token": ADMIN_TOKEN},
        )
    assert answer.status_code == 413
    assert answer.json()["ok"] is False


async def test_wrong_query_types_and_unknown_routes(api):
    assert (await api.call("A", "GET", "/messages", params={"limit": "many"})).status_code == 422
    assert (await api.call("A", "GET", "/messages", params={"limit": "5000"})).status_code == 422
    assert (await api.call("A", "GET", "/messages", params={"status": "lost"})).status_code == 422
    assert (await api.call("A", "GET", "/messages", params={"cursor": "abc"})).status_code == 422
    assert (await api.call("admin", "GET", "/messages")).status_code == 422
    assert (
        await api.call("admin", "GET", "/messages", params={"tenant_id": "zz"})
    ).status_code == 404
    missing = await api.call("A", "GET", "/no/such/route")
    assert (missing.status_code, missing.json()["ok"]) == (404, False)


async def test_an_attachment_round_trips_through_the_api(api, tmp_path):
    content = base64.b64encode(b"%PDF-1.4 invoice").decode()
    attachment = {"filename": "invoice.pdf", "storage_path": f"base64:{content}"}
    answer = await api.call(
        "A",
        "POST",
        "/commands/add-messages",
        json={"messages": [message("inv", attachments=[attachment])]},
    )
    assert answer.json()["queued"] == 1
    await api.proxy.run_until_idle()
    (eml,) = (tmp_path / "outbox" / "A" / "main").glob("*.eml")
    assert b"invoice.pdf" in eml.read_bytes()


async def test_health_status_instance_and_schema(api):
    health = (await api.client.get("/health")).json()
    assert (health["ok"], health["status"]) == (True, "ok")
    instance = (await api.call("admin", "GET", "/instance")).text
    assert ADMIN_TOKEN not in instance
    schema = (await api.client.get("/schema/openapi.json")).json()
    assert "/commands/add-messages" in schema["paths"]
    components = json.dumps(schema["components"])
    for model in ("MessageRecord", "AddMessagesBody", "AccountBody", "TenantBody", "Problem"):
        assert model in components, model
    add = schema["paths"]["/commands/add-messages"]["post"]
    assert "invoice-2041" in json.dumps(add["requestBody"])
    assert (await api.client.get("/schema")).status_code == 200


class BrokenListing(SqliteStore):
    """A store whose tenant listing fails in a way nobody planned for."""

    async def list_tenants(self):
        raise RuntimeError("disk on fire")


async def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_traceback(tmp_path, caplog):
    store = BrokenListing(tmp_path / "b.db")
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False)
    settings = load_settings(environ={"GMP_API_TOKEN": ADMIN_TOKEN})
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        answer = await client.get("/tenants", headers={"X-API-Token": ADMIN_TOKEN})
    assert answer.status_code == 500
    body = answer.json()
    assert body["ok"] is False
    assert body["request_id"] in body["error"]
    assert "disk on fire" not in answer.text
    assert "Traceback" not in answer.text
    assert any(getattr(r, "request_id", None) == body["request_id"] for r in caplog.records)


async def test_storage_that_cannot_be_reached_is_503(api):
    await api.proxy.store.close()
    health = await api.client.get("/health")
    assert (health.status_code, health.json()) == (503, {"ok": False, "status": "unavailable"})
    listing = await api.call("admin", "GET", "/messages", params={"tenant_id": "A"})
    assert listing.status_code == 503
    await api.proxy.store.open()


async def test_the_token_is_checked_before_the_body_is_read(api):
    answer = await api.client.post("/commands/add-messages", content=b"not json")
    assert answer.status_code == 401


async def test_metrics_show_the_queue_and_the_oldest_waiting_message(api):
    await api.call("A", "POST", "/commands/add-messages", json={"messages": [message("m1")]})
    api.clock.advance(42)
    text = (await api.call("admin", "GET", "/metrics")).text
    assert 'gmp_pending_messages{status="pending"} 1.0' in text
    assert 'gmp_oldest_pending_age_seconds{tenant_id="A"} 42.0' in text
    assert 'gmp_oldest_pending_age_seconds{tenant_id="B"} 0.0' in text


async def test_a_status_emptied_since_the_last_scrape_shows_zero(api):
    await api.call("A", "POST", "/commands/add-messages", json={"messages": [message("m1")]})
    first = (await api.call("admin", "GET", "/metrics")).text
    assert 'gmp_pending_messages{status="pending"} 1.0' in first
    await api.call("A", "POST", "/commands/delete-messages", json={"ids": ["m1"]})
    second = (await api.call("admin", "GET", "/metrics")).text
    assert 'gmp_pending_messages{status="pending"} 0.0' in second
    assert 'gmp_pending_messages{status="sent"} 0.0' in second


async def test_instance_settings_show_no_password_of_any_url(tmp_path):
    store = SqliteStore(tmp_path / "api.db")
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False)
    settings = load_settings(
        environ={
            "GMP_API_TOKEN": ADMIN_TOKEN,
            "GMP_DB_PATH": "postgresql://mailer:pg-secret@db.example:5432/mail?sslmode=require"
            "&password=query-secret",
            "GMP_ATTACHMENTS_HTTP_ENDPOINT": "https://app:ep-secret@files.example/att?token=t-secret",
            "GMP_ATTACHMENTS_HTTP_AUTH_TOKEN": "auth-secret",
        }
    )
    async with AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as client:
        answer = await client.get("/instance", headers={"X-API-Token": ADMIN_TOKEN})
    assert answer.status_code == 200
    shown = answer.json()["settings"]
    for secret in ("pg-secret", "query-secret", "ep-secret", "t-secret", "auth-secret"):
        assert secret not in answer.text
    assert shown["storage"]["db_path"] == (
        "postgresql://mailer:***@db.example:5432/mail?sslmode=require&password=***"
    )
    assert shown["attachments"]["http_endpoint"] == "https://app:***@files.example/att?token=***"


async def test_a_tenant_answer_shows_no_password_of_its_urls(api):
    changes = {"attachment_url_prefixes": ["https://u:pw-secret@files.example.com/?sig=sig-secret"]}
    answer = await api.call("admin", "PUT", "/tenant/A", json=changes)
    assert answer.status_code == 200, answer.text
    tenant = (await api.call("A", "GET", "/tenant/A")).json()["tenant"]
    assert tenant["attachment_url_prefixes"] == ["https://u:***@files.example.com/?sig=***"]
    assert "-secret" not in (await api.call("admin", "GET", "/tenants")).text


@pytest.mark.parametrize("caller", ["admin", "tenant key"])
async def test_an_add_messages_request_reads_its_tenant_once(tmp_path, caller):
    """Even when the service's configuration cache has expired since the last request."""
    store, monotonic = CountingStore(MemoryStore()), Clock()
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path)}, run_dispatcher=False,
        clock=Clock(), monotonic=monotonic,
    )  # fmt: skip
    settings = load_settings(environ={"GMP_API_TOKEN": ADMIN_TOKEN})
    async with AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as client:
        created = await proxy.create_tenant({"id": "A"})
        await proxy.put_account({"id": "main", "tenant_id": "A", "kind": "capture"})
        if caller == "admin":
            headers, params = {"X-API-Token": ADMIN_TOKEN}, {"tenant_id": "A"}
        else:
            headers, params = {"X-API-Token": created.api_key}, {}
        for n in range(2):
            monotonic.advance(3600)
            store.calls.clear()
            answer = await client.post(
                "/commands/add-messages", json={"messages": [message(f"m{n}")]},
                params=params, headers=headers,
            )  # fmt: skip
            assert answer.json()["queued"] == 1, answer.text
            assert store.calls["get_tenant"] == 1
            assert store.calls["enqueue"] == 1
