"""Read models: messages, their history and why they wait, counts and throughput."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypedDict, Unpack

import msgspec

from mailproxy.domain.errors import InvalidInput, NotFound
from mailproxy.domain.model import (
    AccountPause,
    HistoryEntry,
    MessagePage,
    MinuteCount,
    QueuedMessage,
    Status,
    minute_start,
)
from mailproxy.domain.policy import WaitReason, Why, explain, suspension_of
from mailproxy.ports.store import MessageStore

#: The statuses of messages that wait (not final, not being sent).
WAITING_STATUSES = (Status.PENDING, Status.SCHEDULED, Status.DEFERRED, Status.SUSPENDED)


class MessageFilters(TypedDict, total=False):
    """The keyword filters of :meth:`Queries.list_messages`, for callers that pass them on."""

    statuses: Collection[Status]
    batch_code: str | None
    active_only: bool
    limit: int
    cursor: str | None


class WaitGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Waiting messages of one tenant that wait for the same reason (see
    :func:`mailproxy.domain.policy.explain`): ``cause`` is what they share — the last
    error of a retry, the window of a rate limit, the paused account and its reason, the
    suspension — or None (scheduled, or due and waiting for a connection)."""

    reason: WaitReason
    cause: str | None
    count: int
    #: The id of the first of them in acceptance order.
    example_id: str
    #: The earliest next attempt among them (None: due now, or suspended).
    next_attempt_ts: int | None


class WaitingReasons(msgspec.Struct, frozen=True, kw_only=True):
    """Why a tenant's oldest waiting messages wait: ``groups`` by size, largest first,
    over the ``read`` messages looked at; ``complete`` when those were all of them."""

    groups: list[WaitGroup]
    read: int
    complete: bool


def group_waiting(
    messages: Iterable[QueuedMessage],
    now: float,
    *,
    suspended: Collection[str] = (),
    pauses: Mapping[str, AccountPause] | None = None,
) -> list[WaitGroup]:
    """Group ``messages`` by why they wait at ``now`` (``suspended``: the tenant's
    suspensions; ``pauses``: its account pauses by account id), largest group first,
    then by reason and cause; final and in-flight messages are left out."""
    pauses = pauses or {}
    groups: dict[tuple[str, str | None], WaitGroup] = {}
    for message in messages:
        why = explain(
            message,
            now,
            suspended=suspension_of(suspended, message.batch_code),
            pause=pauses.get(message.account_id),
        )
        if why is None or why.reason == "sending":
            continue
        cause = message.error if why.reason == "retry" else why.detail
        group = groups.get((why.reason, cause))
        if group is None:
            groups[why.reason, cause] = WaitGroup(
                reason=why.reason, cause=cause, count=1, example_id=message.id,
                next_attempt_ts=why.next_attempt_ts,
            )  # fmt: skip
            continue
        soonest = [t for t in (group.next_attempt_ts, why.next_attempt_ts) if t is not None]
        groups[why.reason, cause] = msgspec.structs.replace(
            group, count=group.count + 1, next_attempt_ts=min(soonest, default=None)
        )
    return sorted(groups.values(), key=lambda g: (-g.count, g.reason, g.cause or ""))


class Queries:
    """What the queue holds, read from the store (never from a cache: a read model shows
    what other processes sharing the store did too)."""

    def __init__(self, store: MessageStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def get_message(self, tenant_id: str, message_id: str) -> QueuedMessage:
        message = await self._store.get_message(tenant_id, message_id)
        if message is None:
            raise NotFound("message", message_id)
        return message

    async def message_history(self, tenant_id: str, message_id: str) -> list[HistoryEntry]:
        await self.get_message(tenant_id, message_id)
        return await self._store.history(tenant_id, message_id)

    async def list_messages(self, tenant_id: str, **filters: Unpack[MessageFilters]) -> MessagePage:
        """A page of the tenant's messages, as :meth:`MessageStore.list_messages` reads it
        (its defaults: every status, 100 a page), with the paging checked first."""
        if not 1 <= filters.get("limit", 100) <= 1000:
            raise InvalidInput("limit", "invalid limit: 1..1000")
        # A cursor is a stored sequence number: digits, within a 64-bit integer.
        cursor = filters.get("cursor")
        if cursor is not None and not (
            cursor.isascii() and cursor.isdigit() and int(cursor) < 2**63
        ):
            raise InvalidInput("cursor", "invalid cursor")
        return await self._store.list_messages(tenant_id, **filters)

    async def counts(self, tenant_id: str | None = None) -> dict[Status, int]:
        return await self._store.count_by_status(tenant_id)

    async def recent_throughput(self, minutes: int) -> tuple[int, list[MinuteCount]]:
        """Final outcomes per minute over the last ``minutes`` minutes, the current
        (partial) minute included, and the start of the first of those minutes."""
        first_minute = minute_start(self._clock()) - 60 * (minutes - 1)
        return first_minute, await self._store.finished_per_minute(first_minute)

    async def why(self, tenant_id: str, message_id: str) -> Why | None:
        """Why the message has not gone yet (None once final); see
        :func:`mailproxy.domain.policy.explain`."""
        message = await self.get_message(tenant_id, message_id)
        now = self._clock()
        suspended = suspension_of(
            await self._store.suspended_batches(tenant_id), message.batch_code
        )
        pause = await self._store.account_pause(tenant_id, message.account_id)
        ahead = 0
        if message.status in (Status.PENDING, Status.SCHEDULED, Status.DEFERRED):
            ahead = await self._store.count_ahead(message, now)
        return explain(message, now, ahead=ahead, suspended=suspended, pause=pause)

    async def account_pauses(
        self, tenant_id: str, account_ids: Sequence[str]
    ) -> dict[str, AccountPause]:
        """The pauses of those of the tenant's accounts that have one, by account id (one
        store read per account: the number of accounts, never of messages)."""
        pauses = {}
        for account_id in account_ids:
            pause = await self._store.account_pause(tenant_id, account_id)
            if pause is not None:
                pauses[account_id] = pause
        return pauses

    async def waiting_reasons(
        self, tenant_id: str, pauses: Mapping[str, AccountPause], *, sample: int
    ) -> WaitingReasons:
        """Why the tenant's oldest ``sample`` waiting messages (1..1000, in acceptance
        order) wait, grouped (:func:`group_waiting`), given its account ``pauses`` (see
        :meth:`account_pauses`). Two store reads whatever the size of the queue: the
        tenant's suspensions and one page of its waiting messages."""
        suspended = await self._store.suspended_batches(tenant_id)
        page = await self.list_messages(tenant_id, statuses=WAITING_STATUSES, limit=sample)
        groups = group_waiting(page.messages, self._clock(), suspended=suspended, pauses=pauses)
        return WaitingReasons(
            groups=groups, read=len(page.messages), complete=page.next_cursor is None
        )
