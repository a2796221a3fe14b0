"""``tenants add`` and ``accounts add`` ask a person at a terminal for what they were not
given: everything without an id, only what is missing and required with one. Nothing is
asked when standard input is not a terminal: a missing value is a one-line usage error.
Driven through a real pseudo-terminal running the console script."""

from __future__ import annotations

import json

import pytest

from tests.command_line import Terminal, cli


def saved(home, *words: str) -> dict:
    result = cli(home, *words, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tenants_add_without_an_id_asks_for_it_the_report_url_and_auth(home):
    terminal = Terminal(home, "box", "tenants", "add")
    terminal.answer("Tenant id: ", "bad/id")
    terminal.answer("Tenant id: ", "globex")  # asked again: / is not allowed
    terminal.answer("Name (globex): ", "Globex Corp")
    terminal.answer("Application URL for delivery reports (empty: no reports): ", "ftp://x")
    terminal.answer("Application URL for delivery reports", "https://app.example.com")
    terminal.answer("Report path under it (/mail-proxy/sync): ", "")
    terminal.answer("Reports authenticate with [none/bearer/basic] (none): ", "bearer")
    terminal.answer("Bearer token: ", "report-t0ken", hidden=True)

    assert terminal.finish() == 0, terminal.transcript
    assert "1 to 64 of A-Z a-z 0-9 _ . -" in terminal.transcript
    assert "invalid client_base_url" in terminal.transcript
    assert "report-t0ken" not in terminal.transcript
    assert "api key: " in terminal.transcript
    assert "shown only this once" in terminal.transcript
    tenant = saved(home, "box", "tenants", "show", "globex")
    assert (tenant["name"], tenant["client_base_url"], tenant["client_sync_path"]) == (
        "Globex Corp", "https://app.example.com", "/mail-proxy/sync"
    )  # fmt: skip
    assert tenant["client_auth"] == {"method": "bearer"}


def test_accounts_add_without_an_id_asks_for_every_smtp_field(home):
    terminal = Terminal(home, "box", "acme", "accounts", "add")
    for prompt, line in [
        ("Account id: ", "main"),
        ("Kind: smtp sends, capture writes .eml files [smtp/capture] (smtp): ", ""),
        ("SMTP host: ", "smtp.example.com"),
        ("SMTP port (587): ", "99999"),
        ("SMTP port (587): ", ""),  # asked again: not a port
        ("SMTP user (empty: no login): ", "app"),
    ]:
        terminal.answer(prompt, line)
    terminal.answer("SMTP password: ", "smtp-s3cret", hidden=True)
    for prompt, line in [
        ("TLS [auto/required/off] (auto): ", "required"),
        ("Sends per minute (empty: no limit): ", "30"),
        ("Sends per hour (empty: no limit): ", ""),
        ("Sends per day (empty: no limit): ", "1000"),
        ("Default account of the tenant [yes/no] (yes): ", ""),  # the first account
    ]:
        terminal.answer(prompt, line)

    assert terminal.finish() == 0, terminal.transcript
    assert "smtp-s3cret" not in terminal.transcript
    assert "account main saved" in terminal.transcript
    account = saved(home, "box", "acme", "accounts", "show", "main")
    expected = {
        "kind": "smtp", "host": "smtp.example.com", "port": 587, "user": "app",
        "has_password": True, "use_tls": True, "limit_per_minute": 30, "limit_per_hour": None,
        "limit_per_day": 1000, "is_default": True,
    }  # fmt: skip
    assert {k: account[k] for k in expected} == expected


def test_a_capture_account_asks_only_whether_it_is_the_default(home):
    terminal = Terminal(home, "box", "acme", "accounts", "add", "--kind", "capture")
    terminal.answer("Account id: ", "sandbox")
    terminal.answer("Default account of the tenant [yes/no] (yes): ", "no")

    assert terminal.finish() == 0, terminal.transcript
    assert "SMTP" not in terminal.transcript
    account = saved(home, "box", "acme", "accounts", "show", "sandbox")
    assert (account["kind"], account["is_default"]) == ("capture", False)


def test_values_given_as_options_are_not_asked(home):
    terminal = Terminal(
        home, "box", "acme", "accounts", "add", "--kind", "smtp", "--host", "smtp.example.com",
        "--port", "2525", "--user", "app", "--password", "pw", "--tls", "off",
        "--limit-per-minute", "5", "--limit-per-hour", "50", "--limit-per-day", "500",
        "--default",
    )  # fmt: skip
    terminal.answer("Account id: ", "main")

    assert terminal.finish() == 0, terminal.transcript
    assert terminal.transcript.count(": ") == 1  # the one question
    account = saved(home, "box", "acme", "accounts", "show", "main")
    assert (account["port"], account["use_tls"], account["limit_per_day"]) == (2525, False, 500)


def test_with_an_id_only_what_is_missing_and_required_is_asked(home):
    terminal = Terminal(home, "box", "acme", "accounts", "add", "main", "--user", "app")
    terminal.answer("SMTP host: ", "smtp.example.com")
    terminal.answer("SMTP port (587): ", "465")
    terminal.answer("SMTP password: ", "pw-s3cret", hidden=True)

    assert terminal.finish() == 0, terminal.transcript
    assert "TLS" not in terminal.transcript
    assert "pw-s3cret" not in terminal.transcript
    terminal = Terminal(home, "box", "tenants", "add", "initech", "--auth-method", "basic")
    terminal.answer("Basic-auth user: ", "app")
    terminal.answer("Basic-auth password: ", "basic-s3cret", hidden=True)

    assert terminal.finish() == 0, terminal.transcript
    assert "Application URL" not in terminal.transcript
    assert saved(home, "box", "tenants", "show", "initech")["client_auth"] == {"method": "basic"}


def test_ctrl_d_at_a_question_ends_the_command_as_a_usage_error(home):
    terminal = Terminal(home, "box", "tenants", "add")
    terminal.read_until("Tenant id: ")
    terminal.type_end_of_input()

    assert terminal.finish() == 2
    assert "error: no answer to: Tenant id" in terminal.transcript
    assert [t["id"] for t in saved(home, "box", "tenants", "list")] == ["acme"]


@pytest.mark.parametrize(
    ("words", "error"),
    [
        ("box tenants add",
         "missing TENANT-ID: mail-proxy box tenants add TENANT-ID"),
        ("box tenants add globex --auth-method bearer",
         "missing --auth-token for --auth-method bearer"),
        ("box acme accounts add",
         "missing ACCOUNT-ID: mail-proxy box acme accounts add ACCOUNT-ID --host HOST"),
        ("box acme accounts add main", "missing --host of the server"),
        ("box acme accounts add main --host smtp.example.com --user app",
         "missing --password for --user"),
    ],
)  # fmt: skip
def test_without_a_terminal_nothing_is_asked_and_a_missing_value_is_a_usage_error(
    home, words, error
):
    result = cli(home, *words.split())

    assert result.returncode == 2
    assert result.stderr == (
        f"error: {error} (standard input is not a terminal: nothing is asked)\n"
    )
    assert result.stdout == ""
    assert [t["id"] for t in saved(home, "box", "tenants", "list")] == ["acme"]
    assert saved(home, "box", "acme", "accounts", "list") == []


def test_without_a_terminal_an_smtp_account_takes_port_587(home):
    result = cli(home, "box", "acme", "accounts", "add", "main", "--host", "smtp.example.com")

    assert result.returncode == 0, result.stderr
    assert saved(home, "box", "acme", "accounts", "show", "main")["port"] == 587


def test_an_existing_tenant_id_is_refused_at_the_question(home):
    terminal = Terminal(home, "box", "tenants", "add")
    terminal.answer("Tenant id: ", "acme")
    terminal.answer("Tenant id: ", "globex")  # asked again at once: acme exists
    terminal.answer("Name (globex): ", "")
    terminal.answer("Application URL for delivery reports (empty: no reports): ", "")

    assert terminal.finish() == 0, terminal.transcript
    assert "tenant acme already exists" in terminal.transcript
    assert terminal.transcript.index("already exists") < terminal.transcript.index("Name (")
    assert "tenant globex created" in terminal.transcript


def test_an_existing_account_id_and_a_refused_host_are_asked_again_at_once(home):
    assert cli(home, "box", "acme", "accounts", "add", "main", "--kind", "capture").returncode == 0
    terminal = Terminal(home, "box", "acme", "accounts", "add")
    terminal.answer("Account id: ", "main")
    terminal.answer("Account id: ", "relay")  # main exists
    terminal.answer("Kind: smtp sends, capture writes .eml files [smtp/capture] (smtp): ", "")
    terminal.answer("SMTP host: ", "127.0.0.1")
    terminal.answer("SMTP host: ", "smtp.example.com")  # loopback: the egress rule refuses it
    terminal.answer("SMTP port (587): ", "")
    terminal.answer("SMTP user (empty: no login): ", "")
    terminal.answer("TLS [auto/required/off] (auto): ", "")
    for window in ("minute", "hour", "day"):
        terminal.answer(f"Sends per {window} (empty: no limit): ", "")
    terminal.answer("Default account of the tenant [yes/no] (yes): ", "no")

    assert terminal.finish() == 0, terminal.transcript
    assert "account main already exists" in terminal.transcript
    refusal = "127.0.0.1 is not an address mailproxy may connect to (see security.egress_allow)"
    assert refusal in terminal.transcript
    assert terminal.transcript.index(refusal) < terminal.transcript.index("SMTP port")
    account = saved(home, "box", "acme", "accounts", "show", "relay")
    assert (account["host"], account["port"]) == ("smtp.example.com", 587)


def test_a_refused_host_given_as_an_option_fails_before_any_question(home):
    terminal = Terminal(home, "box", "acme", "accounts", "add", "--host", "10.0.0.5")

    assert terminal.finish() == 1
    assert "Account id" not in terminal.transcript
    assert "error: invalid host: 10.0.0.5 is not an address mailproxy may connect to" in (
        terminal.transcript
    )
