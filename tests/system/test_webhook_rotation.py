"""Webhook secret rotation end to end: ``mail-proxy serve`` with an encryption key, a
tenant reporting to a real receiver on 127.0.0.1; after ``POST
/tenant/{id}/webhook-secret`` every report call is signed with the new and the old secret
(a receiver holding either verifies it) until ``DELETE .../webhook-secret/previous``;
neither secret is readable in the database file or its WAL."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.report_receiver import Call, Receiver, running_receiver
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

ADMIN = {"X-API-Token": TOKEN}


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """The receiver's check as docs/guides/delivery-reports.md gives it."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    expected = "v1=" + mac.hexdigest()
    return any(hmac.compare_digest(part.strip(), expected) for part in header.split(","))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def report_of(client: httpx.Client, receiver: Receiver, message_id: str) -> Call:
    """Queue a message to the capture account and wait for the call that reports it."""
    queued = client.post(
        "/commands/add-messages",
        params={"tenant_id": "acme"},
        json={"messages": [{"id": message_id, "from": "a@example.com",
                            "to": ["b@example.com"], "subject": "s"}]},
    )  # fmt: skip
    assert queued.json()["queued"] == 1, queued.text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for call in list(receiver.calls):
            if any(e["id"] == message_id for e in call.entries):
                return call
        time.sleep(0.05)
    raise AssertionError(f"no report of {message_id}")


def test_a_rotated_webhook_secret_signs_beside_the_old_one_until_retired(tmp_path, receiver):
    database = tmp_path / "mailproxy.db"
    env = {
        "GMP_DB_PATH": str(database),
        "GMP_SECURITY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
    }
    for url, _ in start_server(tmp_path, env):
        with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as client:
            created = client.post("/tenant", json={"id": "acme", "client_base_url": receiver.url})
            old = created.json()["webhook_secret"]
            account = {"id": "sink", "tenant_id": "acme", "kind": "capture", "is_default": True}
            assert client.post("/account", json=account).status_code == 200

            call = report_of(client, receiver, "before")
            header = call.headers["X-Mail-Proxy-Signature"]
            assert "," not in header  # one secret: the header as before
            assert verify(old, call.headers["X-Mail-Proxy-Timestamp"], call.body, header)

            rotated = client.post("/tenant/acme/webhook-secret")
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()["webhook_secret"]
            assert new != old
            tenant = client.get("/tenant/acme").json()["tenant"]
            assert (tenant["has_webhook_secret"], tenant["has_webhook_secret_previous"]) == (
                True, True
            )  # fmt: skip

            call = report_of(client, receiver, "during")
            timestamp, header = (
                call.headers["X-Mail-Proxy-Timestamp"],
                call.headers["X-Mail-Proxy-Signature"],
            )
            assert len(header.split(", ")) == 2
            assert verify(new, timestamp, call.body, header)
            assert verify(old, timestamp, call.body, header)
            assert not verify("some-other-secret", timestamp, call.body, header)

            retired = client.delete("/tenant/acme/webhook-secret/previous")
            assert retired.status_code == 200, retired.text
            assert client.get("/tenant/acme").json()["tenant"]["has_webhook_secret_previous"] is (
                False
            )
            call = report_of(client, receiver, "after")
            timestamp, header = (
                call.headers["X-Mail-Proxy-Timestamp"],
                call.headers["X-Mail-Proxy-Signature"],
            )
            assert "," not in header
            assert verify(new, timestamp, call.body, header)
            assert not verify(old, timestamp, call.body, header)

            stored = b"".join(
                p.read_bytes() for p in (database, Path(f"{database}-wal")) if p.exists()
            )
            assert old.encode() not in stored
            assert new.encode() not in stored
