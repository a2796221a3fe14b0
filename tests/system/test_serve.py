"""The real ``mail-proxy serve`` process on a loopback port: HTTP in, SMTP out to aiosmtpd,
exactly as the benchmark starts it, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.system.conftest import TOKEN

pytestmark = pytest.mark.system


def test_serve_accepts_sends_reports_state_and_stops_gracefully(server, sink):
    url, process = server
    handler, smtp_port = sink
    with httpx.Client(base_url=url, headers={"X-API-Token": TOKEN}, timeout=10) as admin:
        key = admin.post("/tenant", json={"id": "acme"}).json()["api_key"]
        bearer = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=bearer, timeout=10) as tenant:
            check_delivery(admin, tenant, handler, smtp_port)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def check_delivery(admin, tenant, handler, smtp_port):
    account = {"id": "main", "host": "127.0.0.1", "port": smtp_port, "use_tls": False,
               "is_default": True}  # fmt: skip
    assert tenant.post("/account", json=account).status_code == 200
    messages = [
        {"id": f"m{n}", "from": "app@example.com", "to": [f"r{n}@example.com"], "subject": "Hi"}
        for n in range(5)
    ]
    answer = tenant.post("/commands/add-messages", json={"messages": messages})
    assert answer.json() == {"ok": True, "queued": 5, "rejected": []}
    deadline = time.monotonic() + 10
    while len(handler.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(r.rcpt_tos[0] for r in handler.received) == [
        f"r{n}@example.com" for n in range(5)
    ]
    while time.monotonic() < deadline:
        record = tenant.get("/messages/m4").json()["message"]
        if record["status"] == "sent":
            break
        time.sleep(0.05)
    assert record["status"] == "sent"
    assert record["why"] is None
    assert admin.get("/status").json()["queue"]["sent"] == 5
    assert tenant.get("/tenants").status_code == 403
