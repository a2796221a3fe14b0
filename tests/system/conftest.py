"""Fixtures of the system tests: SMTP sinks and the real server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailproxy.adapters.attachment_cache import TwoTierCache
from mailproxy.adapters.attachment_sources import EndpointSource, FilesystemSource, UrlSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.service import MailProxy
from tests.conftest import Clock, fresh_postgres_database
from tests.file_server import FileServer, running_file_server
from tests.mailservers import (
    Dovecot,
    Postfix,
    make_certificates,
    running_dovecot,
    running_postfix,
)
from tests.smtp_sink import SinkHandler, running_sink


@pytest.fixture
def files() -> Iterator[FileServer]:
    """A real HTTP server on 127.0.0.1 serving ``files.files`` (empty at first) under
    ``/files/`` and as an attachment endpoint; it records every request."""
    with running_file_server() as server:
        yield server


@pytest.fixture
def sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=False) as running:
        yield running


@pytest.fixture
def utf8_sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=True) as running:
        yield running


TOKEN = "system-test-admin-token"


def short_timeout_service(clock: Clock, store: Any, **options: Any) -> MailProxy:
    """The service as the system tests drive it: ``store`` for everything, SMTP with
    short timeouts (half a second for the reply after the final dot), a fixed jitter."""
    return MailProxy(
        store=store,
        transports={
            "smtp": SmtpTransport(
                connect_timeout_s=2,
                command_timeout_s=2,
                data_timeout_s=0.5,
                egress_allow=parse_networks("127.0.0.0/8"),
            )
        },
        clock=clock,
        random_unit=lambda: 0.5,
        **options,
    )


def reporting_service(
    tmp_path: Path,
    clock: Clock,
    *,
    allow: str = "127.0.0.0/8",
    timeout_s: float = 0.5,
    **options: Any,
) -> MailProxy:
    """The service on a SQLite file, reporting to 127.0.0.1 (``allow``) with a short call
    timeout."""
    reporter = HttpReportSender(
        timeout_s=timeout_s, egress_allow=parse_networks(allow), clock=clock
    )
    return short_timeout_service(
        clock, SqliteStore(tmp_path / "reports.db"), reporter=reporter, **options
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    tmp_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``mail-proxy serve`` exactly as the benchmark starts it, on a free loopback port
    (``env``: more settings, e.g. another ``GMP_DB_PATH``)."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        # A checkout run with PYTHONPATH=src tests its own code, not an installed copy.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        "GMP_DB_PATH": str(tmp_path / "mailproxy.db"),
        "GMP_API_TOKEN": TOKEN,
        # The sinks and receivers are on loopback, which the egress rule refuses unless
        # the operator allows it.
        "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
        **(env or {}),
    }
    # The log goes to a file: a pipe nobody reads fills up and stops the server.
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
             "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=1) as probe:
                if probe.get(f"{url}/health").status_code == 200:
                    break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        process.wait()
        pytest.fail(f"server did not start: {log_path.read_text()[-4000:]}")
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    yield from start_server(tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


def attachment_service(tmp_path: Path, docs: Path, *, fetch_timeout_s: float) -> MailProxy:
    """The service as the attachment tests drive it: a memory store, SMTP to loopback,
    files under ``docs``, URLs and endpoints on loopback with 5,000-byte answers, the
    two-tier cache with its disk under ``tmp_path``."""
    local = parse_networks("127.0.0.0/8")
    http = GuardedHttp(timeout_s=fetch_timeout_s, egress_allow=local)
    store = MemoryStore()
    return MailProxy(
        store=store,
        transports={
            "smtp": SmtpTransport(connect_timeout_s=2, command_timeout_s=2, egress_allow=local)
        },
        attachment_sources=[
            FilesystemSource(docs, max_bytes=100_000),
            UrlSource(http, local, 5000),
            EndpointSource(http, local, 5000),
        ],
        attachment_cache=TwoTierCache(disk_dir=tmp_path / "cache"),
        clock=Clock(), random_unit=lambda: 0.5, run_dispatcher=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot for the module, with spare users (:meth:`Dovecot.add_user`)."""
    with running_dovecot({}, spares=32) as server:
        yield server


@pytest.fixture(scope="module")
def postfix(dovecot: Dovecot) -> Iterator[Postfix]:
    """A private Postfix that bounces unknown users of ``LOCAL_DOMAIN`` and delivers every
    address of ``BOUNCE_DOMAIN`` into a mailbox of ``dovecot``."""
    user, _ = dovecot.add_user()
    with running_postfix(dovecot, user) as server:
        yield server


@dataclass
class Submission:
    """``mail-proxy serve`` with SMTP submission (STARTTLS with a test CA's certificate)
    and a tenant ``acme`` whose default account ``main`` sends to ``sink``."""

    url: str
    smtp_port: int
    #: The implicit-TLS port (RFC 8314).
    tls_port: int
    key: str
    sink: SinkHandler
    sink_port: int
    ca_file: Path
    folder: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Token": TOKEN}, timeout=30)


#: The limits the submission server runs with, small enough for a test to pass them.
SUBMISSION_MAX_BYTES = 200_000
SUBMISSION_MAX_RECIPIENTS = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Submission]:
    folder = tmp_path_factory.mktemp("submission")
    certificates = make_certificates(folder / "tls")
    smtp_port, tls_port = free_port(), free_port()
    env = {
        "GMP_SUBMISSION_PORT": str(smtp_port),
        "GMP_SUBMISSION_TLS_PORT": str(tls_port),
        "GMP_SUBMISSION_CERT_FILE": str(certificates.cert_file),
        "GMP_SUBMISSION_KEY_FILE": str(certificates.key_file),
        "GMP_SUBMISSION_MAX_MESSAGE_BYTES": str(SUBMISSION_MAX_BYTES),
        "GMP_SUBMISSION_MAX_RECIPIENTS": str(SUBMISSION_MAX_RECIPIENTS),
        "GMP_SUBMISSION_AUTH_FAILURE_DELAY_S": "0.1",
        # Wrong passwords are tried on purpose from this address: never throttled here.
        "GMP_SECURITY_AUTH_MAX_FAILURES": "0",
        # A write that waits for a lock gives up soon (the store-unavailable test).
        "GMP_STORAGE_BUSY_TIMEOUT_S": "1",
    }
    with running_sink(enable_SMTPUTF8=True) as (sink, sink_port):
        server = start_server(folder, env)
        url, _ = next(server)
        try:
            with httpx.Client(base_url=url, headers={"X-API-Token": TOKEN}) as api:
                key = api.post("/tenant", json={"id": "acme"}).json()["api_key"]
                account = {"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                           "port": sink_port, "use_tls": False, "is_default": True}  # fmt: skip
                assert api.post("/account", json=account).status_code == 200
            yield Submission(
                url=url, smtp_port=smtp_port, tls_port=tls_port, key=key, sink=sink, sink_port=sink_port,
                ca_file=certificates.ca_file, folder=folder,
            )  # fmt: skip
        finally:
            server.close()
