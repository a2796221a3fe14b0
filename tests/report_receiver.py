"""A real HTTP receiver for delivery reports on 127.0.0.1 (stdlib ``http.server`` in a
thread), programmable per call: status, answer body, delay, redirect."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http_server import serving


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["delivery_report"])


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    delay_s: float = 0.0
    location: str | None = None


@dataclass
class Receiver:
    """Answers 200 ``{"ok": true}`` unless ``replies`` holds the next answers."""

    port: int = 0
    calls: list[Call] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    #: The most calls that were being answered at once.
    most_at_once: int = 0
    _at_once: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def event_ids(self) -> list[str]:
        return [entry["event_id"] for call in self.calls for entry in call.entries]


@contextlib.contextmanager
def running_receiver(port: int = 0, receiver: Receiver | None = None) -> Iterator[Receiver]:
    """A receiver on ``port`` (0: a free one); pass the ``receiver`` of an earlier run to
    bring it back on the same port with its record."""
    receiver = receiver if receiver is not None else Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender went away mid-body (a killed service): nothing was delivered,
                # and no answer reaches it, so it sends the entries again later.
                self.close_connection = True
                return
            reply = receiver.replies.pop(0) if receiver.replies else Reply()
            with receiver._lock:
                receiver._at_once += 1
                receiver.most_at_once = max(receiver.most_at_once, receiver._at_once)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            with receiver._lock:
                receiver._at_once -= 1
            receiver.calls.append(Call(self.path, dict(self.headers.items()), body))
            receiver.arrived.set()
            answer = json.dumps(reply.body or {"ok": True}).encode()
            try:
                self.send_response(reply.status)
                if reply.location:
                    self.send_header("Location", reply.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the caller gave up (timeout)

        def log_message(self, format: str, *args: Any) -> None:
            return

    with serving(Handler, port) as bound:
        receiver.port = bound
        yield receiver
