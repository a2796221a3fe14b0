"""Long CLI work shows a progress bar on a terminal, and none when the output is piped or
asked for as ``--json``. Driven through a real pseudo-terminal running the console
script."""

from __future__ import annotations

import json

import pytest

from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.instances import Instance
from tests.command_line import Terminal, cli

FILES = 250  # three add-messages calls
BAR = "━"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """GMP_HOME with a stopped instance ``box``, its tenant ``acme`` with a default
    capture account, and a folder of FILES .eml files."""
    home = tmp_path / "home"
    monkeypatch.setenv("GMP_HOME", str(home))
    Instance(home, "box").create("127.0.0.1", 1)
    for words in ("box tenants add acme", "box acme accounts add sink --kind capture --default"):
        assert app(words.split(), result_action="return_value") == 0
    folder = tmp_path / "mails"
    folder.mkdir()
    for n in range(FILES):
        (folder / f"m{n:03d}.eml").write_bytes(
            f"From: app@example.com\r\nTo: ada@example.com\r\nSubject: {n}\r\n\r\nHi\r\n".encode()
        )
    return home


def test_sending_a_folder_shows_a_bar_over_its_files_on_a_terminal(home, tmp_path):
    terminal = Terminal(home, "box", "acme", "send", str(tmp_path / "mails"))

    assert terminal.finish() == 0, terminal.transcript
    assert "queueing" in terminal.transcript
    assert f"{FILES}/{FILES}" in terminal.transcript
    assert BAR in terminal.transcript
    assert terminal.transcript.rstrip().endswith(
        f"queued {FILES}\r\nnote: box is not running: nothing is sent until mail-proxy start box"
    )


def test_listing_a_large_queue_shows_a_bar_on_a_terminal(home, tmp_path):
    assert cli(home, "box", "acme", "send", str(tmp_path / "mails")).returncode == 0
    terminal = Terminal(home, "box", "acme", "messages", "list", "--limit", "600")

    assert terminal.finish() == 0, terminal.transcript
    assert "reading messages" in terminal.transcript
    assert BAR in terminal.transcript
    assert "m249" in terminal.transcript
    every = Terminal(home, "box", "acme", "messages", "list", "--all")
    assert every.finish() == 0, every.transcript
    assert "reading messages" in every.transcript


def test_no_bar_with_json_on_a_terminal(home, tmp_path):
    sent = Terminal(home, "box", "acme", "send", str(tmp_path / "mails"), "--json")
    assert sent.finish() == 0, sent.transcript
    listed = Terminal(home, "box", "acme", "messages", "list", "--all", "--json")
    assert listed.finish() == 0, listed.transcript

    for terminal in (sent, listed):
        assert BAR not in terminal.transcript
        assert "queueing" not in terminal.transcript
        assert "reading" not in terminal.transcript
    assert json.loads(sent.transcript)["queued"] == FILES
    assert len(json.loads(listed.transcript)) == FILES


def test_no_bar_when_piped(home, tmp_path):
    sent = cli(home, "box", "acme", "send", str(tmp_path / "mails"))
    listed = cli(home, "box", "acme", "messages", "list", "--all")

    assert (sent.returncode, sent.stdout) == (0, f"queued {FILES}\n")
    assert sent.stderr == "note: box is not running: nothing is sent until mail-proxy start box\n"
    assert (listed.returncode, listed.stderr) == (0, "")
    assert len([line for line in listed.stdout.splitlines() if " pending " in line]) == FILES
