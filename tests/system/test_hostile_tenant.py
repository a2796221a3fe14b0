"""A hostile tenant against everyone else, over real servers on loopback: an account host
that points inside the network, a service that is not SMTP, servers and applications that
answer a byte at a time. Nothing it does may reach a forbidden address, leak what answered,
hold a slot past a deadline, or delay another tenant's immediate message or report.

Rules about names use an in-process resolver stub, and sockets are blocked in-process
for any address that is not loopback: no test resolves through the system's DNS or
connects anywhere but 127.0.0.1 and ::1."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mailproxy.adapters.attachment_sources import UrlSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.resolver import ThreadedResolver
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.access import ADMIN, Caller
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import Forbidden, InvalidInput
from mailproxy.domain.model import Account, Status
from mailproxy.domain.outcome import AccountBroken, Delivered, Temporary, Unknown
from mailproxy.service import (
    AttachmentOptions,
    DeliveryOptions,
    LimitsOptions,
    MailProxy,
    ReportingOptions,
)
from tests.file_server import running_file_server
from tests.http_server import serving
from tests.report_receiver import running_receiver
from tests.smtp_sink import running_sink
from tests.system.test_smtp_transport import outgoing
from tests.tcp_peers import line_server

pytestmark = pytest.mark.system

LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.fixture
def outside_connections(monkeypatch) -> list[object]:
    """Every connection attempt to an address that is not loopback fails at once, and
    is recorded (the list must stay empty)."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def loopback(address: object) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        try:
            return host is not None and ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def connect(self: socket.socket, address: Any) -> None:
        if not loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError("blocked by the test: not a loopback address")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not loopback(address):
            attempts.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def stub_resolver(names: dict[str, list[str]]):
    asked: list[str] = []

    async def resolve(host: str, port: int, scope: str | None = None) -> list[str]:
        asked.append(host)
        if host not in names:
            raise OSError(f"no such name in the test resolver: {host}")
        return names[host]

    return resolve, asked


# --- account hosts and the egress rule ----------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1", "2002:a9fe:a9fe::", "[::1]"]
)
async def test_an_account_host_that_is_a_forbidden_address_is_refused_when_stored(tmp_path, host):
    store = SqliteStore(tmp_path / "q.db")
    proxy = MailProxy(
        store=store, transports={"smtp": SmtpTransport()},
        run_dispatcher=False,
    )  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "evil"})
        with pytest.raises(InvalidInput, match="egress_allow"):
            await proxy.put_account(
                {"id": "a", "tenant_id": "evil", "host": host, "port": 25, "use_tls": False}
            )
        assert await proxy.list_accounts("evil") == []


async def test_a_name_that_resolves_inside_the_network_is_never_connected(outside_connections):
    resolve, asked = stub_resolver({"relay.corp.example": ["10.0.0.5"]})
    transport = SmtpTransport(connect_timeout_s=2, resolve=resolve)
    account = Account(id="a", tenant_id="evil", host="relay.corp.example", port=25)
    outcome = await transport.send(account, outgoing())
    await transport.close()
    assert isinstance(outcome, AccountBroken)  # the account pauses, like any account fault
    assert "10.0.0.5" in outcome.reason
    assert "egress_allow" in outcome.reason
    assert asked == ["relay.corp.example"]
    assert outside_connections == []


async def test_the_connection_goes_to_the_address_that_was_checked(sink, outside_connections):
    handler, port = sink
    resolve, asked = stub_resolver({"relay.acme.example": ["127.0.0.1"]})
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK, resolve=resolve)
    account = Account(id="a", tenant_id="t1", host="relay.acme.example", port=port, use_tls=False)
    outcome = await transport.send(account, outgoing())
    await transport.close()
    assert isinstance(outcome, Delivered)
    assert asked == ["relay.acme.example"]
    assert len(handler.received) == 1
    assert outside_connections == []


async def test_a_service_that_is_not_smtp_is_not_echoed():
    banner = b"+OK INTERNAL-SERVICE-BANNER secret=hunter2\r\n"
    with line_server([banner], hold_s=10) as port:
        transport = SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK)
        account = Account(id="a", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False)
        outcome = await transport.send(account, outgoing())
        await transport.close()
    assert isinstance(outcome, AccountBroken)
    assert "does not speak SMTP" in outcome.reason
    assert "hunter2" not in outcome.reason
    assert "INTERNAL" not in outcome.reason


# --- deadlines ----------------------------------------------------------------------------


async def test_a_greeting_dripped_line_by_line_is_cut_at_the_deadline():
    # Every line comes well within the per-read timeout; the greeting never ends.
    lines = [b"220-still greeting\r\n"] * 100
    with line_server(lines, pause_s=0.2, hold_s=10) as port:
        transport = SmtpTransport(
            connect_timeout_s=2, command_timeout_s=2, transaction_timeout_s=1,
            egress_allow=LOOPBACK,
        )  # fmt: skip
        account = Account(id="a", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False)
        outcome = await transport.send(account, outgoing())
        await transport.close()
    assert isinstance(outcome, Temporary)
    assert "within 1 s" in outcome.reason


async def test_a_reply_after_the_dot_past_the_deadline_is_unknown(sink):
    handler, port = sink
    handler.reply_delay_s = 5  # within data_timeout_s, past the whole transaction's deadline
    transport = SmtpTransport(
        connect_timeout_s=2, command_timeout_s=2, data_timeout_s=10, transaction_timeout_s=1,
        egress_allow=LOOPBACK,
    )  # fmt: skip
    account = Account(id="a", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False)
    outcome = await transport.send(account, outgoing())
    await transport.close()
    assert isinstance(outcome, Unknown)
    assert "within 1 s" in outcome.reason


# --- fair shares --------------------------------------------------------------------------


async def test_a_tenant_key_cannot_give_an_account_more_connections_than_allowed(tmp_path):
    store = SqliteStore(tmp_path / "q.db")
    proxy = MailProxy(
        store=store, transports={"smtp": SmtpTransport()},
        limits=LimitsOptions(tenant_max_connections=4), run_dispatcher=False,
    )  # fmt: skip
    account = {"id": "a", "tenant_id": "evil", "kind": "smtp", "host": "smtp.example.com",
               "port": 587}  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "evil"})
        with pytest.raises(Forbidden, match="tenant_max_connections"):
            await proxy.put_account(account | {"max_connections": 5}, caller=Caller("evil"))
        await proxy.put_account(account | {"max_connections": 4}, caller=Caller("evil"))
        await proxy.put_account(account | {"max_connections": 50})  # the admin may


@contextlib.contextmanager
def dripping_http(release: threading.Event, answering: list[int] | None = None) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request a byte at a time until
    ``release`` is set; ``answering[0]`` counts the requests it is answering."""
    answering = answering if answering is not None else [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one(self) -> None:
            with lock:
                answering[0] += 1
            try:
                self.drip()
            finally:
                with lock:
                    answering[0] -= 1

        def drip(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(1000):
                    if release.wait(0.2):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()

        def do_GET(self) -> None:
            self.handle_one()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.handle_one()

        def log_message(self, format: str, *args: Any) -> None:
            return

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


async def wait_until(condition, timeout_s: float = 20.0) -> None:
    """Poll ``condition`` (a coroutine function); fail the test if it never holds (the
    bound only keeps a broken build from hanging the suite)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - the condition is read from the store
            await asyncio.sleep(0.05)


@pytest.fixture
async def two_tenants(
    tmp_path: Path, release, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[MailProxy, Any, Any]]:
    """A running service with 4 send slots; tenant ``evil`` has an account on a server
    that holds every message after DATA, tenant ``good`` one on an honest server; a test
    may give the send slots per tenant as the fixture's parameter (default: half)."""
    with running_sink() as (stall, stall_port), running_sink() as (honest, honest_port):
        stall.reply_delay_s = 60
        store = SqliteStore(tmp_path / "q.db")
        proxy = MailProxy(
            store=store,
            transports={"smtp": SmtpTransport(
                connect_timeout_s=2, command_timeout_s=2, data_timeout_s=120,
                transaction_timeout_s=120, egress_allow=LOOPBACK,
            )},
            attachment_sources=[UrlSource(GuardedHttp(timeout_s=120, egress_allow=LOOPBACK),
                                          LOOPBACK, 100_000)],
            delivery=DeliveryOptions(
                max_concurrency=4, tenant_concurrency=getattr(request, "param", None),
                shutdown_grace_s=0.2,
            ),
            attachments=AttachmentOptions(fetch_concurrency=2),
        )  # fmt: skip
        async with proxy:
            for tenant, port in (("evil", stall_port), ("good", honest_port)):
                await proxy.put_tenant(
                    {"id": tenant, "attachment_url_prefixes": ["http://127.0.0.1/"]}
                )
                await proxy.put_account(
                    {"id": "a", "tenant_id": tenant, "host": "127.0.0.1", "port": port,
                     "use_tls": False, "is_default": True, "max_connections": 10}
                )  # fmt: skip
            yield proxy, stall, honest
        release.set()


def msg(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": message_id, "from": "s@example.com", "to": ["r@example.com"],
            "subject": message_id, "body": "b", **fields}  # fmt: skip


async def sending(proxy: MailProxy, tenant: str) -> int:
    return (await proxy.counts(tenant)).get(Status.SENDING, 0)


async def test_a_stalling_tenant_never_holds_every_send_slot(two_tenants):
    proxy, stall, honest = two_tenants
    await proxy.submit([msg(f"bulk-{n}") for n in range(20)], tenant_id="evil")

    async def evil_holds_its_share() -> bool:
        return (
            stall.sessions >= 1 and await sending(proxy, "evil") >= proxy.delivery.sends_per_tenant
        )

    await wait_until(evil_holds_its_share)
    await proxy.submit([msg("urgent", priority="immediate")], tenant_id="good")

    async def urgent_sent() -> bool:
        return (await proxy.get_message("good", "urgent")).status is Status.SENT

    await wait_until(urgent_sent)
    assert await sending(proxy, "evil") == proxy.delivery.sends_per_tenant  # still stalled
    assert [r.content.count(b"Subject: urgent") for r in honest.received] == [1]


# 4 send slots per tenant: 3 of 4 for the bulk, so only the fetches are shared.
@pytest.mark.parametrize("two_tenants", [4], indirect=True)
async def test_a_dripping_attachment_server_never_holds_every_fetch(two_tenants, release):
    proxy, _, honest = two_tenants
    with dripping_http(release) as drip, running_file_server() as files:
        files.files["b"] = b"the honest attachment"
        for tenant in ("evil", "good"):
            await proxy.update_tenant(
                tenant, {"attachment_url_prefixes": [f"{drip}/", f"{files.url}/"]}, ADMIN
            )
        queued = await proxy.submit(
            [msg(f"bulk-{n}", attachments=[{"filename": "a.bin", "storage_path": f"{drip}/a"}])
             for n in range(3)],
            tenant_id="evil",
        )  # fmt: skip
        assert queued.rejected == []

        async def evil_fetching() -> bool:
            return await sending(proxy, "evil") == 3

        await wait_until(evil_fetching)
        queued = await proxy.submit(
            [msg("urgent", priority="immediate",
                 attachments=[{"filename": "b.txt", "storage_path": f"{files.url}/files/b"}])],
            tenant_id="good",
        )  # fmt: skip
        assert queued.rejected == []

        async def urgent_sent() -> bool:
            return (await proxy.get_message("good", "urgent")).status is Status.SENT

        await wait_until(urgent_sent)
        assert await sending(proxy, "evil") == 3  # still dripping
    assert len(honest.received) == 1


async def _sending_at_least(proxy: MailProxy, tenant: str, count: int) -> bool:
    return await sending(proxy, tenant) >= count


async def test_applications_that_answer_slowly_never_hold_back_another_tenant_s_reports(
    tmp_path, release
):
    answering = [0]
    with running_sink() as (_, smtp_port), dripping_http(release, answering) as drip, \
            running_receiver() as receiver:  # fmt: skip
        store = SqliteStore(tmp_path / "q.db")
        proxy = MailProxy(
            store=store,
            transports={"smtp": SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK)},
            reporter=HttpReportSender(timeout_s=120, egress_allow=LOOPBACK),
            reporting=ReportingOptions(concurrency=8, gather_s=0),
            delivery=DeliveryOptions(shutdown_grace_s=0.2),
        )  # fmt: skip
        async with proxy:
            slow = [f"slow{n}" for n in range(8)]
            for tenant in [*slow, "fast"]:
                url = receiver.url if tenant == "fast" else drip
                await proxy.put_tenant({"id": tenant, "client_base_url": url})
                await proxy.put_account(
                    {"id": "a", "tenant_id": tenant, "host": "127.0.0.1", "port": smtp_port,
                     "use_tls": False, "is_default": True}
                )  # fmt: skip
            for tenant in slow:
                await proxy.submit([msg("m")], tenant_id=tenant)

            async def slow_calls_running() -> bool:
                return answering[0] == 8

            await wait_until(slow_calls_running)
            await proxy.submit([msg("m")], tenant_id="fast")

            async def fast_reported() -> bool:
                return any(e["id"] == "m" for c in receiver.calls for e in c.entries)

            await wait_until(fast_reported)
            still_dripping = answering[0]
        assert still_dripping == 8


# --- connections left open ----------------------------------------------------------------


def established_to(port: int) -> int:
    """Connections of this machine in state ESTABLISHED whose remote end is ``port`` on
    loopback (read from /proc/net, so the count is the kernel's, not the transport's)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                count += remote_port == port and fields[3] == "01"
    return count


async def test_idle_connections_stay_bounded_and_close_however_many_accounts(sink):
    _, port = sink
    transport = SmtpTransport(
        connect_timeout_s=2, idle_timeout_s=1, max_idle_connections=3, egress_allow=LOOPBACK
    )
    try:
        for n in range(10):  # ten accounts, or one account saved with ten passwords
            account = Account(id="a", tenant_id="evil", host="127.0.0.1", port=port,
                              use_tls=False, user=None, password=f"pw{n}")  # fmt: skip
            assert isinstance(await transport.send(account, outgoing()), Delivered)

        async def at_most_three() -> bool:  # a closed transport lets go on the next turn
            return established_to(port) <= 3

        await wait_until(at_most_three, timeout_s=0.5)

        async def all_closed() -> bool:
            return established_to(port) == 0

        await wait_until(all_closed)  # past the idle timeout, with no send to trigger it
    finally:
        await transport.close()


async def test_a_tenant_key_cannot_create_accounts_without_end(tmp_path):
    store = SqliteStore(tmp_path / "q.db")
    proxy = MailProxy(
        store=store, transports={"smtp": SmtpTransport()},
        limits=LimitsOptions(tenant_max_accounts=3), run_dispatcher=False,
    )  # fmt: skip
    tenant = Caller("evil")
    async with proxy:
        await proxy.put_tenant({"id": "evil"})
        for n in range(3):
            await proxy.put_account(
                {"id": f"a{n}", "tenant_id": "evil", "host": "smtp.example.com", "port": 587},
                caller=tenant,
            )
        with pytest.raises(Forbidden, match="tenant_max_accounts"):
            await proxy.put_account(
                {"id": "a3", "tenant_id": "evil", "host": "smtp.example.com", "port": 587},
                caller=tenant,
            )
        # Changing one it has is not creating one; the admin may create more.
        await proxy.put_account(
            {"id": "a0", "tenant_id": "evil", "host": "relay.example.com", "port": 587},
            caller=tenant,
        )
        await proxy.put_account(
            {"id": "a3", "tenant_id": "evil", "host": "smtp.example.com", "port": 587}
        )
        assert len(await proxy.list_accounts("evil")) == 4


# --- name resolution ----------------------------------------------------------------------


@pytest.fixture
def slow_names(monkeypatch) -> Iterator[list[str]]:
    """The system resolver, stubbed in-process: names under ``.slow.test`` take 3 s and
    fail (servers that never answer), ``relay.good.test`` is 127.0.0.1 at once, anything
    else fails at once. No lookup leaves the process."""
    asked: list[str] = []
    released = threading.Event()

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host.endswith(".slow.test"):
            released.wait(3)
            raise socket.gaierror(socket.EAI_AGAIN, "temporary failure in name resolution")
        if host == "relay.good.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        raise socket.gaierror(socket.EAI_NONAME, "name not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    released.set()


async def test_names_that_never_resolve_hold_only_their_tenant_s_share_of_lookups(slow_names):
    resolver = ThreadedResolver(threads=8, share=2)
    for n in range(10):  # each given up by its caller, each thread still blocked
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await resolver(f"mx{n}.slow.test", 25, "evil")
    async with asyncio.timeout(2):  # a bound for a broken build, not a measurement
        assert await resolver("relay.good.test", 25, "good") == ["127.0.0.1"]
    assert sum(name.endswith(".slow.test") for name in slow_names) == 2  # its share


async def test_an_address_literal_takes_no_lookup(slow_names):
    resolver = ThreadedResolver(threads=1, share=1)
    assert await resolver("127.0.0.1", 25, "t") == ["127.0.0.1"]
    assert await resolver("[::1]", 25, "t") == ["::1"]
    assert slow_names == []


async def test_a_name_that_does_not_resolve_now_is_a_failed_connection_not_a_broken_account():
    resolve, _ = stub_resolver({})
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK, resolve=resolve)
    account = Account(id="a", tenant_id="t1", host="relay.acme.example", port=25)
    outcome = await transport.send(account, outgoing())
    await transport.close()
    assert isinstance(outcome, Temporary)  # retried like a refused connection
    assert "cannot resolve relay.acme.example" in outcome.reason


async def test_every_checked_address_is_tried_in_turn(sink, outside_connections):
    handler, port = sink  # listens on 127.0.0.1 only: ::1 refuses the connection
    resolve, _ = stub_resolver({"relay.acme.example": ["::1", "127.0.0.1"]})
    transport = SmtpTransport(
        connect_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8, ::1/128"), resolve=resolve
    )
    account = Account(id="a", tenant_id="t1", host="relay.acme.example", port=port,
                      use_tls=False)  # fmt: skip
    outcome = await transport.send(account, outgoing())
    await transport.close()
    assert isinstance(outcome, Delivered)
    assert len(handler.received) == 1


async def test_a_send_finishing_after_close_leaves_no_connection_open(sink):
    handler, port = sink
    handler.reply_delay_s = 0.3
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK)
    account = Account(id="a", tenant_id="t1", host="127.0.0.1", port=port, use_tls=False)
    sending = asyncio.create_task(transport.send(account, outgoing()))
    await asyncio.sleep(0.1)
    await transport.close()
    assert isinstance(await sending, Delivered)

    async def none_open() -> bool:
        return established_to(port) == 0

    await wait_until(none_open, timeout_s=2)


async def test_credentials_never_go_out_in_the_clear_unless_the_account_says_so():
    logins: list[str] = []

    def record_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        logins.append(mechanism)
        return AuthResult(success=True)

    # A server (or someone in between) that offers AUTH and no STARTTLS.
    with running_sink(authenticator=record_login, auth_require_tls=False) as (handler, port):
        transport = SmtpTransport(connect_timeout_s=2, egress_allow=LOOPBACK)
        account = Account(
            id="a", tenant_id="t1", host="127.0.0.1", port=port, user="mailer", password="S3cret"
        )  # fmt: skip  (use_tls unset)
        refused = await transport.send(account, outgoing())
        explicit = msgspec.structs.replace(account, id="b", use_tls=False)
        sent = await transport.send(explicit, outgoing())
        await transport.close()
    assert isinstance(refused, AccountBroken)
    assert "credentials need TLS" in refused.reason
    assert isinstance(sent, Delivered)  # use_tls false: the operator's choice
    assert logins == ["PLAIN"] or logins == ["LOGIN"]
    assert len(handler.received) == 1
