"""A command called wrongly gets one line in the command line's words and exit 2, before
anything is sent to the instance: a bad value names the option and what it accepts, a
leftover argument is ``unexpected``, a missing one is named as it is in the usage. Errors
say what to type, in options, not in the API's field names. Run as the real console
script on a stopped instance."""

from __future__ import annotations

import json
import re

import pytest

from tests.command_line import cli

EML = b"From: app@example.com\r\nTo: ada@example.com\r\nSubject: Hello\r\n\r\nHi Ada\r\n"


def typed(home, line: str):
    """``mail-proxy LINE``, the line split at spaces as a shell does."""
    return cli(home, *line.split())


def failed(home, *words: str) -> tuple[int, str]:
    result = cli(home, *words)
    assert result.stdout == "", result.stdout
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("box acme messages list extra", "unexpected argument: extra"),
        ("box acme messages list extra more", "unexpected arguments: extra more"),
        ("box acme mesages list", "unknown command mesages (did you mean messages?)"),
        ("box acme accounts show", "missing ACCOUNT-ID"),
        ("box tenants show", "missing TENANT-ID"),
        ("stop", "missing NAME"),
    ],
)
def test_leftover_mistyped_and_missing_words_are_one_line_in_our_style(home, words, message):
    assert failed(home, *words.split()) == (2, f"error: {message}\n")


@pytest.mark.parametrize(
    ("words", "option", "accepted"),
    [
        ("box acme accounts add z --host a.example.com --tls maybe", "--tls", "required"),
        ("box acme accounts add s1 --host a.example.com --port 0", "--port", ">= 1"),
        ("box acme accounts add s1 --host a.example.com --port 70000", "--port", "<= 65535"),
        ("box acme accounts add s1 --host a.example.com --limit-per-day 0", "--limit", ">= 1"),
        ("box acme messages list --status bogus", "--status", "deferred"),
        ("box acme send welcome.eml --priority 9", "--priority", "immediate"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_option(home, words, option, accepted):
    code, error = failed(home, *words.split())

    assert code == 2
    assert error.startswith("error: invalid value"), error
    assert option in error
    assert accepted in error
    assert error.count("\n") == 1


def test_tls_takes_the_modes_the_prompt_offers(home):
    for mode, use_tls in (("required", True), ("off", False), ("auto", None)):
        added = cli(home, "box", "acme", "accounts", "add", mode, "--host", "a.example.com",
                    "--tls", mode, "--json")  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["use_tls"] is use_tls
    shown = cli(home, "box", "acme", "accounts", "show", "off")
    assert re.search(r"^use_tls: +off$", shown.stdout, re.MULTILINE), shown.stdout


def test_a_capture_account_refuses_smtp_options_and_lists_no_server(home):
    line = "box acme accounts add c1 --kind capture --host smtp.example.com"
    code, error = failed(home, *line.split())
    assert (code, error) == (
        2,
        "error: --host: for smtp accounts only (a capture account writes .eml files and "
        "connects to no server)\n",
    )
    assert typed(home, "box acme accounts add c1 --kind capture").returncode == 0

    listed = cli(home, "box", "acme", "accounts", "list").stdout

    assert "None" not in listed
    assert re.search(r"c1 +capture +— +— +—", listed), listed


def test_send_priorities_are_the_api_names_and_numbers(home, tmp_path):
    assert typed(home, "box acme accounts add sink --kind capture --default").returncode == 0
    for name in ("high", "0"):
        eml = tmp_path / f"hello-{name}.eml"
        eml.write_bytes(EML)
        sent = cli(home, "box", "acme", "send", str(eml), "--priority", name)
        assert (sent.returncode, sent.stdout) == (0, "queued 1\n"), sent.stderr
    priorities = {
        m["id"]: m["priority"]
        for m in json.loads(cli(home, "box", "acme", "messages", "list", "--json").stdout)
    }
    assert priorities == {"hello-high": 1, "hello-0": 0}


def test_an_account_not_found_reads_the_same_from_every_command(home):
    shown = failed(home, "box", "acme", "accounts", "show", "nosuch")
    deleted = failed(home, "box", "acme", "accounts", "delete", "nosuch")

    assert shown == deleted == (1, "error: account not found: nosuch\n")


def test_send_without_an_account_to_use_says_which_option_to_give(home, tmp_path):
    eml = tmp_path / "hello.eml"
    eml.write_bytes(EML)

    none_at_all = failed(home, "box", "acme", "send", str(eml))
    assert typed(home, "box acme accounts add a1 --kind capture").returncode == 0
    assert typed(home, "box acme accounts add a2 --kind capture").returncode == 0
    no_default = failed(home, "box", "acme", "send", str(eml))
    unknown = failed(home, "box", "acme", "send", str(eml), "--account", "nosuch")

    assert none_at_all == (
        1,
        "error: tenant acme has no accounts: add one first (mail-proxy box acme accounts add "
        "ACCOUNT-ID --host HOST, or --kind capture for a sandbox)\n",
    )
    assert no_default == (
        1,
        "error: tenant acme has no default account: give --account (one of: a1, a2), or make "
        "one the default (mail-proxy box acme accounts add ACCOUNT-ID ... --default)\n",
    )
    assert unknown == (1, "error: account not found: nosuch\n")
    for error in (none_at_all, no_default):
        assert "account_id" not in error[1]
        assert "is_default" not in error[1]
