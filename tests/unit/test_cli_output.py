"""What the commands print for people reads like a tool, not a repr: no None, no raw
objects, no epoch seconds; instants in local ISO time, absent values as —, an empty queue
as ``empty``. Run as the real console script on a stopped instance."""

from __future__ import annotations

import json
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.instances import Instance
from tests.command_line import Terminal, cli

ZONE = "Asia/Kolkata"  # +05:30: neither UTC nor a whole hour
EML = b"From: app@example.com\r\nTo: ada@example.com\r\nSubject: Hello\r\n\r\nHi Ada\r\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """GMP_HOME with a stopped instance ``box``, its tenant ``acme`` with a capture
    account ``sink``, and one queued message ``welcome``."""
    home = tmp_path / "home"
    monkeypatch.setenv("GMP_HOME", str(home))
    Instance(home, "box").create("127.0.0.1", 1)
    (tmp_path / "welcome.eml").write_bytes(EML)
    for words in ("box tenants add acme", "box acme accounts add sink --kind capture --default",
                  f"box acme send {tmp_path / 'welcome.eml'}"):  # fmt: skip
        assert app(words.split(), result_action="return_value") == 0
    return home


def run(home, *words: str) -> str:
    result = cli(home, *words, env={"TZ": ZONE})
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_reads_like_a_tool(page: str) -> None:
    assert "None" not in page
    assert not re.search(r"\bTrue\b|\bFalse\b", page)
    assert not re.search(r"\{'|\{\"|\[\]|\{\}", page)  # no Python or JSON objects
    assert not re.search(r"\b1\d{9}\b", page)  # no epoch seconds


def local(ts: int) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(ZONE)).isoformat(timespec="seconds")


def test_a_message_shows_local_times_and_absent_values_as_dashes(home):
    record = json.loads(run(home, "box", "acme", "messages", "show", "welcome", "--json"))
    page = run(home, "box", "acme", "messages", "show", "welcome")

    assert_reads_like_a_tool(page)
    lines = dict(line.split(":", 1) for line in page.splitlines() if not line.startswith(" "))
    assert lines["created_at"].strip() == local(record["created_at"])
    assert local(record["created_at"]).endswith("+05:30")
    assert lines["sent_ts"].strip() == "—"
    assert lines["possible_duplicate"].strip() == "no"
    assert lines["why"].strip() == "queued (ahead 0)"
    assert f"  {local(record['history'][0]['ts'])}  queued" in page


def test_an_account_and_a_tenant_show_words_not_reprs(home):
    account = run(home, "box", "acme", "accounts", "show", "sink")
    tenant = run(home, "box", "tenants", "show", "acme")

    for page in (account, tenant):
        assert_reads_like_a_tool(page)
    assert re.search(r"^host: +—$", account, re.M)
    assert re.search(r"^use_tls: +auto$", account, re.M)
    assert re.search(r"^is_default: +yes$", account, re.M)
    assert re.search(r"^client_auth: +none$", tenant, re.M)
    assert re.search(r"^client_base_url: +—$", tenant, re.M)


def test_tables_show_local_times_and_dashes(home):
    messages = run(home, "box", "acme", "messages", "list")
    accounts = run(home, "box", "acme", "accounts", "list")
    tenants = run(home, "box", "tenants", "list")

    for page in (messages, accounts, tenants):
        assert_reads_like_a_tool(page)
    assert re.search(r"welcome +pending +2 +0 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30 +—", messages)
    assert re.search(r"sink +capture +— +yes +—", accounts)
    assert re.search(r"acme +acme +— +—", tenants)


def test_info_shows_the_queue_by_status_or_empty(home, tmp_path):
    assert "queue: pending 1" in run(home, "box", "info").splitlines()
    Instance(home, "fresh").create("127.0.0.1", 1)

    page = run(home, "fresh", "info")

    assert_reads_like_a_tool(page)
    assert "queue: empty" in page.splitlines()


def test_suspend_and_activate_say_what_waits(home):
    suspended = run(home, "box", "acme", "suspend")
    one_batch = run(home, "box", "acme", "activate")

    assert suspended.strip() == "acme: every message suspended; 1 pending"
    assert one_batch.strip() == "acme: sending, nothing suspended; 1 pending"
    answer = json.loads(run(home, "box", "acme", "suspend", "newsletter", "--json"))
    assert answer["suspended_batches"] == ["newsletter"]


def test_the_demo_prints_counts_not_a_dict(tmp_path):
    page = run(tmp_path, "demo", "--dir", str(tmp_path / "d"), "--count", "3")

    assert_reads_like_a_tool(page)
    assert "delivered: sent 3" in page.splitlines()


def test_a_second_demo_in_the_same_folder_delivers_new_messages(tmp_path):
    run(tmp_path, "demo", "--dir", str(tmp_path / "d"), "--count", "2")

    again = json.loads(
        run(tmp_path, "demo", "--dir", str(tmp_path / "d"), "--count", "2", "--json")
    )

    assert (again["queued"], again["rejected"], again["statuses"]) == (2, [], {"sent": 4})
    assert again["this_run"] == {"sent": 2}
    third = run(tmp_path, "demo", "--dir", str(tmp_path / "d"), "--count", "3").splitlines()
    assert third[1:3] == ["delivered: sent 3", "in this folder's queue, with earlier runs: sent 7"]


def test_sending_a_file_the_instance_refuses_exits_1_with_the_reason(home, tmp_path):
    (tmp_path / "nofrom.eml").write_bytes(b"To: ada@example.com\r\nSubject: x\r\n\r\nbody\r\n")

    result = cli(home, "box", "acme", "send", str(tmp_path / "nofrom.eml"))

    assert result.returncode == 1
    assert result.stdout == "queued 0\n"
    assert result.stderr == f"error: not queued: {tmp_path / 'nofrom.eml'} (missing from)\n"


def test_a_piped_table_keeps_every_cell_whole_on_one_line(home, tmp_path):
    long_id = "newsletter-2026-12-spring-sale-announcement-for-subscribers"
    (tmp_path / f"{long_id}.eml").write_bytes(EML)
    assert cli(home, "box", "acme", "send", str(tmp_path / f"{long_id}.eml")).returncode == 0

    page = run(home, "box", "acme", "messages", "list")

    assert_reads_like_a_tool(page)
    row = r" +pending +2 +0 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30 +—"
    assert re.search(rf"^ ?{long_id}{row}", page, re.MULTILINE), page
    assert "…" not in page


def test_a_command_that_changes_nothing_says_so(home):
    update = cli(home, "box", "tenants", "update", "acme")
    assert (update.returncode, update.stdout) == (2, "")
    assert update.stderr == (
        "error: nothing to change: give --name, --base-url, --sync-path, --send-window or "
        "--clear-send-windows\n"
    )

    assert run(home, "box", "tenants", "rotate-secret", "acme").startswith("webhook secret: ")
    retired = run(home, "box", "tenants", "retire-secret", "acme")
    again = run(home, "box", "tenants", "retire-secret", "acme")
    assert retired == "tenant acme: previous webhook secret retired; only the current one signs\n"
    assert (
        again == "tenant acme: no previous webhook secret to retire (only the current one signs)\n"
    )

    empty_batch = run(home, "box", "acme", "suspend", "nl-12")
    assert empty_batch == "acme: batches suspended: nl-12; batch nl-12 has no pending messages\n"


def test_deleting_a_tenant_asks_on_a_terminal_and_needs_yes_elsewhere(home):
    piped = cli(home, "box", "tenants", "delete", "acme")
    assert (piped.returncode, piped.stdout) == (2, "")
    assert piped.stderr == (
        "error: deleting tenant acme with its 1 accounts and all its messages cannot be "
        "undone: give --yes to confirm\n"
    )
    terminal = Terminal(home, "box", "tenants", "delete", "acme")
    terminal.answer(
        "Delete tenant acme with its 1 accounts and all its messages [yes/no] (no): ", ""
    )
    assert terminal.finish() == 1
    assert "tenant acme not deleted" in terminal.transcript
    assert "acme" in run(home, "box", "tenants", "list")

    assert run(home, "box", "tenants", "delete", "acme", "--yes") == "tenant acme deleted\n"
    assert run(home, "box", "tenants", "list") == "no tenants\n"


def test_fallback_accounts_are_set_listed_and_checked(home):
    for words in ("box acme accounts add b1 --kind capture",
                  "box acme accounts add b2 --kind capture",
                  "box acme accounts add main --kind capture --fallback b1 --fallback b2 "
                  "--failover-after 60"):  # fmt: skip
        run(home, *words.split())
    listed = {
        a["id"]: a for a in json.loads(run(home, "box", "acme", "accounts", "list", "--json"))
    }
    assert (listed["main"]["fallback_accounts"], listed["main"]["failover_after_s"]) == (
        ["b1", "b2"], 60.0,
    )  # fmt: skip
    page = run(home, "box", "acme", "accounts", "list")
    assert "b1, b2" in page
    assert_reads_like_a_tool(page)
    refused = cli(
        home,
        *["box", "acme", "accounts", "add", "main", "--kind", "capture", "--fallback", "nosuch"],
    )
    assert refused.returncode != 0
    assert "no account nosuch in tenant acme" in refused.stderr


def test_send_windows_are_written_as_people_write_them(home):
    run(home, "box", "tenants", "update", "acme", "--send-window", "mon-fri 08:00-20:00",
        "--send-window", "sat 10:00-12:00", "--tz", "Europe/Rome", "--windows-from", "low")  # fmt: skip
    tenant = json.loads(run(home, "box", "tenants", "show", "acme", "--json"))
    assert tenant["send_windows"] == {
        "tz": "Europe/Rome", "min_priority": 3,
        "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00"},
                    {"days": ["sat"], "start": "10:00", "end": "12:00"}],
    }  # fmt: skip
    run(home, "box", "tenants", "update", "acme", "--clear-send-windows")
    assert json.loads(run(home, "box", "tenants", "show", "acme", "--json"))["send_windows"] is None
    for words, said in (
        (["--send-window", "weekdays 08:00-20:00", "--tz", "Europe/Rome"], "days are mon"),
        (["--send-window", "mon 08:00-20:00"], "needs --tz"),
        (["--send-window", "mon 08:00-20:00", "--tz", "Mars/Olympus"], "not an IANA time zone"),
    ):
        refused = cli(home, "box", "tenants", "update", "acme", *words)
        assert refused.returncode != 0
        assert said in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
