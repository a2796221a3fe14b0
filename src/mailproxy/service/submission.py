"""Accepting messages: validation against the tenant's configuration, then one enqueue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.lifecycle import initial_status
from mailproxy.domain.model import (
    DEFAULT_PRIORITY,
    NewMessage,
    RawAccepted,
    Rejection,
    Status,
    SubmitResult,
)
from mailproxy.domain.policy import queue_rank
from mailproxy.domain.submitted import completed, envelope_fields, read_submitted
from mailproxy.domain.validation import (
    MESSAGE_ID,
    MessageLimits,
    address_of,
    idna_domain,
    parse_message,
    parse_priority,
)
from mailproxy.ports.observability import DeliveryEvents
from mailproxy.ports.store import MessageStore
from mailproxy.service.attachments import AttachmentFetcher
from mailproxy.service.config_cache import ConfigCache
from mailproxy.service.options import DeliveryOptions, LimitsOptions
from mailproxy.service.send_windows import opening_after, windows_of


class _Coalesced:
    """Messages queued one at a time (SMTP submissions, each waiting for its commit)
    that arrive while the store is busy are stored together: one enqueue, one
    transaction, for all that wait. Each caller gets its own message's refusal, or the
    store's error. Two with the same id never share an enqueue (the second waits for the
    next), so each answer is the one it would have got alone."""

    def __init__(
        self,
        store: MessageStore,
        clock: Callable[[], float],
        claimable_at: Callable[[float | None], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._claimable_at = claimable_at
        self._waiting: list[tuple[NewMessage, asyncio.Future[Rejection | None]]] = []
        self._storing: asyncio.Task[None] | None = None

    async def enqueue(self, new: NewMessage) -> Rejection | None:
        """Store ``new``; its refusal (the id already sent or in flight), or None."""
        answer: asyncio.Future[Rejection | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, answer))
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store_waiting())
        return await answer

    async def _store_waiting(self) -> None:
        while self._waiting:
            batch: dict[str, tuple[NewMessage, asyncio.Future[Rejection | None]]] = {}
            later = []
            for waiting in self._waiting:
                if waiting[0].id in batch:
                    later.append(waiting)
                else:
                    batch[waiting[0].id] = waiting
            self._waiting = later
            try:
                enqueued = await self._store.enqueue(
                    [new for new, _ in batch.values()], self._clock()
                )
            except asyncio.CancelledError:
                for _, answer in batch.values():
                    answer.cancel()
                raise
            except Exception as exc:
                # Nothing of the batch was stored: each caller gets the error (an SMTP
                # client, which keeps its message on a 4xx, tries again).
                for _, answer in batch.values():
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            refused = {rejection.id: rejection for rejection in enqueued.refused}
            for message_id, (_, answer) in batch.items():
                if not answer.done():
                    answer.set_result(refused.get(message_id))
            self._claimable_at(enqueued.next_due_ts)


class Submission:
    """Validates and queues batches of messages."""

    def __init__(
        self,
        *,
        store: MessageStore,
        config_cache: ConfigCache,
        attachments: AttachmentFetcher,
        events: DeliveryEvents | None,
        limits: LimitsOptions,
        delivery: DeliveryOptions,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        new_id: Callable[[], str],
        claimable_at: Callable[[float | None], None],
    ) -> None:
        self._store = store
        self._config_cache = config_cache
        self._attachments = attachments
        self._events = events
        self._limits = limits
        self._delivery = delivery
        self._clock = clock
        self._monotonic = monotonic
        self._new_id = new_id
        self._claimable_at = claimable_at
        self._one_at_a_time = _Coalesced(store, clock, claimable_at)

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
        if len(messages) > self._limits.max_batch:
            raise InvalidInput(
                "messages", f"too many messages: at most {self._limits.max_batch} per request"
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
        refused: list[Rejection] = []
        if accepted:
            enqueued = await self._store.enqueue(accepted, now)
            refused = enqueued.refused
            self._claimable_at(enqueued.next_due_ts)
        self._count_accepted(accepted, refused, started)
        return SubmitResult(queued=len(accepted) - len(refused), rejected=rejected + refused)

    async def send(self, message: Mapping[str, Any], *, tenant_id: str | None = None) -> str:
        """Queue one message; return its ``Message-ID``. Raises :class:`InvalidInput` (the
        reason names the field) when it is rejected."""
        result = await self.submit([message], tenant_id=tenant_id)
        if result.rejected:
            raise InvalidInput("message", result.rejected[0].reason)
        stored = await self._store.get_message(
            tenant_id or str(message.get("tenant_id")), str(message["id"])
        )
        assert stored is not None
        return stored.message_id

    async def submit_raw(
        self,
        raw: bytes,
        *,
        tenant_id: str,
        account_id: str | None,
        mail_from: str,
        recipients: Sequence[str],
        max_recipients: int | None = None,
    ) -> RawAccepted:
        """Queue one message submitted as it is (SMTP submission): the envelope decides
        sender and recipients, the control fields (``X-Mail-Proxy-*``) what the REST
        fields decide, and the bytes go out as they came (``domain.submitted``). Returns
        once committed. ``max_recipients`` replaces the REST limit (the SMTP listener
        has its own, enforced at RCPT). Raises :class:`InvalidInput` (a malformed control
        field or envelope address, an unknown account, an id already sent or in flight)."""
        mail = read_submitted(raw)
        data: dict[str, Any] = {
            "id": self._new_id(), **mail.fields, **envelope_fields(mail_from, recipients),
            "subject": "",
        }  # fmt: skip
        if account_id is not None:
            data["account_id"] = account_id
        if mail.message_id is not None and MESSAGE_ID.fullmatch(mail.message_id.strip("<> ")):
            data["message_id"] = mail.message_id
        now = self._clock()
        started = self._monotonic()
        limits = self._limits.message_limits
        if max_recipients is not None:
            limits = msgspec.structs.replace(limits, max_recipients=max_recipients)
        new = await self._prepare(data, tenant_id, int(DEFAULT_PRIORITY), now, limits)
        content = completed(mail, message_id=new.message_id, date_ts=now)
        spec = msgspec.structs.replace(new.spec, raw=content, subject=mail.subject[:998])
        new = msgspec.structs.replace(new, spec=spec)
        refused = await self._one_at_a_time.enqueue(new)
        if refused is not None:
            raise InvalidInput("X-Mail-Proxy-Id", f"{new.id}: {refused.reason}")
        self._count_accepted([new], [], started)
        return RawAccepted(id=new.id, message_id=new.message_id)

    def _count_accepted(
        self, accepted: list[NewMessage], refused: list[Rejection], started: float
    ) -> None:
        if self._events is None:
            return
        seconds = self._monotonic() - started
        refused_ids = {r.id for r in refused}
        per_tenant: dict[str, int] = {}
        for new in accepted:
            if new.id not in refused_ids:
                per_tenant[new.tenant_id] = per_tenant.get(new.tenant_id, 0) + 1
        for tenant, count in per_tenant.items():
            self._events.accepted(tenant, count, seconds)

    async def _prepare(
        self,
        raw: object,
        scope_tenant: str | None,
        default_priority: int,
        now: float,
        limits: MessageLimits | None = None,
    ) -> NewMessage:
        spec = parse_message(raw, limits or self._limits.message_limits)
        if scope_tenant is not None and spec.tenant_id not in (None, scope_tenant):
            raise InvalidInput(
                "tenant_id",
                f"invalid tenant_id: {spec.tenant_id} is not the request's tenant {scope_tenant}",
            )
        tenant_id = spec.tenant_id or scope_tenant
        if tenant_id is None:
            raise InvalidInput("tenant_id", "missing tenant_id")
        tenant = await self._config_cache.tenant(tenant_id)
        if tenant is None:
            raise InvalidInput("tenant_id", f"unknown tenant: {tenant_id}")
        account = await self._config_cache.account(tenant_id, spec.account_id)
        if account is None:
            if spec.account_id is None:
                raise InvalidInput(
                    "account_id",
                    f"no default account for tenant {tenant_id}: give account_id, or make "
                    "one account is_default",
                )
            raise InvalidInput(
                "account_id", f"account not found for tenant {tenant_id}: {spec.account_id}"
            )
        for ref in spec.attachments:
            self._attachments.check(tenant, ref)
        status, due_ts = initial_status(spec.deferred_ts, now)
        priority = spec.priority if spec.priority is not None else default_priority
        # Outside its send window, a message waits for the window's opening (checked
        # again before each attempt: a retry may fall outside it too).
        opens = opening_after(windows_of(tenant, account), priority, due_ts)
        wait_reason = None
        if opens is not None:
            status, due_ts, wait_reason = Status.SCHEDULED, opens, "send_window"
        sender_domain = address_of(spec.from_).rpartition("@")[2]
        message_id = spec.message_id or f"{self._new_id()}@{idna_domain(sender_domain)}"
        return NewMessage(
            tenant_id=tenant_id,
            id=spec.id,
            account_id=account.id,
            priority=priority,
            rank=queue_rank(priority, now, self._delivery.aging_s),
            status=status,
            due_ts=due_ts,
            batch_code=spec.batch_code,
            message_id=message_id,
            date_ts=now,
            spec=msgspec.structs.replace(spec, tenant_id=tenant_id, account_id=account.id),
            wait_reason=wait_reason,
        )
