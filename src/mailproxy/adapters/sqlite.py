"""SQLite store: the embedded default, implementing every storage port on one file.

- WAL journal, ``synchronous=FULL`` by default (an accepted message survives power loss;
  ``normal`` survives a process crash), ``busy_timeout`` so that several processes on one
  host can share the file.
- One connection per process, used only by one dedicated thread: sqlite3 calls never run
  on the event loop.
- Group commit: writes submitted while a transaction is being committed are applied
  together in the next ``BEGIN IMMEDIATE … COMMIT``, each inside its own savepoint so that
  one failing write does not undo the others. Under load one fsync serves many callers,
  which is what makes ``synchronous=FULL`` affordable; every caller still returns only
  after its own write is committed.
- Schema migrations are numbered (``PRAGMA user_version``) and run at :meth:`open`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import sqlite_utils

from mailproxy.adapters.sql_rows import (
    COLUMNS,
    FINAL_SQL,
    QUEUED_SQL,
    RESUME_CHUNK,
    TRANSITION_UPDATE,
    WAITING_SQL,
    account_decoder,
    claims_of,
    encode,
    event_decoder,
    max_connections,
    message_from_row,
    page_of,
    tenant_decoder,
    transition_values,
)
from mailproxy.domain.access import (
    Caller,
    IdempotentStart,
    TenantKey,
    idempotency_scope,
    idempotent_state,
)
from mailproxy.domain.errors import Conflict, StorageError
from mailproxy.domain.lifecycle import requeue_status, resubmission_refusal
from mailproxy.domain.model import (
    QUEUED_STATUSES,
    Account,
    AccountPause,
    Claim,
    DeleteResult,
    HistoryEntry,
    Lease,
    MessagePage,
    MinuteCount,
    NewMessage,
    QueuedMessage,
    Rejection,
    ReportBacklog,
    Status,
    StoredReport,
    SuspendState,
    Tenant,
    Transition,
)
from mailproxy.domain.policy import (
    DEFAULT_AGING_S,
    RateWindow,
    SlotGrant,
    account_room,
    fair_order,
    held_by_tenant,
    suspension_of,
)

T = TypeVar("T")
_TRANSITION_SQL = TRANSITION_UPDATE.format(*["?"] * 14)
_UPSERT_SQL = (
    "INSERT INTO messages (tenant_id, id, account_id, priority, rank, seq, status, due_ts, "
    "batch_code, message_id, date_ts, spec, created_ts, updated_ts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, id) DO UPDATE SET account_id = excluded.account_id, "
    "priority = excluded.priority, rank = excluded.rank, seq = excluded.seq, "
    "status = excluded.status, due_ts = excluded.due_ts, batch_code = excluded.batch_code, "
    "message_id = excluded.message_id, date_ts = excluded.date_ts, spec = excluded.spec, "
    "created_ts = excluded.created_ts, updated_ts = excluded.updated_ts, attempts = 0, "
    "possible_duplicate = 0, sent_ts = NULL, error_ts = NULL, final_ts = NULL, error = NULL, "
    "smtp_code = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_ts = NULL, "
    "attempt_open = 0, wait_reason = NULL, wait_detail = NULL "
    "WHERE status NOT IN ('sent', 'sending', 'unknown') AND NOT possible_duplicate"
)
Write = Callable[[sqlite3.Connection], Any]

# --- migrations -------------------------------------------------------------------------


def _v1(db: sqlite_utils.Database) -> None:
    table = db.table
    table("tenants").create({"id": str, "data": bytes}, pk="id", not_null=["data"])
    table("accounts").create(
        {"tenant_id": str, "id": str, "data": bytes},
        pk=("tenant_id", "id"),
        not_null=["data"],
    )
    table("messages").create(
        {
            "pk": int,
            "tenant_id": str,
            "id": str,
            "account_id": str,
            "priority": int,
            "seq": int,
            "status": str,
            "due_ts": float,
            "batch_code": str,
            "message_id": str,
            "date_ts": float,
            "spec": bytes,
            "attempts": int,
            "possible_duplicate": int,
            "created_ts": float,
            "updated_ts": float,
            "sent_ts": float,
            "error_ts": float,
            "final_ts": float,
            "error": str,
            "smtp_code": int,
            "lease_owner": str,
            "lease_token": str,
            "lease_expires_ts": float,
            "attempt_open": int,
        },
        pk="pk",
        not_null=[
            "tenant_id",
            "id",
            "account_id",
            "priority",
            "seq",
            "status",
            "due_ts",
            "message_id",
            "date_ts",
            "spec",
            "attempts",
            "possible_duplicate",
            "attempt_open",
        ],
        defaults={"attempts": 0, "possible_duplicate": 0, "attempt_open": 0},
    )
    table("messages").create_index(["tenant_id", "id"], unique=True)
    table("messages").create_index(["tenant_id", "seq"])
    db.execute(
        f"CREATE INDEX messages_queue ON messages(priority, seq) WHERE status IN {QUEUED_SQL}"
    )
    db.execute(f"CREATE INDEX messages_due ON messages(due_ts) WHERE status IN {QUEUED_SQL}")
    db.execute("CREATE INDEX messages_leased ON messages(lease_owner) WHERE status = 'sending'")
    table("history").create(
        {"pk": int, "message_pk": int, "event": str, "ts": float, "detail": str},
        pk="pk",
        not_null=["message_pk", "event", "ts"],
    )
    table("history").create_index(["message_pk"])
    table("reports").create(
        {
            "seq": int,
            "event_id": str,
            "tenant_id": str,
            "message_pk": int,
            "payload": bytes,
            "created_ts": float,
            "acked_ts": float,
        },
        pk="seq",
        not_null=["event_id", "tenant_id", "message_pk", "payload", "created_ts"],
    )
    table("reports").create_index(["event_id"], unique=True)
    table("reports").create_index(["message_pk"])
    db.execute("CREATE INDEX reports_pending ON reports(tenant_id, seq) WHERE acked_ts IS NULL")
    table("counters").create({"name": str, "value": int}, pk="name", not_null=["value"])
    db.execute("INSERT INTO counters (name, value) VALUES ('seq', 0)")


def _v2(db: sqlite_utils.Database) -> None:
    """Queue policy: ranks with aging, per-account queues, rate-limit reservations,
    account pauses, suspensions."""
    db.execute("ALTER TABLE messages ADD COLUMN rank REAL NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE messages ADD COLUMN wait_reason TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN wait_detail TEXT")
    db.execute(f"UPDATE messages SET rank = created_ts + priority * {DEFAULT_AGING_S}")
    db.execute("DROP INDEX messages_queue")
    db.execute(
        "CREATE INDEX messages_account_queue ON messages(tenant_id, account_id, rank, seq) "
        f"WHERE status IN {QUEUED_SQL}"
    )
    db.execute(f"CREATE INDEX messages_final ON messages(final_ts) WHERE status IN {FINAL_SQL}")
    db.execute("CREATE TABLE rate_slots (key TEXT NOT NULL, ts REAL NOT NULL, message_pk INTEGER)")
    db.execute("CREATE INDEX rate_slots_key ON rate_slots(key, ts)")
    db.execute("CREATE INDEX rate_slots_message ON rate_slots(message_pk)")
    db.execute(
        "CREATE TABLE account_pauses (tenant_id TEXT NOT NULL, account_id TEXT NOT NULL, "
        "failures INTEGER NOT NULL, until_ts REAL NOT NULL, reason TEXT NOT NULL, "
        "PRIMARY KEY (tenant_id, account_id))"
    )
    db.execute(
        "CREATE TABLE suspensions (tenant_id TEXT NOT NULL, batch_code TEXT NOT NULL, "
        "PRIMARY KEY (tenant_id, batch_code))"
    )


def _v3(db: sqlite_utils.Database) -> None:
    """Rate-limit totals: the live reservations of each window key, kept by triggers so
    that every path that adds or removes a reservation keeps them right. A key whose
    total is below a window's limit has room without scanning its reservations."""
    db.execute("CREATE TABLE rate_totals (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("INSERT INTO rate_totals (key, n) SELECT key, COUNT(*) FROM rate_slots GROUP BY key")
    db.execute(
        "CREATE TRIGGER rate_slots_added AFTER INSERT ON rate_slots BEGIN "
        "INSERT INTO rate_totals (key, n) VALUES (NEW.key, 1) "
        "ON CONFLICT (key) DO UPDATE SET n = n + 1; END"
    )
    db.execute(
        "CREATE TRIGGER rate_slots_removed AFTER DELETE ON rate_slots BEGIN "
        "UPDATE rate_totals SET n = n - 1 WHERE key = OLD.key; END"
    )


def _v4(db: sqlite_utils.Database) -> None:
    """Access: tenant API key digests and idempotency records."""
    db.execute(
        "CREATE TABLE tenant_keys (tenant_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "
        "expires_ts REAL)"
    )
    db.execute(
        "CREATE TABLE idempotency (scope TEXT NOT NULL, key TEXT NOT NULL, "
        "fingerprint TEXT NOT NULL, status INTEGER, body BLOB, created_ts REAL NOT NULL, "
        "PRIMARY KEY (scope, key))"
    )
    db.execute("CREATE INDEX idempotency_created ON idempotency(created_ts)")


def _v5(db: sqlite_utils.Database) -> None:
    """Report leases: which process delivers a tenant's events, until when."""
    db.execute(
        "CREATE TABLE report_leases (tenant_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "expires_ts REAL NOT NULL)"
    )


def _v6(db: sqlite_utils.Database) -> None:
    """Message counts per tenant and status, kept by triggers on every path that adds,
    changes or removes a message: ``/status``, ``/metrics`` and the status page read
    them without counting the table."""
    db.execute(
        "CREATE TABLE status_counts (tenant_id TEXT NOT NULL, status TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (tenant_id, status))"
    )
    db.execute(
        "INSERT INTO status_counts (tenant_id, status, n) "
        "SELECT tenant_id, status, COUNT(*) FROM messages GROUP BY tenant_id, status"
    )
    add = (
        "INSERT INTO status_counts (tenant_id, status, n) VALUES (NEW.tenant_id, NEW.status, 1) "
        "ON CONFLICT (tenant_id, status) DO UPDATE SET n = n + 1;"
    )
    remove = (
        "UPDATE status_counts SET n = n - 1 "
        "WHERE tenant_id = OLD.tenant_id AND status = OLD.status;"
    )
    db.execute(f"CREATE TRIGGER messages_counted AFTER INSERT ON messages BEGIN {add} END")
    db.execute(f"CREATE TRIGGER messages_uncounted AFTER DELETE ON messages BEGIN {remove} END")
    db.execute(
        "CREATE TRIGGER messages_recounted AFTER UPDATE OF status, tenant_id ON messages "
        "WHEN OLD.status IS NOT NEW.status OR OLD.tenant_id IS NOT NEW.tenant_id "
        f"BEGIN {remove} {add} END"
    )


def _v7(db: sqlite_utils.Database) -> None:
    """Who started an unfinished idempotency record, so that a restarted worker can
    release the keys its previous process died holding."""
    db.execute("ALTER TABLE idempotency ADD COLUMN owner TEXT")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _v1, _v2, _v3, _v4, _v5, _v6, _v7,
)  # fmt: skip


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the file has not seen yet; return the schema version.

    Each runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the version inside
    it, so processes starting together on one file apply each migration once.
    """
    db = sqlite_utils.Database(conn)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= len(MIGRATIONS):
                conn.execute("COMMIT")
                return int(version)
            MIGRATIONS[version](db)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class SqliteStore:
    """Implements ``MessageStore``, ``ConfigStore`` and ``ReportOutbox`` on a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout_s: float = 5.0,
        max_size_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        #: A cap on the file (``PRAGMA max_page_count``): past it, writes fail as on a full
        #: disk (``StorageError``, 503 over HTTP) and nothing half-written is kept.
        self._max_size_bytes = max_size_bytes
        self._synchronous = synchronous
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- plumbing ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mailproxy-sqlite")
        try:
            self._conn = await self._in_thread(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
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
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                pages = max(1, self._max_size_bytes // page_size)
                conn.execute(f"PRAGMA max_page_count = {pages}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        conn, self._conn = self._conn, None
        try:
            await self._in_thread(conn.close)
        finally:
            assert self._executor is not None
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StorageError(f"store {self.path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"store {self.path} is not open")
        return self._conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        return await self._in_thread(lambda: fn(conn))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._connection()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
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
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    @staticmethod
    def _apply(conn: sqlite3.Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, write(conn)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    error = (
                        StorageError(f"sqlite: {exc}") if isinstance(exc, sqlite3.Error) else exc
                    )
                    results.append((False, error))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[Rejection]:
        def write(conn: sqlite3.Connection) -> list[Rejection]:
            (last_seq,) = conn.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value",
                (len(messages),),
            ).fetchone()
            seq = last_seq - len(messages)
            suspended: dict[str, frozenset[str]] = {}
            rows = []
            given: dict[tuple[str, str], int] = {}  # the sequence number each id was given
            for new in messages:
                seq += 1
                if new.tenant_id not in suspended:
                    suspended[new.tenant_id] = self._suspensions(conn, new.tenant_id)
                status = new.status
                if suspension_of(suspended[new.tenant_id], new.batch_code) is not None:
                    status = Status.SUSPENDED
                given[(new.tenant_id, new.id)] = seq
                rows.append(
                    (
                        new.tenant_id, new.id, new.account_id, new.priority, new.rank, seq,
                        status.value, new.due_ts, new.batch_code, new.message_id, new.date_ts,
                        encode(new.spec), now, now,
                    )
                )  # fmt: skip
            # One statement for the batch (run row by row in C); which rows it stored is
            # read back below: those that now carry the sequence number given here.
            conn.executemany(_UPSERT_SQL, rows)
            stored: dict[tuple[str, str], int] = {}
            refused: dict[tuple[str, str], str] = {}
            for tenant_id in suspended:  # every tenant of the batch
                ids = [message_id for t, message_id in given if t == tenant_id]
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    for pk, message_id, row_seq, status_value, duplicate in conn.execute(
                        "SELECT pk, id, seq, status, possible_duplicate FROM messages "
                        "WHERE tenant_id = ? "
                        f"AND id IN ({', '.join('?' * len(chunk))})",
                        (tenant_id, *chunk),
                    ):
                        key = (tenant_id, message_id)
                        if row_seq == given[key]:
                            stored[key] = pk
                        else:
                            refused[key] = (
                                resubmission_refusal(Status(status_value), bool(duplicate)) or ""
                            )
            pks = [(pk,) for pk in stored.values()]
            # A replaced message gives back any rate slot its previous version held.
            conn.executemany("DELETE FROM rate_slots WHERE message_pk = ?", pks)
            conn.executemany(
                "INSERT INTO history (message_pk, event, ts) VALUES (?, 'queued', ?)",
                [(pk, now) for (pk,) in pks],
            )
            return [
                Rejection(new.id, refused[(new.tenant_id, new.id)])
                for new in messages
                if (new.tenant_id, new.id) in refused
            ]

        return await self._write(write)

    @staticmethod
    def _suspensions(conn: sqlite3.Connection, tenant_id: str) -> frozenset[str]:
        rows = conn.execute(
            "SELECT batch_code FROM suspensions WHERE tenant_id = ?", (tenant_id,)
        ).fetchall()
        return frozenset(r[0] for r in rows)

    async def claim_due(
        self, *, now: float, limit: int, owner: str, lease_s: float,
        tenant_limit: int | None = None,
    ) -> list[Claim]:  # fmt: skip
        token = uuid.uuid4().hex
        expires = now + lease_s

        def write(conn: sqlite3.Connection) -> list[Claim]:
            in_flight = {
                (t, a): n
                for t, a, n in conn.execute(
                    "SELECT tenant_id, account_id, COUNT(*) FROM messages "
                    "WHERE status = 'sending' AND lease_owner = ? GROUP BY tenant_id, account_id",
                    (owner,),
                )
            }
            pauses = {(p.tenant_id, p.account_id): p for p in self._pauses(conn)}
            candidates: list[QueuedMessage] = []
            for tenant_id, account_id, data in conn.execute(
                "SELECT tenant_id, id, data FROM accounts"
            ).fetchall():
                key = (tenant_id, account_id)
                room = account_room(
                    max_connections(data), in_flight.get(key, 0), pauses.get(key), now
                )
                if room <= 0:
                    continue
                rows = conn.execute(
                    f"SELECT {COLUMNS} FROM messages WHERE tenant_id = ? AND account_id = ? "
                    f"AND status IN {QUEUED_SQL} AND due_ts <= ? ORDER BY rank, seq LIMIT ?",
                    (tenant_id, account_id, now, min(room, limit)),
                ).fetchall()
                candidates.extend(map(message_from_row, rows))
            picked = fair_order(
                candidates, limit, tenant_limit=tenant_limit, held=held_by_tenant(in_flight)
            )
            conn.executemany(
                "UPDATE messages SET status = 'sending', lease_owner = ?, lease_token = ?, "
                "lease_expires_ts = ?, attempt_open = 0, updated_ts = ? WHERE pk = ?",
                [(owner, token, expires, now, m.pk) for m in picked],
            )
            return claims_of(
                picked, owner=owner, token=token, expires=expires, now=now, pauses=pauses
            )

        return await self._write(write)

    @staticmethod
    def _pauses(conn: sqlite3.Connection) -> list[AccountPause]:
        rows = conn.execute(
            "SELECT tenant_id, account_id, failures, until_ts, reason FROM account_pauses"
        ).fetchall()
        return [
            AccountPause(tenant_id=t, account_id=a, failures=f, until_ts=u, reason=r)
            for t, a, f, u, r in rows
        ]

    async def reserve_slots(
        self, lease: Lease, windows: Sequence[RateWindow], now: float
    ) -> SlotGrant | None:
        def write(conn: sqlite3.Connection) -> SlotGrant | None:
            if not self._holds(conn, lease):
                return None
            (held,) = conn.execute(
                "SELECT MAX(ts) FROM rate_slots WHERE message_pk = ?", (lease.pk,)
            ).fetchone()
            if held is not None:
                if held > now:
                    return SlotGrant(held, "reserved earlier")
                # The slot it waited for has come: check again (see the port).
                conn.execute("DELETE FROM rate_slots WHERE message_pk = ?", (lease.pk,))
            horizon = now if held is not None else float("inf")
            grant = SlotGrant(now)
            totals: dict[str, int] = {}
            for window in windows:
                if window.key not in totals:
                    row = conn.execute(
                        "SELECT n FROM rate_totals WHERE key = ?", (window.key,)
                    ).fetchone()
                    totals[window.key] = row[0] if row else 0
                if totals[window.key] < window.limit:
                    continue  # fewer reservations on the key than the limit: room
                # slot_free_at, in SQL: the limit-th newest reservation inside the window
                # (none: room), up to now only when a held slot is checked again; scans at
                # most `limit` index entries.
                row = conn.execute(
                    "SELECT ts FROM rate_slots WHERE key = ? AND ts > ? AND ts <= ? "
                    "ORDER BY ts DESC LIMIT 1 OFFSET ?",
                    (window.key, now - window.window_s, horizon, window.limit - 1),
                ).fetchone()
                if row is None:
                    continue
                free = max(now, row[0] + window.window_s)
                if free > grant.at_ts:
                    grant = SlotGrant(free, window.label)
            longest: dict[str, float] = {}
            for window in windows:
                longest[window.key] = max(longest.get(window.key, 0.0), window.window_s)
            for key, span in longest.items():
                conn.execute(
                    "DELETE FROM rate_slots WHERE key = ? AND ts <= ? AND message_pk IS NULL",
                    (key, now - span),
                )
                conn.execute(
                    "INSERT INTO rate_slots (key, ts, message_pk) VALUES (?, ?, ?)",
                    (key, grant.at_ts, lease.pk),
                )
            return grant

        return await self._write(write)

    @staticmethod
    def _holds(conn: sqlite3.Connection, lease: Lease) -> bool:
        row = conn.execute(
            "SELECT 1 FROM messages WHERE pk = ? AND lease_token = ? AND status = 'sending'",
            (lease.pk, lease.token),
        ).fetchone()
        return row is not None

    async def mark_sending(self, lease: Lease, now: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "UPDATE messages SET attempt_open = 1, updated_ts = ? "
                "WHERE pk = ? AND lease_token = ? AND status = 'sending' RETURNING attempts",
                (now, lease.pk, lease.token),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "INSERT INTO history (message_pk, event, ts, detail) VALUES (?, 'sending', ?, ?)",
                (lease.pk, now, f"attempt {row[0] + 1}"),
            )
            return True

        return await self._write(write)

    async def complete(self, lease: Lease, transition: Transition, now: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT tenant_id, account_id, batch_code FROM messages "
                "WHERE pk = ? AND lease_token = ? AND status = 'sending'",
                (lease.pk, lease.token),
            ).fetchone()
            if row is None:
                return False
            tenant_id, account_id, batch_code = row
            self._apply_transition(
                conn, lease.pk, tenant_id, account_id, batch_code, transition, now
            )
            return True

        return await self._write(write)

    @classmethod
    def _apply_transition(
        cls,
        conn: sqlite3.Connection,
        pk: int,
        tenant_id: str,
        account_id: str,
        batch_code: str | None,
        t: Transition,
        now: float,
    ) -> None:
        status = t.status
        if status in QUEUED_STATUSES and suspension_of(
            cls._suspensions(conn, tenant_id), batch_code
        ):
            status = Status.SUSPENDED
        conn.execute(_TRANSITION_SQL, transition_values(t, status, now, pk))
        if t.history is not None:
            conn.execute(
                "INSERT INTO history (message_pk, event, ts, detail) VALUES (?, ?, ?, ?)",
                (pk, t.history.event, t.history.ts, t.history.detail),
            )
        conn.executemany(
            "INSERT INTO reports (event_id, tenant_id, message_pk, payload, created_ts) "
            "VALUES (?, ?, ?, ?, ?)",
            [(e.event_id, tenant_id, pk, encode(e), now) for e in t.events],
        )
        if t.slots == "consume":
            conn.execute(
                "UPDATE rate_slots SET message_pk = NULL, ts = MAX(ts, ?) WHERE message_pk = ?",
                (now, pk),
            )
        elif t.slots == "release":
            conn.execute("DELETE FROM rate_slots WHERE message_pk = ?", (pk,))
        if t.pause is not None:
            p = t.pause
            conn.execute(
                "INSERT OR REPLACE INTO account_pauses "
                "(tenant_id, account_id, failures, until_ts, reason) VALUES (?, ?, ?, ?, ?)",
                (p.tenant_id, p.account_id, p.failures, p.until_ts, p.reason),
            )
        elif t.clear_pause:
            conn.execute(
                "DELETE FROM account_pauses WHERE tenant_id = ? AND account_id = ?",
                (tenant_id, account_id),
            )

    @staticmethod
    def _requeue(
        conn: sqlite3.Connection, pk: int, attempts: int, due_ts: float, now: float
    ) -> None:
        conn.execute(
            "UPDATE messages SET status = ?, lease_owner = NULL, lease_token = NULL, "
            "lease_expires_ts = NULL, attempt_open = 0, updated_ts = ? WHERE pk = ?",
            (requeue_status(attempts, due_ts, now).value, now, pk),
        )

    async def release(self, lease: Lease, now: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT attempts, due_ts FROM messages WHERE pk = ? AND lease_token = ? "
                "AND status = 'sending' AND attempt_open = 0",
                (lease.pk, lease.token),
            ).fetchone()
            if row is None:
                return False
            self._requeue(conn, lease.pk, row[0], row[1], now)
            return True

        return await self._write(write)

    async def recover(
        self, *, owner: str, now: float, lease_s: float, own: bool = True
    ) -> list[Claim]:
        token = uuid.uuid4().hex
        expires = now + lease_s

        def write(conn: sqlite3.Connection) -> list[Claim]:
            rows = conn.execute(
                "SELECT pk, attempts, due_ts, attempt_open FROM messages WHERE status = 'sending' "
                "AND ((? AND lease_owner = ?) OR lease_expires_ts <= ?)",
                (own, owner, now),
            ).fetchall()
            claims = []
            for pk, attempts, due_ts, attempt_open in rows:
                if not attempt_open:
                    self._requeue(conn, pk, attempts, due_ts, now)
                    continue
                row = conn.execute(
                    "UPDATE messages SET lease_owner = ?, lease_token = ?, lease_expires_ts = ? "
                    f"WHERE pk = ? RETURNING {COLUMNS}",
                    (owner, token, expires, pk),
                ).fetchone()
                claims.append(Claim(message_from_row(row), Lease(pk, owner, token, expires)))
            return claims

        return await self._write(write)

    # --- reading and deleting ---------------------------------------------------------

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage | None:
        def read(conn: sqlite3.Connection) -> QueuedMessage | None:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE tenant_id = ? AND id = ?",
                (tenant_id, message_id),
            ).fetchone()
            return message_from_row(row) if row else None

        return await self._read(read)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        statuses: Collection[Status] = (),
        batch_code: str | None = None,
        active_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> MessagePage:
        sql = f"SELECT {COLUMNS} FROM messages WHERE tenant_id = ? AND seq > ?"
        args: list[Any] = [tenant_id, int(cursor) if cursor else 0]
        if statuses:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            args.extend(s.value for s in statuses)
        if batch_code is not None:
            sql += " AND batch_code = ?"
            args.append(batch_code)
        if active_only:
            sql += f" AND status NOT IN {FINAL_SQL}"
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit + 1)

        def read(conn: sqlite3.Connection) -> MessagePage:
            return page_of(conn.execute(sql, args).fetchall(), limit)

        return await self._read(read)

    async def history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        def read(conn: sqlite3.Connection) -> list[HistoryEntry]:
            rows = conn.execute(
                "SELECT h.event, h.ts, h.detail FROM history h JOIN messages m "
                "ON m.pk = h.message_pk WHERE m.tenant_id = ? AND m.id = ? ORDER BY h.pk",
                (tenant_id, message_id),
            ).fetchall()
            return [HistoryEntry(*row) for row in rows]

        return await self._read(read)

    @staticmethod
    def _remove(conn: sqlite3.Connection, pk: int) -> None:
        conn.execute("DELETE FROM history WHERE message_pk = ?", (pk,))
        conn.execute("DELETE FROM reports WHERE message_pk = ? AND acked_ts IS NULL", (pk,))
        conn.execute("DELETE FROM rate_slots WHERE message_pk = ?", (pk,))
        conn.execute("DELETE FROM messages WHERE pk = ?", (pk,))

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        def write(conn: sqlite3.Connection) -> DeleteResult:
            removed, not_found, in_flight = 0, [], []
            for message_id in dict.fromkeys(ids):
                row = conn.execute(
                    "SELECT pk, status FROM messages WHERE tenant_id = ? AND id = ?",
                    (tenant_id, message_id),
                ).fetchone()
                if row is None:
                    not_found.append(message_id)
                elif row[1] == Status.SENDING.value:
                    in_flight.append(message_id)
                else:
                    self._remove(conn, row[0])
                    removed += 1
            return DeleteResult(removed, not_found, in_flight)

        return await self._write(write)

    async def next_due_ts(self, after: float) -> float | None:
        def read(conn: sqlite3.Connection) -> float | None:
            (due,) = conn.execute(
                f"SELECT MIN(due_ts) FROM messages WHERE status IN {QUEUED_SQL} AND due_ts > ?",
                (after,),
            ).fetchone()
            (pause_end,) = conn.execute(
                "SELECT MIN(until_ts) FROM account_pauses WHERE until_ts > ?", (after,)
            ).fetchone()
            instants = [ts for ts in (due, pause_end) if ts is not None]
            return min(instants) if instants else None

        return await self._read(read)

    async def count_ahead(self, message: QueuedMessage, now: float) -> int:
        def read(conn: sqlite3.Connection) -> int:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE tenant_id = ? AND account_id = ? "
                f"AND status IN {QUEUED_SQL} AND due_ts <= ? "
                "AND (rank < ? OR (rank = ? AND seq < ?))",
                (
                    message.tenant_id,
                    message.account_id,
                    now,
                    message.rank,
                    message.rank,
                    message.seq,
                ),
            ).fetchone()
            return int(count)

        return await self._read(read)

    async def account_pause(self, tenant_id: str, account_id: str) -> AccountPause | None:
        def read(conn: sqlite3.Connection) -> AccountPause | None:
            return next(
                (
                    p
                    for p in self._pauses(conn)
                    if p.tenant_id == tenant_id and p.account_id == account_id
                ),
                None,
            )

        return await self._read(read)

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        return sorted(await self._read(lambda conn: self._suspensions(conn, tenant_id)))

    @staticmethod
    def _pending_in_scope(conn: sqlite3.Connection, tenant_id: str, batch_code: str | None) -> int:
        sql = f"SELECT COUNT(*) FROM messages WHERE tenant_id = ? AND status NOT IN {FINAL_SQL}"
        args: list[Any] = [tenant_id]
        if batch_code is not None:
            sql += " AND batch_code = ?"
            args.append(batch_code)
        return int(conn.execute(sql, args).fetchone()[0])

    async def suspend(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        def write(conn: sqlite3.Connection) -> SuspendState:
            current = self._suspensions(conn, tenant_id)
            if "*" not in current:
                conn.execute(
                    "INSERT OR IGNORE INTO suspensions (tenant_id, batch_code) VALUES (?, ?)",
                    (tenant_id, batch_code or "*"),
                )
                sql = (
                    "UPDATE messages SET status = 'suspended', updated_ts = ? "
                    f"WHERE tenant_id = ? AND status IN {QUEUED_SQL}"
                )
                args: list[Any] = [now, tenant_id]
                if batch_code is not None:
                    sql += " AND batch_code = ?"
                    args.append(batch_code)
                conn.execute(sql, args)
            return SuspendState(
                tenant_id,
                sorted(self._suspensions(conn, tenant_id)),
                self._pending_in_scope(conn, tenant_id, batch_code),
            )

        return await self._write(write)

    async def activate(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        def write(conn: sqlite3.Connection) -> SuspendState:
            current = self._suspensions(conn, tenant_id)
            if batch_code is not None and "*" in current:
                raise Conflict("the whole tenant is suspended: activate the tenant first")
            conn.execute(
                "DELETE FROM suspensions WHERE tenant_id = ? AND batch_code = ?",
                (tenant_id, batch_code or "*"),
            )
            remaining = self._suspensions(conn, tenant_id)
            after_seq = -1
            while rows := conn.execute(  # in chunks: a tenant may hold millions
                "SELECT pk, attempts, due_ts, batch_code, seq FROM messages WHERE tenant_id = ? "
                "AND status = 'suspended' AND seq > ? ORDER BY seq LIMIT ?",
                (tenant_id, after_seq, RESUME_CHUNK),
            ).fetchall():
                after_seq = rows[-1][4]
                conn.executemany(
                    "UPDATE messages SET status = ?, updated_ts = ? WHERE pk = ?",
                    [
                        (requeue_status(attempts, due_ts, now).value, now, pk)
                        for pk, attempts, due_ts, code, _ in rows
                        if suspension_of(remaining, code) is None
                    ],
                )
            return SuspendState(
                tenant_id, sorted(remaining), self._pending_in_scope(conn, tenant_id, batch_code)
            )

        return await self._write(write)

    async def purge_final(self, tenant_id: str | None, final_before_ts: float) -> int:
        def write(conn: sqlite3.Connection) -> int:
            sql = (
                f"SELECT pk FROM messages WHERE status IN {FINAL_SQL} AND final_ts < ? "
                "AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.message_pk = messages.pk "
                "AND r.acked_ts IS NULL)"
            )
            args: list[Any] = [final_before_ts]
            if tenant_id is not None:
                sql += " AND tenant_id = ?"
                args.append(tenant_id)
            pks = [row[0] for row in conn.execute(sql, args).fetchall()]
            for pk in pks:
                self._remove(conn, pk)
                conn.execute("DELETE FROM reports WHERE message_pk = ?", (pk,))
            return len(pks)

        return await self._write(write)

    async def count_by_status(self, tenant_id: str | None = None) -> dict[Status, int]:
        def read(conn: sqlite3.Connection) -> dict[Status, int]:
            if tenant_id is None:
                rows = conn.execute(
                    "SELECT status, SUM(n) FROM status_counts WHERE n > 0 GROUP BY status"
                )
            else:
                rows = conn.execute(
                    "SELECT status, n FROM status_counts WHERE tenant_id = ? AND n > 0",
                    (tenant_id,),
                )
            return {Status(status): int(count) for status, count in rows}

        return await self._read(read)

    async def oldest_not_final(self) -> dict[str, float]:
        sql = (
            "SELECT tenant_id, MIN(created_ts) FROM messages "
            f"WHERE status NOT IN {FINAL_SQL} GROUP BY tenant_id"
        )

        def read(conn: sqlite3.Connection) -> dict[str, float]:
            return {tenant_id: float(oldest) for tenant_id, oldest in conn.execute(sql)}

        return await self._read(read)

    async def finished_per_minute(self, since_ts: float) -> list[MinuteCount]:
        # The status condition repeats the partial index's, so messages_final serves
        # the range on final_ts.
        sql = (
            "SELECT CAST(final_ts / 60 AS INTEGER) * 60 AS minute, tenant_id, status, "
            f"COUNT(*) FROM messages WHERE status IN {FINAL_SQL} AND final_ts >= ? "
            "GROUP BY minute, tenant_id, status ORDER BY minute, tenant_id, status"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (since_ts,)).fetchall())
        return [
            MinuteCount(minute, tenant, Status(status), n) for minute, tenant, status, n in rows
        ]

    # --- configuration ----------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO tenants (id, data) VALUES (?, ?)",
                (tenant.id, encode(tenant)),
            )
        )

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        def read(conn: sqlite3.Connection) -> Tenant | None:
            row = conn.execute("SELECT data FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
            return tenant_decoder.decode(row[0]) if row else None

        return await self._read(read)

    async def list_tenants(self) -> list[Tenant]:
        def read(conn: sqlite3.Connection) -> list[Tenant]:
            rows = conn.execute("SELECT data FROM tenants ORDER BY id").fetchall()
            return [tenant_decoder.decode(r[0]) for r in rows]

        return await self._read(read)

    async def delete_tenant(self, tenant_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,)).rowcount == 0:
                return False
            conn.execute("DELETE FROM accounts WHERE tenant_id = ?", (tenant_id,))
            conn.execute(
                "DELETE FROM history WHERE message_pk IN "
                "(SELECT pk FROM messages WHERE tenant_id = ?)",
                (tenant_id,),
            )
            conn.execute("DELETE FROM reports WHERE tenant_id = ?", (tenant_id,))
            conn.execute(
                "DELETE FROM rate_slots WHERE message_pk IN "
                "(SELECT pk FROM messages WHERE tenant_id = ?)",
                (tenant_id,),
            )
            conn.execute("DELETE FROM messages WHERE tenant_id = ?", (tenant_id,))
            conn.execute("DELETE FROM account_pauses WHERE tenant_id = ?", (tenant_id,))
            conn.execute("DELETE FROM suspensions WHERE tenant_id = ?", (tenant_id,))
            conn.execute("DELETE FROM tenant_keys WHERE tenant_id = ?", (tenant_id,))
            conn.execute("DELETE FROM report_leases WHERE tenant_id = ?", (tenant_id,))
            conn.execute(
                "DELETE FROM idempotency WHERE scope = ?", (idempotency_scope(Caller(tenant_id)),)
            )
            return True

        return await self._write(write)

    async def put_account(self, account: Account) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if account.is_default:
                rows = conn.execute(
                    "SELECT id, data FROM accounts WHERE tenant_id = ? AND id != ?",
                    (account.tenant_id, account.id),
                ).fetchall()
                for other_id, data in rows:
                    other = account_decoder.decode(data)
                    if other.is_default:
                        conn.execute(
                            "UPDATE accounts SET data = ? WHERE tenant_id = ? AND id = ?",
                            (
                                encode(msgspec.structs.replace(other, is_default=False)),
                                account.tenant_id,
                                other_id,
                            ),
                        )
            conn.execute(
                "INSERT OR REPLACE INTO accounts (tenant_id, id, data) VALUES (?, ?, ?)",
                (account.tenant_id, account.id, encode(account)),
            )

        await self._write(write)

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        def read(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT data FROM accounts WHERE tenant_id = ? AND id = ?",
                (tenant_id, account_id),
            ).fetchone()
            return account_decoder.decode(row[0]) if row else None

        return await self._read(read)

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        def read(conn: sqlite3.Connection) -> list[Account]:
            rows = conn.execute(
                "SELECT data FROM accounts WHERE tenant_id = ? ORDER BY id", (tenant_id,)
            ).fetchall()
            return [account_decoder.decode(r[0]) for r in rows]

        return await self._read(read)

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        abandon: Callable[[QueuedMessage], Transition] | None = None,
        now: float = 0.0,
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE tenant_id = ? AND id = ?", (tenant_id, account_id)
            ).fetchone():
                return False
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE tenant_id = ? AND account_id = ? "
                f"AND status IN {WAITING_SQL}",
                (tenant_id, account_id),
            ).fetchall()
            if rows and abandon is None:
                raise Conflict(
                    f"account {account_id} still has {len(rows)} queued messages "
                    "(delete with force to fail them)"
                )
            for message in map(message_from_row, rows):
                assert abandon is not None
                self._apply_transition(
                    conn, message.pk, tenant_id, account_id, None, abandon(message), now
                )
            conn.execute(
                "DELETE FROM accounts WHERE tenant_id = ? AND id = ?", (tenant_id, account_id)
            )
            conn.execute(
                "DELETE FROM account_pauses WHERE tenant_id = ? AND account_id = ?",
                (tenant_id, account_id),
            )
            return True

        return await self._write(write)

    # --- access -----------------------------------------------------------------------

    async def put_tenant_key(self, key: TenantKey) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO tenant_keys (tenant_id, digest, expires_ts) "
                "VALUES (?, ?, ?)",
                (key.tenant_id, key.digest, key.expires_ts),
            )

        await self._write(write)

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        def read(conn: sqlite3.Connection) -> TenantKey | None:
            row = conn.execute(
                "SELECT tenant_id, digest, expires_ts FROM tenant_keys WHERE digest = ?",
                (digest,),
            ).fetchone()
            return TenantKey(*row) if row else None

        return await self._read(read)

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM tenant_keys WHERE tenant_id = ?", (tenant_id,))
            return cursor.rowcount > 0

        return await self._write(write)

    async def begin_idempotent(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        now: float,
        *,
        ttl_s: float,
        stale_s: float,
        owner: str = "",
    ) -> IdempotentStart:
        def write(conn: sqlite3.Connection) -> IdempotentStart:
            conn.execute("DELETE FROM idempotency WHERE created_ts <= ?", (now - ttl_s,))
            row = conn.execute(
                "SELECT fingerprint, status, body, created_ts FROM idempotency "
                "WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None:
                start = idempotent_state(row[0], row[1], row[2], row[3], fingerprint, now, stale_s)
                if start is not None:
                    return start
            conn.execute(
                "INSERT OR REPLACE INTO idempotency (scope, key, fingerprint, created_ts, owner) "
                "VALUES (?, ?, ?, ?, ?)",
                (scope, key, fingerprint, now, owner),
            )
            return IdempotentStart("new")

        return await self._write(write)

    async def release_idempotent(self, owner: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM idempotency WHERE owner = ? AND status IS NULL", (owner,)
            )
            return cursor.rowcount

        return await self._write(write)

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency SET status = ?, body = ? WHERE scope = ? AND key = ?",
                (status, body, scope, key),
            )

        await self._write(write)

    async def forget_idempotent(self, scope: str, key: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency WHERE scope = ? AND key = ? AND status IS NULL",
                (scope, key),
            )

        await self._write(write)

    # --- report outbox ----------------------------------------------------------------

    async def pending_reports(self, tenant_id: str, limit: int) -> list[StoredReport]:
        def read(conn: sqlite3.Connection) -> list[StoredReport]:
            rows = conn.execute(
                "SELECT seq, payload FROM reports WHERE tenant_id = ? AND acked_ts IS NULL "
                "ORDER BY seq LIMIT ?",
                (tenant_id, limit),
            ).fetchall()
            return [StoredReport(seq, event_decoder.decode(payload)) for seq, payload in rows]

        return await self._read(read)

    async def tenants_with_pending_reports(self) -> set[str]:
        def read(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT DISTINCT tenant_id FROM reports WHERE acked_ts IS NULL"
            ).fetchall()
            return {tenant_id for (tenant_id,) in rows}

        return await self._read(read)

    async def acknowledge_reports(
        self, tenant_id: str, event_ids: Sequence[str], now: float
    ) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return conn.executemany(
                "UPDATE reports SET acked_ts = ? WHERE tenant_id = ? AND event_id = ? "
                "AND acked_ts IS NULL",
                [(now, tenant_id, event_id) for event_id in event_ids],
            ).rowcount

        return await self._write(write)

    async def report_backlog(self, tenant_id: str) -> ReportBacklog:
        def read(conn: sqlite3.Connection) -> ReportBacklog:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM reports WHERE tenant_id = ? AND acked_ts IS NULL",
                (tenant_id,),
            ).fetchone()
            oldest = conn.execute(
                "SELECT created_ts FROM reports WHERE tenant_id = ? AND acked_ts IS NULL "
                "ORDER BY seq LIMIT 1",
                (tenant_id,),
            ).fetchone()
            return ReportBacklog(int(count), oldest[0] if oldest else None)

        return await self._read(read)

    async def report_backlogs(self) -> dict[str, ReportBacklog]:
        def read(conn: sqlite3.Connection) -> dict[str, ReportBacklog]:
            rows = conn.execute(
                "SELECT tenant_id, COUNT(*), MIN(created_ts) FROM reports "
                "WHERE acked_ts IS NULL GROUP BY tenant_id"
            )
            return {tenant_id: ReportBacklog(int(n), oldest) for tenant_id, n, oldest in rows}

        return await self._read(read)

    async def lease_reports(self, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "INSERT INTO report_leases (tenant_id, owner, expires_ts) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET owner = excluded.owner, "
                "expires_ts = excluded.expires_ts WHERE report_leases.owner = excluded.owner "
                "OR report_leases.expires_ts <= ? RETURNING 1",
                (tenant_id, owner, now + lease_s, now),
            ).fetchone()
            return row is not None

        return await self._write(write)

    async def release_reports(self, tenant_id: str, owner: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "DELETE FROM report_leases WHERE tenant_id = ? AND owner = ?", (tenant_id, owner)
            )
        )


__all__ = ["MIGRATIONS", "SqliteStore", "migrate"]
