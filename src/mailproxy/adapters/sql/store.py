"""The async storage ports over the SQL operations: each method runs one operation as one
transaction on its engine (the engines: ``SqliteEngine``, ``PostgresEngine``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from mailproxy.adapters.sql import admin, bounces, queue, reads
from mailproxy.adapters.sql.tx import Tx

P = ParamSpec("P")
T = TypeVar("T")


class Engine(Protocol):
    """Runs operations on a database: ``write`` in a transaction of its own, ``read``
    on a connection; both off the event loop. Driver errors become ``StorageError``."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...
    async def write(
        self, op: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


class _Runs(Generic[P, T]):
    """A port method that runs the operation ``op`` on the store's engine, as a write (a
    transaction of its own) or a read, with the operation's own parameters: the port's
    signature is written once, on the operation."""

    def __init__(self, op: Callable[Concatenate[Tx, P], T], *, write: bool) -> None:
        self._op, self._write = op, write

    @overload
    def __get__(self, store: None, owner: type) -> _Runs[P, T]: ...
    @overload
    def __get__(self, store: SqlStore, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, store: SqlStore | None, owner: type) -> Any:
        if store is None:
            return self
        op, run = self._op, store._engine.write if self._write else store._engine.read

        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await run(op, *args, **kwargs)

        method.__name__ = op.__name__
        return method


def _writes(op: Callable[Concatenate[Tx, P], T]) -> _Runs[P, T]:
    return _Runs(op, write=True)


def _reads(op: Callable[Concatenate[Tx, P], T]) -> _Runs[P, T]:
    return _Runs(op, write=False)


class SqlStore:
    """Implements ``MessageStore``, ``ConfigStore``, ``ReportOutbox``, ``AccessStore`` and
    ``BounceStore`` (:mod:`mailproxy.ports.store`) on an :class:`Engine`: each method is
    one operation of :mod:`.queue`, :mod:`.reads`, :mod:`.admin` or :mod:`.bounces`, run
    as a write or a read."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    # --- queue
    enqueue = _writes(queue.enqueue)
    claim_due = _writes(queue.claim_due)
    reserve_slots = _writes(queue.reserve_slots)
    mark_sending = _writes(queue.mark_sending)
    complete = _writes(queue.complete)
    release = _writes(queue.release)
    recover = _writes(queue.recover)
    # --- reading, deleting, suspending
    get_message = _reads(reads.get_message)
    list_messages = _reads(reads.list_messages)
    history = _reads(reads.history)
    delete_messages = _writes(reads.delete_messages)
    next_due_ts = _reads(reads.next_due_ts)
    count_ahead = _reads(reads.count_ahead)
    account_pause = _reads(reads.account_pause)
    suspended_batches = _reads(reads.suspended_batches)
    suspend = _writes(reads.suspend)
    activate = _writes(reads.activate)
    purge_final = _writes(reads.purge_final)
    count_by_status = _reads(reads.count_by_status)
    oldest_not_final = _reads(reads.oldest_not_final)
    finished_per_minute = _reads(reads.finished_per_minute)
    # --- configuration
    put_tenant = _writes(admin.put_tenant)
    get_tenant = _reads(admin.get_tenant)
    list_tenants = _reads(admin.list_tenants)
    delete_tenant = _writes(admin.delete_tenant)
    put_account = _writes(admin.put_account)
    get_account = _reads(admin.get_account)
    list_accounts = _reads(admin.list_accounts)
    delete_account = _writes(admin.delete_account)
    # --- access
    put_tenant_key = _writes(admin.put_tenant_key)
    find_tenant_key = _reads(admin.find_tenant_key)
    delete_tenant_key = _writes(admin.delete_tenant_key)
    begin_idempotent = _writes(admin.begin_idempotent)
    release_idempotent = _writes(admin.release_idempotent)
    finish_idempotent = _writes(admin.finish_idempotent)
    forget_idempotent = _writes(admin.forget_idempotent)
    # --- report outbox
    pending_reports = _reads(admin.pending_reports)
    tenants_with_pending_reports = _reads(admin.tenants_with_pending_reports)
    acknowledge_reports = _writes(admin.acknowledge_reports)
    report_backlog = _reads(admin.report_backlog)
    report_backlogs = _reads(admin.report_backlogs)
    lease_reports = _writes(admin.lease_reports)
    release_reports = _writes(admin.release_reports)
    # --- bounces and suppression
    instance_secret = _writes(bounces.instance_secret)
    message_by_pk = _reads(bounces.message_by_pk)
    bounces_of = _reads(bounces.bounces_of)
    mailbox_seen = _reads(bounces.mailbox_seen)
    record_mailbox_entry = _writes(bounces.record_mailbox_entry)
    message_by_message_id = _reads(bounces.message_by_message_id)
    expire_pec_watches = _writes(bounces.expire_pec_watches)
    unparsed_reports = _reads(bounces.unparsed_reports)
    suppressed_among = _reads(bounces.suppressed_among)
    add_suppressions = _writes(bounces.add_suppressions)
    remove_suppression = _writes(bounces.remove_suppression)
    list_suppressions = _reads(bounces.list_suppressions)
    count_suppressions = _reads(bounces.count_suppressions)
