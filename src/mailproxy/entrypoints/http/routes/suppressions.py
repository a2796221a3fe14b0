"""The routes of a tenant's suppression list: list, add (manual entries), remove, export
as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Annotated

import msgspec
from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Stream

from mailproxy.domain.access import Caller
from mailproxy.domain.bounces import Suppression
from mailproxy.entrypoints.http.auth import scoped
from mailproxy.entrypoints.http.routing import TenantQuery, route, tenant_named
from mailproxy.entrypoints.http.schemas import (
    SUPPRESSIONS_EXAMPLE,
    AddedAnswer,
    OkAnswer,
    SuppressionRecord,
    SuppressionsAnswer,
    SuppressionsBody,
)
from mailproxy.service import MailProxy

Reason = Annotated[
    str | None,
    QueryParameter(description="hard_bounce, complaint, soft_bounce or manual", max_length=32),
]
Search = Annotated[
    str | None, QueryParameter(description="part of the address (any case)", max_length=254)
]
Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
Cursor = Annotated[str | None, QueryParameter(max_length=600)]
#: The columns of an export, in order.
CSV_COLUMNS = (
    "address", "reason", "created_ts", "expires_ts", "source_message_id", "detail",
)  # fmt: skip


def suppression_record(entry: Suppression) -> SuppressionRecord:
    return SuppressionRecord(
        address=entry.address, reason=entry.reason, created_ts=int(entry.created_ts),
        expires_ts=None if entry.expires_ts is None else int(entry.expires_ts),
        source_message_id=entry.source_message_id, detail=entry.detail,
    )  # fmt: skip


@route(get, "/suppressions", "suppressions", summary="List suppressed addresses", tenant=True)
async def list_suppressions(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
    reason: Reason = None,
    q: Search = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> SuppressionsAnswer:
    """The tenant's suppressed addresses in address order, by reason and part of the
    address; ``next_cursor`` continues the listing."""
    scope = await scoped(proxy, caller, tenant_id)
    page = await proxy.suppressions.page(scope, reason=reason, q=q, limit=limit, cursor=cursor)
    return SuppressionsAnswer(
        suppressions=[suppression_record(e) for e in page.suppressions],
        next_cursor=page.next_cursor,
    )


@route(post, "/suppressions", "suppressions", summary="Suppress addresses", tenant=True)
async def add_suppressions(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[SuppressionsBody, Body(examples=[SUPPRESSIONS_EXAMPLE])],
    tenant_id: TenantQuery = None,
) -> AddedAnswer:
    """Add manual entries (an address already suppressed keeps the stronger reason and the
    later expiry); ``added`` counts the entries added or changed."""
    scope = await scoped(proxy, caller, tenant_named(tenant_id, data.tenant_id))
    entries = [msgspec.to_builtins(entry) for entry in data.entries]
    return AddedAnswer(added=await proxy.suppressions.add(scope, entries))


@route(
    delete, "/suppressions/{address:path}", "suppressions",
    summary="Stop suppressing an address", tenant=True,
)  # fmt: skip
async def remove_suppression(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    address: FromPath[str],
    tenant_id: TenantQuery = None,
) -> OkAnswer:
    """Remove the address's entry, whatever its reason; 404 when it has none. The address
    is the rest of the path (a local part may hold a ``/``)."""
    scope = await scoped(proxy, caller, tenant_id)
    await proxy.suppressions.remove(scope, address.removeprefix("/"))
    return OkAnswer()


@route(
    get, "/suppressions/export", "suppressions", summary="Export the suppression list as CSV",
    tenant=True, media_type="text/csv",
)  # fmt: skip
async def export_suppressions(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
) -> Stream:
    """Every suppressed address of the tenant as CSV (a header row, then one row per
    address, in address order), streamed."""
    scope = await scoped(proxy, caller, tenant_id)
    entries = proxy.suppressions.export(scope)
    first = await anext(entries, None)  # an unknown tenant fails here, before the answer

    async def rows() -> AsyncIterator[str]:
        yield _csv_line(CSV_COLUMNS)
        entry = first
        while entry is not None:
            record = suppression_record(entry)
            yield _csv_line([getattr(record, column) for column in CSV_COLUMNS])
            entry = await anext(entries, None)

    return Stream(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="suppressions-{scope}.csv"'},
    )


#: A cell starting with one of these (after any blanks) is a formula to a spreadsheet: a
#: bounce's diagnostic text comes from a remote server, so such cells are written with a
#: leading ``'``. The address (checked when it was added) is written as it is, so that
#: an export imports back unchanged.
_FORMULA_START = ("=", "+", "-", "@")


def _csv_line(values: Sequence[object]) -> str:
    cells = [
        "" if v is None
        else f"'{v}" if n and isinstance(v, str) and v.lstrip().startswith(_FORMULA_START)
        else v
        for n, v in enumerate(values)
    ]  # fmt: skip
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()


SUPPRESSION_ROUTES = [list_suppressions, export_suppressions, add_suppressions, remove_suppression]
