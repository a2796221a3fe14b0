"""Read models: messages, their history and why they wait, counts and throughput."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypedDict, Unpack

from mailproxy.domain.errors import InvalidInput, NotFound
from mailproxy.domain.model import (
    HistoryEntry,
    MessagePage,
    MinuteCount,
    QueuedMessage,
    Status,
    minute_start,
)
from mailproxy.domain.policy import Why, explain, suspension_of
from mailproxy.ports.store import MessageStore


class MessageFilters(TypedDict, total=False):
    """The keyword filters of :meth:`Queries.list_messages`, for callers that pass them on."""

    statuses: Collection[Status]
    batch_code: str | None
    active_only: bool
    limit: int
    cursor: str | None


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
