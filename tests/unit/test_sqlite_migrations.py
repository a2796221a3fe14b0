"""SQLite schema migrations: a file of an earlier version is brought up to date with its
data, and a second run changes nothing."""

from __future__ import annotations

import sqlite3

import pytest

from mailproxy.adapters.sqlite import MIGRATIONS, SqliteTx, migrate, run_script


def file_at_version(path, version: int) -> sqlite3.Connection:
    """A SQLite file with the schema as the first ``version`` migrations left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:version]):
        run_script(conn, script)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    return conn


def test_a_version_2_file_gets_rate_totals_from_its_reservations(tmp_path):
    conn = file_at_version(tmp_path / "old.db", 2)
    conn.executemany(
        "INSERT INTO rate_slots (key, ts, message_pk) VALUES (?, ?, ?)",
        [("k1", 1.0, None), ("k1", 2.0, 7), ("k2", 3.0, None)],
    )
    assert migrate(conn) == len(MIGRATIONS)
    assert dict(conn.execute("SELECT key, n FROM rate_totals").fetchall()) == {"k1": 2, "k2": 1}
    conn.execute("DELETE FROM rate_slots WHERE message_pk = 7")
    conn.execute("INSERT INTO rate_slots (key, ts) VALUES ('k3', 4.0)")
    assert dict(conn.execute("SELECT key, n FROM rate_totals").fetchall()) == {
        "k1": 1, "k2": 1, "k3": 1
    }  # fmt: skip
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()


def test_a_version_5_file_gets_status_counts_from_its_messages(tmp_path):
    conn = file_at_version(tmp_path / "old.db", 5)
    columns = "tenant_id, id, account_id, priority, seq, status, due_ts, message_id, date_ts, spec"
    rows = [("t1", "a", "sent"), ("t1", "b", "sent"), ("t1", "c", "pending"), ("t2", "d", "error")]
    conn.executemany(
        f"INSERT INTO messages ({columns}) VALUES (?, ?, 'acc', 2, 1, ?, 0, 'x@y', 0, x'7b7d')",
        rows,
    )
    assert migrate(conn) == len(MIGRATIONS)
    counts = "SELECT tenant_id, status, n FROM status_counts ORDER BY 1, 2"
    assert conn.execute(counts).fetchall() == [
        ("t1", "pending", 1), ("t1", "sent", 2), ("t2", "error", 1)
    ]  # fmt: skip
    conn.execute("UPDATE messages SET status = 'sending' WHERE id = 'c'")
    conn.execute("DELETE FROM messages WHERE id = 'd'")
    assert conn.execute(counts).fetchall() == [
        ("t1", "pending", 0), ("t1", "sending", 1), ("t1", "sent", 2), ("t2", "error", 0)
    ]  # fmt: skip
    conn.close()


@pytest.mark.parametrize(
    ("query", "index"),
    [("held_by_owner", "messages_owned"), ("expired_leases", "messages_leased")],
)
def test_the_lease_queries_of_every_claim_use_an_index(tmp_path, query, index):
    # A claim counts what its process holds first: a scan there costs every claim the size
    # of the table, which keeps every finished message for the retention period.
    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    migrate(conn)
    args = ("w1",) if query == "held_by_owner" else (1, "w1", 0.0)
    plan = " ".join(
        str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {getattr(SqliteTx.q, query)}", args)
    )
    conn.close()
    assert index in plan
    assert "SCAN messages" not in plan or f"USING INDEX {index}" in plan
