"""Fixtures of the unit tests: an instance home for the command-line tests, the REST
API through the real app for the HTTP tests, and a service that sends to an aiosmtpd
sink."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.dkim_signer import DkimpySigner
from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.domain.egress import parse_networks
from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import Instance
from mailproxy.service import MailProxy
from tests.conftest import Clock
from tests.smtp_sink import SinkHandler, running_sink


@pytest.fixture
def home(tmp_path, monkeypatch):
    """GMP_HOME with a stopped instance ``box`` that has a tenant ``acme``."""
    home = tmp_path / "home"
    monkeypatch.setenv("GMP_HOME", str(home))
    Instance(home, "box").create("127.0.0.1", 1)
    assert app(["box", "tenants", "add", "acme"], result_action="return_value") == 0
    return home


@pytest.fixture
def run(home, capsys):
    """Run the command line in-process on ``home``'s instances: (exit code, out, err)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = app(list(args), result_action="return_value")
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


ADMIN_TOKEN = "admin-token-for-tests"


@dataclass
class Api:
    client: AsyncTestClient
    proxy: MailProxy
    clock: Clock
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        if who == "admin":
            return {"X-API-Token": ADMIN_TOKEN}
        if who == "none":
            return {}
        if who == "garbage":
            return {"X-API-Token": "not-a-token"}
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def call(self, who: str, method: str, path: str, **kwargs):
        return await self.client.request(method, path, headers=self.headers(who), **kwargs)


def message(message_id: str, **fields):
    return {
        "id": message_id,
        "from": "app@example.com",
        "to": ["someone@example.com"],
        "subject": "Hello",
        **fields,
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = Clock()
    store = SqliteStore(tmp_path / "api.db")
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(tmp_path / "outbox")},
        run_dispatcher=False,
        clock=clock,
        signer=DkimpySigner(),
    )
    settings = load_settings(environ={"GMP_API_TOKEN": ADMIN_TOKEN, "GMP_DB_PATH": str(tmp_path)})
    app = create_app(proxy, settings)
    async with AsyncTestClient(app) as client:
        api = Api(client, proxy, clock, {})
        for tenant in ("A", "B"):
            created = await api.call("admin", "POST", "/tenant", json={"id": tenant})
            assert created.status_code == 200, created.text
            api.keys[tenant] = created.json()["api_key"]
            account = {"id": "main", "tenant_id": tenant, "kind": "capture", "is_default": True}
            assert (await api.call("admin", "POST", "/account", json=account)).status_code == 200
        yield api


@pytest.fixture
def sink() -> Iterator[tuple[SinkHandler, int]]:
    """An aiosmtpd sink on loopback: (its handler, its port)."""
    with running_sink() as running:
        yield running


@contextlib.asynccontextmanager
async def proxy_to_sink(
    tmp_path: Path,
    port: int,
    *,
    clock: Clock | None = None,
    busy_timeout_s: float = 5.0,
    **account: Any,
) -> AsyncIterator[MailProxy]:
    """An open MailProxy on a SQLite file (no dispatch loop, ``clock`` or a test clock of
    its own, the file's ``busy_timeout_s``) with a tenant ``acme`` whose default account
    ``main`` sends to 127.0.0.1:``port`` (``account``: more of its fields)."""
    transport = SmtpTransport(connect_timeout_s=2, egress_allow=parse_networks("127.0.0.0/8"))
    async with MailProxy(
        store=SqliteStore(tmp_path / "s.db", busy_timeout_s=busy_timeout_s),
        transports={"smtp": transport},
        run_dispatcher=False, clock=clock or Clock(), signer=DkimpySigner(),
    ) as proxy:  # fmt: skip
        await proxy.put_tenant({"id": "acme"})
        await proxy.put_account(
            {"id": "main", "tenant_id": "acme", "host": "127.0.0.1", "port": port,
             "use_tls": False, "is_default": True, **account}
        )  # fmt: skip
        yield proxy


class MemoryMailboxes:
    """The mailboxes a service opens, in memory, by host name (one per account in the
    tests): ``open`` is the service's ``open_mailbox``."""

    def __init__(self) -> None:
        self.by_host: dict[str, MemoryMailbox] = {}

    def open(self, spec: Any, scope: str | None, ca_file: str | None) -> MemoryMailbox:
        return self.by_host.setdefault(spec.host, MemoryMailbox(f"{spec.user}@{spec.host}"))
