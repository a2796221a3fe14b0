"""The log of the real ``mail-proxy serve`` is one format: every line it writes to standard
output is a JSON object (uvicorn's start and stop lines, the HTTP client's calls, the
service's events), at the most verbose level, through requests that succeed, fail and
make the service call a tenant's report URL on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.report_receiver import running_receiver
from tests.system.conftest import TOKEN, free_port

pytestmark = pytest.mark.system


def test_every_line_of_the_serve_log_is_a_json_event(tmp_path: Path):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "GMP_DB_PATH": str(tmp_path / "mailproxy.db"),
        "GMP_API_TOKEN": TOKEN,
        "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
        "GMP_LOG_LEVEL": "debug",
        "GMP_LOGGING_FORMAT": "json",
    }
    url = f"http://127.0.0.1:{port}"
    with (
        running_receiver() as receiver,
        (tmp_path / "stdout").open("w") as stdout,
        (tmp_path / "stderr").open("w") as stderr,
    ):
        server = subprocess.Popen(
            [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
             "serve", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=stdout, stderr=stderr, text=True,
        )  # fmt: skip
        try:
            exercise(url, receiver)
        finally:
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(timeout=30)
    assert exit_code == 0
    lines = (tmp_path / "stdout").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # each line parses, or this fails
    assert all(isinstance(event, dict) and "event" in event for event in events)
    names = [event["event"] for event in events]
    assert any(name.startswith("Started server process") for name in names)  # uvicorn
    assert "delivery.sent" in names
    assert "report.sent" in names
    assert any(name.startswith("Finished server process") for name in names)
    loggers = {event["logger"] for event in events}
    assert loggers >= {"mailproxy", "uvicorn"}
    assert "uvicorn.error" not in loggers  # uvicorn's name for its start lines: not errors
    assert not any("color_message" in event for event in events)
    # Standard error is for people; no log line lands there.
    assert "INFO:" not in (tmp_path / "stderr").read_text()


def exercise(url: str, receiver) -> None:
    """Requests that succeed and fail, and a message whose report the service posts to
    ``receiver``."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    with httpx.Client(base_url=url, headers={"X-API-Token": TOKEN}, timeout=10) as admin:
        tenant = {"id": "acme", "client_base_url": receiver.url}
        assert admin.post("/tenant", json=tenant).status_code == 200
        account = {"id": "main", "tenant_id": "acme", "kind": "capture", "is_default": True}
        assert admin.post("/account", json=account).status_code == 200
        hello = {"id": "m1", "from": "a@example.com", "to": ["b@example.com"], "subject": "Hi"}
        body = {"tenant_id": "acme", "messages": [hello]}
        assert admin.post("/commands/add-messages", json=body).json()["queued"] == 1
        assert admin.get("/messages/nothing", params={"tenant_id": "acme"}).status_code == 404
        assert admin.post("/tenant", json={"id": "acme", "nonsense": 1}).status_code == 422
        assert httpx.get(f"{url}/status", timeout=10).status_code == 401
        assert receiver.arrived.wait(timeout=20), "no report call arrived"
