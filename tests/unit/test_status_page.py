"""The status page through the real app: admin only (header or the login cookie), and it
shows the numbers of a seeded queue."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.http.routes.status_page import COOKIE
from mailproxy.service import MailProxy
from tests.conftest import Clock

TOKEN = "status-page-admin-token"
NOW = 1_800_000_030.0  # a fixed clock: every message finishes in the same minute


@pytest.fixture
async def client(tmp_path):
    store = MemoryStore()
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path)}, run_dispatcher=False,
        clock=lambda: NOW,
    )  # fmt: skip
    app = create_app(proxy, load_settings(environ={"GMP_API_TOKEN": TOKEN}))
    async with AsyncTestClient(app) as test_client:
        await proxy.put_tenant({"id": "acme"})
        await proxy.put_account(
            {"id": "box", "tenant_id": "acme", "kind": "capture", "is_default": True}
        )
        base = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s"}
        await proxy.submit([base | {"id": f"m{n}"} for n in range(3)], tenant_id="acme")
        await proxy.run_until_idle()
        await proxy.submit([base | {"id": "later"}], tenant_id="acme")
        yield test_client


async def test_without_a_token_it_sends_you_to_the_login_form(client):
    answer = await client.get("/ui", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
    assert "Admin token" in (await client.get("/ui/login")).text


async def test_a_wrong_token_is_refused_and_the_right_one_gets_a_strict_cookie(client):
    wrong = await client.post("/ui/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401
    right = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie
    page = await client.get("/ui")
    assert page.status_code == 200
    assert "<td>acme</td><td class='n'>1</td>" in page.text  # pending 1 ...
    assert "<td class='n'>3</td>" in page.text  # ... sent 3


async def test_the_header_token_works_and_a_tenant_key_does_not(client):
    assert (await client.get("/ui", headers={"X-API-Token": TOKEN})).status_code == 200
    tenant_key = "not-the-admin-token"
    answer = await client.get("/ui", headers={"X-API-Token": tenant_key}, follow_redirects=False)
    assert answer.status_code == 303


async def test_it_shows_the_last_minutes_throughput_and_forbids_framing_and_scripts(client):
    page = await client.get("/ui", headers={"X-API-Token": TOKEN})
    sent_error_unknown_per_minute = "".join(f"<td class='n'>{n}</td>" for n in (3, 0, 0, 0.2))
    assert f"<td>acme</td>{sent_error_unknown_per_minute}" in page.text
    assert page.text.count("<meter ") == 15  # one bar per minute, the current one included
    assert "value='3'></meter>" in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert page.headers["cache-control"] == "no-store"


# --- the session cookie ---------------------------------------------------------------------


@pytest.fixture
async def timed(tmp_path):
    """An app whose clock the test moves, with a 1-hour sign-in."""
    clock = Clock()
    store = MemoryStore()
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False, clock=clock)
    settings = load_settings(environ={"GMP_API_TOKEN": TOKEN, "GMP_SECURITY_UI_SESSION_S": "3600"})
    async with AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as test_client:
        yield test_client, clock


async def test_a_sign_in_expires_on_the_server_after_its_lifetime(timed):
    client, clock = timed
    signed = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert "max-age=3600" in signed.headers["set-cookie"].lower()
    clock.advance(3599)
    kept = await client.get("/ui", follow_redirects=False)  # the client keeps the cookie
    assert kept.status_code == 200
    clock.advance(1)
    expired = await client.get("/ui", follow_redirects=False)
    assert (expired.status_code, expired.headers["location"]) == (303, "/ui/login")


def forged_cookies() -> list[str]:
    """Cookies someone holding only the admin token could make: the old fixed HMAC, and the
    current format signed with the token instead of the server's key."""
    old = hmac.new(TOKEN.encode(), b"mailproxy-ui-session", hashlib.sha256).hexdigest()
    far = "99999999999"
    return [
        old,
        f"{far}.{hmac.new(TOKEN.encode(), far.encode(), hashlib.sha256).hexdigest()}",
        f"{far}.{old}",
        f"{far}.",
        "",
    ]


@pytest.mark.parametrize("cookie", forged_cookies())
async def test_a_cookie_made_from_the_admin_token_alone_is_refused(timed, cookie):
    client, _ = timed
    real = (await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)).cookies
    client.cookies.clear()
    for value, status in ((real[COOKIE], 200), (cookie, 303)):
        answer = await client.get("/ui", headers={"Cookie": f"{COOKIE}={value}"},
                                  follow_redirects=False)  # fmt: skip
        assert answer.status_code == status


async def test_the_cookie_is_httponly_strict_scoped_to_ui_and_secure_over_https(tmp_path):
    store = MemoryStore()
    proxy = MailProxy(store=store, transports={}, run_dispatcher=False)
    app = create_app(proxy, load_settings(environ={"GMP_API_TOKEN": TOKEN}), own_proxy=False)
    for base_url, secure in (
        ("http://testserver.local", False),
        ("https://testserver.local", True),
    ):
        async with AsyncTestClient(app, base_url=base_url) as client:
            signed = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
        attributes = [a.strip().lower() for a in signed.headers["set-cookie"].split(";")]
        assert {"httponly", "samesite=strict", "path=/ui", "max-age=43200"} <= set(attributes)
        assert ("secure" in attributes) is secure
