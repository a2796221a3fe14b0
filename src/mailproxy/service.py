"""MailProxy: the library's front door and the only orchestrator.

Use it with ``async with``::

    async with MailProxy(store=store, config=store, outbox=store, transports=...) as proxy:
        await proxy.put_tenant({"id": "acme"})
        await proxy.put_account({"id": "main", "tenant_id": "acme", "kind": "capture"})
        result = await proxy.submit([{...}], tenant_id="acme")

Entering opens the stores, settles attempts a previous run left unfinished (an attempt
found ``sending`` becomes ``unknown`` and follows the policy; a claim that never started
is simply re-queued) and, unless ``run_dispatcher=False``, starts the dispatch loop.
Deterministic tests drive delivery with :meth:`MailProxy.dispatch_once` and
:meth:`MailProxy.run_until_idle` instead.

Wake-ups are event-driven: a submit, a freed send slot and :meth:`run_now` wake the loop
at once; a timer wakes it only for the earliest future due time. One message's unexpected
exception is recorded as a temporary failure of that message and never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec

from mailproxy.domain.access import (
    ADMIN,
    TENANT_EDITABLE_BY_TENANT,
    Caller,
    TenantKey,
    idempotency_scope,
    key_digest,
    tenant_key_refusal,
)
from mailproxy.domain.configuration import parse_account, parse_tenant
from mailproxy.domain.errors import (
    AttachmentUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    MailProxyError,
    NotFound,
    StorageError,
)
from mailproxy.domain.lifecycle import abandon, decide, initial_status, is_final, orphaned
from mailproxy.domain.mime import AttachmentContent, Outgoing, encode_body, render
from mailproxy.domain.model import (
    DEFAULT_PRIORITY,
    Account,
    AttachmentRef,
    Claim,
    DeleteResult,
    HistoryEntry,
    MessagePage,
    MessageSpec,
    MinuteCount,
    NewMessage,
    QueuedMessage,
    Rejection,
    ReportBacklog,
    Status,
    SubmitResult,
    SuspendState,
    Tenant,
    Transition,
    UnknownPolicy,
    minute_start,
)
from mailproxy.domain.outcome import Outcome, Permanent, RateLimited, Temporary, Unknown
from mailproxy.domain.policy import (
    DEFAULT_AGING_S,
    Why,
    WindowLengths,
    explain,
    queue_rank,
    rate_windows,
    suspension_of,
)
from mailproxy.domain.reporting import (
    SyncState,
    after_call,
    next_call_ts,
    retire_webhook_secret,
    rotate_webhook_secret,
)
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.validation import (
    DEFAULT_LIMITS,
    MAX_TS,
    MessageLimits,
    address_of,
    decode_inline,
    idna_domain,
    parse_message,
    parse_priority,
)
from mailproxy.ports.attachments import AttachmentSource, ContentCache
from mailproxy.ports.changes import ChangeFeed
from mailproxy.ports.observability import AttemptResult, DeliveryEvents
from mailproxy.ports.reporting import ReportSender
from mailproxy.ports.store import AccessStore, ConfigStore, MessageStore, ReportOutbox
from mailproxy.ports.transport import Transport

log = logging.getLogger("mailproxy")
T = TypeVar("T")

#: The report loop also looks for new events this often, so events written by another
#: process sharing the database go out within about a second too (this process's own
#: state changes wake it at once).
REPORT_POLL_S = 1.0

#: Transfer-encoded bodies of recurring (MD5-marked) attachments kept in memory.
ENCODED_BODIES_KEPT = 8

#: How long an ``Idempotency-Key`` is remembered, and after how long an unfinished request
#: with one is taken for dead (its key may then be used again).
IDEMPOTENCY_TTL_S = 86400.0
IDEMPOTENCY_STALE_S = 300.0


class CreatedTenant(msgspec.Struct, frozen=True):
    """A new tenant with its secrets, which are shown only this once."""

    tenant: Tenant
    api_key: str
    webhook_secret: str


#: How long a looked-up tenant or account is trusted before it is read again, so that a
#: change made by another process sharing the database is seen within this delay.
CONFIG_CACHE_S = 5.0


def unique_ids() -> Callable[[], str]:
    """Ids for Message-IDs and report events, as 32 hex digits: 128 bits from a generator
    seeded once from the operating system. They must be unique, not secret (reports are
    signed), and ``os.urandom`` per id (``uuid4``) measured about 10 µs under load on
    the enqueue path, against a fraction of one here."""
    source = random.Random(secrets.token_bytes(32))
    return lambda: f"{source.getrandbits(128):032x}"


class MailProxy:
    """Accept, store, send and account for email messages. See the module docstring."""

    def __init__(
        self,
        *,
        store: MessageStore,
        config: ConfigStore,
        outbox: ReportOutbox,
        transports: Mapping[str, Transport],
        access: AccessStore | None = None,
        reporter: ReportSender | None = None,
        events: DeliveryEvents | None = None,
        attachment_sources: Sequence[AttachmentSource] = (),
        attachment_cache: ContentCache | None = None,
        max_attachment_total_bytes: int = 36700160,
        fetch_concurrency: int = 8,
        tenant_concurrency: int | None = None,
        tenant_max_connections: int = 10,
        tenant_max_accounts: int = 50,
        retry_policy: RetryPolicy | None = None,
        unknown_policy: UnknownPolicy = "at_least_once",
        max_concurrency: int = 32,
        max_batch: int = 1000,
        message_limits: MessageLimits = DEFAULT_LIMITS,
        lease_s: float = 300.0,
        worker_id: str = "mailproxy",
        shutdown_grace_s: float = 30.0,
        aging_s: float = DEFAULT_AGING_S,
        window_lengths: WindowLengths | None = None,
        retention_s: float = 604800.0,
        retention_check_s: float = 3600.0,
        sync_interval_s: float = 300.0,
        report_batch: int = 500,
        report_retry_max_s: float = 300.0,
        report_concurrency: int = 8,
        report_slot_hold_s: float = 0.5,
        report_gather_s: float = 0.1,
        run_dispatcher: bool = True,
        run_reporter: bool | None = None,
        changes: ChangeFeed | None = None,
        report_lease_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        random_unit: Callable[[], float] = random.random,
        new_id: Callable[[], str] | None = None,
        new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        if max_concurrency < 1:
            raise InvalidInput("max_concurrency", "invalid max_concurrency: at least 1")
        self.store = store
        self.config = config
        self.outbox = outbox
        #: Tenant keys and idempotency records; by default the message store, when it
        #: implements them (both shipped stores do).
        self.access: AccessStore = access if access is not None else store  # type: ignore[assignment]
        self._transports = dict(transports)
        self._sources = {mode: s for s in attachment_sources for mode in s.fetch_modes}
        self.attachment_cache = attachment_cache
        self.max_attachment_total_bytes = max_attachment_total_bytes
        #: Fetches at once, over all messages: bounds the memory that attachments in
        #: flight can take.
        self._fetch_slots = asyncio.Semaphore(fetch_concurrency)
        #: ... and per tenant at most half of them, so a tenant whose attachment server
        #: drips its answers leaves the rest to the others.
        self._tenant_fetch_share = max(1, fetch_concurrency // 2)
        self._tenant_fetch_slots: dict[str, asyncio.Semaphore] = {}
        #: Both keyed by (tenant, MD5): a digest names content, it never grants it, so
        #: one tenant's marker can never reach what another tenant's fetch brought in.
        self._encoded: dict[tuple[str, str], bytes] = {}
        self._fetching: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self.retry_policy = retry_policy or RetryPolicy()
        self.unknown_policy: UnknownPolicy = unknown_policy
        self.max_concurrency = max_concurrency
        #: Sends at once per tenant in this process (default: half of
        #: ``max_concurrency``): a tenant whose sends stall can hold that many slots,
        #: never all of them, so the others' messages still go at once.
        self.tenant_concurrency = (
            max(1, max_concurrency // 2) if tenant_concurrency is None else tenant_concurrency
        )
        if self.tenant_concurrency < 1:
            raise InvalidInput("tenant_concurrency", "invalid tenant_concurrency: at least 1")
        #: The most ``max_connections`` a tenant's key may give an account (the admin
        #: may give more).
        self.tenant_max_connections = tenant_max_connections
        #: The most accounts a tenant's key may create in its tenant (each holds
        #: connections, metric series and a row; the admin may create more).
        self.tenant_max_accounts = tenant_max_accounts
        self.max_batch = max_batch
        self.message_limits = message_limits
        self.lease_s = lease_s
        self.worker_id = worker_id
        self._shutdown_grace_s = shutdown_grace_s
        self.aging_s = aging_s
        self.window_lengths = window_lengths or WindowLengths()
        self.retention_s = retention_s
        self._retention_check_s = retention_check_s
        self._next_purge = 0.0
        self._run_dispatcher = run_dispatcher
        self._run_reporter = run_dispatcher if run_reporter is None else run_reporter
        #: Wake-ups from other processes sharing the store (None: timers only).
        self.changes = changes
        self.report_lease_s = report_lease_s
        self._next_sweep = 0.0
        self._clock = clock
        self._monotonic = monotonic
        self._random_unit = random_unit
        self._new_id = new_id if new_id is not None else unique_ids()
        self._new_secret = new_secret
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.reporter = reporter
        #: Where delivery metrics go (None: nowhere).
        self.events = events
        self._smtp_seconds: dict[int, float] = {}
        self.sync_interval_s = sync_interval_s
        self.report_batch = report_batch
        self.report_retry_max_s = report_retry_max_s
        #: Report calls started at once; a call that takes longer than
        #: ``report_slot_hold_s`` goes on outside them, so tenants whose applications
        #: answer slowly never hold back another tenant's reports by more than that.
        self._report_slots = asyncio.Semaphore(report_concurrency)
        self.report_slot_hold_s = report_slot_hold_s
        #: After new entries wake the report loop, how long it lets more arrive before
        #: calling: a call per delivery would cost more CPU than the delivery itself.
        self.report_gather_s = report_gather_s
        self._report_wake = asyncio.Event()
        self._report_loop_task: asyncio.Task[None] | None = None
        self._reporting: dict[str, asyncio.Task[None]] = {}
        self._sync: dict[str, SyncState] = {}
        self._tenant_cache: dict[str, tuple[float, Tenant | None]] = {}
        self._tenant_list: tuple[float, list[Tenant]] | None = None
        self._account_cache: dict[str, tuple[float, list[Account]]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def _stores(self) -> list[Any]:
        unique: list[Any] = []
        for part in (self.store, self.config, self.outbox, self.access):
            if all(part is not seen for seen in unique):
                unique.append(part)
        return unique

    async def __aenter__(self) -> Self:
        for part in self._stores():
            await part.open()
        self._stopping = False
        await self.recover()  # expired leases included: the first sweep is a period away
        self._next_sweep = self._monotonic() + self._sweep_period_s()
        if self.changes is not None and (self._run_dispatcher or self._run_reporter):
            await self.changes.watch(self._wake.set, self._report_wake.set)
        if self._run_dispatcher:
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="mailproxy-dispatch")
        if self._run_reporter and self.reporter is not None:
            self._report_loop_task = asyncio.create_task(
                self._report_loop(), name="mailproxy-reports"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop claiming, let in-flight sends finish (up to the grace period), then close
        transports and stores. Sends cut off by the grace period are settled at the next
        start."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            await self._dispatcher
            self._dispatcher = None
        if self._inflight:
            _, late = await asyncio.wait(self._inflight, timeout=self._shutdown_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._stop_reporting()
        for transport in self._transports.values():
            await transport.close()
        for source in self._sources.values():
            await source.close()
        for part in reversed(self._stores()):
            await part.close()

    async def recover(self) -> int:
        """Settle leases this worker held before a restart, and expired ones: attempts that
        had started become ``unknown`` (then follow the policy); claims that had not are
        re-queued; ``Idempotency-Key``s of requests that died with the previous process are
        released at once. Returns how many attempts were settled as unknown."""
        await self.access.release_idempotent(self.worker_id)
        return await self._recover(own=True)

    async def _recover(self, *, own: bool) -> int:
        claims = await self.store.recover(
            owner=self.worker_id, now=self._clock(), lease_s=self.lease_s, own=own
        )
        for claim in claims:
            reason = (
                "the attempt was interrupted (process stopped or lease expired during the send)"
            )
            await self._settle(claim, Unknown(reason))
        return len(claims)

    # --- configuration ------------------------------------------------------------------

    async def put_tenant(self, data: Mapping[str, Any] | Tenant) -> Tenant:
        """Create or replace a tenant (validated; raises :class:`InvalidInput`)."""
        tenant = data if isinstance(data, Tenant) else parse_tenant(data)
        await self.config.put_tenant(tenant)
        self._forget_tenant(tenant.id)
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant as stored now (:class:`NotFound` when there is none). The read
        refreshes the configuration cache, so a submission right after (an add-messages
        request checks its tenant first) does not read the tenant again."""
        tenant = await self.config.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        self._tenant_cache[tenant_id] = (self._monotonic(), tenant)
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        return await self.config.list_tenants()

    async def delete_tenant(self, tenant_id: str) -> None:
        if not await self.config.delete_tenant(tenant_id):
            raise NotFound("tenant", tenant_id)
        self._forget_tenant(tenant_id)
        self._tenant_fetch_slots.pop(tenant_id, None)
        self._account_cache.pop(tenant_id, None)
        if self.events is not None:
            self.events.forget(tenant_id)

    async def put_account(
        self, data: Mapping[str, Any] | Account, *, caller: Caller = ADMIN
    ) -> Account:
        """Create or replace an account of an existing tenant. Nothing connects yet: a
        wrong host or password shows up on the first attempt, as an account problem
        (a host the egress rule forbids, given as an address, is refused at once). What a
        tenant's key may not set is :func:`~mailproxy.domain.access.tenant_key_refusal`;
        it may create at most ``tenant_max_accounts`` accounts."""
        account = data if isinstance(data, Account) else parse_account(data)
        refusal = (
            None if caller.is_admin else tenant_key_refusal(account, self.tenant_max_connections)
        )
        if refusal is not None:
            raise Forbidden(refusal)
        await self.get_tenant(account.tenant_id)
        if not caller.is_admin:
            existing = {a.id for a in await self.config.list_accounts(account.tenant_id)}
            if account.id not in existing and len(existing) >= self.tenant_max_accounts:
                raise Forbidden(
                    f"more than {self.tenant_max_accounts} accounts need the admin token "
                    "(delivery.tenant_max_accounts)"
                )
        transport = self._transports.get(account.kind)
        if transport is None:
            raise InvalidInput("kind", f"invalid kind: no transport for {account.kind!r}")
        transport.check(account)
        await self.config.put_account(account)
        self._account_cache.pop(account.tenant_id, None)
        self._wake.set()
        return account

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        await self.get_tenant(tenant_id)
        return await self.config.list_accounts(tenant_id)

    async def delete_account(self, tenant_id: str, account_id: str, *, force: bool = False) -> None:
        """Remove an account. Raises :class:`Conflict` while it has queued messages, unless
        ``force``: then they fail with ``account deleted`` (and are reported)."""
        now = self._clock()

        def fail(message: QueuedMessage) -> Transition:
            return abandon(message, "account deleted", now, self._new_id())

        deleted = await self.config.delete_account(
            tenant_id, account_id, abandon=fail if force else None, now=now
        )
        if not deleted:
            raise NotFound("account", f"{tenant_id}/{account_id}")
        self._account_cache.pop(tenant_id, None)
        if self.events is not None:
            self.events.forget(tenant_id, account_id)

    # --- tenants with their secrets ----------------------------------------------------

    async def create_tenant(
        self, data: Mapping[str, Any], *, key_expires_ts: float | None = None
    ) -> CreatedTenant:
        """Create a tenant (:class:`Conflict` if the id exists) with a new API key and a
        webhook secret (the given one, or a generated one)."""
        tenant = parse_tenant(data)
        if await self.config.get_tenant(tenant.id) is not None:
            raise Conflict(f"tenant {tenant.id} already exists")
        if tenant.webhook_secret is None:
            tenant = msgspec.structs.replace(tenant, webhook_secret=self._new_secret())
        await self.config.put_tenant(tenant)
        self._forget_tenant(tenant.id)
        api_key = await self.rotate_tenant_key(tenant.id, expires_ts=key_expires_ts)
        assert tenant.webhook_secret is not None
        return CreatedTenant(tenant, api_key, tenant.webhook_secret)

    async def update_tenant(
        self, tenant_id: str, changes: Mapping[str, Any], caller: Caller
    ) -> Tenant:
        """Change some fields of a tenant; the others stay. A tenant key may change only
        its tenant's ``name`` (:class:`Forbidden` otherwise, and nothing is applied)."""
        if not isinstance(changes, Mapping):
            raise InvalidInput("body", "invalid body: expected an object")
        if not caller.is_admin and set(changes) - TENANT_EDITABLE_BY_TENANT:
            fields = ", ".join(sorted(set(changes) - TENANT_EDITABLE_BY_TENANT))
            raise Forbidden(f"only the admin may change: {fields}")
        if changes.get("id", tenant_id) != tenant_id:
            raise InvalidInput("id", "invalid id: the id of a tenant cannot change")
        current = await self.get_tenant(tenant_id)
        merged = msgspec.to_builtins(current) | dict(changes)
        if "webhook_secret" in changes:
            # A secret set by hand replaces the rotation too: a leaked one is revoked.
            merged["webhook_secret_previous"] = None
        tenant = parse_tenant(merged)
        await self.config.put_tenant(tenant)
        self._forget_tenant(tenant_id)
        return tenant

    async def rotate_tenant_key(self, tenant_id: str, *, expires_ts: float | None = None) -> str:
        """Give the tenant a new API key (returned once; only its digest is stored); the
        previous key stops working at once."""
        await self.get_tenant(tenant_id)
        if expires_ts is not None and expires_ts <= self._clock():
            raise InvalidInput("expires_at", "invalid expires_at: must be in the future")
        if expires_ts is not None and expires_ts > MAX_TS:
            raise InvalidInput("expires_at", "invalid expires_at: after 9999-12-31")
        key = self._new_secret()
        await self.access.put_tenant_key(TenantKey(tenant_id, key_digest(key), expires_ts))
        return key

    async def rotate_webhook_secret(self, tenant_id: str) -> str:
        """Give the tenant a new webhook secret (returned once); the one it replaces keeps
        signing report calls beside it until :meth:`retire_webhook_secret`."""
        tenant = await self.get_tenant(tenant_id)
        secret = self._new_secret()
        await self.config.put_tenant(rotate_webhook_secret(tenant, secret))
        self._forget_tenant(tenant_id)
        return secret

    async def retire_webhook_secret(self, tenant_id: str) -> None:
        """End a webhook secret rotation: only the current secret signs."""
        tenant = await self.get_tenant(tenant_id)
        await self.config.put_tenant(retire_webhook_secret(tenant))
        self._forget_tenant(tenant_id)

    async def revoke_tenant_key(self, tenant_id: str) -> None:
        await self.get_tenant(tenant_id)
        await self.access.delete_tenant_key(tenant_id)

    async def tenant_of_key(self, api_key: str) -> str | None:
        """The tenant whose unexpired API key this is, or None."""
        found = await self.access.find_tenant_key(key_digest(api_key))
        if found is None or not found.valid_at(self._clock()):
            return None
        return found.tenant_id

    async def once(
        self,
        caller: Caller,
        key: str,
        fingerprint: str,
        produce: Callable[[], Awaitable[tuple[int, bytes]]],
    ) -> tuple[int, bytes]:
        """Run ``produce`` at most once per caller and ``Idempotency-Key``: a repeat with
        the same ``fingerprint`` (of the request body) gets the stored answer; another
        fingerprint is :class:`InvalidInput`; a repeat while the first still runs is
        :class:`Conflict`. An answer that raised is not stored (the key may be retried)."""
        if not 0 < len(key) <= 255 or not key.isprintable():
            raise InvalidInput("Idempotency-Key", "invalid Idempotency-Key: 1..255 printable")
        scope = idempotency_scope(caller)
        start = await self.access.begin_idempotent(
            scope,
            key,
            fingerprint,
            self._clock(),
            ttl_s=IDEMPOTENCY_TTL_S,
            stale_s=IDEMPOTENCY_STALE_S,
            owner=self.worker_id,
        )
        if start.state == "replay":
            return start.status or 200, start.body or b""
        if start.state == "mismatch":
            raise InvalidInput(
                "Idempotency-Key", "Idempotency-Key already used with a different body"
            )
        if start.state == "busy":
            raise Conflict("a request with this Idempotency-Key is still being processed")
        try:
            status, body = await produce()
        except BaseException:
            await self.access.forget_idempotent(scope, key)
            raise
        await self.access.finish_idempotent(scope, key, status, body)
        return status, body

    async def _cached(
        self, cache: dict[str, tuple[float, T]], key: str, load: Callable[[str], Awaitable[T]]
    ) -> T:
        hit = cache.get(key)
        if hit is not None and self._monotonic() - hit[0] < CONFIG_CACHE_S:
            return hit[1]
        value = await load(key)
        cache[key] = (self._monotonic(), value)
        return value

    def _forget_tenant(self, tenant_id: str) -> None:
        """Drop what this process cached of a tenant it has just changed."""
        self._tenant_cache.pop(tenant_id, None)
        self._tenant_list = None

    async def _tenants(self) -> list[Tenant]:
        """Every tenant, as the report loop reads them at each wake: cached like the
        single ones (changes made by another process show within ``CONFIG_CACHE_S``)."""
        hit = self._tenant_list
        if hit is not None and self._monotonic() - hit[0] < CONFIG_CACHE_S:
            return hit[1]
        tenants = await self.config.list_tenants()
        self._tenant_list = (self._monotonic(), tenants)
        return tenants

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        return await self._cached(self._tenant_cache, tenant_id, self.config.get_tenant)

    async def _accounts(self, tenant_id: str) -> list[Account]:
        return await self._cached(self._account_cache, tenant_id, self.config.list_accounts)

    async def _account(self, tenant_id: str, account_id: str | None) -> Account | None:
        accounts = await self._accounts(tenant_id)
        if account_id is not None:
            return next((a for a in accounts if a.id == account_id), None)
        defaults = [a for a in accounts if a.is_default]
        if defaults:
            return defaults[0]
        return accounts[0] if len(accounts) == 1 else None

    # --- accepting messages -------------------------------------------------------------

    async def submit(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tenant_id: str | None = None,
        default_priority: int | str | None = None,
    ) -> SubmitResult:
        """Validate and queue a batch, per the HTTP API (add-messages); return queued and rejected.

        ``tenant_id`` scopes the call: messages may omit their ``tenant_id`` and may not name
        another. Each bad message is rejected with a reason naming the problem while the
        others are queued; the accepted ones are committed in one transaction before this
        returns. A malformed batch (not a list, too long, bad ``default_priority``) raises
        :class:`InvalidInput` and queues nothing.
        """
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInput("messages", "invalid messages: expected a list")
        if len(messages) > self.max_batch:
            raise InvalidInput(
                "messages", f"too many messages: at most {self.max_batch} per request"
            )
        default = (
            DEFAULT_PRIORITY
            if default_priority is None
            else parse_priority(default_priority, "default_priority")
        )
        now = self._clock()
        started = self._monotonic()
        accepted: list[NewMessage] = []
        rejected: list[Rejection] = []
        seen: set[tuple[str, str]] = set()
        for raw in messages:
            raw_id = raw.get("id") if isinstance(raw, Mapping) else None
            try:
                new = await self._prepare(raw, tenant_id, int(default), now)
            except InvalidInput as exc:
                rejected.append(Rejection(raw_id if isinstance(raw_id, str) else "", exc.reason))
                continue
            if (new.tenant_id, new.id) in seen:
                rejected.append(Rejection(new.id, "duplicate id in request"))
                continue
            seen.add((new.tenant_id, new.id))
            accepted.append(new)
        refused = await self.store.enqueue(accepted, now) if accepted else []
        if len(refused) < len(accepted):
            self._wake.set()
        if self.events is not None:
            refused_ids = {r.id for r in refused}
            per_tenant: dict[str, int] = {}
            for new in accepted:
                if new.id not in refused_ids:
                    per_tenant[new.tenant_id] = per_tenant.get(new.tenant_id, 0) + 1
            seconds = self._monotonic() - started
            for tenant, count in per_tenant.items():
                self.events.accepted(tenant, count, seconds)
        return SubmitResult(queued=len(accepted) - len(refused), rejected=rejected + refused)

    async def send(self, message: Mapping[str, Any], *, tenant_id: str | None = None) -> str:
        """Queue one message; return its ``Message-ID``. Raises :class:`InvalidInput` (the
        reason names the field) when it is rejected."""
        result = await self.submit([message], tenant_id=tenant_id)
        if result.rejected:
            raise InvalidInput("message", result.rejected[0].reason)
        stored = await self.store.get_message(
            tenant_id or str(message.get("tenant_id")), str(message["id"])
        )
        assert stored is not None
        return stored.message_id

    async def _prepare(
        self, raw: object, scope_tenant: str | None, default_priority: int, now: float
    ) -> NewMessage:
        spec = parse_message(raw, self.message_limits)
        if scope_tenant is not None and spec.tenant_id not in (None, scope_tenant):
            raise InvalidInput("tenant_id", "invalid tenant_id: another tenant than the caller's")
        tenant_id = spec.tenant_id or scope_tenant
        if tenant_id is None:
            raise InvalidInput("tenant_id", "missing tenant_id")
        tenant = await self._tenant(tenant_id)
        if tenant is None:
            raise InvalidInput("tenant_id", "unknown tenant")
        account = await self._account(tenant_id, spec.account_id)
        if account is None:
            if spec.account_id is None:
                raise InvalidInput("account_id", "no default account")
            raise InvalidInput("account_id", "account not found for tenant")
        for ref in spec.attachments:
            self._check_attachment(tenant, ref)
        status, due_ts = initial_status(spec.deferred_ts, now)
        priority = spec.priority if spec.priority is not None else default_priority
        sender_domain = address_of(spec.from_).rpartition("@")[2]
        message_id = spec.message_id or f"{self._new_id()}@{idna_domain(sender_domain)}"
        return NewMessage(
            tenant_id=tenant_id,
            id=spec.id,
            account_id=account.id,
            priority=priority,
            rank=queue_rank(priority, now, self.aging_s),
            status=status,
            due_ts=due_ts,
            batch_code=spec.batch_code,
            message_id=message_id,
            date_ts=now,
            spec=msgspec.structs.replace(spec, tenant_id=tenant_id, account_id=account.id),
        )

    def _check_attachment(self, tenant: Tenant, ref: AttachmentRef) -> None:
        if ref.fetch_mode == "base64":
            return
        source = self._sources.get(ref.fetch_mode)
        if source is None:
            raise InvalidInput("attachments", f"attachment source not configured: {ref.fetch_mode}")
        source.check(tenant, ref)

    # --- reading and deleting -----------------------------------------------------------

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage:
        message = await self.store.get_message(tenant_id, message_id)
        if message is None:
            raise NotFound("message", message_id)
        return message

    async def message_history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        await self.get_message(tenant_id, message_id)
        return await self.store.history(tenant_id, message_id)

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
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit", "invalid limit: 1..1000")
        # A cursor is a stored sequence number: digits, within a 64-bit integer.
        if cursor is not None and not (
            cursor.isascii() and cursor.isdigit() and int(cursor) < 2**63
        ):
            raise InvalidInput("cursor", "invalid cursor")
        return await self.store.list_messages(
            tenant_id,
            statuses=statuses,
            batch_code=batch_code,
            active_only=active_only,
            limit=limit,
            cursor=cursor,
        )

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        return await self.store.delete_messages(tenant_id, ids)

    async def counts(self, tenant_id: str | None = None) -> dict[Status, int]:
        return await self.store.count_by_status(tenant_id)

    def now(self) -> float:
        """The service's clock, seconds since the epoch (injected in tests)."""
        return self._clock()

    async def recent_throughput(self, minutes: int) -> tuple[int, list[MinuteCount]]:
        """Final outcomes per minute over the last ``minutes`` minutes, the current
        (partial) minute included, and the start of the first of those minutes."""
        first_minute = minute_start(self._clock()) - 60 * (minutes - 1)
        return first_minute, await self.store.finished_per_minute(first_minute)

    async def why(self, tenant_id: str, message_id: str) -> Why | None:
        """Why the message has not gone yet (None once final); see
        :func:`mailproxy.domain.policy.explain`."""
        message = await self.get_message(tenant_id, message_id)
        now = self._clock()
        suspended = suspension_of(await self.store.suspended_batches(tenant_id), message.batch_code)
        pause = await self.store.account_pause(tenant_id, message.account_id)
        ahead = 0
        if message.status in (Status.PENDING, Status.SCHEDULED, Status.DEFERRED):
            ahead = await self.store.count_ahead(message, now)
        return explain(message, now, ahead=ahead, suspended=suspended, pause=pause)

    async def suspend(self, tenant_id: str, batch_code: str | None = None) -> SuspendState:
        """Stop sending the tenant's messages (or one batch's); they stay queued."""
        await self.get_tenant(tenant_id)
        return await self.store.suspend(tenant_id, batch_code, self._clock())

    async def activate(self, tenant_id: str, batch_code: str | None = None) -> SuspendState:
        """Resume a suspended tenant or batch and wake the dispatcher at once. Raises
        :class:`~mailproxy.domain.errors.Conflict` for a batch of a suspended tenant."""
        await self.get_tenant(tenant_id)
        state = await self.store.activate(tenant_id, batch_code, self._clock())
        self._wake.set()
        return state

    async def cleanup(self, tenant_id: str, older_than_s: float | None = None) -> int:
        """Remove the tenant's final messages whose reports are acknowledged and that became
        final more than ``older_than_s`` ago (default: the retention); return how many."""
        age = self.retention_s if older_than_s is None else older_than_s
        if age < 0:
            raise InvalidInput("older_than_seconds", "invalid older_than_seconds: not negative")
        return await self.store.purge_final(tenant_id, self._clock() - age)

    # --- dispatch -----------------------------------------------------------------------

    def run_now(self, tenant_id: str | None = None) -> None:
        """Wake the dispatcher at once, and call the tenant's application (every
        tenant's, without ``tenant_id``) with its reports or a heartbeat."""
        self._wake.set()
        for state_tenant in [tenant_id] if tenant_id is not None else list(self._sync):
            state = self._sync.get(state_tenant, SyncState(tenant_id=state_tenant))
            self._sync[state_tenant] = msgspec.structs.replace(state, forced=True)
        self._report_wake.set()

    async def dispatch_once(self) -> int:
        """Claim what is due now (up to ``max_concurrency``), attempt it, and wait until
        every attempt is settled. Returns how many messages were attempted."""
        claims = await self.store.claim_due(
            now=self._clock(),
            limit=self.max_concurrency,
            owner=self.worker_id,
            lease_s=self.lease_s,
            tenant_limit=self.tenant_concurrency,
        )
        await asyncio.gather(*(self._attempt(claim) for claim in claims))
        return len(claims)

    async def run_until_idle(self) -> int:
        """Dispatch until nothing is due at the current clock; return the attempts made."""
        total = 0
        while attempted := await self.dispatch_once():
            total += attempted
        return total

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._purge_if_due()
            await self._sweep_if_due()
            free = self.max_concurrency - len(self._inflight)
            claimed = 0
            claimed_at = self._clock()
            if free > 0:
                try:
                    claims = await self.store.claim_due(
                        now=claimed_at,
                        limit=free,
                        owner=self.worker_id,
                        lease_s=self.lease_s,
                        tenant_limit=self.tenant_concurrency,
                    )
                except MailProxyError as exc:
                    log.error("dispatch.claim_failed", extra={"error": str(exc)})
                    await self._sleep(1.0)
                    continue
                for claim in claims:
                    task = asyncio.create_task(self._attempt(claim))
                    self._inflight.add(task)
                    task.add_done_callback(self._attempt_done)
                claimed = len(claims)
            if self._stopping or (free > 0 and claimed == free):
                continue
            await self._sleep(await self._idle_timeout(claimed_at))

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _idle_timeout(self, claimed_at: float) -> float | None:
        """How long the loop may sleep: until the next message or pause comes due, or the
        next retention pass. Messages that were due when the loop last claimed but were
        not claimable (their account is busy) wait for an attempt to finish, which wakes
        the loop; one that came due after that claim, even while this is computed, is due
        now (looking only past the current time would miss it until the next sweep)."""
        until_purge = max(0.0, min(self._next_purge, self._next_sweep) - self._monotonic())
        try:
            due = await self.store.next_due_ts(claimed_at)
        except MailProxyError as exc:
            log.error("dispatch.next_due_failed", extra={"error": str(exc)})
            return 1.0
        return until_purge if due is None else min(until_purge, max(0.0, due - self._clock()))

    async def _sleep(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _sweep_period_s(self) -> float:
        return max(1.0, self.lease_s / 2)

    async def _sweep_if_due(self) -> None:
        """Take over expired leases (a process that died or hung mid-send) twice per
        lease period: with several processes on one store, the survivors settle what a
        dead one held."""
        if self._monotonic() < self._next_sweep:
            return
        self._next_sweep = self._monotonic() + self._sweep_period_s()
        try:
            settled = await self._recover(own=False)
        except MailProxyError as exc:
            log.error("dispatch.sweep_failed", extra={"error": str(exc)})
            return
        if settled:
            log.warning("dispatch.expired_leases", extra={"settled": settled})

    async def _purge_if_due(self) -> None:
        if self._monotonic() < self._next_purge:
            return
        self._next_purge = self._monotonic() + self._retention_check_s
        try:
            removed = await self.store.purge_final(None, self._clock() - self.retention_s)
        except MailProxyError as exc:
            log.error("retention.purge_failed", extra={"error": str(exc)})
            return
        if removed:
            log.info("retention.purged", extra={"removed": removed})

    async def _attempt(self, claim: Claim) -> None:
        message = claim.message
        try:
            outcome = await self._try_send(claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "dispatch.unexpected_error",
                extra={"tenant": message.tenant_id, "message_id": message.id},
            )
            outcome = Temporary(f"internal error: {type(exc).__name__}: {exc}")
        if outcome is not None:
            await self._settle(claim, outcome)

    async def _try_send(self, claim: Claim) -> Outcome | None:
        message = claim.message
        account = await self._account(message.tenant_id, message.account_id)
        if account is None:
            return Permanent("account not found for tenant")
        transport = self._transports.get(account.kind)
        if transport is None:
            return Permanent(f"no transport for account kind {account.kind!r}")
        windows = rate_windows(await self._tenant(message.tenant_id), account, self.window_lengths)
        if windows:
            now = self._clock()
            grant = await self.store.reserve_slots(claim.lease, windows, now)
            if grant is None:
                log.warning(
                    "dispatch.lease_lost",
                    extra={"tenant": message.tenant_id, "message_id": message.id},
                )
                return None
            if grant.at_ts > now:
                return RateLimited(
                    grant.at_ts,
                    grant.window or "rate limit",
                    reject=account.limit_behavior == "reject",
                )
        try:
            attachments = await self._attachments(message.tenant_id, message.spec)
            rendered = render(
                message.spec,
                message_id=message.message_id,
                date_ts=message.date_ts,
                attachments=attachments,
            )
        except InvalidInput as exc:
            return Permanent(f"message refused before sending: {exc}")
        except AttachmentUnavailable as exc:
            return Temporary(str(exc)) if exc.temporary else Permanent(str(exc))
        if not await self.store.mark_sending(claim.lease, self._clock()):
            log.warning(
                "dispatch.lease_lost", extra={"tenant": message.tenant_id, "message_id": message.id}
            )
            return None
        started = self._monotonic()
        outcome = await transport.send(
            account, Outgoing(tenant_id=message.tenant_id, id=message.id, rendered=rendered)
        )
        self._smtp_seconds[claim.lease.pk] = self._monotonic() - started
        return outcome

    async def _attachments(self, tenant_id: str, spec: MessageSpec) -> list[AttachmentContent]:
        """The bytes of every attachment of a message, at most
        ``max_attachment_total_bytes`` in all; fetched ones come from the cache when their
        MD5 is known, and are checked against it when they are fetched."""
        contents = []
        total = 0
        for ref in spec.attachments:
            encoded = None
            if ref.fetch_mode == "base64":
                content = decode_inline(ref.storage_path)
            else:
                content = await self._fetched(tenant_id, ref)
                if ref.content_md5:
                    encoded = self._encoded_body((tenant_id, ref.content_md5), content)
            total += len(content)
            if total > self.max_attachment_total_bytes:
                raise AttachmentUnavailable(
                    ref.filename,
                    f"attachments larger than {self.max_attachment_total_bytes} bytes in all",
                    temporary=False,
                )
            contents.append(AttachmentContent(ref.filename, content, ref.mime_type, encoded))
        return contents

    def _encoded_body(self, key: tuple[str, str], content: bytes) -> bytes:
        """The transfer form of a recurring attachment, kept for the next message that
        carries it (base64 of 1 MB costs about 10 ms; the few most recent are kept)."""
        encoded = self._encoded.pop(key, None)
        if encoded is None:
            encoded = encode_body(content)
        self._encoded[key] = encoded
        while len(self._encoded) > ENCODED_BODIES_KEPT:
            self._encoded.pop(next(iter(self._encoded)))
        return encoded

    async def _fetched(self, tenant_id: str, ref: AttachmentRef) -> bytes:
        """An attachment's bytes: from the cache when its MD5 is known, else fetched once
        however many messages ask for the same MD5 at the same time."""
        md5 = ref.content_md5
        cache = self.attachment_cache
        if md5 and cache is not None:
            cached = await cache.get(tenant_id, md5)
            if cached is not None:
                return cached
        if not md5:
            return await self._fetch(tenant_id, ref)
        key = (tenant_id, md5)
        running = self._fetching.get(key)
        if running is None:
            running = asyncio.ensure_future(self._fetch(tenant_id, ref))
            self._fetching[key] = running
            running.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(running)

    async def _fetch(self, tenant_id: str, ref: AttachmentRef) -> bytes:
        tenant = await self._tenant(tenant_id)
        source = self._sources.get(ref.fetch_mode)
        if tenant is None or source is None:
            raise AttachmentUnavailable(
                ref.filename, f"no source for {ref.fetch_mode}", temporary=False
            )
        share = self._tenant_fetch_slots.get(tenant_id)
        if share is None:
            share = self._tenant_fetch_slots[tenant_id] = asyncio.Semaphore(
                self._tenant_fetch_share
            )
        async with share, self._fetch_slots:
            content = await source.fetch(tenant, ref)
        if ref.content_md5:
            if hashlib.md5(content, usedforsecurity=False).hexdigest() != ref.content_md5:
                raise AttachmentUnavailable(
                    ref.filename, "content does not match its MD5", temporary=False
                )
            if self.attachment_cache is not None:
                await self.attachment_cache.put(tenant_id, ref.content_md5, content)
        return content

    async def _settle(self, claim: Claim, outcome: Outcome) -> None:
        message = claim.message
        tenant = await self._tenant(message.tenant_id)
        policy = (tenant.unknown_policy if tenant else None) or self.unknown_policy
        now = self._clock()
        transition = decide(
            message,
            outcome,
            now=now,
            policy=self.retry_policy,
            unknown_policy=policy,
            jitter_sample=self._random_unit() * 2.0 - 1.0,
            event_id=self._new_id(),
            pause=claim.pause,
        )
        # Only an attempt that reached the transport can outlive its account; a rate
        # deferral (frequent under limits) saves the read.
        retried = not is_final(transition.status) and not isinstance(outcome, RateLimited)
        if retried and await self._account_gone(message):
            transition = orphaned(message, transition, now, self._new_id())
        try:
            applied = await self.store.complete(claim.lease, transition, now)
        except StorageError as exc:
            log.error(
                "dispatch.complete_failed",
                extra={"tenant": message.tenant_id, "message_id": message.id, "error": str(exc)},
            )
            return
        smtp_seconds = self._smtp_seconds.pop(claim.lease.pk, None)
        if not applied:
            log.warning(
                "dispatch.lease_lost", extra={"tenant": message.tenant_id, "message_id": message.id}
            )
            return
        self._record(message, outcome, transition, smtp_seconds, now)
        if transition.events:
            self._report_wake.set()
        if transition.status is not Status.SENT and transition.status is not Status.ERROR:
            self._wake.set()  # a retry may be due earlier than the current timer

    async def _account_gone(self, message: QueuedMessage) -> bool:
        """Whether the message's account was deleted (read from the store, not the cache:
        a deletion while the attempt ran must be seen)."""
        try:
            account = await self.config.get_account(message.tenant_id, message.account_id)
        except MailProxyError:
            return False  # a store that cannot be read now will not take the completion either
        return account is None

    # --- delivery reports ---------------------------------------------------------------

    async def sync_status(self) -> list[tuple[Tenant, SyncState, ReportBacklog, float | None]]:
        """Per tenant: its report-call state in this process, its unacknowledged events,
        and when its next call is due (None without a callback URL)."""
        rows = []
        backlogs = await self.outbox.report_backlogs()
        for tenant in await self.config.list_tenants():
            backlog = backlogs.get(tenant.id, ReportBacklog(0, None))
            state = self._sync.get(tenant.id, SyncState(tenant_id=tenant.id))
            due = (
                next_call_ts(state, backlog.count > 0, self.sync_interval_s)
                if tenant.client_base_url
                else None
            )
            rows.append((tenant, state, backlog, due))
        return rows

    async def report_once(self) -> int:
        """Make every report call that is due now and wait for them; return how many
        calls were made (deterministic tests drive reports with this)."""
        tenants, _ = await self._due_report_tenants(self._clock())
        await asyncio.gather(*(self._report_tenant(t) for t in tenants))
        return len(tenants)

    async def _due_report_tenants(self, now: float) -> tuple[list[Tenant], float | None]:
        """In one pass over the tenants with a callback URL that are not being called:
        those due now, and in how many seconds the next of the others is (None: none)."""
        due: list[Tenant] = []
        soonest: float | None = None
        with_reports = await self.outbox.tenants_with_pending_reports()
        for tenant in await self._tenants():
            if not tenant.client_base_url or tenant.id in self._reporting:
                continue
            state = self._sync.setdefault(tenant.id, SyncState(tenant_id=tenant.id))
            at = next_call_ts(state, tenant.id in with_reports, self.sync_interval_s)
            if at <= now:
                due.append(tenant)
            else:
                soonest = at if soonest is None else min(soonest, at)
        return due, None if soonest is None else soonest - now

    async def _report_loop(self) -> None:
        while not self._stopping:
            self._report_wake.clear()
            try:
                due, due_in = await self._due_report_tenants(self._clock())
                for tenant in due:
                    task = asyncio.create_task(self._report_tenant(tenant))
                    self._reporting[tenant.id] = task
                    task.add_done_callback(functools.partial(self._report_done, tenant.id))
                timeout = REPORT_POLL_S if due_in is None else min(REPORT_POLL_S, due_in)
            except MailProxyError as exc:
                log.error("report.loop_failed", extra={"error": str(exc)})
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._report_wake.wait()
            if self._report_wake.is_set() and self.report_gather_s > 0 and not self._stopping:
                await asyncio.sleep(self.report_gather_s)

    def _report_done(self, tenant_id: str, _task: asyncio.Task[None]) -> None:
        self._reporting.pop(tenant_id, None)
        self._report_wake.set()

    async def _report_tenant(self, tenant: Tenant) -> None:
        """Call the tenant's application until it has nothing more to take now: a full
        batch or ``queued > 0`` calls again at once; a failure backs off."""
        assert self.reporter is not None
        try:
            await self._report_tenant_leased(tenant)
        finally:
            with contextlib.suppress(MailProxyError):
                await self.outbox.release_reports(tenant.id, self.worker_id)

    async def _report_tenant_leased(self, tenant: Tenant) -> None:
        assert self.reporter is not None
        while not self._stopping:
            try:
                # One process at a time calls a tenant's application; the lease is taken,
                # or renewed, before every read and call (the loop only starts tenants
                # that are due, so a lease is rarely taken for nothing).
                if not await self.outbox.lease_reports(
                    tenant.id, self.worker_id, self._clock(), self.report_lease_s
                ):
                    return
                stored = await self.outbox.pending_reports(tenant.id, self.report_batch)
            except MailProxyError as exc:
                log.error("report.read_failed", extra={"tenant": tenant.id, "error": str(exc)})
                return
            state = self._sync.get(tenant.id, SyncState(tenant_id=tenant.id))
            if next_call_ts(state, bool(stored), self.sync_interval_s) > self._clock():
                return
            events = [r.event for r in stored]
            answer = await self._in_report_slot(self.reporter.post(tenant, events))
            now = self._clock()
            self._sync[tenant.id] = after_call(
                state,
                acknowledged=answer.acknowledged,
                error=answer.error,
                next_sync_after=answer.next_sync_after,
                now=now,
                retry_max_delay_s=self.report_retry_max_s,
            )
            if not answer.acknowledged:
                log.warning(
                    "report.failed",
                    extra={"tenant": tenant.id, "entries": len(events), "error": answer.error},
                )
                return
            if events:
                try:
                    await self.outbox.acknowledge_reports(
                        tenant.id, [e.event_id for e in events], now
                    )
                except MailProxyError as exc:
                    log.error("report.ack_failed", extra={"tenant": tenant.id, "error": str(exc)})
                    return
            log.info("report.sent", extra={"tenant": tenant.id, "entries": len(events)})
            if len(events) < self.report_batch and answer.queued <= 0:
                return

    async def _in_report_slot(self, call: Awaitable[T]) -> T:
        """Run one report call in one of the ``report_concurrency`` slots; a call still
        running after ``report_slot_hold_s`` gives its slot up and goes on beside them
        (it ends within the sender's own deadline), so applications that answer slowly
        never hold back the others' calls by more than that."""
        await self._report_slots.acquire()
        running = asyncio.ensure_future(call)
        holding = True
        try:
            await asyncio.wait({running}, timeout=self.report_slot_hold_s)
            self._report_slots.release()
            holding = False
            return await running
        except asyncio.CancelledError:
            running.cancel()
            await asyncio.wait({running})
            raise
        finally:
            if holding:
                self._report_slots.release()

    def _record(
        self,
        message: QueuedMessage,
        outcome: Outcome,
        transition: Transition,
        smtp_seconds: float | None,
        now: float,
    ) -> None:
        """One log line per attempt (``delivery.<result>``) and the metrics."""
        result: AttemptResult
        if transition.status is Status.SENT:
            result = "sent"
        elif transition.status is Status.ERROR:
            result = "error"
        elif isinstance(outcome, Unknown):
            result = "unknown"
        elif isinstance(outcome, RateLimited):
            result = "rate_limited"
        else:
            result = "deferred"
        final = transition.status in (Status.SENT, Status.ERROR, Status.UNKNOWN)
        log.info(
            f"delivery.{result}",
            extra={
                "tenant": message.tenant_id,
                "account": message.account_id,
                "message_id": message.id,
                "attempt": transition.attempts,
                "smtp_code": transition.smtp_code,
                "ms": None if smtp_seconds is None else round(smtp_seconds * 1000, 1),
                "error": transition.error if result != "sent" else None,
                "next_attempt_ts": None if final else int(transition.due_ts),
            },
        )
        if self.events is None:
            return
        if result == "sent":
            self.events.delivered(message.tenant_id, message.account_id, now - message.created_ts)
        self.events.attempted(message.tenant_id, message.account_id, result, smtp_seconds)

    async def _stop_reporting(self) -> None:
        self._report_wake.set()
        if self._report_loop_task is not None:
            await self._report_loop_task
            self._report_loop_task = None
        if self._reporting:
            await asyncio.wait(list(self._reporting.values()), timeout=self._shutdown_grace_s)
        if self.reporter is not None:
            await self.reporter.close()
