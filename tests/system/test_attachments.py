"""Attachments through the service to a real aiosmtpd, from a real folder and a real HTTP
server on 127.0.0.1: sources, the cache, every failure, the traversal corpus, and
non-ASCII file names."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.domain.model import Status
from mailproxy.service import MailProxy
from tests.system.conftest import attachment_service

pytestmark = pytest.mark.system

PDF = b"%PDF-1.4 " + bytes(range(256)) * 4
SECRET = b"root:x:0:0:the secret bytes"


@pytest.fixture
async def proxy(tmp_path: Path, sink, files) -> AsyncIterator[MailProxy]:
    _, smtp_port = sink
    files.files["invoice"] = PDF
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "invoice.pdf").write_bytes(PDF)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (docs / "link.pdf").symlink_to(tmp_path / "secret.txt")
    proxy = attachment_service(tmp_path, docs, fetch_timeout_s=1)
    async with proxy:
        await proxy.put_tenant(
            {"id": "acme", "client_base_url": files.url, "client_attachment_path": "/endpoint",
             "attachment_url_prefixes": [f"{files.url}/files/"]}
        )  # fmt: skip
        await proxy.put_account(
            {"id": "main", "tenant_id": "acme", "host": "127.0.0.1", "port": smtp_port,
             "use_tls": False, "is_default": True}
        )  # fmt: skip
        yield proxy


def msg(message_id: str, *attachments: dict[str, str]) -> dict[str, object]:
    return {"id": message_id, "from": "s@example.com", "to": ["r@example.com"],
            "subject": "s", "body": "see attached", "attachments": list(attachments)}  # fmt: skip


def attached(received) -> dict[str, bytes]:
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


async def test_every_source_delivers_and_a_marker_is_fetched_once(proxy, sink, files):
    handler, _ = sink
    digest = hashlib.md5(PDF, usedforsecurity=False).hexdigest()
    url = {"filename": f"report_{{MD5:{digest}}}.pdf", "storage_path": f"{files.url}/files/invoice"}
    result = await proxy.submit(
        [
            msg("file", {"filename": "a.pdf", "storage_path": "invoice.pdf"}),
            msg("url1", url),
            msg("endpoint", {"filename": "e.pdf", "storage_path": "@invoice"}),
            msg(
                "inline",
                {"filename": "i.txt", "storage_path": "base64:" + base64.b64encode(b"hi").decode()},
            ),
        ],
        tenant_id="acme",
    )
    assert result.rejected == []
    await proxy.run_until_idle()
    await proxy.submit([msg("url2", url)], tenant_id="acme")
    await proxy.run_until_idle()
    by_subject = [attached(r) for r in handler.received]
    assert {"a.pdf": PDF} in by_subject
    assert by_subject.count({"report.pdf": PDF}) == 2
    assert {"e.pdf": PDF} in by_subject
    assert {"i.txt": "hi"} in by_subject
    gets = [r for r in files.requests if r[0] == "GET"]
    assert len(gets) == 1  # the second message with the marker came from the cache
    (post,) = [r for r in files.requests if r[0] == "POST"]
    assert (post[1], post[3]) == ("/endpoint", b'{"storage_path":"invoice"}')
    assert proxy.attachment_cache.hits == 1


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("missing", Status.ERROR, "HTTP 404"),
        ("broken", Status.DEFERRED, "HTTP 500"),
        ("slow", Status.DEFERRED, "Timeout"),
        ("liar", Status.ERROR, "larger than 5000 bytes"),
        ("big", Status.ERROR, "larger than 5000 bytes"),
        ("moved", Status.ERROR, "redirect not followed"),
    ],
)
async def test_a_failed_fetch_is_temporary_or_permanent_and_names_the_attachment(
    proxy, sink, files, name, status, reason
):
    handler, _ = sink
    await proxy.submit(
        [msg("m1", {"filename": "doc.pdf", "storage_path": f"{files.url}/files/{name}"})],
        tenant_id="acme",
    )
    await proxy.run_until_idle()
    message = await proxy.get_message("acme", "m1")
    assert message.status is status
    assert "doc.pdf" in message.error
    assert reason in message.error
    assert handler.received == []
    assert not any(r[1].endswith("/secret") for r in files.requests)


async def test_content_that_does_not_match_its_md5_is_an_error(proxy, sink, files):
    handler, _ = sink
    wrong = "0" * 32
    await proxy.submit(
        [
            msg(
                "m1",
                {
                    "filename": f"x_{{MD5:{wrong}}}.pdf",
                    "storage_path": f"{files.url}/files/invoice",
                },
            )
        ],
        tenant_id="acme",
    )
    await proxy.run_until_idle()
    message = await proxy.get_message("acme", "m1")
    assert (message.status, "MD5" in message.error) == (Status.ERROR, True)
    assert handler.received == []


TRAVERSAL = [
    "../secret.txt",
    "%2e%2e/secret.txt",
    "\uff0e\uff0e\uff0fsecret.txt",
    "/etc/passwd",
    "link.pdf",  # a symlink out of the root
    "docs/../../secret.txt",
    "invoice.pdf\x00",
]


@pytest.mark.parametrize("path", TRAVERSAL)
async def test_no_traversal_reaches_the_sink(proxy, sink, path):
    handler, _ = sink
    result = await proxy.submit(
        [msg("m1", {"filename": "x.pdf", "storage_path": path, "fetch_mode": "filesystem"})],
        tenant_id="acme",
    )
    if not result.rejected:
        await proxy.run_until_idle()
        assert (await proxy.get_message("acme", "m1")).status is Status.ERROR
    assert all(SECRET not in r.content for r in handler.received)
    assert all(b"root:" not in r.content for r in handler.received)


async def test_a_non_ascii_file_name_arrives_intact(proxy, sink, tmp_path):
    handler, _ = sink
    name = "Rechnung März 2024 – €12 ✓.pdf"
    (tmp_path / "docs" / name).write_bytes(PDF)
    await proxy.submit([msg("m1", {"filename": name, "storage_path": name})], tenant_id="acme")
    await proxy.run_until_idle()
    (received,) = handler.received
    assert attached(received) == {name: PDF}


async def test_messages_sent_together_with_one_marker_fetch_it_once(proxy, sink, files):
    handler, _ = sink
    digest = hashlib.md5(PDF, usedforsecurity=False).hexdigest()
    url = {"filename": f"r_{{MD5:{digest}}}.pdf", "storage_path": f"{files.url}/files/invoice"}
    await proxy.submit([msg(f"m{n}", url) for n in range(6)], tenant_id="acme")
    assert await proxy.dispatch_once() == 6  # attempted concurrently
    assert len(handler.received) == 6
    assert len([r for r in files.requests if r[0] == "GET"]) == 1


@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_only_regular_files_are_read_and_a_fifo_never_blocks(proxy, sink, tmp_path, kind):
    handler, _ = sink
    special = tmp_path / "docs" / "special"
    if kind == "fifo":
        os.mkfifo(special)  # opening it for reading would wait for a writer forever
    else:
        special.mkdir()
    await proxy.submit(
        [msg("m1", {"filename": "doc.pdf", "storage_path": "special"})], tenant_id="acme"
    )
    async with asyncio.timeout(30):
        await proxy.run_until_idle()
    message = await proxy.get_message("acme", "m1")
    assert message.status is Status.ERROR
    assert "not a regular file" in message.error
    assert handler.received == []
