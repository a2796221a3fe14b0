"""The storage port: :class:`Store`, in five sections — the message queue
(:class:`MessageStore`), the configuration (:class:`ConfigStore`), the report outbox
(:class:`ReportOutbox`), access (:class:`AccessStore`) and bounces (:class:`BounceStore`).

A store is one object on one database: a state change and its report event commit in one
transaction, and deleting a tenant removes its accounts, messages, events and keys
together. The sections are Protocols of their own only so that a collaborator can ask for
the part it uses (the sealing decorators in ``adapters/sealed.py`` wrap the configuration
and access sections). Contract suites: ``tests/contract/test_message_store.py``,
``test_queue_policy_store.py``, ``test_config_store.py``, ``test_report_outbox.py``,
``test_access_store.py``, ``test_bounce_store.py``, ``test_store_follows_the_domain.py``,
all run over every store.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from mailproxy.domain.access import IdempotentStart, TenantKey
from mailproxy.domain.bounces import (
    BounceRecord,
    MailboxEntry,
    MailboxOutcome,
    Suppression,
    SuppressionPage,
    SuppressionReason,
    UnparsedReport,
)
from mailproxy.domain.model import (
    Account,
    AccountPause,
    Claim,
    DeleteResult,
    Enqueued,
    HistoryEntry,
    Lease,
    MessagePage,
    MinuteCount,
    NewMessage,
    QueuedMessage,
    ReportBacklog,
    Status,
    StoredReport,
    SuspendState,
    Tenant,
    Transition,
)
from mailproxy.domain.policy import RateWindow, SlotGrant


class MessageStore(Protocol):
    """The durable queue of messages.

    Every method that returns has committed its writes (accepted = on disk for durable
    adapters). Writes after a claim are fenced by the lease token: a worker that lost its
    lease changes nothing. Storage failures raise ``StorageError`` and apply nothing.
    """

    async def open(self) -> None:
        """Connect and bring the schema to the current version. Idempotent."""

    async def close(self) -> None:
        """Release connections; pending writes are committed first. Idempotent."""

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> Enqueued:
        """Store ``messages`` in one transaction; return the ones refused and the earliest
        due time of the stored ones a claim may take when it comes (not suspended; see
        :func:`mailproxy.domain.model.earliest_claimable`).

        Upsert rules (HTTP API): an id not yet in the tenant is inserted; one that exists and
        is not yet sent (``pending``, ``scheduled``, ``deferred``, ``suspended``,
        ``error``) is replaced — new content, attempts reset, new acceptance order; one
        already ``sent`` is refused with reason ``"already sent"``; one ``sending`` or
        ``unknown`` with ``"in flight"``. Each accepted message gets the next acceptance
        sequence number, in input order. A ``queued`` history entry is written.
        """

    async def claim_due(
        self, *, now: float, limit: int, owner: str, lease_s: float,
        tenant_limit: int | None = None,
    ) -> list[Claim]:  # fmt: skip
        """Atomically lease up to ``limit`` due messages and return them.

        Due: status ``pending``, ``scheduled`` or ``deferred`` with ``due_ts <= now``, of an
        existing account. Per account, at most :func:`mailproxy.domain.policy.account_room`
        messages (two per connection of ``max_connections``, minus those ``owner``
        holds; none while the account is paused; one probe once the pause ends), taken in
        :func:`mailproxy.domain.policy.queue_order`; across accounts and tenants,
        :func:`mailproxy.domain.policy.fair_order`, with at most ``tenant_limit``
        messages per tenant held by ``owner`` after the claim (None: no limit; see
        :func:`mailproxy.domain.policy.held_by_tenant`). Claimed messages become ``sending``
        with ``lease_owner=owner``, a fresh token and ``lease_expires_ts = now + lease_s``;
        no message is ever held by two live leases. Each claim carries its account's pause.
        """

    async def reserve_slots(
        self, lease: Lease, windows: Sequence[RateWindow], now: float
    ) -> SlotGrant | None:
        """Atomically reserve one send in every window for the leased message.

        If the message holds a reservation still in the future, that one is returned.
        Without one, the grant is :func:`mailproxy.domain.policy.grant_slot` over the
        reservations of each window key (sends made, and future slots held by waiting
        messages): ``at_ts <= now`` means send now; later means the message now holds that
        future slot and should wait for it. When the slot it waited for has come, it is
        checked again, against the reservations up to ``now`` only (the sends since;
        future slots of other waiting messages are theirs to check): sends that were in
        flight when it was granted count from when they ended (see
        ``Transition.slots``), which may be later than assumed then. None if the lease is
        lost. :meth:`complete` consumes, keeps or releases the reservation per the
        transition.
        """

    async def mark_sending(self, lease: Lease, now: float) -> bool:
        """Record that the attempt starts (before MAIL FROM). False if the lease is lost."""

    async def complete(self, lease: Lease, transition: Transition, now: float) -> bool:
        """Apply ``transition`` with its report events and history entry in one
        transaction and clear the lease: its rate reservation per ``transition.slots``, its
        account's pause per ``transition.pause`` / ``clear_pause``, its ``bounces`` as
        :meth:`BounceStore.record_mailbox_entry` applies records (kept, suppressions); a
        message going back to the queue while its tenant or batch is suspended becomes
        ``suspended``. False (and nothing written) if the lease is lost.
        """

    async def release(self, lease: Lease, now: float) -> bool:
        """Give back a claim whose attempt never started: the message is due again with its
        previous state; nothing is counted. False if the lease is lost."""

    async def recover(
        self, *, owner: str, now: float, lease_s: float, own: bool = True
    ) -> list[Claim]:
        """Take back expired leases, and with ``own`` those held by ``owner`` (a restarted
        process; a live process sweeps with ``own=False``, its own leases being in flight).

        Claimed-but-not-started messages are re-queued as they were. Messages whose attempt
        had started (``mark_sending``) are returned, re-leased to ``owner``, so the caller
        can settle them as ``unknown`` through :meth:`complete`. Two processes recovering
        at once never take the same message.
        """

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage | None:
        """The message with the client id ``message_id`` in ``tenant_id``, or None."""

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
        """A page of the tenant's messages in acceptance order, filtered; ``next_cursor``
        continues after the last one (None when there is no more)."""

    async def history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        """The message's history, oldest first (empty for an unknown message)."""

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        """Remove the messages with their history and unsent report events, except those
        ``sending`` right now (listed in ``in_flight``). Ids not in the tenant are
        ``not_found``."""

    async def next_due_ts(self, after: float) -> float | None:
        """The earliest instant later than ``after`` at which a queued message becomes due
        or an account pause ends; None when there is none."""

    async def count_ahead(self, message: QueuedMessage, now: float) -> int:
        """How many due messages of the same account go before ``message`` in queue order."""

    async def account_pause(self, tenant_id: str, account_id: str) -> AccountPause | None:
        """The account's pause (circuit breaker), if it has one."""

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        """The tenant's suspensions: ``"*"`` for the whole tenant, or batch codes."""

    async def suspend(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        """Suspend the tenant (``batch_code`` None) or one batch. Queued messages of the
        scope become ``suspended`` and are never claimed; messages accepted later in the
        scope are stored ``suspended``. Idempotent; a batch while the whole tenant is
        suspended is a no-op. ``pending_messages`` counts the scope's not-final messages."""

    async def activate(self, tenant_id: str, batch_code: str | None, now: float) -> SuspendState:
        """Lift a suspension: its messages go back to the queue as they were (pending,
        scheduled or deferred), unless another suspension still holds them. Activating a
        batch while the whole tenant is suspended raises ``Conflict``. Idempotent."""

    async def purge_final(self, tenant_id: str | None, final_before_ts: float) -> int:
        """Remove final messages that became final before ``final_before_ts`` and whose
        report events are all acknowledged, with their history, events and bounce records;
        return how many. A message with an unacknowledged event is never removed."""

    async def count_by_status(self, tenant_id: str | None = None) -> dict[Status, int]:
        """Stored message counts per status (of one tenant, or of all)."""

    async def oldest_not_final(self) -> dict[str, float]:
        """Per tenant that has messages not yet final, the ``created_ts`` of the oldest of
        them, in one read (``/metrics`` shows every tenant's at each scrape)."""

    async def finished_per_minute(self, since_ts: float) -> list[MinuteCount]:
        """Messages that reached a final status (sent, error, unknown) at or after
        ``since_ts``, counted per minute of their final time, tenant and status; ordered
        by minute, tenant, status; minutes with none are absent. Messages purged since
        are not counted. The cost follows the number of messages in the window, not the
        size of the store."""


class ConfigStore(Protocol):
    """Tenants and their accounts. Accounts are keyed by (tenant_id, id): two tenants'
    accounts with the same id are distinct. Contract: ``tests/contract/test_config_store.py``.
    """

    async def put_tenant(self, tenant: Tenant) -> None:
        """Create or replace the tenant."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]:
        """All tenants ordered by id."""

    async def delete_tenant(self, tenant_id: str) -> bool:
        """Remove the tenant with its accounts, messages, history, report events, bounce
        records and suppression list. False if there was no such tenant."""

    async def put_account(self, account: Account) -> None:
        """Create or replace the account. When ``is_default`` is set, the tenant's other
        accounts stop being the default, in the same transaction."""

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None: ...

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        """The tenant's accounts ordered by id."""

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        force: bool = False,
        now: float = 0.0,
        deletion_id: str = "",
    ) -> bool:
        """Remove the account; False if there was no such account.

        While the account has waiting messages (queued or suspended), this raises
        ``Conflict`` (``domain.lifecycle.account_deletion_refusal``) — unless ``force``:
        then each waiting message gets the transition
        ``domain.lifecycle.abandoned_with_account(message, now, deletion_id)`` (with its
        report events and history, as :meth:`MessageStore.complete` applies them) in the
        same transaction as the removal. Messages being sent finish their attempt.
        """


class ReportOutbox(Protocol):
    """Report events written by :meth:`MessageStore.complete` in the same transaction as
    the state change. Contract: ``tests/contract/test_report_outbox.py``."""

    async def pending_reports(self, tenant_id: str, limit: int) -> list[StoredReport]:
        """Up to ``limit`` unacknowledged events of the tenant, oldest first."""

    async def tenants_with_pending_reports(self) -> set[str]:
        """The tenants that have unacknowledged events, in one read (the report loop
        asks at every wake-up, for every tenant)."""

    async def acknowledge_reports(
        self, tenant_id: str, event_ids: Sequence[str], now: float
    ) -> int:
        """Mark those events of the tenant acknowledged; return how many changed."""

    async def report_backlog(self, tenant_id: str) -> ReportBacklog:
        """How many of the tenant's events are unacknowledged, and when the oldest of them
        was written (None when there is none)."""

    async def report_backlogs(self) -> dict[str, ReportBacklog]:
        """:meth:`report_backlog` of every tenant that has unacknowledged events, in one
        read (``/metrics`` and the sync status show every tenant's)."""

    async def lease_reports(self, tenant_id: str, owner: str, now: float, lease_s: float) -> bool:
        """Take or renew the right to deliver the tenant's events until ``now + lease_s``:
        True unless another owner holds it unexpired. With several processes on one
        store, one calls a tenant's application at a time."""

    async def release_reports(self, tenant_id: str, owner: str) -> None:
        """Give the right back (nothing if ``owner`` does not hold it)."""


class AccessStore(Protocol):
    """Tenant API keys (digests only) and idempotency records of add-messages.
    Contract: ``tests/contract/test_access_store.py``."""

    async def put_tenant_key(self, key: TenantKey) -> None:
        """Set the tenant's key, replacing its previous one (which stops working at once)."""

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        """The key with this digest, expired or not; None if no tenant has it."""

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        """Revoke the tenant's key; False if it had none. Deleting a tenant does this too."""

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
        """Start a request with an ``Idempotency-Key`` (scoped per caller), on behalf of
        the worker ``owner``.

        A record older than ``ttl_s`` is forgotten. A finished record with the same
        ``fingerprint`` is a ``replay``, another fingerprint a ``mismatch``; an unfinished
        one is ``busy`` until it is ``stale_s`` old (its request died), after which the key
        starts afresh. Otherwise a new unfinished record is written and ``new`` returned.
        """

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        """Store the answer of the request started with this key."""

    async def forget_idempotent(self, scope: str, key: str) -> None:
        """Drop an unfinished record (the request failed before it changed anything)."""

    async def release_idempotent(self, owner: str) -> int:
        """Drop every unfinished record ``owner`` started, finished ones untouched; return
        how many. A worker calls it when it starts: the requests it was running died with
        its previous process, and their keys may be retried at once."""


class BounceStore(Protocol):
    """Bounces, complaints, the suppression list and the bounce mailboxes' progress.
    Contract: ``tests/contract/test_bounce_store.py``.

    Addresses are compared by :func:`mailproxy.domain.bounces.address_key`; an entry
    whose ``expires_ts`` has passed counts as absent everywhere.
    """

    async def instance_secret(self, name: str, candidate: str) -> str:
        """The database's secret ``name``: the one stored, or ``candidate``, stored now
        (the first process to ask decides; every process sharing the database gets the
        same value)."""

    async def message_by_pk(self, pk: int) -> QueuedMessage | None:
        """The stored message with that store key, or None (never existed, or purged)."""

    async def bounces_of(
        self, tenant_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[BounceRecord]]:
        """The bounces, complaints and delays kept with each of the tenant's messages
        ``message_ids``, oldest first, by message id; a message with none (or no such
        message) has no key. One read for a page of messages."""

    async def mailbox_seen(
        self, mailbox: str, uidvalidity: int, uids: Sequence[int]
    ) -> dict[int, MailboxOutcome]:
        """The outcome of those of ``uids`` that have an entry already
        (:meth:`record_mailbox_entry`)."""

    async def record_mailbox_entry(self, entry: MailboxEntry, now: float) -> bool:
        """Commit ``entry`` in one transaction: its key (mailbox, UIDVALIDITY, UID) and,
        when ``applied``, its records (kept with the message), its report events and the
        suppressions they bring: per record, :func:`mailproxy.domain.bounces.
        suppression_after` with the address's soft bounces within the tenant's window
        (this one included), merged into any entry the address has
        (:func:`~mailproxy.domain.bounces.merged`). False, and nothing written, when the
        key has an entry already: a message is applied once, however often it is read.
        An entry with a PEC receipt (``entry.pec``) also keeps the receipt's mark with
        its message (:func:`mailproxy.domain.pec.receipt_mark`; the same mark once),
        whether or not the message's wait has begun yet.
        """

    async def message_by_message_id(
        self, tenant_id: str, account_id: str, message_id: str
    ) -> QueuedMessage | None:
        """The newest of the account's messages whose Message-ID is ``message_id``
        (without angle brackets), or None: how a PEC receipt finds its message."""

    async def expire_pec_watches(self, now: float, limit: int) -> int:
        """For up to ``limit`` messages sent by a PEC account (``Transition.pec_watch``)
        with a deadline passed, in one transaction: :func:`mailproxy.domain.pec.overdue`
        over the marks its receipts left says whether to add a ``pec_timeout`` report
        entry (:func:`mailproxy.domain.report_events.pec_timeout_event`) and whether to stop
        waiting (the marks go too) or only for the acceptance. Processes sharing the
        store never
        report one timeout twice. Returns how many were reported."""

    async def unparsed_reports(self, tenant_id: str | None, limit: int) -> list[UnparsedReport]:
        """The latest entries with outcome ``unparsed`` (of the tenant's mailboxes, or of
        every mailbox for None), newest first."""

    async def suppressed_among(
        self, tenant_id: str, addresses: Sequence[str], now: float
    ) -> set[str]:
        """Those of ``addresses`` (as given) that the tenant suppresses at ``now``: one
        indexed read, whatever the size of the list."""

    async def add_suppressions(self, entries: Sequence[Suppression], now: float) -> int:
        """Add the entries, each merged into the address's existing one
        (:func:`mailproxy.domain.bounces.merged`), the tenant's addresses locked against
        concurrent additions; return how many were added or changed."""

    async def remove_suppression(self, tenant_id: str, address: str, now: float) -> bool:
        """Remove the address's entry; False when it had none (or an expired one)."""

    async def list_suppressions(
        self,
        tenant_id: str,
        *,
        now: float,
        reason: SuppressionReason | None = None,
        q: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SuppressionPage:
        """A page of the tenant's live entries ordered by address key, filtered by reason
        and by ``q`` (a substring of the address, case-insensitive); ``next_cursor``
        continues after the last one."""

    async def count_suppressions(self, now: float) -> dict[str, int]:
        """Live entries per tenant (tenants with none are absent), in one read."""


class Store(MessageStore, ConfigStore, ReportOutbox, AccessStore, BounceStore, Protocol):
    """Every section on one database: what each shipped store implements (``MemoryStore``,
    ``SqliteStore``, ``PostgresStore``). A store that also implements
    :class:`mailproxy.ports.changes.ChangeFeed` tells other processes of the work it makes."""
