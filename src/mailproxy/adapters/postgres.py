"""PostgreSQL engine of the SQL store (:mod:`mailproxy.adapters.sql`): every storage port
on one database that several mailproxy processes (on any number of hosts) share.

- psycopg 3's synchronous connection pool, used from a thread pool of the same size:
  every write is one transaction, so a state change, its history and its report events
  commit together.
- Claiming locks the candidate rows of all claimable accounts in one statement
  (``FOR UPDATE SKIP LOCKED``): two processes never claim the same message, and neither
  waits for the other. The claim is a lease (owner, token, expiry); every later write is
  fenced by the token, and any live process takes over expired leases.
- Rate-limit reservations run under a transaction-scoped advisory lock per window key
  (taken in key order, so two reservations cannot deadlock): the account and tenant
  limits hold across all processes.
- Wake-ups (the ``ChangeFeed`` port): the transactions that make work (messages accepted
  or due again, report events written) send ``NOTIFY`` on commit;
  :meth:`PostgresStore.watch` listens on a dedicated connection and calls the service
  back, so another process reacts without polling.
- Migrations are the numbered sections of ``sql/postgres_schema.sql`` (table
  ``schema_version``), run at open under an advisory lock, so processes starting
  together apply each migration once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import AsyncConnection, Connection, sql
from psycopg.abc import Buffer
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import ConnectionPool, PoolTimeout

from mailproxy.adapters.sql.store import SqlStore
from mailproxy.adapters.sql.tx import Queries, Tx, percent_style, sections
from mailproxy.domain.errors import StorageError

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("mailproxy.postgres")

#: The advisory lock key that serialises migrations (any constant the schema owns).
_MIGRATION_LOCK = 0x6D61696C70726F78  # "mailprox"
#: The advisory lock key of folding the status count deltas.
_FOLD_LOCK = _MIGRATION_LOCK + 1
#: The schema history: script N brings a database from version N-1 to N.
MIGRATIONS: tuple[str, ...] = tuple(sections("postgres_schema.sql").values())


class _NulSafeText(StrDumperUnknown):
    """PostgreSQL text cannot hold NUL: one in a value (a lookup key from a request, a
    server's reply kept as an error) becomes U+FFFD instead of failing the statement."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


def _configure(conn: Connection[Any]) -> None:
    conn.adapters.register_dumper(str, _NulSafeText)


def _channels(schema: str | None) -> tuple[str, str]:
    """The NOTIFY channels of one schema (so that databases shared by several
    installations, or test runs, do not wake each other)."""
    suffix = "" if schema is None else "_" + hashlib.sha256(schema.encode()).hexdigest()[:12]
    return f"mailproxy_queue{suffix}", f"mailproxy_reports{suffix}"


def _lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for ``text``."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


class PostgresTx(Tx):
    """PostgreSQL's side of the engine differences: row locks, ``SKIP LOCKED``, advisory
    locks on rate keys, a sequence, one statement for every account's queue head,
    ``NOTIFY`` on commit, counts kept as deltas (folded now and then)."""

    FOR_UPDATE = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    IN_LIST = "= ANY(?)"
    q = Queries("postgres.sql", IN_LIST)

    def __init__(self, cursor: Any, channels: tuple[str, str], call: _Call | None = None) -> None:
        super().__init__(cursor)
        self._queue_channel, self._reports_channel = channels
        self._call = call

    def _driver_sql(self, sql: str) -> str:
        if self._call is not None:
            self._call.check()  # its caller gone, the operation starts no further statement
        return percent_style(sql)

    def listed(self, values: Iterable[Any]) -> list[Any]:
        return list(values)

    def lock_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.run(self.q.lock_key, (_lock_key(key),))

    def sequence_numbers(self, count: int) -> list[int]:
        return [int(row[0]) for row in self.all(self.q.next_seqs, (count,))]

    def queue_heads(self, rooms: Sequence[tuple[str, str, int]], now: float) -> list[Any]:
        tenants, accounts, limits = (list(column) for column in zip(*rooms, strict=True))
        return self.all(self.q.queue_heads, (tenants, accounts, limits, now))

    def fold_counts(self) -> None:
        self.run(self.q.fold_status_counts, (_FOLD_LOCK,))

    def fold_rate_total(self, key: str) -> None:
        self.run(self.q.fold_rate_total, (key, key))

    def wake_queue(self) -> None:
        self.run(self.q.notify, (self._queue_channel, ""))

    def wake_reports(self, tenant_id: str) -> None:
        self.run(self.q.notify, (self._reports_channel, tenant_id))


class _Call:
    """One operation running on a worker thread, as its caller on the event loop sees it:
    a caller that is cancelled (a client gone, a shutdown) takes the operation back —
    the statement running is cancelled on the server and no further one starts, so the
    transaction rolls back instead of committing what nobody waits for any more."""

    def __init__(self) -> None:
        self.connection: Connection[Any] | None = None
        self._cancelled = threading.Event()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise StorageError("postgres: the operation was cancelled by its caller")

    def cancel(self) -> None:
        self._cancelled.set()
        connection = self.connection
        if connection is not None:
            # The cancel request is a connection of its own to the server: not on the loop.
            threading.Thread(target=_cancel_quietly, args=(connection,), daemon=True).start()


def _cancel_quietly(connection: Connection[Any]) -> None:
    # The statement may have ended, or the connection gone, meanwhile: nothing to undo.
    with contextlib.suppress(psycopg.Error, OSError):
        connection.cancel_safe(timeout=5.0)


def migrate(conn: Connection[Any]) -> int:
    """Apply the migrations the database has not seen yet, in one transaction under an
    advisory lock; return the schema version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        for script in MIGRATIONS[version:]:
            conn.execute(script.encode())
        if version < len(MIGRATIONS):
            conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
        return len(MIGRATIONS)


class PostgresEngine:
    """Runs the SQL operations on a PostgreSQL database through a connection pool, from a
    thread pool as large as the connection pool."""

    def __init__(self, dsn: str, schema: str | None, pool_size: int, timeout_s: float) -> None:
        self.dsn = dsn
        self.schema = schema
        self.channels = _channels(schema)
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._pool: ConnectionPool[Connection[Any]] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema is not None:
            kwargs["options"] = f"-c search_path={self.schema}"
        return kwargs

    async def open(self) -> None:
        if self._pool is not None:
            return
        # More threads than connections: a call waiting for a connection waits in the
        # pool, whose timeout answers it with a StorageError, not in the thread queue.
        executor = ThreadPoolExecutor(4 * self._pool_size, thread_name_prefix="mailproxy-pg")
        try:
            self._pool = await asyncio.get_running_loop().run_in_executor(executor, self._open)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _open(self) -> ConnectionPool[Connection[Any]]:
        try:
            if self.schema is not None:
                with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
                    # Two "IF NOT EXISTS" at once can still collide: one at a time.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
            pool: ConnectionPool[Connection[Any]] = ConnectionPool(
                self.dsn, min_size=1, max_size=self._pool_size, kwargs=self.connect_kwargs(),
                timeout=self._timeout_s, open=False, name="mailproxy", configure=_configure,
            )  # fmt: skip
            pool.open(wait=True, timeout=self._timeout_s)
        except PoolTimeout as exc:
            pool.close()
            raise StorageError(f"postgres: {exc}: {self._why_no_connection()}") from exc
        except (psycopg.Error, OSError) as exc:
            raise StorageError(f"postgres: {exc}") from exc
        try:
            with pool.connection() as conn:
                migrate(conn)
        except psycopg.Error as exc:
            pool.close()
            raise StorageError(f"postgres: {exc}") from exc
        return pool

    def _why_no_connection(self) -> str:
        """The reason the pool got no connection (refused, unknown user...), from one
        direct attempt: the pool's timeout alone does not say it."""
        try:
            with psycopg.connect(
                self.dsn, connect_timeout=max(1, int(self._timeout_s)), **self.connect_kwargs()
            ):
                return "a connection works now"
        except (psycopg.Error, OSError) as exc:
            return " ".join(str(exc).split())

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        executor, self._executor = self._executor, None
        if pool is not None:
            await asyncio.to_thread(pool.close)
        if executor is not None:
            executor.shutdown(wait=True)

    async def _run(self, op: Callable[[Tx], T], *, transaction: bool) -> T:
        pool, executor = self._pool, self._executor
        if pool is None or executor is None:
            raise StorageError("postgres store is not open")
        deadline, call = time.monotonic() + self._timeout_s, _Call()

        def run() -> T:
            call.check()
            # The wait for a connection counts from the call, queued time included.
            with pool.connection(timeout=max(0.0, deadline - time.monotonic())) as conn:
                call.connection = conn
                with (
                    conn.cursor() as cur,
                    conn.transaction() if transaction else contextlib.nullcontext(),
                ):
                    result = op(PostgresTx(cur, self.channels, call))
                    call.check()  # given up on while it ran: roll back, do not commit
                    return result

        future = asyncio.get_running_loop().run_in_executor(executor, run)
        try:
            return await future
        except asyncio.CancelledError:
            call.cancel()
            raise
        except psycopg.Error as exc:
            raise StorageError(f"postgres: {exc}") from exc

    async def read(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._run(lambda tx: op(tx, *args, **kwargs), transaction=False)

    async def write(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._run(lambda tx: op(tx, *args, **kwargs), transaction=True)


class PostgresStore(SqlStore):
    """Every storage port, and the ``ChangeFeed``, on a PostgreSQL database (``schema``:
    the schema its tables live in; default: the connection's search path)."""

    def __init__(
        self, dsn: str, *, schema: str | None = None, pool_size: int = 8, timeout_s: float = 10.0
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self._pg = PostgresEngine(dsn, schema, pool_size, timeout_s)
        self._listener: asyncio.Task[None] | None = None
        super().__init__(self._pg)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await super().close()

    async def watch(self, on_queue: Callable[[], None], on_reports: Callable[[], None]) -> None:
        """Call ``on_queue`` when any process makes messages claimable, ``on_reports`` when
        any process writes report events, until :meth:`close`. The listening connection
        reconnects after a failure; a missed notification costs only the service's
        fallback poll."""
        if self._listener is None:
            ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(
                self._listen(on_queue, on_reports, ready), name="mailproxy-pg-listen"
            )
            await asyncio.wait([self._listener, ready], return_when=asyncio.FIRST_COMPLETED)

    async def _listen(
        self,
        on_queue: Callable[[], None],
        on_reports: Callable[[], None],
        ready: asyncio.Future[None],
    ) -> None:
        queue_channel, reports_channel = self._pg.channels
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.dsn, **self._pg.connect_kwargs()
                ) as conn:
                    for channel in (queue_channel, reports_channel):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if not ready.done():
                        ready.set_result(None)
                    on_queue()  # whatever happened while not listening
                    on_reports()
                    async for note in conn.notifies():
                        log.debug("postgres.notified", extra={"channel": note.channel})
                        (on_queue if note.channel == queue_channel else on_reports)()
            except (psycopg.Error, OSError) as exc:
                log.warning("postgres.listen_failed", extra={"error": str(exc)})
                if not ready.done():
                    ready.set_result(None)
                await asyncio.sleep(1.0)


__all__ = ["MIGRATIONS", "PostgresStore", "migrate"]
