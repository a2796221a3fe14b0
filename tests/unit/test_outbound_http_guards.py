"""Outbound HTTP against hostile peers (a real server on 127.0.0.1): a server that drips
its answer is cut at the overall deadline, a compression bomb is capped while it is
decoded, and neither can hold the process's memory or a call's slot."""

from __future__ import annotations

import contextlib
import functools
import gzip
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from mailproxy.adapters.guarded_http import GuardedHttp, TooLarge
from mailproxy.domain.egress import parse_networks
from tests.http_server import serving

LOCAL = parse_networks("127.0.0.0/8")


@functools.cache
def bomb(coding: str) -> bytes:
    """100 MB of zeros compressed to about 100 KB (made once, when a test asks)."""
    zeros = b"\0" * (100 * 1024 * 1024)
    if coding == "gzip":
        return gzip.compress(zeros, compresslevel=9)
    if coding == "deflate":
        return zlib.compress(zeros, 9)
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # deflate without its wrapper
    return raw.compress(zeros) + raw.flush()


@contextlib.contextmanager
def hostile_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(dict(self.headers.items()))
            if self.path == "/drip":  # one byte every 0.3 s for up to 30 s
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(100):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                return
            if self.path in ("/bomb", "/deflate", "/raw-deflate"):
                kind = {"/bomb": "gzip", "/deflate": "deflate", "/raw-deflate": "raw"}[self.path]
                body, coding = bomb(kind), "gzip" if kind == "gzip" else "deflate"
            elif self.path == "/small-gzip":
                body, coding = gzip.compress(b"hello, decoded"), "gzip"
            else:
                body, coding = b"unknown coding", "br"
            self.send_response(200)
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    with serving(Handler) as port:
        yield port, seen


async def test_a_dripping_answer_is_cut_at_the_overall_deadline():
    http = GuardedHttp(timeout_s=1.0, egress_allow=LOCAL)
    with hostile_server() as (port, _):
        try:
            # Every read arrives well within the 1 s per-read timeout httpx would apply.
            with pytest.raises(httpx.TimeoutException, match="within 1 s"):
                await http.request("GET", f"http://127.0.0.1:{port}/drip", max_bytes=1000)
        finally:
            await http.close()


@pytest.mark.parametrize("path", ["/bomb", "/deflate", "/raw-deflate"])
async def test_a_compression_bomb_is_capped_while_it_is_decoded(path):
    bomb({"/bomb": "gzip", "/deflate": "deflate", "/raw-deflate": "raw"}[path])  # before tracing
    http = GuardedHttp(timeout_s=10.0, egress_allow=LOCAL)
    with hostile_server() as (port, seen):
        tracemalloc.start()
        try:
            with pytest.raises(TooLarge):
                await http.request("GET", f"http://127.0.0.1:{port}{path}", max_bytes=1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await http.close()
    assert seen[0]["Accept-Encoding"] == "identity"
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB while decoding"


async def test_a_bomb_under_truncate_gives_the_first_bytes_only():
    http = GuardedHttp(timeout_s=10.0, egress_allow=LOCAL)
    with hostile_server() as (port, _):
        try:
            answer = await http.request(
                "GET", f"http://127.0.0.1:{port}/bomb", max_bytes=65536, truncate=True
            )
        finally:
            await http.close()
    assert answer.truncated
    assert answer.body == b"\0" * 65536


async def test_a_small_compressed_answer_is_decoded():
    http = GuardedHttp(timeout_s=10.0, egress_allow=LOCAL)
    with hostile_server() as (port, _):
        try:
            answer = await http.request(
                "GET", f"http://127.0.0.1:{port}/small-gzip", max_bytes=1000
            )
        finally:
            await http.close()
    assert answer.body == b"hello, decoded"


async def test_an_unsupported_coding_is_a_decoding_error():
    http = GuardedHttp(timeout_s=10.0, egress_allow=LOCAL)
    with hostile_server() as (port, _):
        try:
            with pytest.raises(httpx.DecodingError, match="br"):
                await http.request("GET", f"http://127.0.0.1:{port}/other", max_bytes=1000)
        finally:
            await http.close()
