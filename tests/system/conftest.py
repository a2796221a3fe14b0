"""Fixtures of the system tests: SMTP sinks and the real server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.smtp_sink import SinkHandler, running_sink


@pytest.fixture
def sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=False) as running:
        yield running


@pytest.fixture
def utf8_sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=True) as running:
        yield running


TOKEN = "system-test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``mail-proxy serve`` exactly as the benchmark starts it, on a free loopback port."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GMP_DB_PATH": str(tmp_path / "mailproxy.db"),
        "GMP_API_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
         "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=1) as probe:
                if probe.get(f"{url}/health").status_code == 200:
                    break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"server did not start: {process.communicate()[0]}")
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    yield from start_server(tmp_path)
