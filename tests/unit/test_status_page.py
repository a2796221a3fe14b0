"""The status page through the real app: admin only (header or the login cookie), and it
shows the numbers of a seeded queue."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections import Counter
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.config import load_settings
from mailproxy.domain.outcome import AccountBroken, Temporary
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.http.routes.status_page import COOKIE
from mailproxy.service import MailProxy
from mailproxy.testing import CountingStore, ScriptedTransport
from tests.conftest import Clock, until

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


async def test_the_services_address_in_a_browser_leads_to_the_status_page(client):
    browser = await client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert (browser.status_code, browser.headers["location"]) == (303, "/ui")
    other = await client.get("/", headers={"Accept": "application/json"})
    assert other.status_code == 200
    assert other.json()["status_page"] == "/ui"
    assert (await client.get(other.json()["api_docs"])).status_code == 200
    assert (await client.get(other.json()["health"])).status_code == 200


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


# --- reading the page as a person does --------------------------------------------------


class _Tables(HTMLParser):
    """The cell texts of each table of a page, under the title of the section it is in
    (the second table of a section under the title and " (2)")."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self._heading: str | None = None
        self._table: list[list[str]] = []
        self._in_heading = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._heading, self._in_heading = "", True
        elif tag == "table" and self._heading is not None:
            key = self._heading if self._heading not in self.sections else f"{self._heading} (2)"
            self._table = self.sections[key] = []
        elif tag == "tr":
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_heading = False
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._in_heading:
            self._heading = (self._heading or "") + data
        elif self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[dict[str, str]]]:
    """Each section's table as rows keyed by the column headers."""
    parser = _Tables()
    parser.feed(html)
    return {
        heading: [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]
        for heading, rows in parser.sections.items()
    }


# --- sign-in help and sign-out ------------------------------------------------------------


async def test_the_sign_in_form_says_where_the_admin_token_is(client):
    form = (await client.get("/ui/login")).text
    for place in (
        "GMP_API_TOKEN",
        "<code>[server]</code>",
        "<code>mail-proxy serve</code>",
        "<code>./admin_token</code>",
        "<code>mail-proxy start NAME</code>",
        "<code>mail-proxy NAME token</code>",
        "<code>config.ini</code>",
    ):
        assert place in form
    wrong = await client.post("/ui/login", data={"token": "nope"})
    assert "<code>./admin_token</code>" in wrong.text  # the help stays after a wrong token


async def test_signing_out_ends_the_session_on_the_server_even_for_a_replayed_cookie(timed):
    client, _ = timed
    signed = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    session = signed.cookies[COOKIE]
    other = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    other_session = other.cookies[COOKIE]
    assert other_session != session  # two sign-ins, two sessions, even in the same second
    client.cookies.clear()
    page = await client.get("/ui", headers={"Cookie": f"{COOKIE}={session}"})
    assert "<button type='submit' id='sign-out'>Sign out</button>" in page.text
    out = await client.post(
        "/ui/logout", headers={"Cookie": f"{COOKIE}={session}"}, follow_redirects=False
    )
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    dropped = [a.strip().lower() for a in out.headers["set-cookie"].split(";")]
    assert f"{COOKIE}=" in dropped[0]
    assert {"max-age=0", "path=/ui", "httponly", "samesite=strict"} <= set(dropped)
    for value, status in ((session, 303), (other_session, 200)):
        replayed = await client.get(
            "/ui", headers={"Cookie": f"{COOKIE}={value}"}, follow_redirects=False
        )
        assert replayed.status_code == status
    again = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert again.status_code == 303  # signing in again works


@pytest.mark.parametrize("cookie", [None, "garbage", f"{10**11}.{'A' * 22}.{'0' * 64}"])
async def test_signing_out_without_a_live_session_just_goes_to_the_form(timed, cookie):
    client, _ = timed
    headers = {} if cookie is None else {"Cookie": f"{COOKIE}={cookie}"}
    out = await client.post("/ui/logout", headers=headers, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")


async def test_the_header_token_page_has_no_sign_out_to_offer(client):
    page = await client.get("/ui", headers={"X-API-Token": TOKEN})
    assert "Sign out" not in page.text


# --- why messages wait ------------------------------------------------------------------


@pytest.fixture
def kolkata():
    """The server's local time zone is +05:30 for the test (the page shows local time)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def message(message_id: str, **fields: object) -> dict[str, object]:
    return {"id": message_id, "from": "a@example.com", "to": ["b@example.com"],
            "subject": "s", **fields}  # fmt: skip


def waiting_service(store: object, clock: Clock | None = None) -> MailProxy:
    scripted = ScriptedTransport()
    scripted.script["grey"] = [Temporary("451 4.7.1 greylisted, try later", 451)]
    scripted.script["n0"] = [AccountBroken("SMTP 535 at AUTH: authentication failed", 535)]
    return MailProxy(store=store, transports={"smtp": scripted}, run_dispatcher=False,
                     clock=clock or Clock(NOW), random_unit=lambda: 0.5)  # fmt: skip


async def seed_waiting(proxy: MailProxy) -> None:
    """shop: a retry after a greylisting, two messages held by a 1/minute limit, one
    scheduled for an hour later; news: an account paused by a refused login (three of its
    messages waiting: the one refused, and two behind it), and a suspended batch; idle:
    nothing at all."""
    smtp = {"host": "127.0.0.1", "port": 2525, "max_connections": 1}
    for tenant_id in ("idle", "news", "shop"):
        await proxy.put_tenant({"id": tenant_id})
    await proxy.put_account({"id": "fast", "tenant_id": "shop", "is_default": True, **smtp})
    await proxy.put_account({"id": "slow", "tenant_id": "shop", "limit_per_minute": 1, **smtp})
    await proxy.put_account({"id": "down", "tenant_id": "news", "is_default": True, **smtp})
    await proxy.submit([
        message("grey"), message("later", deferred_ts=int(NOW) + 3600),
        *(message(f"s{n}", account_id="slow") for n in range(3)),
    ], tenant_id="shop")  # fmt: skip
    await proxy.submit([message(f"n{n}") for n in range(4)], tenant_id="news")
    await proxy.suspend("news", "spring")
    await proxy.submit([message("spring1", batch_code="spring")], tenant_id="news")
    await proxy.run_until_idle()


@pytest.fixture
async def waiting(kolkata):
    """The app over :func:`seed_waiting`'s queue, its store calls counted."""
    store = CountingStore(MemoryStore())
    clock = Clock(NOW)
    proxy = waiting_service(store, clock)
    app = create_app(proxy, load_settings(environ={"GMP_API_TOKEN": TOKEN}), own_proxy=False)
    async with AsyncTestClient(app) as test_client:
        await seed_waiting(proxy)
        yield test_client, proxy, store, clock


async def test_the_groups_of_waiting_messages_agree_with_each_messages_why(store):
    proxy = waiting_service(store)
    await seed_waiting(proxy)
    for tenant_id in ("news", "shop"):
        pauses = await proxy.queries.account_pauses(tenant_id, ["fast", "slow", "down"])
        grouped = await proxy.queries.waiting_reasons(tenant_id, pauses, sample=1000)
        page = await proxy.list_messages(tenant_id, active_only=True)
        whys = [await proxy.why(tenant_id, m.id) for m in page.messages]
        assert grouped.complete
        assert grouped.read == len(whys)
        reasons: Counter[str] = Counter()
        for group in grouped.groups:
            reasons[group.reason] += group.count
            assert (await proxy.why(tenant_id, group.example_id)).reason == group.reason
        assert reasons == Counter(why.reason for why in whys if why is not None)


async def test_each_waiting_message_shows_why_grouped_by_reason_with_an_example(waiting):
    client, *_ = waiting
    page = await client.get("/ui", headers={"X-API-Token": TOKEN})
    rows = [
        (r["tenant"], r["reason"], r["detail"], r["messages"], r["example"], r["next attempt"])
        for r in tables(page.text)["Why messages wait"]
    ]
    in_60_s, in_an_hour = "2027-01-15 13:31:30+05:30", "2027-01-15 14:30:30+05:30"
    assert rows == [
        ("news", "account_paused",
         "account down: SMTP 535 at AUTH: authentication failed", "3", "n0", in_60_s),
        ("news", "suspended", "batch spring suspended", "1", "spring1", "\u2014"),
        ("shop", "rate_limit", "account slow: 1/minute", "2", "s1", in_60_s),
        ("shop", "retry", "451 4.7.1 greylisted, try later", "1", "grey", in_60_s),
        ("shop", "scheduled", "its send time (deferred_ts) is later", "1", "later", in_an_hour),
    ]  # fmt: skip


async def test_paused_accounts_show_their_reason_and_until_when_in_local_time(waiting):
    client, *_ = waiting
    page = await client.get("/ui", headers={"X-API-Token": TOKEN})
    assert tables(page.text)["Paused accounts"] == [
        {"tenant": "news", "account": "down", "failures": "1",
         "reason": "SMTP 535 at AUTH: authentication failed",
         "until": "2027-01-15 13:31:30+05:30"},
    ]  # fmt: skip


async def test_a_pause_that_is_over_says_so_and_its_messages_are_due_again(waiting):
    client, _, _, clock = waiting
    clock.advance(61)
    page = tables((await client.get("/ui", headers={"X-API-Token": TOKEN})).text)
    (pause,) = page["Paused accounts"]
    assert pause["until"] == "2027-01-15 13:31:30+05:30 (over: one message at a time)"
    news = [r for r in page["Why messages wait"] if r["tenant"] == "news"]
    assert [(r["reason"], r["messages"], r["detail"]) for r in news] == [
        ("queued", "3", "due now, waiting for a free connection"),
        ("suspended", "1", "batch spring suspended"),
    ]


async def test_times_are_local_iso_absent_values_a_dash_and_an_empty_queue_says_empty(waiting):
    client, proxy, *_ = waiting
    await proxy.put_tenant({"id": "idle", "client_base_url": "http://127.0.0.1:9/reports"})
    page = (await client.get("/ui", headers={"X-API-Token": TOKEN})).text
    assert "As of 2027-01-15 13:30:30+05:30;" in page
    sections = tables(page)
    assert sections["Queue by tenant"][0] == {"tenant": "idle", "pending": "empty"}
    assert [row["minute"] for row in sections["Throughput, last 15 minutes (2)"][:2]] == [
        "13:30", "13:29",
    ]  # fmt: skip
    assert sections["Delivery reports"] == [{"tenant": "idle", "waiting": "0", "last error": "—"}]
    assert "None" not in page
    assert not re.search(r"\b1[78]\d{8}\b", page)  # no Unix seconds


async def test_an_empty_queue_says_empty_where_the_reasons_would_be(timed):
    client, _ = timed
    page = (await client.get("/ui", headers={"X-API-Token": TOKEN})).text
    assert "<h2>Why messages wait</h2><p>empty</p>" in page


async def test_a_large_queue_costs_the_page_no_more_reads_and_shows_its_top_reasons(waiting):
    client, proxy, store, _ = waiting
    smtp = {"host": "127.0.0.1", "port": 2525, "limit_per_minute": 1}
    for n in range(4):
        await proxy.put_account({"id": f"slow{n}", "tenant_id": "shop", **smtp})

    async def page_reads() -> tuple[Counter[str], str]:
        store.calls.clear()
        page = await client.get("/ui", headers={"X-API-Token": TOKEN})
        return Counter(store.calls), page.text

    await page_reads()
    small, _ = await page_reads()
    rate_limited = [message(f"r{n}{k}", account_id=f"slow{n}") for n in range(4) for k in (0, 1)]
    later = int(NOW) + 7200
    await proxy.submit(rate_limited, tenant_id="shop")
    await proxy.run_until_idle()
    await proxy.submit([message(f"x{n}", deferred_ts=later) for n in range(300)], tenant_id="shop")
    large, page = await page_reads()
    assert large == small
    assert large["get_message"] == large["count_ahead"] == large["history"] == 0
    shop = [r for r in tables(page)["Why messages wait"] if r["tenant"] == "shop"]
    assert [(r["reason"], r["detail"], r["messages"], r["example"]) for r in shop] == [
        ("scheduled", "its send time (deferred_ts) is later", "193", "later"),
        ("rate_limit", "account slow: 1/minute", "2", "s1"),
        ("rate_limit", "account slow0: 1/minute", "1", "r01"),
        ("rate_limit", "account slow1: 1/minute", "1", "r11"),
        ("rate_limit", "account slow2: 1/minute", "1", "r21"),
        ("2 other reasons", "—", "2", "r31"),
    ]
    assert "shop: counted over its oldest 200 of 308 waiting messages." in page


# --- suppression and bounce mailboxes ---------------------------------------------------------


def unreadable_mail(subject: str) -> bytes:
    note = EmailMessage()
    note["From"] = "person@example.org"
    note["To"] = "bounces@example.com"
    note["Subject"] = subject
    note.set_content("Hello?\n")
    return note.as_bytes()


@pytest.fixture
async def bounces(tmp_path):
    """A running service (its pollers live) with two tenants: acme's account watches a
    working mailbox that holds an unreadable message, other's one that refuses logins."""
    working = MemoryMailbox("bounces@imap.acme.example:993/INBOX")
    working.deliver(unreadable_mail("<script>alert(1)</script> & where is my order?"))
    refusing = MemoryMailbox("bounces@imap.other.example:993/INBOX")
    refusing.unavailable = "login refused"
    boxes = {"imap.acme.example": working, "imap.other.example": refusing}
    proxy = MailProxy(
        store=MemoryStore(), transports={"capture": CaptureTransport(tmp_path)},
        clock=lambda: NOW, open_mailbox=lambda spec, scope, ca_file: boxes[spec.host],
    )  # fmt: skip
    app = create_app(proxy, load_settings(environ={"GMP_API_TOKEN": TOKEN}))
    admin = {"X-API-Token": TOKEN}
    async with AsyncTestClient(app) as test_client:
        # Through the API: the app's own loop runs the pollers and hears of the accounts.
        for tenant in ("acme", "other"):
            assert (
                await test_client.post("/tenant", json={"id": tenant}, headers=admin)
            ).is_success
            account = {
                "id": "main", "tenant_id": tenant, "kind": "capture", "is_default": True,
                "bounce_mailbox": {"host": f"imap.{tenant}.example", "user": "bounces"},
            }  # fmt: skip
            assert (await test_client.post("/account", json=account, headers=admin)).is_success
        entries = [{"address": f"gone{n}@example.com"} for n in range(3)]
        added = await test_client.post(
            "/suppressions", params={"tenant_id": "acme"}, json={"entries": entries}, headers=admin
        )
        assert added.json()["added"] == 3

        async def watched() -> bool:
            assert proxy.bounce_mailboxes is not None
            state = {w.tenant_id: w for w in proxy.bounce_mailboxes.watches}
            return (
                "acme" in state and state["acme"].unparsed == 1
                and "other" in state and state["other"].last_error is not None
            )  # fmt: skip

        await until(watched, timeout_s=10)
        yield test_client


async def test_it_counts_each_tenant_s_suppressed_addresses(bounces):
    page = await bounces.get("/ui", headers={"X-API-Token": TOKEN})
    rows = tables(page.text)["Suppressed addresses"]
    assert [(r["tenant"], r["addresses"]) for r in rows] == [("acme", "3"), ("other", "0")]


async def test_it_lists_the_bounce_mailboxes_and_why_one_is_not_connected(bounces):
    page = await bounces.get("/ui", headers={"X-API-Token": TOKEN})
    rows = tables(page.text)["Bounce mailboxes"]
    assert [(r["mailbox"], r["of"], r["applied"], r["unparsed"]) for r in rows] == [
        ("bounces@imap.acme.example:993/INBOX", "acme/main", "0", "1"),
        ("bounces@imap.other.example:993/INBOX", "other/main", "0", "0"),
    ]
    acme, other = rows
    assert acme["state"] == "connected"
    assert acme["last pass"].startswith("20")  # a local ISO time
    assert other["state"].startswith("not connected: ")
    assert "login refused" in other["state"]
    assert other["last pass"] == "—"


async def test_unreadable_bounce_messages_are_listed_with_their_summary_escaped(bounces):
    page = await bounces.get("/ui", headers={"X-API-Token": TOKEN})
    (row,) = tables(page.text)["Unreadable bounce messages"]
    assert (row["mailbox"], row["of"], row["uid"]) == (
        "bounces@imap.acme.example:993/INBOX", "acme", "1",
    )  # fmt: skip
    assert "<script>alert(1)</script> & where is my order?" in row["summary"]
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; where is my order?" in page.text


async def test_without_bounce_mailboxes_the_sections_say_so(client):
    page = await client.get("/ui", headers={"X-API-Token": TOKEN})
    assert "<h2>Bounce mailboxes</h2><p>none watched</p>" in page.text
    assert "<h2>Unreadable bounce messages</h2><p>none</p>" in page.text
    rows = tables(page.text)["Suppressed addresses"]
    assert [(r["tenant"], r["addresses"]) for r in rows] == [("acme", "0")]
