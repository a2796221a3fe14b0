"""Commands that queue or wake deliveries on a stopped instance: they are taken (the
stopped instance's database is written) and a note on standard error says that nothing
goes out until the instance starts. Run as the real console script."""

from __future__ import annotations

import pytest

from tests.command_line import cli

NOTE = "note: box is not running: nothing is sent until mail-proxy start box\n"


@pytest.fixture
def mail(tmp_path):
    path = tmp_path / "hello.eml"
    path.write_bytes(b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n\r\nbody\r\n")
    return path


def test_send_on_a_stopped_instance_says_when_it_goes_out(home, mail):
    assert cli(home, "box", "acme", "accounts", "add", "sink", "--kind", "capture",
               "--default").returncode == 0  # fmt: skip

    result = cli(home, "box", "acme", "send", str(mail))

    assert (result.returncode, result.stdout, result.stderr) == (0, "queued 1\n", NOTE)


@pytest.mark.parametrize(("words", "said"), [("run-now", "ok\n"), ("activate", None)])
def test_waking_deliveries_on_a_stopped_instance_says_when_they_go_out(home, words, said):
    result = cli(home, "box", "acme", *words.split())

    assert (result.returncode, result.stderr) == (0, NOTE)
    if said is not None:
        assert result.stdout == said


@pytest.mark.parametrize("words", ["messages list", "suspend", "accounts list"])
def test_commands_that_send_nothing_carry_no_note(home, words):
    result = cli(home, "box", "acme", *words.split())

    assert (result.returncode, result.stderr) == (0, "")


def test_nothing_queued_or_json_carries_no_note(home, mail, tmp_path):
    assert cli(home, "box", "acme", "accounts", "add", "sink", "--kind", "capture",
               "--default").returncode == 0  # fmt: skip
    refused = tmp_path / "nofrom.eml"
    refused.write_bytes(b"To: ada@example.com\r\nSubject: x\r\n\r\nbody\r\n")

    as_json = cli(home, "box", "acme", "send", str(mail), "--json")
    nothing = cli(home, "box", "acme", "send", str(refused))

    assert (as_json.returncode, as_json.stderr) == (0, "")
    assert (nothing.returncode, nothing.stderr) == (
        1, f"error: not queued: {refused} (missing from)\n"
    )  # fmt: skip
