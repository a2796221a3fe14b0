"""Storage faults against a real ``mail-proxy serve`` on SQLite: a full database, a
database locked by another process, a file that is not a database. Enqueue answers 503
and never acknowledges what it did not commit; the service recovers when the fault goes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

ADMIN = {"X-API-Token": TOKEN}
serving = contextlib.contextmanager(start_server)


def configure(url: str) -> None:
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as admin:
        admin.post("/tenant", json={"id": "acme"}).raise_for_status()
        admin.post("/account", json={"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                                     "port": 9, "use_tls": False,
                                     "is_default": True}).raise_for_status()  # fmt: skip
        # Only the enqueue path: nothing is claimed or sent while the tenant is suspended.
        admin.post("/commands/suspend", params={"tenant_id": "acme"}).raise_for_status()


def batch(first: int, size: int = 50) -> list[dict[str, object]]:
    return [
        {"id": f"m{n}", "tenant_id": "acme", "from": "app@example.com",
         "to": [f"r{n}@example.com"], "subject": "s", "body": "x" * 2000}
        for n in range(first, first + size)
    ]  # fmt: skip


def post(url: str, messages: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"{url}/commands/add-messages", json={"messages": messages}, headers=ADMIN, timeout=30
    )


def stored_ids(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return {row[0] for row in db.execute("SELECT id FROM messages")}


def integrity(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_full_database_answers_503_keeps_what_it_acknowledged_and_recovers(tmp_path):
    database = tmp_path / "mailproxy.db"
    acked: set[str] = set()
    refused: list[dict[str, object]] = []
    with serving(tmp_path, {"GMP_STORAGE_MAX_SIZE_MB": "1"}) as (url, _):
        configure(url)
        for first in range(0, 5000, 50):
            answer = post(url, batch(first))
            if answer.status_code == 503:
                refused = batch(first)
                break
            assert answer.status_code == 200, answer.text
            acked.update(f"m{n}" for n in range(first, first + 50))
        assert refused, "the database never filled up"
        assert "full" in answer.json()["error"]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # reads still work
        assert post(url, refused).status_code == 503  # and it keeps saying so
    assert stored_ids(database) == acked
    with serving(tmp_path, {"GMP_STORAGE_MAX_SIZE_MB": "64"}) as (url, _):  # room again
        assert post(url, refused).status_code == 200
    assert stored_ids(database) == acked | {str(m["id"]) for m in refused}
    assert integrity(database) == "ok"


def test_a_database_locked_by_another_process_answers_503_until_it_is_released(tmp_path):
    database = tmp_path / "mailproxy.db"
    with serving(tmp_path, {"GMP_STORAGE_BUSY_TIMEOUT_S": "0.3"}) as (url, _):
        configure(url)
        assert post(url, batch(0)).status_code == 200
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            answer = post(url, batch(50))
            assert answer.status_code == 503, answer.text
            assert "locked" in answer.json()["error"]
            other.execute("ROLLBACK")
        assert stored_ids(database) == {f"m{n}" for n in range(50)}
        assert post(url, batch(50)).status_code == 200
    assert len(stored_ids(database)) == 100
    assert integrity(database) == "ok"


def test_a_file_that_is_not_a_database_stops_serve_with_a_clear_error(tmp_path):
    database = tmp_path / "mailproxy.db"
    database.write_bytes(b"this is not a SQLite database\n" * 100)
    before = database.read_bytes()
    env = {"PATH": os.environ.get("PATH", ""), "GMP_DB_PATH": str(database),
           "GMP_API_TOKEN": TOKEN}  # fmt: skip
    finished = subprocess.run(
        [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
         "serve", "--host", "127.0.0.1", "--port", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode != 0
    assert f"cannot use the database {database}" in finished.stderr
    assert "not a database" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert database.read_bytes() == before
