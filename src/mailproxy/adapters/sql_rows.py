"""What the SQL stores (SQLite and PostgreSQL) share: the message row's columns in the
order the queries select them, the status sets as SQL literals, and the codecs of the
JSON-encoded columns."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from mailproxy.domain.model import Account, MessageSpec, QueuedMessage, ReportEvent, Status, Tenant

COLUMNS = (
    "pk, tenant_id, id, account_id, priority, seq, status, due_ts, batch_code, message_id, "
    "date_ts, spec, attempts, possible_duplicate, created_ts, updated_ts, sent_ts, error_ts, "
    "error, smtp_code, lease_owner, lease_token, lease_expires_ts, attempt_open, rank, "
    "wait_reason, wait_detail, final_ts"
)
QUEUED_SQL = "('pending', 'scheduled', 'deferred')"
FINAL_SQL = "('sent', 'error', 'unknown')"
WAITING_SQL = "('pending', 'scheduled', 'deferred', 'suspended')"

spec_decoder = msgspec.json.Decoder(MessageSpec)
event_decoder = msgspec.json.Decoder(ReportEvent)
tenant_decoder = msgspec.json.Decoder(Tenant)
account_decoder = msgspec.json.Decoder(Account)
encode = msgspec.json.encode


@functools.lru_cache(maxsize=1024)
def max_connections(account_data: bytes) -> int:
    return account_decoder.decode(account_data).max_connections


def message_from_row(row: tuple[Any, ...]) -> QueuedMessage:
    return QueuedMessage(
        pk=row[0],
        tenant_id=row[1],
        id=row[2],
        account_id=row[3],
        priority=row[4],
        seq=row[5],
        status=Status(row[6]),
        due_ts=row[7],
        batch_code=row[8],
        message_id=row[9],
        date_ts=row[10],
        spec=spec_decoder.decode(row[11]),
        attempts=row[12],
        possible_duplicate=bool(row[13]),
        created_ts=row[14],
        updated_ts=row[15],
        sent_ts=row[16],
        error_ts=row[17],
        error=row[18],
        smtp_code=row[19],
        lease_owner=row[20],
        lease_token=row[21],
        lease_expires_ts=row[22],
        attempt_open=bool(row[23]),
        rank=row[24],
        wait_reason=row[25],
        wait_detail=row[26],
        final_ts=row[27],
    )
