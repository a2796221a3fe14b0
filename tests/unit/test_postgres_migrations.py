"""PostgreSQL schema migrations: a database of an earlier version is brought up to date
with its data (the counts SQLite keeps by triggers, computed from the rows already there
and kept from then on), and a second run changes nothing."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator

import psycopg
from psycopg.sql import SQL, Identifier

from mailproxy.adapters.postgres import MIGRATIONS, migrate
from mailproxy.adapters.sqlite import migrate as sqlite_migrate
from tests.conftest import POSTGRES_DSN

STATUS_COUNTS = (
    "SELECT tenant_id, status, SUM(n)::int FROM status_counts GROUP BY 1, 2 ORDER BY 1, 2"
)
RATE_TOTALS = "SELECT key, SUM(n)::int FROM rate_totals GROUP BY 1 ORDER BY 1"


@contextlib.contextmanager
def database_at_version(version: int) -> Iterator[psycopg.Connection]:
    """A fresh schema as the first ``version`` migrations left it (dropped afterwards)."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
        try:
            conn.execute(SQL("SET search_path = {}").format(Identifier(schema)))
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
            for script in MIGRATIONS[:version]:
                conn.execute(script.encode())
            yield conn
        finally:
            conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(schema)))


def test_a_version_2_database_gets_status_counts_from_its_messages():
    with database_at_version(2) as conn:
        columns = (
            "tenant_id, id, account_id, priority, seq, status, due_ts, message_id, date_ts, "
            "spec, created_ts, updated_ts, rank"
        )
        for tenant_id, message_id, status in [
            ("t1", "a", "sent"), ("t1", "b", "sent"), ("t1", "c", "pending"), ("t2", "d", "error")
        ]:  # fmt: skip
            conn.execute(
                f"INSERT INTO messages ({columns}) "
                "VALUES (%s, %s, 'acc', 2, 1, %s, 0, 'x@y', 0, '{}', 0, 0, 0)",
                (tenant_id, message_id, status),
            )
        assert migrate(conn) == len(MIGRATIONS)
        assert conn.execute(STATUS_COUNTS).fetchall() == [
            ("t1", "pending", 1), ("t1", "sent", 2), ("t2", "error", 1)
        ]  # fmt: skip
        conn.execute("UPDATE messages SET status = 'sending' WHERE id = 'c'")
        conn.execute("UPDATE messages SET updated_ts = 1 WHERE id = 'a'")  # status kept
        conn.execute("DELETE FROM messages WHERE id = 'd'")
        assert conn.execute(STATUS_COUNTS).fetchall() == [
            ("t1", "pending", 0), ("t1", "sending", 1), ("t1", "sent", 2), ("t2", "error", 0)
        ]  # fmt: skip
        assert migrate(conn) == len(MIGRATIONS)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]


def test_a_write_in_flight_during_the_upgrade_is_counted():
    # A process of the earlier version has changed a message and not committed yet when
    # the upgrade takes the counts: the migration waits for it instead of missing it.
    with database_at_version(2) as conn:
        conn.execute(
            "INSERT INTO messages (tenant_id, id, account_id, priority, seq, status, due_ts, "
            "message_id, date_ts, spec, created_ts, updated_ts, rank) "
            "VALUES ('t1', 'a', 'acc', 2, 1, 'deferred', 0, 'x@y', 0, '{}', 0, 0, 0)"
        )
        (schema,) = conn.execute("SELECT current_schema()").fetchone()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as writer:
            writer.execute(SQL("SET search_path = {}").format(Identifier(schema)))
            writer.execute("BEGIN")
            writer.execute("UPDATE messages SET status = 'sent' WHERE id = 'a'")
            upgrade = threading.Thread(target=migrate, args=(conn,))
            upgrade.start()
            upgrade.join(0.5)
            assert upgrade.is_alive()  # waiting for the writer
            writer.execute("COMMIT")
            upgrade.join(10)
        assert conn.execute(STATUS_COUNTS).fetchall() == [("t1", "sent", 1)]


def test_the_counts_follow_a_change_made_from_a_session_on_another_search_path():
    with database_at_version(2) as conn:
        conn.execute(
            "INSERT INTO messages (tenant_id, id, account_id, priority, seq, status, due_ts, "
            "message_id, date_ts, spec, created_ts, updated_ts, rank) "
            "VALUES ('t1', 'a', 'acc', 2, 1, 'deferred', 0, 'x@y', 0, '{}', 0, 0, 0)"
        )
        migrate(conn)
        (schema,) = conn.execute("SELECT current_schema()").fetchone()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as operator:
            operator.execute(
                SQL("UPDATE {}.messages SET status = 'sent'").format(Identifier(schema))
            )
        assert conn.execute(STATUS_COUNTS).fetchall() == [("t1", "deferred", 0), ("t1", "sent", 1)]


def test_a_version_3_database_gets_rate_totals_from_its_reservations():
    with database_at_version(3) as conn:
        conn.execute(
            "INSERT INTO rate_slots (key, ts, message_pk) "
            "VALUES ('k1', 1.0, NULL), ('k1', 2.0, 7), ('k2', 3.0, NULL)"
        )
        assert migrate(conn) == len(MIGRATIONS)
        assert conn.execute(RATE_TOTALS).fetchall() == [("k1", 2), ("k2", 1)]
        conn.execute("DELETE FROM rate_slots WHERE message_pk = 7")
        conn.execute("INSERT INTO rate_slots (key, ts) VALUES ('k3', 4.0)")
        assert conn.execute(RATE_TOTALS).fetchall() == [("k1", 1), ("k2", 1), ("k3", 1)]
        assert migrate(conn) == len(MIGRATIONS)


def test_both_engines_end_with_the_same_tables_and_indexes(tmp_path):
    sqlite_file = sqlite3.connect(tmp_path / "schema.db", isolation_level=None)
    sqlite_migrate(sqlite_file)
    sqlite_tables = {
        name
        for (name,) in sqlite_file.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    # Indexes made by CREATE INDEX (unique constraints and primary keys aside).
    sqlite_indexes = {
        name
        for (name,) in sqlite_file.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE 'CREATE INDEX%'"
        )
    }
    sqlite_file.close()
    with database_at_version(0) as conn:
        migrate(conn)
        postgres_tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        postgres_indexes = {
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT i.indisunique"
            )
        }
    # SQLite counts its rows in place (schema version in PRAGMA user_version, sequence
    # numbers in a counter row); PostgreSQL keeps a version table and, for the counts,
    # insert-only deltas that need an index where SQLite has a primary key.
    assert sqlite_tables - {"counters"} == postgres_tables - {"schema_version"}
    assert sqlite_indexes == postgres_indexes - {"status_counts_tenant", "rate_totals_key"}
