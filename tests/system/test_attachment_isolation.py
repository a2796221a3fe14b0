"""Attachments never cross tenants: a cached or in-flight fetch found by MD5 belongs to
the tenant that fetched it, and a tenant's credentials go only to the endpoint they were
configured for — never to a URL a message names. Real folder, real HTTP server on
127.0.0.1, real aiosmtpd."""

from __future__ import annotations

import email
import email.policy
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.adapters.attachment_sources import EndpointSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.model import AttachmentRef, Status, Tenant
from mailproxy.service import MailProxy
from tests.system.conftest import attachment_service

pytestmark = pytest.mark.system

SECRET_DOC = b"%PDF-1.4 tenant A's contract"
TOKEN = "tenant-a-bearer-token"


@pytest.fixture
async def proxy(tmp_path: Path, sink, files) -> AsyncIterator[MailProxy]:
    _, smtp_port = sink
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contract.pdf").write_bytes(SECRET_DOC)
    proxy = attachment_service(tmp_path, docs, fetch_timeout_s=5)
    async with proxy:
        for tenant in ("a", "b"):
            await proxy.put_tenant(
                {"id": tenant, "client_base_url": f"{files.url}/{tenant}",
                 "client_attachment_path": "/endpoint",
                 "client_auth": {"method": "bearer", "token": f"{TOKEN}-{tenant}"},
                 "attachment_url_prefixes": [f"{files.url}/files/"]}
            )  # fmt: skip
            await proxy.put_account(
                {"id": "main", "tenant_id": tenant, "host": "127.0.0.1", "port": smtp_port,
                 "use_tls": False, "is_default": True}
            )  # fmt: skip
        yield proxy


def msg(message_id: str, attachment: dict[str, str]) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": ["r@example.com"],
            "subject": message_id, "body": "see attached", "attachments": [attachment]}  # fmt: skip


def attachments_received(sink) -> list[bytes]:
    handler, _ = sink
    found = []
    for received in handler.received:
        message = email.message_from_bytes(received.content, policy=email.policy.default)
        found += [part.get_content() for part in message.iter_attachments()]
    return found


async def test_a_cached_digest_is_not_found_by_another_tenant(proxy, sink):
    digest = hashlib.md5(SECRET_DOC, usedforsecurity=False).hexdigest()
    await proxy.submit(
        [msg("a1", {"filename": f"c_{{MD5:{digest}}}.pdf", "storage_path": "contract.pdf"})],
        tenant_id="a",
    )
    await proxy.run_until_idle()
    assert (await proxy.get_message("a", "a1")).status is Status.SENT
    await proxy.submit(
        [msg("b1", {"filename": f"x_{{MD5:{digest}}}.pdf", "storage_path": "no-such.txt"})],
        tenant_id="b",
    )
    await proxy.run_until_idle()
    stolen = await proxy.get_message("b", "b1")
    assert stolen.status is Status.ERROR
    assert "file not found" in stolen.error
    assert attachments_received(sink) == [SECRET_DOC]  # only tenant A's own message


async def test_an_in_flight_fetch_is_not_shared_with_another_tenant(proxy, sink, files):
    digest = hashlib.md5(b"late", usedforsecurity=False).hexdigest()  # what "slow" answers
    await proxy.submit(
        [msg("a1", {"filename": f"s_{{MD5:{digest}}}.pdf",
                    "storage_path": f"{files.url}/files/slow"})],
        tenant_id="a",
    )  # fmt: skip
    await proxy.submit(
        [msg("b1", {"filename": f"x_{{MD5:{digest}}}.pdf", "storage_path": "no-such.txt"})],
        tenant_id="b",
    )
    await proxy.run_until_idle()  # both claimed together: B asks while A's fetch runs
    assert (await proxy.get_message("a", "a1")).status is Status.SENT
    assert (await proxy.get_message("b", "b1")).status is Status.ERROR
    assert attachments_received(sink) == [b"late"]


async def test_credentials_go_only_to_the_tenant_s_own_endpoint(proxy, files):
    files.files["doc"] = b"the document"
    await proxy.submit(
        [
            msg("named", {"filename": "n.pdf", "storage_path": f"@[{files.url}/files/x]doc"}),
            msg("own", {"filename": "o.pdf", "storage_path": "@doc"}),
        ],
        tenant_id="a",
    )
    await proxy.run_until_idle()
    by_path = {path: headers for method, path, headers, _ in files.requests if method == "POST"}
    assert "Authorization" not in by_path["/files/x"]
    assert by_path["/a/endpoint"]["Authorization"] == f"Bearer {TOKEN}-a"


async def test_a_named_url_equal_to_the_own_endpoint_keeps_the_credentials(proxy, files):
    files.files["doc"] = b"the document"
    await proxy.put_tenant(
        {"id": "a", "client_base_url": f"{files.url}/files",
         "client_attachment_path": "/endpoint",
         "client_auth": {"method": "bearer", "token": TOKEN},
         "attachment_url_prefixes": [f"{files.url}/files/"]}
    )  # fmt: skip
    await proxy.submit(
        [msg("named", {"filename": "n.pdf", "storage_path": f"@[{files.url}/files/endpoint]doc"})],
        tenant_id="a",
    )
    await proxy.run_until_idle()
    (post,) = [r for r in files.requests if r[0] == "POST"]
    assert post[2]["Authorization"] == f"Bearer {TOKEN}"


async def test_the_instance_endpoint_is_told_which_tenant_asks(tmp_path, sink, files):
    files.files["doc"] = b"the document"
    docs = tmp_path / "instance-docs"
    docs.mkdir()
    local = parse_networks("127.0.0.0/8")
    http = GuardedHttp(timeout_s=5, egress_allow=local)
    source = EndpointSource(
        http, local, 5000, instance_endpoint=f"{files.url}/endpoint",
        auth_method="bearer", auth_token="INSTANCE-TOKEN",
    )  # fmt: skip
    try:
        for tenant in ("eve", "bob"):
            await source.fetch(
                Tenant(id=tenant),
                AttachmentRef(filename="d.pdf", storage_path="@doc", fetch_mode="endpoint"),
            )
    finally:
        await source.close()
    calls = [(headers["X-Mail-Proxy-Tenant"], headers["Authorization"]) for _, _, headers, _ in
             files.requests]  # fmt: skip
    assert calls == [("eve", "Bearer INSTANCE-TOKEN"), ("bob", "Bearer INSTANCE-TOKEN")]
