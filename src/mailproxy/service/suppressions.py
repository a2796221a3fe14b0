"""The suppression list of each tenant as callers see it: list, add, remove, export; and
the bounces kept with a message. The rules are :mod:`mailproxy.domain.bounces`'."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, get_args

import msgspec

from mailproxy.domain.bounces import (
    SUPPRESSION_REASONS,
    BounceRecord,
    Suppression,
    SuppressionPage,
    SuppressionReason,
    UnparsedReport,
)
from mailproxy.domain.decoding import convert_error
from mailproxy.domain.errors import InvalidInput, NotFound
from mailproxy.domain.headers import CONTROL
from mailproxy.domain.validation import MAX_TS, check_addr_spec
from mailproxy.ports.store import BounceStore, ConfigStore

#: Entries one call may add (a larger list goes in several calls).
MAX_ENTRIES_PER_CALL = 10_000
MAX_DETAIL_CHARS = 500
MAX_PAGE = 1000
#: Rows an export reads per store read.
EXPORT_PAGE = 1000
#: How long a recipient check believes what it last read of whether a tenant's list is
#: empty. Most tenants' lists are, and an SMTP submission checks each RCPT: one read a
#: few seconds instead of one a recipient. An entry this process adds is seen at once; one
#: added by another process meanwhile is enforced when the message is claimed instead.
LIST_STATE_BELIEVED_S = 5.0


class ManualEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An entry added by hand (``POST /suppressions``)."""

    address: str
    expires_ts: float | None = None
    detail: str | None = None


class Suppressions:
    def __init__(
        self,
        *,
        store: BounceStore,
        config: ConfigStore,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        #: Per tenant: whether its list was empty when read, and until when that holds.
        self._list_state: dict[str, tuple[bool, float]] = {}
        #: Per tenant: how many times entries were added here (a read begun before the
        #: last addition does not say the list is empty).
        self._changes: dict[str, int] = {}

    def changed(self, tenant_id: str) -> None:
        """Entries of the tenant were added (by hand, from a bounce or an SMTP refusal):
        read the list again."""
        self._changes[tenant_id] = self._changes.get(tenant_id, 0) + 1
        self._list_state.pop(tenant_id, None)

    async def _tenant(self, tenant_id: str) -> None:
        if await self._config.get_tenant(tenant_id) is None:
            raise NotFound("tenant", tenant_id)

    async def page(
        self,
        tenant_id: str,
        *,
        reason: str | None = None,
        q: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SuppressionPage:
        """A page of the tenant's live entries, ordered by address (``GET /suppressions``)."""
        await self._tenant(tenant_id)
        if reason is not None and reason not in SUPPRESSION_REASONS:
            raise InvalidInput(
                "reason", f"invalid reason: expected one of {', '.join(SUPPRESSION_REASONS)}"
            )
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"invalid limit: 1..{MAX_PAGE}")
        return await self._store.list_suppressions(
            tenant_id, now=self._clock(), reason=_reason(reason), q=q or None, limit=limit,
            cursor=cursor or None,
        )  # fmt: skip

    async def add(self, tenant_id: str, entries: Sequence[Mapping[str, Any]]) -> int:
        """Add manual entries (each merged into the address's existing one); return how
        many were added or changed. Every entry is checked before any is stored."""
        await self._tenant(tenant_id)
        if len(entries) > MAX_ENTRIES_PER_CALL:
            raise InvalidInput(
                "entries", f"too many entries: at most {MAX_ENTRIES_PER_CALL} a call"
            )
        now = self._clock()
        checked = []
        for n, raw in enumerate(entries):
            field = f"entries[{n}]"
            try:
                entry = msgspec.convert(raw, ManualEntry)
            except msgspec.ValidationError as exc:
                error = convert_error(exc, ManualEntry, whole=field)
                where = error.field if error.field == field else f"{field}.{error.field}"
                raise InvalidInput(where, f"{field}: {error.reason}") from None
            check_addr_spec(f"{field}.address", entry.address)
            if entry.expires_ts is not None and not now < entry.expires_ts <= MAX_TS:
                raise InvalidInput(
                    f"{field}.expires_ts", f"invalid {field}.expires_ts: must be in the future"
                )
            if entry.detail is not None and (
                len(entry.detail) > MAX_DETAIL_CHARS or CONTROL.search(entry.detail)
            ):
                raise InvalidInput(
                    f"{field}.detail",
                    f"invalid {field}.detail: one line of at most {MAX_DETAIL_CHARS} characters",
                )
            checked.append(
                Suppression(
                    tenant_id=tenant_id, address=entry.address, reason="manual",
                    created_ts=now, expires_ts=entry.expires_ts, detail=entry.detail,
                )
            )  # fmt: skip
        added = await self._store.add_suppressions(checked, now)
        self.changed(tenant_id)
        return added

    async def remove(self, tenant_id: str, address: str) -> None:
        await self._tenant(tenant_id)
        if not await self._store.remove_suppression(tenant_id, address, self._clock()):
            raise NotFound("suppression", address)

    async def export(self, tenant_id: str) -> AsyncIterator[Suppression]:
        """Every live entry of the tenant, ordered by address, read a page at a time."""
        await self._tenant(tenant_id)
        cursor: str | None = None
        while True:
            page = await self._store.list_suppressions(
                tenant_id, now=self._clock(), limit=EXPORT_PAGE, cursor=cursor
            )
            for entry in page.suppressions:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def refusal_of(self, tenant_id: str, address: str) -> str | None:
        """Why a message of the tenant may not be sent to ``address``: ``"invalid"`` (not
        an address the API accepts), ``"suppressed"`` (on the list now), or None."""
        try:
            check_addr_spec("recipient", address)
        except InvalidInput:
            return "invalid"
        now = self._clock()
        if await self._list_empty(tenant_id, now):
            return None
        found = await self._store.suppressed_among(tenant_id, [address], now)
        return "suppressed" if found else None

    async def _list_empty(self, tenant_id: str, now: float) -> bool:
        known = self._list_state.get(tenant_id)
        if known is not None and now < known[1]:
            return known[0]
        changes = self._changes.get(tenant_id, 0)
        page = await self._store.list_suppressions(tenant_id, now=now, limit=1)
        empty = not page.suppressions
        if self._changes.get(tenant_id, 0) == changes:
            self._list_state[tenant_id] = (empty, now + LIST_STATE_BELIEVED_S)
        return empty

    async def counts(self) -> dict[str, int]:
        return await self._store.count_suppressions(self._clock())

    async def bounces_of(
        self, tenant_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[BounceRecord]]:
        """The bounces, complaints and delays of each of ``message_ids`` that has some."""
        return await self._store.bounces_of(tenant_id, message_ids)

    async def unparsed(self, tenant_id: str | None, limit: int = 20) -> list[UnparsedReport]:
        return await self._store.unparsed_reports(tenant_id, limit)


def _reason(value: str | None) -> SuppressionReason | None:
    return next((r for r in get_args(SuppressionReason) if r == value), None)
