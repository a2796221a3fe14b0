"""A tenant whose delivery-report URL the egress rule refuses is stored as asked, and said
to be uncallable wherever someone looks: in the answer that stored it, in GET
/tenants/sync-status, on the status page and in ``mail-proxy NAME tenants sync-status``
(the real console script). Judged without a lookup: address literals, and ``localhost``;
no test resolves a name. The app runs without its report loop, so nothing is called."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.domain.egress import parse_networks, url_refusal
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import Instance
from mailproxy.service import MailProxy

TOKEN = "admin-token-for-report-urls"
HEADERS = {"X-API-Token": TOKEN}
REFUSED = (
    "delivery reports to http://127.0.0.1:9/app cannot be sent: 127.0.0.1 is not an address "
    "mailproxy may connect to (see security.egress_allow)"
)


@pytest.mark.parametrize(
    ("url", "allow", "refused"),
    [
        ("http://127.0.0.1:9/app", "", "127.0.0.1"),
        ("http://127.0.0.1:9/app", "127.0.0.0/8", None),
        ("http://[::1]:9", "127.0.0.0/8", "::1"),
        ("http://10.0.0.1/", "", "10.0.0.1"),
        ("http://localhost:3000", "", "localhost"),
        ("http://api.localhost/", "", "api.localhost"),
        ("https://app.example.com/", "", None),  # a name: judged when resolved, at each call
        ("https://93.184.216.34/", "", None),
    ],
)
def test_what_the_egress_rule_refuses_without_a_lookup(url, allow, refused):
    reason = url_refusal(url, parse_networks(allow))
    expected = (
        None
        if refused is None
        else f"{refused} is not an address mailproxy may connect to (see security.egress_allow)"
    )
    assert reason == expected


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient]:
    proxy = MailProxy(
        store=SqliteStore(tmp_path / "reports.db"),
        transports={"capture": CaptureTransport(tmp_path / "outbox")},
        reporter=HttpReportSender(timeout_s=1),  # no egress_allow: only public addresses
        run_dispatcher=False,
    )
    settings = load_settings(environ={"GMP_API_TOKEN": TOKEN, "GMP_DB_PATH": str(tmp_path)})
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        yield client


async def test_the_tenant_answers_warn_of_a_report_url_that_can_never_be_called(client):
    body = {"id": "acme", "client_base_url": "http://127.0.0.1:9/app"}
    created = await client.post("/tenant", json=body, headers=HEADERS)
    assert created.status_code == 200
    assert created.json()["warnings"] == [REFUSED]
    assert created.json()["tenant"]["client_base_url"] == "http://127.0.0.1:9/app"
    read = await client.get("/tenant/acme", headers=HEADERS)
    assert read.json()["warnings"] == [REFUSED]
    renamed = await client.put("/tenant/acme", json={"name": "Acme"}, headers=HEADERS)
    assert renamed.json()["warnings"] == [REFUSED]
    fixed = await client.put(
        "/tenant/acme", json={"client_base_url": "https://app.example.com"}, headers=HEADERS
    )
    assert "warnings" not in fixed.json()
    plain = await client.post("/tenant", json={"id": "beta"}, headers=HEADERS)
    assert "warnings" not in plain.json()


async def test_sync_status_and_the_status_page_show_the_refused_url(client):
    body = {"id": "acme", "client_base_url": "http://127.0.0.1:9/app"}
    await client.post("/tenant", json=body, headers=HEADERS)
    await client.post("/tenant", json={"id": "beta"}, headers=HEADERS)
    status = (await client.get("/tenants/sync-status", headers=HEADERS)).json()
    assert {t["id"]: t["warning"] for t in status["tenants"]} == {"acme": REFUSED, "beta": None}
    page = (await client.get("/ui", headers=HEADERS)).text
    assert "<h2>Report URLs that cannot be called</h2>" in page
    assert f"<td>acme</td><td class='prose'>{REFUSED}</td>" in page
    await client.put("/tenant/acme", json={"client_base_url": None}, headers=HEADERS)
    page = (await client.get("/ui", headers=HEADERS)).text
    assert "Report URLs that cannot be called" not in page


def test_the_sync_status_command_warns_of_a_refused_report_url(tmp_path: Path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", 1)  # stopped: commands use its database
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "GMP_HOME": str(home),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "mailproxy", "box", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done

    added = cli("tenants", "add", "acme", "--base-url", "http://127.0.0.1:9/app")
    assert f"warning: {REFUSED}" in added.stderr.splitlines()
    assert f"warning: {REFUSED}" in cli("tenants", "show", "acme", "--json").stderr
    updated = cli("tenants", "update", "acme", "--name", "Acme", "--json")
    assert json.loads(updated.stdout)["name"] == "Acme"  # the warning kept out of the JSON
    assert f"warning: {REFUSED}" in updated.stderr
    assert "warning" not in cli("tenants", "add", "beta").stderr
    shown = cli("tenants", "sync-status").stdout
    assert f"warning: acme: {REFUSED}" in shown.splitlines()
    assert "beta" in shown
    assert "warning: beta" not in shown
    answer = json.loads(cli("tenants", "sync-status", "--json").stdout)
    assert [t["warning"] for t in answer["tenants"]] == [REFUSED, None]
