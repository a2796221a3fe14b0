"""What the SQL operations share: the message row's columns in the order the queries
select them, the status sets as SQL literals, and the codecs of the JSON-encoded columns."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from mailproxy.domain.lifecycle import is_final
from mailproxy.domain.model import (
    Account,
    AccountPause,
    Claim,
    Lease,
    MessagePage,
    MessageSpec,
    QueuedMessage,
    ReportEvent,
    Status,
    Tenant,
    Transition,
)

COLUMNS = (
    "pk, tenant_id, id, account_id, priority, seq, status, due_ts, batch_code, message_id, "
    "date_ts, spec, attempts, possible_duplicate, created_ts, updated_ts, sent_ts, error_ts, "
    "error, smtp_code, lease_owner, lease_token, lease_expires_ts, attempt_open, rank, "
    "wait_reason, wait_detail, final_ts, via_account_id"
)
_NAMES = [name.strip() for name in COLUMNS.split(",")]
#: Messages resumed per step of ``activate``: its memory stays flat however many wait.
RESUME_CHUNK = 1000
QUEUED_SQL = "('pending', 'scheduled', 'deferred')"
FINAL_SQL = "('sent', 'error', 'unknown')"
WAITING_SQL = "('pending', 'scheduled', 'deferred', 'suspended')"

spec_decoder = msgspec.json.Decoder(MessageSpec)
event_decoder = msgspec.json.Decoder(ReportEvent)
tenant_decoder = msgspec.json.Decoder(Tenant)
account_decoder = msgspec.json.Decoder(Account)
encode = msgspec.json.encode


def event_values(
    events: Sequence[ReportEvent], tenant_id: str, pk: int, now: float
) -> list[tuple[Any, ...]]:
    """The ``add_report`` rows of a message's report events."""
    return [(e.event_id, tenant_id, pk, encode(e), now) for e in events]


@functools.lru_cache(maxsize=1024)
def account_limits(account_data: bytes) -> tuple[int, tuple[str, ...]]:
    """``max_connections`` and ``fallback_accounts`` of a stored account."""
    account = account_decoder.decode(account_data)
    return account.max_connections, account.fallback_accounts


def message_from_row(row: Sequence[Any]) -> QueuedMessage:
    fields = dict(zip(_NAMES, row, strict=True))
    fields["status"] = Status(fields["status"])
    fields["spec"] = spec_decoder.decode(fields["spec"])
    fields["possible_duplicate"] = bool(fields["possible_duplicate"])
    fields["attempt_open"] = bool(fields["attempt_open"])
    via = fields.pop("via_account_id")
    if via is not None:  # leased to be sent through a fallback
        fields["failover_from"], fields["account_id"] = fields["account_id"], via
    return QueuedMessage(**fields)


def claims_of(
    picked: Sequence[QueuedMessage],
    *,
    owner: str,
    token: str,
    expires: float,
    now: float,
    pauses: Mapping[tuple[str, str], AccountPause],
) -> list[Claim]:
    """The claims for messages just leased to ``owner`` (as the claiming UPDATE left them)."""
    return [
        Claim(
            msgspec.structs.replace(
                m,
                status=Status.SENDING,
                lease_owner=owner,
                lease_token=token,
                lease_expires_ts=expires,
                attempt_open=False,
                updated_ts=now,
            ),
            Lease(m.pk, owner, token, expires),
            pauses.get((m.tenant_id, m.account_id)),
        )
        for m in picked
    ]


def transition_values(t: Transition, status: Status, now: float, pk: int) -> tuple[Any, ...]:
    """The values of the ``apply_transition`` query for ``t`` (``status``: the status it
    stores, which a suspension may have changed)."""
    final_ts = now if is_final(t.status) else None
    return (
        status.value, t.due_ts, t.attempts, t.possible_duplicate, t.error, t.smtp_code,
        t.sent_ts, t.error_ts, final_ts, False, now, t.wait_reason, t.wait_detail, pk,
    )  # fmt: skip


def page_of(rows: Sequence[tuple[Any, ...]], limit: int) -> MessagePage:
    """A page from up to ``limit + 1`` rows in sequence order (the extra one says more)."""
    page = [message_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return MessagePage(page, str(page[-1].seq) if more and page else None)
