"""``mailproxy.client`` and ``mailproxy.webhooks`` against a real ``mail-proxy serve`` on
loopback with an aiosmtpd sink and a report receiver: the generated Structs match the
running service's OpenAPI document; sends are idempotent across a lost answer; errors
are typed; listings page; the service's signed report calls verify."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailproxy import webhooks
from mailproxy.client import (
    AsyncClient,
    Client,
    Forbidden,
    InvalidRequest,
    NotFound,
    Rejected,
    Unauthorized,
)
from tests.report_receiver import running_receiver
from tests.system.conftest import TOKEN

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


def mail(message_id: str, **fields) -> dict:
    return {"id": message_id, "from": "shop@example.com", "to": ["ada@example.org"],
            "subject": f"Message {message_id}", **fields}  # fmt: skip


@pytest.fixture
def tenant(server, sink):
    """A tenant ``acme`` sending to the sink: (url, its api key, its webhook secret)."""
    url, _ = server
    with Client(url, token=TOKEN) as admin:
        created = admin.create_tenant({"id": "acme"})
        admin.put_account(
            {"id": "main", "host": "127.0.0.1", "port": sink[1], "use_tls": False,
             "is_default": True},
            tenant_id="acme",
        )  # fmt: skip
    return url, created.api_key, created.webhook_secret


def test_the_generated_structs_are_the_running_service_s_schema(server):
    url, _ = server
    served = httpx.get(f"{url}/schema/openapi.json").json()
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs/generate_reference.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (ROOT / "src/mailproxy/client/types.py").read_text()
    assert generator.client_types_source(served) == committed


def test_a_tenant_sends_reads_and_lists_its_messages(tenant, sink):
    url, key, _ = tenant
    handler, _ = sink
    with Client(url, token=key) as client:
        assert client.send(mail("m1", metadata={"order": 1})) == "m1"
        answer = client.send_many([mail(f"p{n}") for n in range(5)] + [mail("bad", to=[])])
        assert answer.queued == 5
        assert [(r.id, r.reason) for r in answer.rejected] == [("bad", "missing to")]
        listed = list(client.list_messages(page_size=2))
        assert [m.id for m in listed] == ["m1", "p0", "p1", "p2", "p3", "p4"]
        deadline = time.monotonic() + 30
        while client.get_message("m1").status != "sent" and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = client.get_message("m1")
        assert (shown.status, shown.metadata) == ("sent", {"order": 1})
        assert any(r.rcpt_tos == ["ada@example.org"] for r in handler.received)


def test_refusals_are_typed_errors(tenant):
    url, key, _ = tenant
    with Client(url, token=key) as client:
        with pytest.raises(Rejected) as rejected:
            client.send(mail("x", **{"from": "not an address"}))
        assert rejected.value.rejected[0].id == "x"
        with pytest.raises(NotFound):
            client.get_message("nothing")
        with pytest.raises(Forbidden):
            client.list_accounts(tenant_id="someone-else")
        with pytest.raises(InvalidRequest) as invalid:
            client.put_account({"id": "a", "host": "127.0.0.1", "port": "many"})
        assert invalid.value.status == 422
    with Client(url, token="not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.list_accounts()


@contextlib.contextmanager
def answer_lost_once(target_port: int) -> Iterator[int]:
    """A loopback TCP relay to ``target_port`` that closes its first connection as soon
    as the service starts answering (the request was handled, the answer never arrives);
    later connections pass. Its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    first = threading.Event()

    def pipe(source: socket.socket, target: socket.socket, cut: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if cut:
                    break
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", target_port))
                cut = not first.is_set()
                first.set()
                threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, client, cut), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()


def test_a_send_whose_answer_was_lost_is_retried_and_queued_once(tenant):
    url, key, _ = tenant
    port = int(url.rsplit(":", 1)[1])
    with (
        answer_lost_once(port) as relay,
        Client(f"http://127.0.0.1:{relay}", token=key, retries=3) as client,
    ):
        answer = client.send_many([mail("once")], idempotency_key="k-once")
    assert answer.queued == 1
    with Client(url, token=key) as client:
        listed = [m.id for m in client.list_messages()]
    assert listed.count("once") == 1


def test_the_async_client_does_the_same(tenant):
    url, key, _ = tenant

    async def run() -> list[str]:
        async with AsyncClient(url, token=key) as client:
            assert await client.send(mail("a1")) == "a1"
            await client.send_many([mail("a2"), mail("a3")])
            return [m.id async for m in client.list_messages(page_size=1)]

    assert asyncio.run(run()) == ["a1", "a2", "a3"]


def test_signed_report_calls_verify_and_read_as_entries(server, sink):
    url, _ = server
    with running_receiver() as receiver, Client(url, token=TOKEN) as admin:
        created = admin.create_tenant({"id": "shop", "client_base_url": receiver.url})
        admin.put_account({"id": "main", "host": "127.0.0.1", "port": sink[1],
                           "use_tls": False, "is_default": True}, tenant_id="shop")  # fmt: skip
        admin.send(mail("r1"), tenant_id="shop")
        assert receiver.arrived.wait(30)
        deadline = time.monotonic() + 30
        entries: list[webhooks.Entry] = []
        while not any(e.event == "sent" for e in entries) and time.monotonic() < deadline:
            entries = [e for call in list(receiver.calls)
                       for e in webhooks.verify(call.headers, call.body, created.webhook_secret)]  # fmt: skip
            time.sleep(0.1)
        sent = [e for e in entries if e.event == "sent"]
        assert [(e.id, e.tenant_id) for e in sent] == [("r1", "shop")]
        call = receiver.calls[0]
        with pytest.raises(webhooks.InvalidSignature):
            webhooks.verify(call.headers, call.body, "another-secret")
        with pytest.raises(webhooks.InvalidSignature):
            webhooks.verify(call.headers, call.body, created.webhook_secret, now=time.time() + 3600)
        with pytest.raises(webhooks.InvalidSignature):
            webhooks.verify(call.headers, call.body + b" ", created.webhook_secret)
