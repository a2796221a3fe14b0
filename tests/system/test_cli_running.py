"""The command line against a running instance (``mail-proxy start``), as a newcomer
uses it: names are checked through the instance's HTTP API, and a file already sent is
refused with the reason and a non-zero exit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailproxy.entrypoints.instances import Instance
from tests.command_line import cli
from tests.system.conftest import free_port

pytestmark = pytest.mark.system

EML = b"From: app@example.com\r\nTo: ada@example.com\r\nSubject: Hello\r\n\r\nHi Ada\r\n"


@pytest.fixture
def running(tmp_path) -> Iterator[Path]:
    """GMP_HOME with instance ``box`` running, its tenant ``acme`` with a capture
    account ``sink``."""
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", free_port())
    started = cli(home, "start", "box")
    assert started.returncode == 0, started.stderr
    try:
        assert cli(home, "box", "tenants", "add", "acme").returncode == 0
        added = cli(home, "box", "acme", "accounts", "add", "sink", "--kind", "capture")
        assert added.returncode == 0, added.stderr
        yield home
    finally:
        cli(home, "stop", "box")


def wait_for_status(home: Path, message_id: str, status: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shown = cli(home, "box", "acme", "messages", "show", message_id, "--json")
        if json.loads(shown.stdout)["status"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{message_id} never {status}")


def test_sending_a_file_already_sent_exits_1_with_the_reason(running, tmp_path):
    eml = tmp_path / "welcome.eml"
    eml.write_bytes(EML)
    first = cli(running, "box", "acme", "send", str(eml), "--account", "sink")
    assert (first.returncode, first.stdout) == (0, "queued 1\n"), first.stderr
    wait_for_status(running, "welcome", "sent")

    again = cli(running, "box", "acme", "send", str(eml), "--account", "sink")

    assert again.returncode == 1
    assert again.stdout == "queued 0\n"
    assert again.stderr == f"error: not queued: {eml} (already sent)\n"


def test_a_mistyped_tenant_of_a_running_instance_offers_the_existing_one(running):
    result = cli(running, "box", "acme-corp", "messages", "list")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: no tenant acme-corp on box (did you mean acme?)\n"


def test_a_delivery_error_is_short_in_the_list_and_whole_in_show(tmp_path):
    home = tmp_path / "home"
    instance = Instance(home, "box")
    instance.create("127.0.0.1", free_port())
    with instance.config_file.open("a") as config:
        config.write("\n[security]\negress_allow = 127.0.0.0/8\n")  # the closed port below
    eml = tmp_path / "welcome.eml"
    eml.write_bytes(EML)
    assert cli(home, "start", "box").returncode == 0
    try:
        assert cli(home, "box", "tenants", "add", "acme").returncode == 0
        closed = ["--host", "127.0.0.1", "--port", str(free_port()), "--default"]
        added = cli(home, "box", "acme", "accounts", "add", "down", *closed)
        assert added.returncode == 0, added.stderr
        assert cli(home, "box", "acme", "send", str(eml)).returncode == 0
        wait_for_status(home, "welcome", "deferred")

        listed = cli(home, "box", "acme", "messages", "list").stdout
        shown = cli(home, "box", "acme", "messages", "show", "welcome").stdout
    finally:
        cli(home, "stop", "box")

    (row,) = [line for line in listed.splitlines() if "welcome" in line]
    assert row.split()[-1:] == ["CONNECT"], listed
    assert "connection at CONNECT" in row
    assert "Error" not in listed
    assert "ConnectionRefusedError" in shown
