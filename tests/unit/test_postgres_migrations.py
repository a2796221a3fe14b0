"""PostgreSQL schema migrations: a database of an earlier version is brought up to date
with its data (the status counts SQLite keeps by triggers, computed from the messages
already there and kept from then on), and a second run changes nothing."""

from __future__ import annotations

import uuid

import psycopg
import psycopg.sql

from mailproxy.adapters.postgres import MIGRATIONS, migrate
from tests.conftest import POSTGRES_DSN

COUNTS = "SELECT tenant_id, status, SUM(n)::int FROM status_counts GROUP BY 1, 2 ORDER BY 1, 2"


def test_a_version_2_database_gets_status_counts_from_its_messages():
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
        try:
            conn.execute(
                psycopg.sql.SQL("SET search_path = {}").format(psycopg.sql.Identifier(schema))
            )
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (2)")
            for script in MIGRATIONS[:2]:
                conn.execute(script.encode())
            columns = "tenant_id, id, account_id, priority, seq, status, due_ts, message_id, date_ts, spec, created_ts, updated_ts, rank"
            for tenant_id, message_id, status in [
                ("t1", "a", "sent"), ("t1", "b", "sent"), ("t1", "c", "pending"), ("t2", "d", "error")
            ]:  # fmt: skip
                conn.execute(
                    f"INSERT INTO messages ({columns}) VALUES (%s, %s, 'acc', 2, 1, %s, 0, 'x@y', 0, '{{}}', 0, 0, 0)",
                    (tenant_id, message_id, status),
                )
            assert migrate(conn) == len(MIGRATIONS)
            assert conn.execute(COUNTS).fetchall() == [
                ("t1", "pending", 1), ("t1", "sent", 2), ("t2", "error", 1)
            ]  # fmt: skip
            conn.execute("UPDATE messages SET status = 'sending' WHERE id = 'c'")
            conn.execute("UPDATE messages SET updated_ts = 1 WHERE id = 'a'")  # status kept
            conn.execute("DELETE FROM messages WHERE id = 'd'")
            assert conn.execute(COUNTS).fetchall() == [
                ("t1", "pending", 0), ("t1", "sending", 1), ("t1", "sent", 2), ("t2", "error", 0)
            ]  # fmt: skip
            assert migrate(conn) == len(MIGRATIONS)
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (len(MIGRATIONS),)
            ]
        finally:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema))
            )
