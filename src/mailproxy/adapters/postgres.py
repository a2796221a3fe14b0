"""PostgreSQL store: every storage port on one database that several mailproxy processes
(on any number of hosts) share.

- psycopg 3 (async) with a connection pool; every write is one transaction, so a state
  change, its history and its report events commit together.
- Claiming locks the candidate rows of all claimable accounts in one statement
  (``FOR UPDATE SKIP LOCKED``): two processes never claim the same message, and neither
  waits for the other. The claim is a lease (owner, token, expiry); every later write is
  fenced by the token, and any live process takes over expired leases.
- Rate-limit reservations run under a transaction-scoped advisory lock per window key
  (taken in key order, so two reservations cannot deadlock): the account and tenant
  limits hold across all processes.
- Wake-ups: the transactions that make work (messages accepted or due again, report
  events written) send ``NOTIFY`` on commit; :meth:`watch` listens on a dedicated
  connection and calls the service back, so another process reacts without polling.
- Migrations are numbered (table ``schema_version``) and run at :meth:`open` under an
  advisory lock, so processes starting together apply each migration once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.abc import Buffer
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import AsyncConnectionPool

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
    RateWindow,
    SlotGrant,
    account_room,
    fair_order,
    held_by_tenant,
    suspension_of,
)

T = TypeVar("T")
Cursor = AsyncCursor[tuple[Any, ...]]

log = logging.getLogger("mailproxy.postgres")

#: The advisory lock key that serialises migrations (any constant the schema owns).
_MIGRATION_LOCK = 0x6D61696C70726F78  # "mailprox"

_V1 = f"""
CREATE TABLE tenants (id text PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE accounts (
    tenant_id text NOT NULL, id text NOT NULL, data bytea NOT NULL,
    PRIMARY KEY (tenant_id, id));
CREATE SEQUENCE message_seq;
CREATE TABLE messages (
    pk bigserial PRIMARY KEY,
    tenant_id text NOT NULL, id text NOT NULL, account_id text NOT NULL,
    priority integer NOT NULL, seq bigint NOT NULL, status text NOT NULL,
    due_ts double precision NOT NULL, batch_code text, message_id text NOT NULL,
    date_ts double precision NOT NULL, spec bytea NOT NULL,
    attempts integer NOT NULL DEFAULT 0, possible_duplicate boolean NOT NULL DEFAULT false,
    created_ts double precision NOT NULL, updated_ts double precision NOT NULL,
    sent_ts double precision, error_ts double precision, error text, smtp_code integer,
    lease_owner text, lease_token text, lease_expires_ts double precision,
    attempt_open boolean NOT NULL DEFAULT false, rank double precision NOT NULL,
    wait_reason text, wait_detail text, final_ts double precision,
    UNIQUE (tenant_id, id));
CREATE INDEX messages_tenant_seq ON messages (tenant_id, seq);
CREATE INDEX messages_account_queue ON messages (tenant_id, account_id, rank, seq)
    WHERE status IN {QUEUED_SQL};
CREATE INDEX messages_due ON messages (due_ts) WHERE status IN {QUEUED_SQL};
CREATE INDEX messages_leased ON messages (lease_expires_ts) WHERE status = 'sending';
CREATE INDEX messages_final ON messages (final_ts) WHERE status IN {FINAL_SQL};
CREATE TABLE history (
    pk bigserial PRIMARY KEY, message_pk bigint NOT NULL, event text NOT NULL,
    ts double precision NOT NULL, detail text);
CREATE INDEX history_message ON history (message_pk);
CREATE TABLE reports (
    seq bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE, tenant_id text NOT NULL,
    message_pk bigint NOT NULL, payload bytea NOT NULL, created_ts double precision NOT NULL,
    acked_ts double precision);
CREATE INDEX reports_message ON reports (message_pk);
CREATE INDEX reports_pending ON reports (tenant_id, seq) WHERE acked_ts IS NULL;
CREATE TABLE report_leases (
    tenant_id text PRIMARY KEY, owner text NOT NULL, expires_ts double precision NOT NULL);
CREATE TABLE rate_slots (key text NOT NULL, ts double precision NOT NULL, message_pk bigint);
CREATE INDEX rate_slots_key ON rate_slots (key, ts);
CREATE INDEX rate_slots_message ON rate_slots (message_pk);
CREATE TABLE account_pauses (
    tenant_id text NOT NULL, account_id text NOT NULL, failures integer NOT NULL,
    until_ts double precision NOT NULL, reason text NOT NULL,
    PRIMARY KEY (tenant_id, account_id));
CREATE TABLE suspensions (
    tenant_id text NOT NULL, batch_code text NOT NULL, PRIMARY KEY (tenant_id, batch_code));
CREATE TABLE tenant_keys (
    tenant_id text PRIMARY KEY, digest text NOT NULL UNIQUE, expires_ts double precision);
CREATE TABLE idempotency (
    scope text NOT NULL, key text NOT NULL, fingerprint text NOT NULL, status integer,
    body bytea, created_ts double precision NOT NULL, PRIMARY KEY (scope, key));
CREATE INDEX idempotency_created ON idempotency (created_ts);
"""

#: Who started an unfinished idempotency record, so that a restarted worker can release
#: the keys its previous process died holding.
_V2 = "ALTER TABLE idempotency ADD COLUMN owner text;"
MIGRATIONS: tuple[str, ...] = (_V1, _V2)

_MESSAGE_UPSERT = (
    "INSERT INTO messages (tenant_id, id, account_id, priority, rank, seq, status, due_ts, "
    "batch_code, message_id, date_ts, spec, created_ts, updated_ts) "
    "SELECT t.tenant_id, t.id, t.account_id, t.priority, t.rank, nextval('message_seq'), "
    "t.status, t.due_ts, t.batch_code, t.message_id, t.date_ts, t.spec, %(now)s, %(now)s "
    "FROM unnest(%(tenant_id)s::text[], %(id)s::text[], %(account_id)s::text[], "
    "%(priority)s::int[], %(rank)s::float8[], %(status)s::text[], %(due_ts)s::float8[], "
    "%(batch_code)s::text[], %(message_id)s::text[], %(date_ts)s::float8[], "
    "%(spec)s::bytea[]) WITH ORDINALITY AS t(tenant_id, id, account_id, priority, rank, "
    "status, due_ts, batch_code, message_id, date_ts, spec, n) ORDER BY t.n "
    "ON CONFLICT (tenant_id, id) DO UPDATE SET account_id = excluded.account_id, "
    "priority = excluded.priority, rank = excluded.rank, seq = excluded.seq, "
    "status = excluded.status, due_ts = excluded.due_ts, batch_code = excluded.batch_code, "
    "message_id = excluded.message_id, date_ts = excluded.date_ts, spec = excluded.spec, "
    "created_ts = excluded.created_ts, updated_ts = excluded.updated_ts, attempts = 0, "
    "possible_duplicate = false, sent_ts = NULL, error_ts = NULL, final_ts = NULL, "
    "error = NULL, smtp_code = NULL, lease_owner = NULL, lease_token = NULL, "
    "lease_expires_ts = NULL, attempt_open = false, wait_reason = NULL, wait_detail = NULL "
    "WHERE messages.status NOT IN ('sent', 'sending', 'unknown') "
    "AND NOT messages.possible_duplicate RETURNING pk, id"
)


class _NulSafeText(StrDumperUnknown):
    """PostgreSQL text cannot hold NUL: one in a value (a lookup key from a request, a
    server's reply kept as an error) becomes U+FFFD instead of failing the statement."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


async def _configure(conn: AsyncConnection[Any]) -> None:
    conn.adapters.register_dumper(str, _NulSafeText)


_TRANSITION_SQL = TRANSITION_UPDATE.format(*["%s"] * 14).encode()


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


async def migrate(conn: AsyncConnection[Any]) -> int:
    """Apply the migrations the database has not seen yet, in one transaction under an
    advisory lock; return the schema version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
        if row is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0
        else:
            version = int(row[0])
        for script in MIGRATIONS[version:]:
            await conn.execute(script.encode())
        if version < len(MIGRATIONS):
            await conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
        return len(MIGRATIONS)


class PostgresStore:
    """Implements ``MessageStore``, ``ConfigStore``, ``ReportOutbox`` and ``AccessStore``
    on a PostgreSQL database (``schema``: the schema its tables live in; default: the
    connection's search path)."""

    def __init__(
        self, dsn: str, *, schema: str | None = None, pool_size: int = 8, timeout_s: float = 10.0
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._queue_channel, self._reports_channel = _channels(schema)
        self._listener: asyncio.Task[None] | None = None

    # --- plumbing ---------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema is not None:
            kwargs["options"] = f"-c search_path={self.schema}"
        return kwargs

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            if self.schema is not None:
                async with (
                    await AsyncConnection.connect(self.dsn, autocommit=True) as conn,
                    conn.transaction(),
                ):
                    # Two "IF NOT EXISTS" at once can still collide: one at a time.
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
            pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
                self.dsn, min_size=1, max_size=self._pool_size, kwargs=self._connect_kwargs(),
                timeout=self._timeout_s, open=False, name="mailproxy", configure=_configure,
            )  # fmt: skip
            await pool.open(wait=True, timeout=self._timeout_s)
        except (psycopg.Error, OSError) as exc:
            raise StorageError(f"postgres: {exc}") from exc
        try:
            async with pool.connection() as conn:
                await migrate(conn)
        except psycopg.Error as exc:
            await pool.close()
            raise StorageError(f"postgres: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _the_pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self._pool is None:
            raise StorageError("postgres store is not open")
        return self._pool

    async def _read(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        try:
            async with self._the_pool().connection() as conn, conn.cursor() as cur:
                return await fn(cur)
        except psycopg.Error as exc:
            raise StorageError(f"postgres: {exc}") from exc

    async def _write(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        try:
            async with (
                self._the_pool().connection() as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                return await fn(cur)
        except psycopg.Error as exc:
            raise StorageError(f"postgres: {exc}") from exc

    async def _one(self, cur: Cursor, query: str, args: Sequence[Any] = ()) -> Any:
        await cur.execute(query.encode(), args)
        return await cur.fetchone()

    async def _all(self, cur: Cursor, query: str, args: Sequence[Any] = ()) -> list[Any]:
        await cur.execute(query.encode(), args)
        return await cur.fetchall()

    async def _notify_queue(self, cur: Cursor) -> None:
        await cur.execute("SELECT pg_notify(%s, '')", (self._queue_channel,))

    # --- wake-ups across processes ----------------------------------------------------

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
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.dsn, **self._connect_kwargs()
                ) as conn:
                    for channel in (self._queue_channel, self._reports_channel):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if not ready.done():
                        ready.set_result(None)
                    on_queue()  # whatever happened while not listening
                    on_reports()
                    async for note in conn.notifies():
                        log.debug("postgres.notified", extra={"channel": note.channel})
                        (on_queue if note.channel == self._queue_channel else on_reports)()
            except (psycopg.Error, OSError) as exc:
                log.warning("postgres.listen_failed", extra={"error": str(exc)})
                if not ready.done():
                    ready.set_result(None)
                await asyncio.sleep(1.0)

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[Rejection]:
        async def write(cur: Cursor) -> list[Rejection]:
            suspended: dict[str, frozenset[str]] = {}
            for tenant_id in dict.fromkeys(m.tenant_id for m in messages):
                suspended[tenant_id] = await self._suspensions(cur, tenant_id)
            rejected: list[Rejection] = []
            # One statement per run of distinct ids (an id twice in one statement is an
            # error in PostgreSQL; later wins, as in the other stores).
            for run in _distinct_runs(messages):
                status = [
                    Status.SUSPENDED.value
                    if suspension_of(suspended[m.tenant_id], m.batch_code) is not None
                    else m.status.value
                    for m in run
                ]
                args = {
                    "now": now,
                    "tenant_id": [m.tenant_id for m in run],
                    "id": [m.id for m in run],
                    "account_id": [m.account_id for m in run],
                    "priority": [int(m.priority) for m in run],
                    "rank": [m.rank for m in run],
                    "status": status,
                    "due_ts": [m.due_ts for m in run],
                    "batch_code": [m.batch_code for m in run],
                    "message_id": [m.message_id for m in run],
                    "date_ts": [m.date_ts for m in run],
                    "spec": [encode(m.spec) for m in run],
                }
                await cur.execute(_MESSAGE_UPSERT.encode(), args)
                stored = {row[1]: row[0] for row in await cur.fetchall()}
                refused = [m for m in run if m.id not in stored]
                for new in refused:
                    existing, duplicate = await self._one(
                        cur,
                        "SELECT status, possible_duplicate FROM messages "
                        "WHERE tenant_id = %s AND id = %s",
                        (new.tenant_id, new.id),
                    )
                    refusal = resubmission_refusal(Status(existing), duplicate)
                    rejected.append(Rejection(new.id, refusal or ""))
                pks = list(stored.values())
                if pks:
                    # A replaced message gives back any rate slot its previous version held.
                    await cur.execute("DELETE FROM rate_slots WHERE message_pk = ANY(%s)", (pks,))
                    await cur.execute(
                        "INSERT INTO history (message_pk, event, ts) "
                        "SELECT pk, 'queued', %s FROM unnest(%s::bigint[]) AS pk",
                        (now, pks),
                    )
            if len(rejected) < len(messages):
                await self._notify_queue(cur)
            return rejected

        return await self._write(write)

    async def _suspensions(self, cur: Cursor, tenant_id: str) -> frozenset[str]:
        rows = await self._all(
            cur, "SELECT batch_code FROM suspensions WHERE tenant_id = %s", (tenant_id,)
        )
        return frozenset(r[0] for r in rows)

    async def _pauses(self, cur: Cursor) -> list[AccountPause]:
        rows = await self._all(
            cur, "SELECT tenant_id, account_id, failures, until_ts, reason FROM account_pauses"
        )
        return [
            AccountPause(tenant_id=t, account_id=a, failures=f, until_ts=u, reason=r)
            for t, a, f, u, r in rows
        ]

    async def claim_due(
        self, *, now: float, limit: int, owner: str, lease_s: float,
        tenant_limit: int | None = None,
    ) -> list[Claim]:  # fmt: skip
        token = uuid.uuid4().hex
        expires = now + lease_s

        async def write(cur: Cursor) -> list[Claim]:
            in_flight = {
                (t, a): n
                for t, a, n in await self._all(
                    cur,
                    "SELECT tenant_id, account_id, COUNT(*) FROM messages WHERE status = "
                    "'sending' AND lease_owner = %s GROUP BY tenant_id, account_id",
                    (owner,),
                )
            }
            pauses = {(p.tenant_id, p.account_id): p for p in await self._pauses(cur)}
            tenants, accounts, rooms = [], [], []
            for tenant_id, account_id, data in await self._all(
                cur, "SELECT tenant_id, id, data FROM accounts"
            ):
                key = (tenant_id, account_id)
                room = account_room(
                    max_connections(data), in_flight.get(key, 0), pauses.get(key), now
                )
                if room > 0:
                    tenants.append(tenant_id)
                    accounts.append(account_id)
                    rooms.append(min(room, limit))
            if not rooms:
                return []
            # Every claimable account's head of queue, locked in one statement; rows
            # another process holds are skipped, not waited for.
            columns = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
            rows = await self._all(
                cur,
                f"SELECT {columns} FROM unnest(%s::text[], %s::text[], %s::int[]) "
                "AS a(tenant_id, account_id, room) CROSS JOIN LATERAL ("
                f"SELECT * FROM messages WHERE tenant_id = a.tenant_id "
                f"AND account_id = a.account_id AND status IN {QUEUED_SQL} AND due_ts <= %s "
                "ORDER BY rank, seq LIMIT a.room FOR UPDATE SKIP LOCKED) m",
                (tenants, accounts, rooms, now),
            )
            picked = fair_order(
                [message_from_row(r) for r in rows], limit,
                tenant_limit=tenant_limit, held=held_by_tenant(in_flight),
            )  # fmt: skip
            if not picked:
                return []
            await cur.execute(
                "UPDATE messages SET status = 'sending', lease_owner = %s, lease_token = %s, "
                "lease_expires_ts = %s, attempt_open = false, updated_ts = %s "
                "WHERE pk = ANY(%s)",
                (owner, token, expires, now, [m.pk for m in picked]),
            )
            return claims_of(
                picked, owner=owner, token=token, expires=expires, now=now, pauses=pauses
            )

        return await self._write(write)

    async def _holds(self, cur: Cursor, lease: Lease) -> bool:
        row = await self._one(
            cur,
            "SELECT 1 FROM messages WHERE pk = %s AND lease_token = %s AND status = 'sending' "
            "FOR UPDATE",
            (lease.pk, lease.token),
        )
        return row is not None

    async def reserve_slots(
        self, lease: Lease, windows: Sequence[RateWindow], now: float
    ) -> SlotGrant | None:
        async def write(cur: Cursor) -> SlotGrant | None:
            if not await self._holds(cur, lease):
                return None
            (held,) = await self._one(
                cur, "SELECT MAX(ts) FROM rate_slots WHERE message_pk = %s", (lease.pk,)
            )
            if held is not None:
                if held > now:
                    return SlotGrant(held, "reserved earlier")
                # The slot it waited for has come: check again (see the port).
                await cur.execute("DELETE FROM rate_slots WHERE message_pk = %s", (lease.pk,))
            horizon = now if held is not None else float("inf")
            longest: dict[str, float] = {}
            for window in windows:
                longest[window.key] = max(longest.get(window.key, 0.0), window.window_s)
            # Every process reserving on these keys waits here, in key order.
            for key in sorted(longest):
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(key),))
            grant = SlotGrant(now)
            for window in windows:
                # The limit-th newest reservation inside the window (none: room), up to
                # now only when a held slot is checked again; reads at most `limit` index
                # entries.
                row = await self._one(
                    cur,
                    "SELECT ts FROM rate_slots WHERE key = %s AND ts > %s AND ts <= %s "
                    "ORDER BY ts DESC LIMIT 1 OFFSET %s",
                    (window.key, now - window.window_s, horizon, window.limit - 1),
                )
                if row is None:
                    continue
                free = max(now, row[0] + window.window_s)
                if free > grant.at_ts:
                    grant = SlotGrant(free, window.label)
            for key, span in longest.items():
                await cur.execute(
                    "DELETE FROM rate_slots WHERE key = %s AND ts <= %s AND message_pk IS NULL",
                    (key, now - span),
                )
                await cur.execute(
                    "INSERT INTO rate_slots (key, ts, message_pk) VALUES (%s, %s, %s)",
                    (key, grant.at_ts, lease.pk),
                )
            return grant

        return await self._write(write)

    async def mark_sending(self, lease: Lease, now: float) -> bool:
        async def write(cur: Cursor) -> bool:
            row = await self._one(
                cur,
                "UPDATE messages SET attempt_open = true, updated_ts = %s "
                "WHERE pk = %s AND lease_token = %s AND status = 'sending' RETURNING attempts",
                (now, lease.pk, lease.token),
            )
            if row is None:
                return False
            await cur.execute(
                "INSERT INTO history (message_pk, event, ts, detail) "
                "VALUES (%s, 'sending', %s, %s)",
                (lease.pk, now, f"attempt {row[0] + 1}"),
            )
            return True

        return await self._write(write)

    async def complete(self, lease: Lease, transition: Transition, now: float) -> bool:
        async def write(cur: Cursor) -> bool:
            row = await self._one(
                cur,
                "SELECT tenant_id, account_id, batch_code FROM messages "
                "WHERE pk = %s AND lease_token = %s AND status = 'sending' FOR UPDATE",
                (lease.pk, lease.token),
            )
            if row is None:
                return False
            tenant_id, account_id, batch_code = row
            await self._apply_transition(
                cur, lease.pk, tenant_id, account_id, batch_code, transition, now
            )
            return True

        return await self._write(write)

    async def _apply_transition(
        self,
        cur: Cursor,
        pk: int,
        tenant_id: str,
        account_id: str,
        batch_code: str | None,
        t: Transition,
        now: float,
    ) -> None:
        status = t.status
        if status in QUEUED_STATUSES and suspension_of(
            await self._suspensions(cur, tenant_id), batch_code
        ):
            status = Status.SUSPENDED
        await cur.execute(_TRANSITION_SQL, transition_values(t, status, now, pk))
        if t.history is not None:
            await cur.execute(
                "INSERT INTO history (message_pk, event, ts, detail) VALUES (%s, %s, %s, %s)",
                (pk, t.history.event, t.history.ts, t.history.detail),
            )
        if t.events:
            await cur.executemany(
                "INSERT INTO reports (event_id, tenant_id, message_pk, payload, created_ts) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(e.event_id, tenant_id, pk, encode(e), now) for e in t.events],
            )
            await cur.execute("SELECT pg_notify(%s, %s)", (self._reports_channel, tenant_id))
        if t.slots == "consume":
            await cur.execute(
                "UPDATE rate_slots SET message_pk = NULL, ts = GREATEST(ts, %s) "
                "WHERE message_pk = %s",
                (now, pk),
            )
        elif t.slots == "release":
            await cur.execute("DELETE FROM rate_slots WHERE message_pk = %s", (pk,))
        if t.pause is not None:
            p = t.pause
            await cur.execute(
                "INSERT INTO account_pauses (tenant_id, account_id, failures, until_ts, reason) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, account_id) DO UPDATE "
                "SET failures = excluded.failures, until_ts = excluded.until_ts, "
                "reason = excluded.reason",
                (p.tenant_id, p.account_id, p.failures, p.until_ts, p.reason),
            )
        elif t.clear_pause:
            await cur.execute(
                "DELETE FROM account_pauses WHERE tenant_id = %s AND account_id = %s",
                (tenant_id, account_id),
            )

    async def _requeue(
        self, cur: Cursor, pk: int, attempts: int, due_ts: float, now: float
    ) -> None:
        await cur.execute(
            "UPDATE messages SET status = %s, lease_owner = NULL, lease_token = NULL, "
            "lease_expires_ts = NULL, attempt_open = false, updated_ts = %s WHERE pk = %s",
            (requeue_status(attempts, due_ts, now).value, now, pk),
        )

    async def release(self, lease: Lease, now: float) -> bool:
        async def write(cur: Cursor) -> bool:
            row = await self._one(
                cur,
                "SELECT attempts, due_ts FROM messages WHERE pk = %s AND lease_token = %s "
                "AND status = 'sending' AND NOT attempt_open FOR UPDATE",
                (lease.pk, lease.token),
            )
            if row is None:
                return False
            await self._requeue(cur, lease.pk, row[0], row[1], now)
            await self._notify_queue(cur)
            return True

        return await self._write(write)

    async def recover(
        self, *, owner: str, now: float, lease_s: float, own: bool = True
    ) -> list[Claim]:
        token = uuid.uuid4().hex
        expires = now + lease_s

        async def write(cur: Cursor) -> list[Claim]:
            rows = await self._all(
                cur,
                "SELECT pk, attempts, due_ts, attempt_open FROM messages WHERE status = "
                "'sending' AND ((%s AND lease_owner = %s) OR lease_expires_ts <= %s) "
                "FOR UPDATE SKIP LOCKED",
                (own, owner, now),
            )
            claims = []
            for pk, attempts, due_ts, attempt_open in rows:
                if not attempt_open:
                    await self._requeue(cur, pk, attempts, due_ts, now)
                    continue
                row = await self._one(
                    cur,
                    "UPDATE messages SET lease_owner = %s, lease_token = %s, "
                    f"lease_expires_ts = %s WHERE pk = %s RETURNING {COLUMNS}",
                    (owner, token, expires, pk),
                )
                claims.append(Claim(message_from_row(row), Lease(pk, owner, token, expires)))
            if len(claims) < len(rows):
                await self._notify_queue(cur)
            return claims

        return await self._write(write)

    # --- reading and deleting ---------------------------------------------------------

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage | None:
        async def read(cur: Cursor) -> QueuedMessage | None:
            row = await self._one(
                cur,
                f"SELECT {COLUMNS} FROM messages WHERE tenant_id = %s AND id = %s",
                (tenant_id, message_id),
            )
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
        query = f"SELECT {COLUMNS} FROM messages WHERE tenant_id = %s AND seq > %s"
        args: list[Any] = [tenant_id, int(cursor) if cursor else 0]
        if statuses:
            query += " AND status = ANY(%s)"
            args.append([s.value for s in statuses])
        if batch_code is not None:
            query += " AND batch_code = %s"
            args.append(batch_code)
        if active_only:
            query += f" AND status NOT IN {FINAL_SQL}"
        query += " ORDER BY seq LIMIT %s"
        args.append(limit + 1)

        async def read(cur: Cursor) -> MessagePage:
            return page_of(await self._all(cur, query, args), limit)

        return await self._read(read)

    async def history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        async def read(cur: Cursor) -> list[HistoryEntry]:
            rows = await self._all(
                cur,
                "SELECT h.event, h.ts, h.detail FROM history h JOIN messages m "
                "ON m.pk = h.message_pk WHERE m.tenant_id = %s AND m.id = %s ORDER BY h.pk",
                (tenant_id, message_id),
            )
            return [HistoryEntry(*row) for row in rows]

        return await self._read(read)

    @staticmethod
    async def _remove(cur: Cursor, pks: list[int], *, acked_reports_too: bool = False) -> None:
        await cur.execute("DELETE FROM history WHERE message_pk = ANY(%s)", (pks,))
        if acked_reports_too:
            await cur.execute("DELETE FROM reports WHERE message_pk = ANY(%s)", (pks,))
        else:
            await cur.execute(
                "DELETE FROM reports WHERE message_pk = ANY(%s) AND acked_ts IS NULL", (pks,)
            )
        await cur.execute("DELETE FROM rate_slots WHERE message_pk = ANY(%s)", (pks,))
        await cur.execute("DELETE FROM messages WHERE pk = ANY(%s)", (pks,))

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        async def write(cur: Cursor) -> DeleteResult:
            unique = list(dict.fromkeys(ids))
            found = {
                message_id: (pk, status)
                for pk, message_id, status in await self._all(
                    cur,
                    "SELECT pk, id, status FROM messages WHERE tenant_id = %s AND id = ANY(%s) "
                    "FOR UPDATE",
                    (tenant_id, unique),
                )
            }
            not_found = [i for i in unique if i not in found]
            in_flight = [i for i in unique if i in found and found[i][1] == Status.SENDING.value]
            removable = [found[i][0] for i in unique if i in found and i not in in_flight]
            if removable:
                await self._remove(cur, removable)
            return DeleteResult(len(removable), not_found, in_flight)

        return await self._write(write)

    async def next_due_ts(self, after: float) -> float | None:
        async def read(cur: Cursor) -> float | None:
            (due, pause_end) = await self._one(
                cur,
                f"SELECT (SELECT MIN(due_ts) FROM messages WHERE status IN {QUEUED_SQL} "
                "AND due_ts > %s), (SELECT MIN(until_ts) FROM account_pauses "
                "WHERE until_ts > %s)",
                (after, after),
            )
            instants = [ts for ts in (due, pause_end) if ts is not None]
            return min(instants) if instants else None

        return await self._read(read)

    async def count_ahead(self, message: QueuedMessage, now: float) -> int:
        async def read(cur: Cursor) -> int:
            (count,) = await self._one(
                cur,
                "SELECT COUNT(*) FROM messages WHERE tenant_id = %s AND account_id = %s "
                f"AND status IN {QUEUED_SQL} AND due_ts <= %s "
                "AND (rank < %s OR (rank = %s AND seq < %s))",
                (
                    message.tenant_id,
                    message.account_id,
                    now,
                    message.rank,
                    message.rank,
                    message.seq,
                ),
            )
            return int(count)

        return await self._read(read)

    async def account_pause(self, tenant_id: str, account_id: str) -> AccountPause | None:
        async def read(cur: Cursor) -> AccountPause | None:
            row = await self._one(
                cur,
                "SELECT failures, until_ts, reason FROM account_pauses "
                "WHERE tenant_id = %s AND account_id = %s",
                (tenant_id, account_id),
            )
            if row is None:
                return None
            failures, until_ts, reason = row
            return AccountPause(
                tenant_id=tenant_id, account_id=account_id, failures=failures,
                until_ts=until_ts, reason=reason,
            )  # fmt: skip

        return await self._read(read)

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        return sorted(await self._read(lambda cur: self._suspensions(cur, tenant_id)))

    async def _pending_in_scope(self, cur: Cursor, tenant_id: str, batch_code: str | None) -> int:
        query = f"SELECT COUNT(*) FROM messages WHERE tenant_id = %s AND status NOT IN {FINAL_SQL}"
        args: list[Any] = [tenant_id]
        if batch_code is not None:
            query += " AND batch_code = %s"
            args.append(batch_code)
        (count,) = await self._one(cur, query, args)
        return int(count)

    async def suspend(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        async def write(cur: Cursor) -> SuspendState:
            current = await self._suspensions(cur, tenant_id)
            if "*" not in current:
                await cur.execute(
                    "INSERT INTO suspensions (tenant_id, batch_code) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (tenant_id, batch_code or "*"),
                )
                query = (
                    "UPDATE messages SET status = 'suspended', updated_ts = %s "
                    f"WHERE tenant_id = %s AND status IN {QUEUED_SQL}"
                )
                args: list[Any] = [now, tenant_id]
                if batch_code is not None:
                    query += " AND batch_code = %s"
                    args.append(batch_code)
                await cur.execute(query.encode(), args)
            return SuspendState(
                tenant_id,
                sorted(await self._suspensions(cur, tenant_id)),
                await self._pending_in_scope(cur, tenant_id, batch_code),
            )

        return await self._write(write)

    async def activate(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        async def write(cur: Cursor) -> SuspendState:
            current = await self._suspensions(cur, tenant_id)
            if batch_code is not None and "*" in current:
                raise Conflict("the whole tenant is suspended: activate the tenant first")
            await cur.execute(
                "DELETE FROM suspensions WHERE tenant_id = %s AND batch_code = %s",
                (tenant_id, batch_code or "*"),
            )
            remaining = await self._suspensions(cur, tenant_id)
            after_seq, any_resumed = -1, False
            while rows := await self._all(  # in chunks: a tenant may hold millions
                cur,
                "SELECT pk, attempts, due_ts, batch_code, seq FROM messages WHERE tenant_id = %s "
                "AND status = 'suspended' AND seq > %s ORDER BY seq LIMIT %s FOR UPDATE",
                (tenant_id, after_seq, RESUME_CHUNK),
            ):
                after_seq = rows[-1][4]
                resumed = [
                    (requeue_status(attempts, due_ts, now).value, now, pk)
                    for pk, attempts, due_ts, code, _ in rows
                    if suspension_of(remaining, code) is None
                ]
                if resumed:
                    await cur.executemany(
                        "UPDATE messages SET status = %s, updated_ts = %s WHERE pk = %s", resumed
                    )
                    any_resumed = True
            if any_resumed:
                await self._notify_queue(cur)
            return SuspendState(
                tenant_id,
                sorted(remaining),
                await self._pending_in_scope(cur, tenant_id, batch_code),
            )

        return await self._write(write)

    async def purge_final(self, tenant_id: str | None, final_before_ts: float) -> int:
        async def write(cur: Cursor) -> int:
            query = (
                f"SELECT pk FROM messages WHERE status IN {FINAL_SQL} AND final_ts < %s "
                "AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.message_pk = messages.pk "
                "AND r.acked_ts IS NULL)"
            )
            args: list[Any] = [final_before_ts]
            if tenant_id is not None:
                query += " AND tenant_id = %s"
                args.append(tenant_id)
            pks = [row[0] for row in await self._all(cur, query + " FOR UPDATE SKIP LOCKED", args)]
            if pks:
                await self._remove(cur, pks, acked_reports_too=True)
            return len(pks)

        return await self._write(write)

    async def count_by_status(self, tenant_id: str | None = None) -> dict[Status, int]:
        async def read(cur: Cursor) -> dict[Status, int]:
            if tenant_id is None:
                rows = await self._all(cur, "SELECT status, COUNT(*) FROM messages GROUP BY status")
            else:
                rows = await self._all(
                    cur,
                    "SELECT status, COUNT(*) FROM messages WHERE tenant_id = %s GROUP BY status",
                    (tenant_id,),
                )
            return {Status(status): int(count) for status, count in rows}

        return await self._read(read)

    async def oldest_not_final(self) -> dict[str, float]:
        query = (
            "SELECT tenant_id, MIN(created_ts) FROM messages "
            f"WHERE status NOT IN {FINAL_SQL} GROUP BY tenant_id"
        )
        rows = await self._read(lambda cur: self._all(cur, query, ()))
        return {tenant_id: float(oldest) for tenant_id, oldest in rows}

    async def finished_per_minute(self, since_ts: float) -> list[MinuteCount]:
        # The status condition repeats the partial index's, so messages_final serves
        # the range on final_ts.
        query = (
            "SELECT (floor(final_ts / 60) * 60)::bigint AS minute, tenant_id, status, "
            f"COUNT(*) FROM messages WHERE status IN {FINAL_SQL} AND final_ts >= %s "
            "GROUP BY minute, tenant_id, status ORDER BY minute, tenant_id, status"
        )
        rows = await self._read(lambda cur: self._all(cur, query, (since_ts,)))
        return [
            MinuteCount(int(m), tenant, Status(status), int(n)) for m, tenant, status, n in rows
        ]

    # --- configuration ----------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> None:
        async def write(cur: Cursor) -> None:
            await cur.execute(
                "INSERT INTO tenants (id, data) VALUES (%s, %s) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (tenant.id, encode(tenant)),
            )

        await self._write(write)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._read(
            lambda cur: self._one(cur, "SELECT data FROM tenants WHERE id = %s", (tenant_id,))
        )
        return tenant_decoder.decode(row[0]) if row else None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._read(lambda cur: self._all(cur, "SELECT data FROM tenants ORDER BY id"))
        return [tenant_decoder.decode(r[0]) for r in rows]

    async def delete_tenant(self, tenant_id: str) -> bool:
        async def write(cur: Cursor) -> bool:
            await cur.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))
            if cur.rowcount == 0:
                return False
            pks = "(SELECT pk FROM messages WHERE tenant_id = %s)"
            for statement in (
                "DELETE FROM accounts WHERE tenant_id = %s",
                f"DELETE FROM history WHERE message_pk IN {pks}",
                "DELETE FROM reports WHERE tenant_id = %s",
                f"DELETE FROM rate_slots WHERE message_pk IN {pks}",
                "DELETE FROM messages WHERE tenant_id = %s",
                "DELETE FROM account_pauses WHERE tenant_id = %s",
                "DELETE FROM suspensions WHERE tenant_id = %s",
                "DELETE FROM tenant_keys WHERE tenant_id = %s",
                "DELETE FROM report_leases WHERE tenant_id = %s",
            ):
                await cur.execute(statement.encode(), (tenant_id,))
            await cur.execute(
                "DELETE FROM idempotency WHERE scope = %s", (idempotency_scope(Caller(tenant_id)),)
            )
            return True

        return await self._write(write)

    async def put_account(self, account: Account) -> None:
        async def write(cur: Cursor) -> None:
            if account.is_default:
                rows = await self._all(
                    cur,
                    "SELECT id, data FROM accounts WHERE tenant_id = %s AND id != %s FOR UPDATE",
                    (account.tenant_id, account.id),
                )
                for other_id, data in rows:
                    other = account_decoder.decode(data)
                    if other.is_default:
                        await cur.execute(
                            "UPDATE accounts SET data = %s WHERE tenant_id = %s AND id = %s",
                            (
                                encode(msgspec.structs.replace(other, is_default=False)),
                                account.tenant_id,
                                other_id,
                            ),
                        )
            await cur.execute(
                "INSERT INTO accounts (tenant_id, id, data) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data",
                (account.tenant_id, account.id, encode(account)),
            )
            await self._notify_queue(cur)

        await self._write(write)

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        row = await self._read(
            lambda cur: self._one(
                cur,
                "SELECT data FROM accounts WHERE tenant_id = %s AND id = %s",
                (tenant_id, account_id),
            )
        )
        return account_decoder.decode(row[0]) if row else None

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        rows = await self._read(
            lambda cur: self._all(
                cur, "SELECT data FROM accounts WHERE tenant_id = %s ORDER BY id", (tenant_id,)
            )
        )
        return [account_decoder.decode(r[0]) for r in rows]

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        abandon: Callable[[QueuedMessage], Transition] | None = None,
        now: float = 0.0,
    ) -> bool:
        async def write(cur: Cursor) -> bool:
            if not await self._one(
                cur,
                "SELECT 1 FROM accounts WHERE tenant_id = %s AND id = %s FOR UPDATE",
                (tenant_id, account_id),
            ):
                return False
            rows = await self._all(
                cur,
                f"SELECT {COLUMNS} FROM messages WHERE tenant_id = %s AND account_id = %s "
                f"AND status IN {WAITING_SQL} FOR UPDATE",
                (tenant_id, account_id),
            )
            if rows and abandon is None:
                raise Conflict(
                    f"account {account_id} still has {len(rows)} queued messages "
                    "(delete with force to fail them)"
                )
            for message in map(message_from_row, rows):
                assert abandon is not None
                await self._apply_transition(
                    cur, message.pk, tenant_id, account_id, None, abandon(message), now
                )
            await cur.execute(
                "DELETE FROM accounts WHERE tenant_id = %s AND id = %s", (tenant_id, account_id)
            )
            await cur.execute(
                "DELETE FROM account_pauses WHERE tenant_id = %s AND account_id = %s",
                (tenant_id, account_id),
            )
            return True

        return await self._write(write)

    # --- access -----------------------------------------------------------------------

    async def put_tenant_key(self, key: TenantKey) -> None:
        async def write(cur: Cursor) -> None:
            await cur.execute(
                "INSERT INTO tenant_keys (tenant_id, digest, expires_ts) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id) DO UPDATE SET digest = excluded.digest, "
                "expires_ts = excluded.expires_ts",
                (key.tenant_id, key.digest, key.expires_ts),
            )

        await self._write(write)

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        row = await self._read(
            lambda cur: self._one(
                cur,
                "SELECT tenant_id, digest, expires_ts FROM tenant_keys WHERE digest = %s",
                (digest,),
            )
        )
        return TenantKey(*row) if row else None

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        async def write(cur: Cursor) -> bool:
            await cur.execute("DELETE FROM tenant_keys WHERE tenant_id = %s", (tenant_id,))
            return cur.rowcount > 0

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
        async def write(cur: Cursor) -> IdempotentStart:
            await cur.execute("DELETE FROM idempotency WHERE created_ts <= %s", (now - ttl_s,))
            # Insert first: of two requests with one key, exactly one inserts.
            await cur.execute(
                "INSERT INTO idempotency (scope, key, fingerprint, created_ts, owner) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (scope, key, fingerprint, now, owner),
            )
            if cur.rowcount == 1:
                return IdempotentStart("new")
            row = await self._one(
                cur,
                "SELECT fingerprint, status, body, created_ts FROM idempotency "
                "WHERE scope = %s AND key = %s FOR UPDATE",
                (scope, key),
            )
            start = idempotent_state(row[0], row[1], row[2], row[3], fingerprint, now, stale_s)
            if start is not None:
                return start
            await cur.execute(
                "UPDATE idempotency SET fingerprint = %s, created_ts = %s, status = NULL, "
                "body = NULL, owner = %s WHERE scope = %s AND key = %s",
                (fingerprint, now, owner, scope, key),
            )
            return IdempotentStart("new")

        return await self._write(write)

    async def release_idempotent(self, owner: str) -> int:
        async def write(cur: Cursor) -> int:
            await cur.execute(
                "DELETE FROM idempotency WHERE owner = %s AND status IS NULL", (owner,)
            )
            return int(cur.rowcount)

        return await self._write(write)

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        async def write(cur: Cursor) -> None:
            await cur.execute(
                "UPDATE idempotency SET status = %s, body = %s WHERE scope = %s AND key = %s",
                (status, body, scope, key),
            )

        await self._write(write)

    async def forget_idempotent(self, scope: str, key: str) -> None:
        async def write(cur: Cursor) -> None:
            await cur.execute(
                "DELETE FROM idempotency WHERE scope = %s AND key = %s AND status IS NULL",
                (scope, key),
            )

        await self._write(write)

    # --- report outbox ----------------------------------------------------------------

    async def pending_reports(self, tenant_id: str, limit: int) -> list[StoredReport]:
        rows = await self._read(
            lambda cur: self._all(
                cur,
                "SELECT seq, payload FROM reports WHERE tenant_id = %s AND acked_ts IS NULL "
                "ORDER BY seq LIMIT %s",
                (tenant_id, limit),
            )
        )
        return [StoredReport(seq, event_decoder.decode(payload)) for seq, payload in rows]

    async def tenants_with_pending_reports(self) -> set[str]:
        rows = await self._read(
            lambda cur: self._all(
                cur, "SELECT DISTINCT tenant_id FROM reports WHERE acked_ts IS NULL", ()
            )
        )
        return {tenant_id for (tenant_id,) in rows}

    async def acknowledge_reports(
        self, tenant_id: str, event_ids: Sequence[str], now: float
    ) -> int:
        async def write(cur: Cursor) -> int:
            await cur.execute(
                "UPDATE reports SET acked_ts = %s WHERE tenant_id = %s "
                "AND event_id = ANY(%s) AND acked_ts IS NULL",
                (now, tenant_id, list(event_ids)),
            )
            return cur.rowcount

        return await self._write(write)

    async def report_backlog(self, tenant_id: str) -> ReportBacklog:
        async def read(cur: Cursor) -> ReportBacklog:
            (count, oldest) = await self._one(
                cur,
                "SELECT COUNT(*), MIN(created_ts) FROM reports "
                "WHERE tenant_id = %s AND acked_ts IS NULL",
                (tenant_id,),
            )
            return ReportBacklog(int(count), oldest)

        return await self._read(read)

    async def report_backlogs(self) -> dict[str, ReportBacklog]:
        query = (
            "SELECT tenant_id, COUNT(*), MIN(created_ts) FROM reports "
            "WHERE acked_ts IS NULL GROUP BY tenant_id"
        )
        rows = await self._read(lambda cur: self._all(cur, query, ()))
        return {tenant_id: ReportBacklog(int(n), oldest) for tenant_id, n, oldest in rows}

    async def lease_reports(self, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
        async def write(cur: Cursor) -> bool:
            row = await self._one(
                cur,
                "INSERT INTO report_leases (tenant_id, owner, expires_ts) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id) DO UPDATE SET owner = excluded.owner, "
                "expires_ts = excluded.expires_ts WHERE report_leases.owner = excluded.owner "
                "OR report_leases.expires_ts <= %s RETURNING 1",
                (tenant_id, owner, now + lease_s, now),
            )
            return row is not None

        return await self._write(write)

    async def release_reports(self, tenant_id: str, owner: str) -> None:
        async def write(cur: Cursor) -> None:
            await cur.execute(
                "DELETE FROM report_leases WHERE tenant_id = %s AND owner = %s",
                (tenant_id, owner),
            )

        await self._write(write)


def _distinct_runs(messages: Sequence[NewMessage]) -> list[list[NewMessage]]:
    """Split ``messages`` in order into runs in which no (tenant, id) repeats."""
    runs: list[list[NewMessage]] = [[]]
    seen: set[tuple[str, str]] = set()
    for message in messages:
        key = (message.tenant_id, message.id)
        if key in seen:
            runs.append([])
            seen.clear()
        seen.add(key)
        runs[-1].append(message)
    return [run for run in runs if run]


__all__ = ["MIGRATIONS", "PostgresStore", "migrate"]
