"""SQLite schema migrations: a file of an earlier version is brought up to date with its
data, and a second run changes nothing."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from mailproxy.adapters.sqlite import MIGRATIONS, migrate


def test_a_version_2_file_gets_rate_totals_from_its_reservations(tmp_path):
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db = sqlite_utils.Database(conn)
    for version, step in enumerate(MIGRATIONS[:2]):
        step(db)
        conn.execute(f"PRAGMA user_version = {version + 1}")
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
