"""No secret reaches the logs: a real attachment fetch from a presigned URL (its signature in
the query string) through the service built by bootstrap, logged the way ``serve`` logs, at
the most verbose level, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.file_server import running_file_server

SIGNATURE = "X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0"

SCRIPT = """
import asyncio, sys
from mailproxy.bootstrap import build_proxy
from mailproxy.config import load_settings
from mailproxy.entrypoints.logs import configure_logging

folder, url = sys.argv[1], sys.argv[2]
configure_logging("debug", "json")
settings = load_settings(environ={
    "GMP_DB_PATH": folder + "/logs.db", "GMP_DELIVERY_CAPTURE_DIR": folder + "/outbox",
    "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
})

async def main():
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        prefix = url.split("/files/")[0] + "/files/"
        await proxy.put_tenant({"id": "acme", "attachment_url_prefixes": [prefix]})
        await proxy.put_account(
            {"id": "box", "tenant_id": "acme", "kind": "capture", "is_default": True})
        await proxy.submit([{"id": "m1", "from": "a@example.com", "to": ["b@example.com"],
            "subject": "s", "attachments": [{"filename": "doc.pdf", "storage_path": url}]}],
            tenant_id="acme")
        await proxy.run_until_idle()
        print((await proxy.get_message("acme", "m1")).status)

asyncio.run(main())
"""


def test_a_presigned_attachment_url_is_fetched_without_its_signature_in_the_logs(
    tmp_path: Path,
):
    with running_file_server() as files:
        files.files[f"doc.pdf?{SIGNATURE}"] = b"%PDF-1.4 signed"
        url = f"{files.url}/files/doc.pdf?{SIGNATURE}"
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path), url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        fetched = [path for method, path, _, _ in files.requests if method == "GET"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sent"
    assert fetched == [f"/files/doc.pdf?{SIGNATURE}"]  # the real URL was fetched
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "delivery.sent" in events  # the log output is there, at debug level
    assert SIGNATURE.split("=")[1] not in result.stderr
