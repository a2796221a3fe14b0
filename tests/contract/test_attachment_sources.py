"""Contract of the AttachmentSource port, run against every source: the filesystem under
a root, URLs and endpoints over a real HTTP server on 127.0.0.1, and the memory source
shipped for applications' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailproxy.adapters.attachment_sources import EndpointSource, FilesystemSource, UrlSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import AttachmentUnavailable, InvalidInput
from mailproxy.domain.model import AttachmentRef, Tenant
from mailproxy.testing import MemoryAttachmentSource
from tests.file_server import FileServer, running_file_server

CONTENT = b"%PDF-1.4 the invoice"
LOCAL = parse_networks("127.0.0.0/8")


@dataclass
class Case:
    source: object
    tenant: Tenant
    #: storage paths: present, missing, refused without I/O
    present: str
    missing: str
    refused: str
    mode: str

    def ref(self, storage_path: str) -> AttachmentRef:
        return AttachmentRef(
            filename="invoice.pdf", storage_path=storage_path, fetch_mode=self.mode
        )


@pytest.fixture(scope="module")
def file_server() -> Iterator[FileServer]:
    with running_file_server() as server:
        server.files["invoice"] = CONTENT
        yield server


@pytest.fixture(params=["filesystem", "http_url", "endpoint", "memory"])
async def case(request, tmp_path: Path, file_server: FileServer) -> AsyncIterator[Case]:
    http = GuardedHttp(timeout_s=1, egress_allow=LOCAL)
    tenant = Tenant(id="t1", attachment_url_prefixes=(f"{file_server.url}/files/",))
    if request.param == "filesystem":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "invoice.pdf").write_bytes(CONTENT)
        source = FilesystemSource(tmp_path / "docs", max_bytes=1000)
        made = Case(source, tenant, "invoice.pdf", "nope.pdf", "../etc/passwd", "filesystem")
    elif request.param == "http_url":
        source = UrlSource(http, LOCAL, 1000)
        made = Case(
            source, tenant, f"{file_server.url}/files/invoice", f"{file_server.url}/files/missing",
            f"{file_server.url}/private/invoice", "http_url",
        )  # fmt: skip
    elif request.param == "memory":
        source = MemoryAttachmentSource()
        source.put("t1", "invoices/invoice.pdf", CONTENT)
        source.put("t2", "invoices/other.pdf", CONTENT)
        made = Case(
            source, tenant, "invoices/invoice.pdf", "invoices/other.pdf", "../invoices/x.pdf",
            "filesystem",
        )  # fmt: skip
    else:
        source = EndpointSource(http, LOCAL, 1000)
        tenant = Tenant(
            id="t1", client_base_url=file_server.url, client_attachment_path="/endpoint",
            attachment_url_prefixes=(f"{file_server.url}/endpoint",),
        )  # fmt: skip
        made = Case(
            source, tenant, "@invoice", "@missing", "@[http://elsewhere.example/x]invoice",
            "endpoint",
        )  # fmt: skip
    try:
        yield made
    finally:
        await made.source.close()


async def test_a_present_reference_gives_its_bytes(case):
    case.source.check(case.tenant, case.ref(case.present))
    assert await case.source.fetch(case.tenant, case.ref(case.present)) == CONTENT


async def test_a_missing_reference_is_a_permanent_failure_naming_the_attachment(case):
    with pytest.raises(AttachmentUnavailable) as caught:
        await case.source.fetch(case.tenant, case.ref(case.missing))
    assert caught.value.temporary is False
    assert "invoice.pdf" in str(caught.value)


async def test_a_forbidden_reference_is_refused_without_io_and_never_fetched(case):
    with pytest.raises(InvalidInput):
        case.source.check(case.tenant, case.ref(case.refused))
    with pytest.raises(AttachmentUnavailable) as caught:
        await case.source.fetch(case.tenant, case.ref(case.refused))
    assert caught.value.temporary is False


async def test_the_source_serves_its_modes_and_closes_twice(case):
    assert case.mode in case.source.fetch_modes
    await case.source.close()
    await case.source.close()
