"""The PostgreSQL engine's waits and cancellations, against the local server: a call that
cannot get a connection within ``timeout_s`` fails with ``StorageError`` (503 over HTTP)
instead of waiting for ever, and a call its caller gave up on is rolled back, not
committed behind the caller's back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from mailproxy.adapters.postgres import PostgresStore
from mailproxy.domain.errors import StorageError
from mailproxy.domain.model import Account, Status, Tenant
from tests.conftest import NOW_T, POSTGRES_DSN, new_message, opened


@contextlib.asynccontextmanager
async def locked_tenants(store: PostgresStore) -> AsyncIterator[psycopg.AsyncConnection]:
    """Another session holding the tenants table until the block ends."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as other:
        await other.execute("BEGIN")
        await other.execute(
            SQL("LOCK TABLE {}.tenants IN ACCESS EXCLUSIVE MODE").format(
                Identifier(store.schema or "public")
            )
        )
        yield other
        await other.execute("COMMIT")


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    schema = f"test_{uuid.uuid4().hex[:16]}"
    async with opened(PostgresStore(POSTGRES_DSN, schema=schema, pool_size=2, timeout_s=1)) as s:
        await s.put_tenant(Tenant(id="t1"))
        yield s


async def test_calls_that_get_no_connection_in_time_fail_and_the_others_finish(store):
    async with locked_tenants(store):
        reads = [asyncio.create_task(store.get_tenant("t1")) for _ in range(4)]
        # Two hold the pool's connections, waiting for the lock; the other two wait for a
        # connection, and give up after timeout_s (1 s) while the lock is still held.
        done, _ = await asyncio.wait(reads, timeout=3)
        assert len(done) == 2
        assert all(isinstance(task.exception(), StorageError) for task in done)
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert sum(isinstance(r, StorageError) for r in results) == 2
    assert [r.id for r in results if isinstance(r, Tenant)] == ["t1", "t1"]


async def test_a_write_its_caller_gave_up_on_is_not_committed(store):
    async with locked_tenants(store):
        write = asyncio.create_task(store.put_tenant(Tenant(id="t2")))
        await asyncio.sleep(0.3)  # the INSERT is waiting for the lock on the server
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    await asyncio.sleep(0.3)  # what a committed write would have needed to land
    assert await store.get_tenant("t2") is None
    assert await store.get_tenant("t1") is not None  # the pool is usable afterwards


async def delta_rows(store: PostgresStore) -> list[str]:
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(
            SQL("SELECT xmin::text FROM {}.status_counts ORDER BY 1").format(
                Identifier(store.schema or "public")
            )
        )
        return [row[0] for row in await cur.fetchall()]


async def test_reading_the_counts_folds_the_deltas_only_once_they_pile_up(store):
    await store.put_account(Account(id="a1", tenant_id="t1", kind="capture"))
    await store.enqueue([new_message(f"m{i}") for i in range(100)], NOW_T)
    assert len(await delta_rows(store)) == 100  # one delta a message
    assert await store.count_by_status("t1") == {Status.PENDING: 100}
    folded = await delta_rows(store)
    assert len(folded) == 1
    assert await store.count_by_status() == {Status.PENDING: 100}
    assert await delta_rows(store) == folded  # a read with few deltas writes nothing
