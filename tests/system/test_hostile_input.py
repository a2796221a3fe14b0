"""Hostile input against the real ``mail-proxy serve``, end to end to an aiosmtpd sink:
header and envelope injection in every field that reaches the wire, unicode edge cases,
oversize and deeply nested bodies, and URLs aimed at a canary listener on 127.0.0.1 that
the default egress rule must keep the service from reaching.

Whatever is sent: never a 5xx, nothing injected at the sink (no extra header, no extra
recipient, no bare CR or LF in a header), and not one connection to the canary."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.smtp_sink import SinkHandler, running_sink
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

ADMIN = {"X-API-Token": TOKEN}
EVIL = "evil@attacker.example"
INJECTED = f"\r\nBcc: {EVIL}"


@contextlib.contextmanager
def canary() -> Iterator[tuple[int, list[str]]]:
    """A loopback listener that records every connection made to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    connections: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                connection, peer = listener.accept()
            except TimeoutError:
                continue
            connections.append(str(peer))
            connection.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], connections
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def hostile_messages(canary_port: int) -> dict[str, dict[str, Any]]:
    """One message per attack, each otherwise valid."""
    base = {"tenant_id": "acme", "from": "app@example.com", "to": ["r@example.com"],
            "subject": "hello", "body": "text"}  # fmt: skip
    canaries = [
        f"http://127.0.0.1:{canary_port}/a.pdf",
        f"http://localhost:{canary_port}/a.pdf",
        f"http://2130706433:{canary_port}/a.pdf",
        f"http://0x7f.0.0.1:{canary_port}/a.pdf",
        f"http://[::ffff:127.0.0.1]:{canary_port}/a.pdf",
        f"http://[::1]:{canary_port}/a.pdf",
    ]
    attacks: dict[str, dict[str, Any]] = {
        "CRLF in subject": {"subject": f"hi{INJECTED}"},
        "LF in subject": {"subject": f"hi\nBcc: {EVIL}"},
        "encoded-word newline in subject (CVE-2024-6923)": {
            "subject": f"x=?UTF-8?Q?=0A?=Bcc: {EVIL}"
        },
        "encoded-word newline in a display name": {
            "from": f"=?UTF-8?Q?a=0ABcc:_{EVIL}?= <app@example.com>"
        },
        "CRLF in a custom header": {"headers": {"X-Campaign": f"spring{INJECTED}"}},
        "CRLF in a header name": {"headers": {f"X-A{INJECTED}": "v"}},
        "Bcc as a custom header": {"headers": {"Bcc": EVIL}},
        "CRLF in from": {"from": f"App <app@example.com>{INJECTED}"},
        "CRLF in reply_to": {"reply_to": f"r@example.com{INJECTED}"},
        "RCPT smuggled in a recipient": {"to": [f"r@example.com>\r\nRCPT TO:<{EVIL}"]},
        "NUL in a recipient": {"to": [f"r@example.com\x00{EVIL}"]},
        "MAIL parameter smuggled in return_path": {"return_path": "app@example.com> SIZE=1"},
        "angle brackets in a recipient": {"to": [f"<{EVIL}>, r@example.com"]},
        "CRLF in message_id": {"message_id": f"<a@example.com>{INJECTED}"},
        "right-to-left override in subject": {"subject": "invoice\u202egpj.exe"},
        "zero-width and combining characters": {"subject": "a\u200b\u0301\ufeffb", "body": "é"},
        "a 2,000-character subject": {"subject": "ü" * 2000},
        "emoji display name": {"from": "📨 Sender <app@example.com>"},
        "metadata nested too deep": {
            "metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}
        },
        "attachment path traversal": {
            "attachments": [{"filename": "x", "storage_path": "../../../../etc/passwd"}]
        },
    }
    for n, url in enumerate(canaries):
        attacks[f"attachment URL to the canary ({n})"] = {
            "attachments": [{"filename": "a.pdf", "storage_path": url, "fetch_mode": "http_url"}]
        }
    return {name: base | {"id": f"h{n}"} | fields for n, (name, fields) in
            enumerate(attacks.items())}  # fmt: skip


def post_raw(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/commands/add-messages",
        content=body,
        headers={**ADMIN, "Content-Type": "application/json", **(headers or {})},
        timeout=60,
    )


@pytest.fixture
def ipv6_sink() -> Iterator[tuple[SinkHandler, int]]:
    """The sink on ::1, the one address this test lets the service reach: the canary
    listens on 127.0.0.1, which stays forbidden in every spelling."""
    with running_sink(host="::1", enable_SMTPUTF8=False) as running:
        yield running


def test_hostile_input_never_fails_the_server_injects_nothing_and_reaches_no_canary(
    tmp_path: Path, ipv6_sink: tuple[SinkHandler, int]
) -> None:
    handler, smtp_port = ipv6_sink
    statuses: dict[str, int] = {}
    only_the_sink = {"GMP_SECURITY_EGRESS_ALLOW": "::1/128"}
    with canary() as (canary_port, connections), contextlib.ExitStack() as stack:
        url, _ = stack.enter_context(
            contextlib.contextmanager(start_server)(tmp_path, only_the_sink)
        )
        with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as admin:
            admin.post("/tenant", json={"id": "acme"}).raise_for_status()
            admin.post("/account", json={"id": "main", "tenant_id": "acme",
                                         "host": "::1", "port": smtp_port,
                                         "use_tls": False,
                                         "is_default": True}).raise_for_status()  # fmt: skip
            statuses["callback to the canary"] = admin.post(
                "/tenant", json={"id": "spy", "client_base_url": f"http://127.0.0.1:{canary_port}"}
            ).status_code
            accepted = []
            for name, message in hostile_messages(canary_port).items():
                answer = admin.post("/commands/add-messages", json={"messages": [message]})
                statuses[name] = answer.status_code
                if answer.status_code == 200 and answer.json()["queued"] == 1:
                    accepted.append(message["id"])
            # A message to the spy tenant makes a report the service must not deliver.
            spy = {"id": "s1", "tenant_id": "spy", "from": "app@example.com",
                   "to": ["r@example.com"], "subject": "s", "account_id": "main"}  # fmt: skip
            admin.post("/account", json={"id": "main", "tenant_id": "spy", "host": "::1",
                                         "port": smtp_port, "use_tls": False,
                                         "is_default": True})  # fmt: skip
            admin.post("/commands/add-messages", json={"messages": [spy]})

        statuses["body over the size limit"] = post_raw(url, b" " * (11 * 1024 * 1024)).status_code
        deep = b'{"messages": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
        statuses["JSON nested 100,000 deep"] = post_raw(url, deep).status_code
        many = {"messages": [{"id": f"x{n}", "tenant_id": "acme", "from": "a@example.com",
                              "to": ["r@example.com"], "subject": "s"} for n in range(1001)]}  # fmt: skip
        statuses["1,001 messages in one request"] = post_raw(
            url, json.dumps(many).encode()
        ).status_code
        statuses["not JSON"] = post_raw(url, b"\xff\xfe{not json").status_code
        statuses["invalid UTF-8 in a string"] = post_raw(
            url, b'{"messages": [{"id": "u", "subject": "\xc3\x28"}]}'
        ).status_code
        statuses["JSON with a lone surrogate escape"] = post_raw(
            url,
            b'{"messages": [{"id": "v", "tenant_id": "acme", "from": "a@example.com", '
            b'"to": ["r@example.com"], "subject": "\\udc80"}]}',
        ).status_code

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = httpx.get(f"{url}/status", headers=ADMIN, timeout=10).json()["queue"]
            if not any(pending.get(s) for s in ("pending", "sending", "scheduled")):
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a report call to the spy's canary would come within this

    assert not {n: s for n, s in statuses.items() if s >= 500}, statuses
    assert statuses["body over the size limit"] == 413
    assert statuses["callback to the canary"] in (200, 201, 422), statuses
    assert connections == [], f"the service connected to the canary: {connections}"
    # Every injection and every loopback URL is refused at the edge; the unicode cases
    # are legitimate mail and go out, encoded.
    unicode_cases = {"right-to-left override in subject", "zero-width and combining characters",
                     "a 2,000-character subject", "emoji display name"}  # fmt: skip
    assert {name for name, status in statuses.items() if status == 200} == unicode_cases | {
        "callback to the canary"
    }
    assert len(accepted) == len(unicode_cases)
    assert len(handler.received) == len(accepted) + 1  # and the spy tenant's message
    for received in handler.received:
        assert set(received.rcpt_tos) <= {"r@example.com"}, received.rcpt_tos
        head = received.content.split(b"\r\n\r\n", 1)[0]
        assert b"\r" not in head.replace(b"\r\n", b""), head
        assert b"\n" not in head.replace(b"\r\n", b""), head
        parsed = message_from_bytes(received.content, policy=policy.default)
        assert parsed["Bcc"] is None
        assert EVIL.encode() not in head.replace(b"\r\n\t", b"").replace(b"\r\n ", b"")


def test_encoded_word_injection_ids_types_long_lines_and_nul_bodies_end_to_end(
    tmp_path: Path, utf8_sink: tuple[SinkHandler, int]
) -> None:
    """The SMTPUTF8 renderer is used as soon as one address has a UTF-8 local part (a
    Bcc here): an encoded word with spaces that it would decode into a second ``From``
    and a forged body, or a ``Bcc :`` line, is refused at enqueue; ids a URL cannot
    name, attachment types with parameters and encoded words in a message_id too. What
    is accepted arrives with no line over 998 octets, no NUL, and only its own headers."""
    handler, smtp_port = utf8_sink
    smuggled_from = "=?utf-8?q?a=0D=0AFrom:_Billing_<billing@bank.example>=0D=0A=0D=0Afake ?="
    smuggled_bcc = "=?utf-8?q?x=0D=0ABcc : leak@evil.example ?="
    base = {"tenant_id": "acme", "from": "app@example.com", "to": ["r@example.com"],
            "bcc": ["ü@example.org"], "subject": "hello", "body": "text"}  # fmt: skip
    evil_type = {"filename": "a.txt", "storage_path": "base64:aGk=",
                 "mime_type": 'text/plain; name="evil.exe"'}  # fmt: skip
    refused = {
        "x1": ({"headers": {"X-Note": smuggled_from}}, "invalid headers.X-Note: encoded word"),
        "x2": ({"subject": smuggled_bcc}, "invalid subject: encoded word"),
        "x3": ({"from": f"{smuggled_from} <app@example.com>"}, "invalid from: encoded word"),
        "a/b": ({}, "invalid id: no '/'"),
        "x5": ({"attachments": [evil_type]}, "invalid attachments[0].mime_type"),
        "x6": ({"message_id": "=?utf-8?q?=0D=0ABcc:_x?=@example.com"}, "invalid message_id"),
    }
    long_name = "Support, leak@evil.example, " + "Team " * 20
    accepted = {
        "order:7 ü?#&": {"body": "nul\x00inside"},
        "y2": {"body": "nul\x00inside", "bcc": [], "body_html": "<p>nul\x00</p>"},
        "y3": {"subject": "a" * 2000, "headers": {"X-Long": "b" * 1500}, "bcc": []},
        "y4": {"subject": "ü" * 1200, "headers": {"X-Long": "🎉" * 600}},
        "y5": {"to": [f'"{long_name}" <r@example.com>'] * 3},
    }
    # The sink is on loopback, which this test (no URLs in it) lets the service reach.
    loopback = {"GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8"}
    with contextlib.ExitStack() as stack:
        url, _ = stack.enter_context(contextlib.contextmanager(start_server)(tmp_path, loopback))
        with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as admin:
            admin.post("/tenant", json={"id": "acme"}).raise_for_status()
            admin.post("/account", json={"id": "main", "tenant_id": "acme",
                                         "host": "127.0.0.1", "port": smtp_port,
                                         "use_tls": False,
                                         "is_default": True}).raise_for_status()  # fmt: skip
            for message_id, (fields, reason) in refused.items():
                answer = admin.post(
                    "/commands/add-messages",
                    json={"messages": [base | {"id": message_id} | fields]},
                )
                assert answer.status_code == 400, answer.text
                assert answer.json()["rejected"][0]["reason"].startswith(reason), answer.text
            messages = [
                base | {"id": message_id} | fields for message_id, fields in accepted.items()
            ]
            answer = admin.post("/commands/add-messages", json={"messages": messages})
            assert answer.json() == {"ok": True, "queued": len(accepted), "rejected": []}
            deadline = time.monotonic() + 30
            while len(handler.received) < len(accepted) and time.monotonic() < deadline:
                time.sleep(0.2)
            for message_id in accepted:
                record = admin.get(
                    f"/messages/{quote(message_id, safe='')}", params={"tenant_id": "acme"}
                )
                assert record.status_code == 200, (message_id, record.text)
                assert record.json()["message"]["status"] == "sent", record.text

    assert len(handler.received) == len(accepted)
    for received in handler.received:
        head = received.content.split(b"\r\n\r\n", 1)[0]
        assert b"\x00" not in received.content
        assert max(len(line) for line in received.content.split(b"\r\n")) <= 998
        names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")
                 if line[:1] not in (b" ", b"\t")]  # fmt: skip
        assert names.count(b"from") == 1, head
        assert b"bcc" not in names, head
        assert b"billing@bank.example" not in received.content
        parsed = message_from_bytes(received.content, policy=policy.default)
        assert {a.addr_spec for a in parsed["To"].addresses} == {"r@example.com"}
