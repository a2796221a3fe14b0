"""SQLite engine of the SQL store (:mod:`mailproxy.adapters.sql`): the embedded default,
every storage port on one file.

- WAL journal, ``synchronous=FULL`` by default (an accepted message survives power loss;
  ``normal`` survives a process crash), ``busy_timeout`` so that several processes on one
  host can share the file.
- One connection per process, used only by one dedicated thread: sqlite3 calls never run
  on the event loop.
- Group commit: writes submitted while a transaction is being committed are applied
  together in the next ``BEGIN IMMEDIATE … COMMIT``, each inside its own savepoint so that
  one failing write does not undo the others. Under load one fsync serves many callers,
  which is what makes ``synchronous=FULL`` affordable; every caller still returns only
  after its own write is committed. ``BEGIN IMMEDIATE`` also serialises writers across
  processes, so SQLite needs no row locks.
- Schema migrations are the numbered sections of ``sql/sqlite_schema.sql``
  (``PRAGMA user_version``), run at :meth:`SqliteEngine.open`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from mailproxy.adapters.sql.store import SqlStore
from mailproxy.adapters.sql.tx import Queries, Tx, sections
from mailproxy.domain.errors import StorageError

P = ParamSpec("P")
T = TypeVar("T")
Write = Callable[[Tx], Any]

#: The schema history: script N brings a file from version N-1 to N.
MIGRATIONS: tuple[str, ...] = tuple(sections("sqlite_schema.sql").values())


class SqliteTx(Tx):
    """SQLite's side of the engine differences: no row locks (``BEGIN IMMEDIATE`` holds
    the file), sequence numbers from a counter row, counts kept in place by triggers."""

    IN_LIST = "IN (SELECT value FROM json_each(?))"
    q = Queries("sqlite.sql", IN_LIST)

    def listed(self, values: Iterable[Any]) -> str:
        # json_each ends a text at a NUL: it becomes U+FFFD, as PostgreSQL stores it.
        return json.dumps([v.replace("\0", "\ufffd") if isinstance(v, str) else v for v in values])

    def sequence_numbers(self, count: int) -> list[int]:
        (last,) = self.one(self.q.next_seq, (count,))
        return list(range(last - count + 1, last + 1))

    def queue_heads(self, rooms: Sequence[tuple[str, str, int]], now: float) -> list[Any]:
        heads: list[Any] = []
        for tenant_id, account_id, room in rooms:
            heads += self.all(self.q.account_head, (tenant_id, account_id, now, room))
        return heads


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute ``script`` statement by statement (``executescript`` would commit)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the file has not seen yet; return the schema version.

    Each runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the version inside
    it, so processes starting together on one file apply each migration once.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= len(MIGRATIONS):
                conn.execute("COMMIT")
                return int(version)
            run_script(conn, MIGRATIONS[version])
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class SqliteEngine:
    """Runs the SQL operations on one SQLite file: the writes on one thread with group
    commit, the reads on a second connection and thread of their own. With the WAL, a
    read sees what was committed when it started and never waits for the writer: not
    for its commit (an fsync, with ``synchronous = full``) nor behind the writes queued
    for the next one; a caller whose write has returned reads it (it was committed)."""

    def __init__(
        self,
        path: Path,
        synchronous: Literal["full", "normal"],
        busy_timeout_s: float,
        max_size_bytes: int | None,
    ) -> None:
        self.path = path
        self._max_size_bytes = max_size_bytes
        self._synchronous = synchronous
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mailproxy-sqlite")
        self._read_executor = ThreadPoolExecutor(1, thread_name_prefix="mailproxy-sqlite-read")
        try:
            self._conn = await self._in_thread(self._connect)
            self._reader = await self._in_thread(self._connect_reader, self._read_executor)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            for executor in (self._executor, self._read_executor):
                executor.shutdown(wait=False)
            self._executor = self._read_executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            migrate(conn)
            if self._max_size_bytes is not None:
                # Past the cap, writes fail as on a full disk (StorageError, 503 over
                # HTTP) and nothing half-written is kept.
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                pages = max(1, self._max_size_bytes // page_size)
                conn.execute(f"PRAGMA max_page_count = {pages}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        """The connection reads run on (the file exists and is migrated by now); it may
        not write, so that every write goes through the writer's group commit."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA query_only = ON")
        return conn

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        try:
            if reader is not None:
                await self._in_thread(reader.close, self._read_executor)
            await self._in_thread(conn.close)
        finally:
            for executor in (self._executor, self._read_executor):
                if executor is not None:
                    executor.shutdown(wait=True)
            self._executor = self._read_executor = None

    async def _in_thread(
        self, fn: Callable[[], T], executor: ThreadPoolExecutor | None = None
    ) -> T:
        executor = executor or self._executor
        if executor is None:
            raise StorageError(f"store {self.path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"store {self.path} is not open")
        return self._conn

    async def read(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._reader is None:
            raise StorageError(f"store {self.path} is not open")
        reader = self._reader

        def snapshot() -> T:
            # One read transaction: every statement of the operation sees the same
            # committed state, whatever the writer commits meanwhile.
            reader.execute("BEGIN")
            try:
                return op(SqliteTx(reader), *args, **kwargs)
            finally:
                reader.execute("ROLLBACK")

        return await self._in_thread(snapshot, self._read_executor)

    async def write(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        self._connection()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((lambda tx: op(tx, *args, **kwargs), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            conn = self._connection()
            try:
                results = await self._in_thread(
                    functools.partial(self._apply, conn, [f for f, _ in batch])
                )
            except Exception as exc:
                error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if not future.done():
                    (future.set_result if ok else future.set_exception)(value)

    @staticmethod
    def _apply(conn: sqlite3.Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
        tx = SqliteTx(conn)
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, write(tx)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    driver_error = isinstance(exc, sqlite3.Error)
                    results.append((False, StorageError(f"sqlite: {exc}") if driver_error else exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


class SqliteStore(SqlStore):
    """Every storage port on a SQLite file (``max_size_bytes``: a cap on the file)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout_s: float = 5.0,
        max_size_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(SqliteEngine(self.path, synchronous, busy_timeout_s, max_size_bytes))


__all__ = ["MIGRATIONS", "SqliteStore", "migrate", "run_script"]
