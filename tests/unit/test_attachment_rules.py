"""The sandbox of attachment references: the traversal corpus, URL prefixes on segment
boundaries, endpoint syntax, and the SSRF corpus — the latter run in-process with every
outgoing connection blocked, so a mistake fails the test instead of reaching a network."""

from __future__ import annotations

import socket
from pathlib import PurePosixPath

import pytest

from mailproxy.adapters.attachment_sources import UrlSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.domain.attachments import (
    check_file_path,
    normalize_url,
    split_endpoint,
    under_root,
    url_allowed,
)
from mailproxy.domain.errors import AttachmentUnavailable, InvalidInput
from mailproxy.domain.model import AttachmentRef, Tenant

TRAVERSAL = [
    "../../etc/passwd",
    "docs/../../etc/passwd",
    "..",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2E%2E%2Fetc%2Fpasswd",
    "\uff0e\uff0e\uff0fetc\uff0fpasswd",  # full-width ．．／
    "docs\\..\\secret",
    "invoice.pdf\x00.png",
    "",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_traversal_syntax_is_refused(path):
    with pytest.raises(InvalidInput):
        check_file_path("attachments.storage_path", path)


def test_ordinary_paths_pass_and_roots_are_lexical():
    assert check_file_path("f", "2024/invoice..final.pdf") == PurePosixPath(
        "2024/invoice..final.pdf"
    )
    roots = [PurePosixPath("/srv/docs")]
    assert under_root(PurePosixPath("/srv/docs/a.pdf"), roots)
    assert not under_root(PurePosixPath("/srv/docs-other/a.pdf"), roots)
    assert not under_root(PurePosixPath("/etc/passwd"), roots)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.example/public/a.pdf", True),
        ("HTTPS://FILES.EXAMPLE:443/public/a.pdf", True),
        ("https://files.example/public/%61.pdf", True),
        ("https://files.example/public", False),  # the folder itself is not under it
        ("https://files.example/public/../private/x", False),
        ("https://files.example/public%2F..%2Fprivate/x", False),
        ("https://files.example/publicity/a.pdf", False),
        ("https://files.example:8443/public/a.pdf", False),
        ("http://files.example/public/a.pdf", False),
        ("https://files.example.evil/public/a.pdf", False),
    ],
)
def test_url_prefixes_match_on_segment_boundaries_after_normalising(url, allowed):
    assert url_allowed(url, ["https://files.example/public/"]) is allowed


def test_normalisation_and_endpoint_syntax():
    assert normalize_url("HTTP://Host:80/a/./b/../c") == "http://host/a/c"
    assert split_endpoint("@doc_id=123") == (None, "doc_id=123")
    assert split_endpoint("@[https://api.example/att]id=4") == ("https://api.example/att", "id=4")
    assert split_endpoint("doc_id=9") == (None, "doc_id=9")


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection fails loudly, and is recorded."""
    attempts: list[object] = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("outgoing connections are blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


SSRF = [
    "http://127.0.0.1/x",
    "http://localhost/x",  # a name that resolves to loopback
    "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped IPv6
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/x",
    "http://100.64.0.1/x",  # CGNAT
    "http://192.168.1.1/x",
    "http://2130706433/x",  # decimal 127.0.0.1
    "http://0x7f000001/x",  # hex
    "http://0177.0.0.1/x",  # octal
    "http://127.1/x",
    "http://0/x",
]


@pytest.mark.parametrize("url", SSRF)
async def test_ssrf_corpus_never_connects(no_network, url):
    source = UrlSource(GuardedHttp(timeout_s=1), (), 1000)
    prefix = url.rsplit("/", 1)[0] + "/"
    tenant = Tenant(id="t1", attachment_url_prefixes=(prefix,))
    ref = AttachmentRef(filename="x.pdf", storage_path=url, fetch_mode="http_url")

    async def check_then_fetch() -> bytes:
        source.check(tenant, ref)
        return await source.fetch(tenant, ref)

    with pytest.raises((InvalidInput, AttachmentUnavailable)) as caught:
        await check_then_fetch()
    if isinstance(caught.value, AttachmentUnavailable):
        assert caught.value.temporary is False
    assert no_network == []
    await source.close()


async def test_a_redirect_to_loopback_is_not_followed(no_network):
    """The first hop is refused before any connection; a 302 is never followed anyway
    (see the system tests, where the server is allowed and answers 302)."""
    source = UrlSource(GuardedHttp(timeout_s=1), (), 1000)
    tenant = Tenant(id="t1", attachment_url_prefixes=("http://127.0.0.1/",))
    ref = AttachmentRef(filename="x", storage_path="http://127.0.0.1/moved", fetch_mode="http_url")
    with pytest.raises((InvalidInput, AttachmentUnavailable)):
        source.check(tenant, ref)
    assert no_network == []
