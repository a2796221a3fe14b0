"""A real HTTP server on 127.0.0.1 that serves attachment bytes (stdlib, in a thread):
``GET /files/<name>`` and ``POST /endpoint`` (``{"storage_path": "<name>"}``) answer the
bytes registered under the name; special names misbehave: ``missing`` (404), ``broken``
(500), ``slow`` (answers after 2 s), ``liar`` (no Content-Length, streams 64 KiB until it
closes), ``big`` (64 KiB, honestly announced), ``moved`` (302 to another path on
127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http_server import serving


@dataclass
class FileServer:
    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_file_server() -> Iterator[FileServer]:
    server_state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, name: str) -> None:
            if name == "missing" or (name not in server_state.files and name not in SPECIAL):
                self.reply(404, b"not found")
            elif name == "broken":
                self.reply(500, b"oops")
            elif name == "moved":
                self.send_response(302)
                self.send_header("Location", f"{server_state.url}/files/secret")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif name == "slow":
                time.sleep(2)
                self.reply(200, b"late")
            elif name == "liar":  # no length: the body runs until the connection closes
                self.send_response(200)
                self.close_connection = True
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(64):
                        self.wfile.write(b"x" * 1024)
            elif name == "big":
                self.reply(200, b"x" * 65536)
            else:
                self.reply(200, server_state.files[name])

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            server_state.requests.append(("GET", self.path, dict(self.headers.items()), b""))
            self.answer(self.path.removeprefix("/files/"))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server_state.requests.append(("POST", self.path, dict(self.headers.items()), body))
            self.answer(json.loads(body)["storage_path"])

        def log_message(self, format: str, *args: Any) -> None:
            return

    with serving(Handler) as port:
        server_state.port = port
        yield server_state


SPECIAL = frozenset({"missing", "broken", "moved", "slow", "liar", "big"})
