"""``mail-proxy NAME TENANT suppressions ...`` driven in-process (the cyclopts app with
captured output) on a stopped instance, and ``messages show`` of a bounced message."""

from __future__ import annotations

import csv
import io
import json
import time

from mailproxy.domain.bounces import BounceRecord, MailboxEntry
from mailproxy.domain.report_events import bounce_event
from mailproxy.entrypoints.cli.suppressions import DAY_S
from mailproxy.entrypoints.cli.tenant import message_lines
from tests.unit.conftest import message


def test_added_addresses_are_listed_searched_and_removed(run):
    added = run("box", "acme", "suppressions", "add", "a@example.com", "b@example.org",
                "--detail", "asked us to stop")  # fmt: skip
    assert added == (0, "suppressed 2 addresses\n", "")

    code, out, _ = run("box", "acme", "suppressions", "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if "@" in line]
    assert [row[:2] for row in rows] == [["a@example.com", "manual"], ["b@example.org", "manual"]]
    assert all("never" in row and "stop" in row for row in rows)

    found = json.loads(run("box", "acme", "suppressions", "list", "--search", "ORG", "--json")[1])
    assert [(s["address"], s["detail"]) for s in found] == [("b@example.org", "asked us to stop")]
    only_bounces = run("box", "acme", "suppressions", "list", "--reason", "hard_bounce")
    assert only_bounces[1] == "no suppressed addresses\n"

    assert run("box", "acme", "suppressions", "remove", "a@example.com")[:2] == (
        0, "a@example.com no longer suppressed\n",
    )  # fmt: skip
    left = json.loads(run("box", "acme", "suppressions", "list", "--json")[1])
    assert [s["address"] for s in left] == ["b@example.org"]


def test_an_address_already_suppressed_is_counted_apart(run):
    run("box", "acme", "suppressions", "add", "a@example.com")
    code, out, _ = run("box", "acme", "suppressions", "add", "a@example.com", "c@example.com")
    assert (code, out) == (0, "suppressed 1 address (1 already suppressed)\n")


def test_expires_in_sets_the_expiry_that_many_days_ahead(run):
    before = time.time()
    run("box", "acme", "suppressions", "add", "a@example.com", "--expires-in", "3")
    after = time.time()
    (entry,) = json.loads(run("box", "acme", "suppressions", "list", "--json")[1])
    assert int(before) + 3 * DAY_S <= entry["expires_ts"] <= after + 3 * DAY_S


def test_limit_and_all_read_as_many_as_asked(run):
    addresses = [f"user{n:02}@example.com" for n in range(12)]
    run("box", "acme", "suppressions", "add", *addresses)
    limited = json.loads(run("box", "acme", "suppressions", "list", "--limit", "5", "--json")[1])
    assert [s["address"] for s in limited] == addresses[:5]
    every = json.loads(run("box", "acme", "suppressions", "list", "--all", "--json")[1])
    assert [s["address"] for s in every] == addresses


def test_removing_an_address_not_suppressed_is_one_line(run):
    assert run("box", "acme", "suppressions", "remove", "nobody@example.com") == (
        1, "", "error: not suppressed: nobody@example.com\n",
    )  # fmt: skip


def test_adding_nothing_or_an_invalid_address_fails_before_anything_is_stored(run):
    assert run("box", "acme", "suppressions", "add") == (2, "", "error: missing ADDRESSES\n")
    code, out, err = run("box", "acme", "suppressions", "add", "ok@example.com", "not an address")
    assert (code, out) == (1, "")
    assert err.startswith("error: invalid address in entries[1].address")
    assert run("box", "acme", "suppressions", "list")[1] == "no suppressed addresses\n"


def test_export_writes_csv_to_stdout_or_to_a_file(run, tmp_path):
    run("box", "acme", "suppressions", "add", "b@example.com", "a@example.com",
        "--detail", "=formula, with a comma")  # fmt: skip

    code, out, _ = run("box", "acme", "suppressions", "export")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["address", "reason", "created_ts", "expires_ts", "source_message_id",
                       "detail"]  # fmt: skip
    assert [(r[0], r[1], r[3], r[5]) for r in rows[1:]] == [
        ("a@example.com", "manual", "", "'=formula, with a comma"),
        ("b@example.com", "manual", "", "'=formula, with a comma"),
    ]

    target = tmp_path / "list.csv"
    assert run("box", "acme", "suppressions", "export", "--output", str(target))[:2] == (
        0, f"exported to {target}\n",
    )  # fmt: skip
    assert target.read_bytes().decode() == out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_export_into_a_missing_folder_fails_with_its_name(run, tmp_path):
    target = tmp_path / "missing" / "list.csv"
    code, out, err = run("box", "acme", "suppressions", "export", "--output", str(target))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot write {target}")


async def test_messages_show_lists_the_bounces_complaints_and_delays_of_a_message(api):
    queued = await api.call("A", "POST", "/commands/add-messages",
                            json={"messages": [message("m1", to=["bob@example.com"])]})  # fmt: skip
    assert queued.status_code == 200, queued.text
    await api.proxy.run_until_idle()
    sent = await api.proxy.get_message("A", "m1")
    now = api.clock()
    records = (
        BounceRecord(kind="delay", recipient="bob@example.com", ts=now + 5, status="4.4.7",
                     diagnostic="still\r\n trying"),
        BounceRecord(kind="bounce", recipient="bob@example.com", ts=now + 10, type="hard",
                     status="5.1.1", diagnostic="no such user", source="dsn"),
        BounceRecord(kind="complaint", recipient="bob@example.com", ts=now + 20,
                     feedback_type="abuse"),
    )  # fmt: skip
    entry = MailboxEntry(
        mailbox="bounces@example.com:993/INBOX", uidvalidity=1, uid=1, outcome="applied",
        tenant_id="A", message_pk=sent.pk, message_id="m1", records=records,
        events=tuple(bounce_event(sent, r, f"e{n}") for n, r in enumerate(records)),
    )  # fmt: skip
    assert await api.proxy.bounce_store.record_mailbox_entry(entry, now + 30)
    shown = (await api.call("A", "GET", "/messages/m1")).json()["message"]

    lines = message_lines(shown)

    reports = lines[lines.index("bounces:") :]
    assert [line.split()[1:] for line in reports if line.startswith("  ")] == [
        ["hard", "5.1.1", "bob@example.com", "no", "such", "user", "dsn"],
        ["abuse", "bob@example.com"],
        ["4.4.7", "bob@example.com", "still", "trying"],
    ]
    assert [line for line in reports if not line.startswith("  ")] == [
        "bounces:", "complaints:", "delays:",
    ]  # fmt: skip


async def test_messages_show_of_a_message_without_reports_has_no_report_sections(api):
    await api.call("A", "POST", "/commands/add-messages", json={"messages": [message("m1")]})
    shown = (await api.call("A", "GET", "/messages/m1")).json()["message"]
    lines = message_lines(shown)
    assert "history:" in lines
    assert not {"bounces:", "complaints:", "delays:"} & set(lines)
    assert not any(line.startswith(("bounces", "complaints", "delays")) for line in lines)
