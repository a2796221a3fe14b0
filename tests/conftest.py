"""Shared fixtures: every storage test runs against every store adapter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.postgres import PostgresStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.lifecycle import decide, initial_status
from mailproxy.domain.model import Account, NewMessage, Tenant
from mailproxy.domain.policy import queue_rank
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.validation import parse_message

STORE_KINDS = ["memory", "sqlite", "postgres"]
#: The stores several processes can share: the cross-process tests run on these.
SHARED_KINDS = ["sqlite", "postgres"]
NOW_T = 1_800_000_000.0
#: The PostgreSQL server of the tests (loopback); each test gets a schema of its own.
POSTGRES_DSN = os.environ.get(
    "GMP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=5"
)

Store = MemoryStore | SqliteStore | PostgresStore


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "mailproxy_test") -> Iterator[str]:
    """A new database on the local PostgreSQL server (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    try:
        yield POSTGRES_DSN.replace("/postgres?", f"/{name}?")
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "postgres":
        return PostgresStore(POSTGRES_DSN, schema=f"test_{uuid.uuid4().hex[:16]}", pool_size=4)
    return SqliteStore(tmp_path / "store.db")


async def drop_schema(store: Store) -> None:
    """Remove a test's PostgreSQL schema (the other stores leave nothing behind)."""
    if isinstance(store, PostgresStore) and store.schema is not None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(store.schema)
                )
            )


@contextlib.asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    """``store`` open; afterwards closed, and its PostgreSQL schema dropped."""
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(store)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each kind; the SQLite one is a real file, the PostgreSQL one a
    fresh schema on the local server."""
    async with opened(make_store(request.param, tmp_path)) as store:
        yield store


def twin_of(store: Store) -> Store:
    """A second store on the same data, as another process would open it (only the
    kinds of :data:`SHARED_KINDS`: the memory store cannot be shared)."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    if isinstance(store, PostgresStore):
        return PostgresStore(store.dsn, schema=store.schema, pool_size=4)
    raise TypeError(f"{type(store).__name__} cannot be shared by two processes")


@pytest.fixture
async def twin(store: Store) -> AsyncIterator[Store]:
    """``store`` as a second process sees it."""
    other = twin_of(store)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


class Clock:
    """A controllable clock for tests: ``clock()`` reads, ``advance`` moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_message(
    message_id: str,
    *,
    tenant_id: str = "t1",
    account_id: str = "a1",
    priority: int = 2,
    now: float = 1_800_000_000.0,
    deferred_ts: float | None = None,
    batch_code: str | None = None,
) -> NewMessage:
    spec = parse_message(
        {
            "id": message_id,
            "from": "s@example.com",
            "to": ["r@example.com"],
            "subject": "hi",
            "metadata": {"n": message_id},
        }
    )
    status, due = initial_status(deferred_ts, now)
    return NewMessage(
        tenant_id=tenant_id,
        id=message_id,
        account_id=account_id,
        priority=priority,
        rank=queue_rank(priority, now),
        status=status,
        due_ts=due,
        batch_code=batch_code,
        message_id=f"{message_id}@example.com",
        date_ts=now,
        spec=spec,
    )


TENANT = Tenant(id="t1", name="Tenant one")
ACCOUNT = Account(id="a1", tenant_id="t1", kind="capture", is_default=True)


def transition_for(claim, outcome, *, now: float, event_id: str, failover: bool = False):
    """The domain's transition for a claimed message and an attempt outcome, with the
    default policies (what the service would apply; ``failover``: the message's account
    has fallbacks)."""
    return decide(
        claim.message,
        outcome,
        now=now,
        policy=RetryPolicy(),
        unknown_policy="at_least_once",
        jitter_sample=0.0,
        event_id=event_id,
        pause=claim.pause,
        failover=failover,
    )


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Poll ``check`` (a read of an effect another task or process makes) until it
    holds; TimeoutError after ``timeout_s`` (a bound on a hang, not a timing claim)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the condition lives elsewhere
            await asyncio.sleep(0.05)
