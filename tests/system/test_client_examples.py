"""The client guide's two examples run as written (docs/examples): a plain-Python app
and a Django site, each against a real ``mail-proxy serve`` with an aiosmtpd sink, each
receiving the service's signed reports. The Django site's mail reaches the sink with the
MIME structure Django asked for."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailproxy.client import Client
from tests.smtp_sink import free_port
from tests.system.conftest import TOKEN

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
#: A bound against a hang, not a measurement.
WITHIN_S = 60.0


class Output:
    """The lines a process prints, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, count: int, prefix: str) -> list[str]:
        deadline = time.monotonic() + WITHIN_S
        while time.monotonic() < deadline:
            found = [line for line in self.lines if line.startswith(prefix)]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {count} lines {prefix!r} in {self.lines}")


@contextlib.contextmanager
def run(script: Path, env: dict[str, str]) -> Iterator[Output]:
    process = subprocess.Popen(
        [sys.executable, script.name], cwd=script.parent, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(script.parent)]),
             **env},
    )  # fmt: skip
    try:
        yield Output(process)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def tenant_env(url: str, sink_port: int, tenant: str) -> dict[str, str]:
    """A tenant whose reports go to a free loopback port; its settings for the app."""
    port = free_port()
    with Client(url, token=TOKEN) as admin:
        created = admin.create_tenant({"id": tenant, "client_base_url": f"http://127.0.0.1:{port}"})
        admin.put_account({"id": "main", "host": "127.0.0.1", "port": sink_port,
                           "use_tls": False, "is_default": True}, tenant_id=tenant)  # fmt: skip
    return {"MAILPROXY_URL": url, "MAILPROXY_TOKEN": created.api_key,
            "MAILPROXY_WEBHOOK_SECRET": created.webhook_secret, "PORT": str(port)}  # fmt: skip


def test_the_plain_python_app_sends_and_hears_it_was_sent(server, sink):
    url, _ = server
    env = tenant_env(url, sink[1], "plain")
    with run(EXAMPLES / "send_and_receive.py", env) as output:
        assert output.wait_for(1, "sent ") == ["sent welcome-1"]
    assert any(r.rcpt_tos == ["ada@example.org"] for r in sink[0].received)


def test_the_django_site_sends_through_the_backend_and_receives_its_reports(server, sink):
    url, _ = server
    handler, sink_port = sink
    env = tenant_env(url, sink_port, "site")
    with run(EXAMPLES / "django_site" / "send.py", env) as output:
        sent = output.wait_for(2, "sent ")
    ids = {line.split()[1] for line in sent}
    with Client(url, token=env["MAILPROXY_TOKEN"]) as client:
        records = list(client.list_messages())
    assert {m.id for m in records} == ids
    assert sorted((m.metadata or {}) != {} for m in records) == [False, True]
    assert [m.metadata for m in records if m.metadata] == [{"order": 7}]
    received = {email.message_from_bytes(r.content, policy=email.policy.default)["Subject"]: r
                for r in handler.received}  # fmt: skip
    plain = email.message_from_bytes(received["Plain"].content, policy=email.policy.default)
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().strip() == "Hello Ada"
    rich_received = received["Rich"]
    assert sorted(rich_received.rcpt_tos) == ["bob@example.org", "carol@example.org"]
    rich = email.message_from_bytes(rich_received.content, policy=email.policy.default)
    assert rich["Cc"] == "carol@example.org"
    assert rich["Reply-To"] == "help@example.com"
    assert rich.get_content_type() == "multipart/mixed"
    alternative, attachment = rich.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    text, related = alternative.get_payload()
    assert (text.get_content_type(), related.get_content_type()) == (
        "text/plain", "multipart/related",
    )  # fmt: skip
    html, logo = related.get_payload()
    assert '<b>HTML</b> part <img src="cid:logo@shop">' in html.get_content()
    assert (logo["Content-ID"], logo.get_content_type()) == ("<logo@shop>", "image/png")
    assert logo.get_content_disposition() == "inline"
    assert (attachment.get_filename(), attachment.get_content_type()) == (
        "invoice.pdf", "application/pdf",
    )  # fmt: skip
    assert attachment.get_content() == b"%PDF-1.4 example"


def test_the_litestar_receiver_hears_the_service_s_reports(server, sink):
    url, _ = server
    env = tenant_env(url, sink[1], "lit")
    command = [sys.executable, "-m", "uvicorn", "litestar_receiver:app", "--host", "127.0.0.1",
               "--port", env["PORT"], "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=EXAMPLES, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
             "SECRET": env["MAILPROXY_WEBHOOK_SECRET"]},
    )  # fmt: skip
    try:
        output = Output(process)
        with Client(url, token=env["MAILPROXY_TOKEN"]) as client:
            client.send({"id": "l1", "from": "shop@example.com", "to": ["ada@example.org"],
                         "subject": "Hello"})  # fmt: skip
        assert output.wait_for(1, "sent ") == ["sent l1"]
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
