"""The library's values as the API shows them: a queued message with its history, an
account without its password, a tenant without its secrets, and the instance's settings
with every secret left out or redacted."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from mailproxy.config import Settings
from mailproxy.domain.bounces import BounceRecord, SuppressionSettings
from mailproxy.domain.model import (
    Account,
    HistoryEntry,
    QueuedMessage,
    Status,
    Tenant,
    due_second,
)
from mailproxy.domain.policy import Why
from mailproxy.entrypoints.http.schemas import (
    AccountRecord,
    BounceMailboxRecord,
    BounceRecordOut,
    ClientAuthRecord,
    ComplaintRecordOut,
    DelayRecordOut,
    HistoryRecord,
    MessageRecord,
    TenantRecord,
)


def whole_seconds(value: float | None) -> int | None:
    """A past instant as the API gives it: whole Unix seconds, or None (an instant
    something is due at is :func:`~mailproxy.domain.model.due_second`)."""
    return None if value is None else int(value)


def message_record(
    message: QueuedMessage,
    *,
    history: list[HistoryEntry] | None = None,
    why: Why | msgspec.UnsetType | None = msgspec.UNSET,
    bounces: list[BounceRecord] | None = None,
) -> MessageRecord:
    waiting = message.status in (Status.SCHEDULED, Status.DEFERRED)
    return MessageRecord(
        id=message.id,
        tenant_id=message.tenant_id,
        account_id=message.account_id,
        status=message.status,
        priority=message.priority,
        batch_code=message.batch_code,
        deferred_ts=due_second(message.due_ts) if waiting else None,
        sent_ts=whole_seconds(message.sent_ts),
        error_ts=whole_seconds(message.error_ts),
        error=message.error,
        smtp_code=message.smtp_code,
        attempts=message.attempts,
        created_at=int(message.created_ts),
        updated_at=int(message.updated_ts),
        message_id=message.message_id,
        metadata=message.spec.metadata,
        possible_duplicate=message.possible_duplicate,
        history=(
            msgspec.UNSET
            if history is None
            else [HistoryRecord(h.event, int(h.ts), h.detail) for h in history]
        ),
        why=why,
        **({} if bounces is None else _bounce_fields(bounces)),
    )


def _bounce_fields(records: list[BounceRecord]) -> dict[str, Any]:
    return {
        "bounces": [
            BounceRecordOut(
                recipient=r.recipient, type=r.type, status=r.status, diagnostic=r.diagnostic,
                ts=int(r.ts), source=r.source,
            )
            for r in records
            if r.kind == "bounce"
        ],
        "complaints": [
            ComplaintRecordOut(recipient=r.recipient, feedback_type=r.feedback_type, ts=int(r.ts))
            for r in records
            if r.kind == "complaint"
        ],
        "delays": [
            DelayRecordOut(
                recipient=r.recipient, status=r.status, diagnostic=r.diagnostic, ts=int(r.ts)
            )
            for r in records
            if r.kind == "delay"
        ],
    }  # fmt: skip


#: Setting names that hold a secret: left out of every answer that shows settings.
_SECRET_NAME = re.compile(r"(token|password|secret|_key|_keys)$")
#: Query parameters of a URL that carry a credential (libpq ``password``, presigned
#: signatures, access tokens).
_SECRET_PARAM = re.compile(r"pass|secret|token|sig|credential|key", re.IGNORECASE)
REDACTED = "***"


def redacted_url(value: str) -> str:
    """``value`` with the password of its userinfo and any credential-like query parameter
    replaced by ``***``; a string that is not a URL is returned as it is."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return REDACTED  # not parseable: it may hold anything
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    query = urlencode(
        [
            (name, REDACTED if _SECRET_PARAM.search(name) else item)
            for name, item in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as shown by ``GET /instance``: no secret setting, and URL-valued ones
    (``storage.db_path``, endpoints) without their passwords."""
    values: dict[str, Any] = msgspec.to_builtins(settings)
    for name, section in values.items():
        if isinstance(section, dict):
            values[name] = {
                key: redacted_url(value) if isinstance(value, str) else value
                for key, value in section.items()
                if not _SECRET_NAME.search(key)
            }
        elif isinstance(section, str):
            values[name] = redacted_url(section)
    return values


def account_record(account: Account) -> AccountRecord:
    fields = msgspec.structs.asdict(account)
    fields.pop("password")
    mailbox = account.bounce_mailbox
    if mailbox is not None:
        shown = msgspec.structs.asdict(mailbox)
        shown.pop("password")
        fields["bounce_mailbox"] = BounceMailboxRecord(
            **shown, has_password=mailbox.password is not None
        )
    return AccountRecord(**fields, has_password=account.password is not None)


def tenant_record(tenant: Tenant, suspended: list[str]) -> TenantRecord:
    return TenantRecord(
        id=tenant.id,
        name=tenant.name,
        active=tenant.active,
        client_base_url=(
            None if tenant.client_base_url is None else redacted_url(tenant.client_base_url)
        ),
        client_sync_path=tenant.client_sync_path,
        client_attachment_path=tenant.client_attachment_path,
        client_auth=ClientAuthRecord(tenant.client_auth.method),
        rate_limits=tenant.rate_limits,
        has_webhook_secret=tenant.webhook_secret is not None,
        has_webhook_secret_previous=tenant.webhook_secret_previous is not None,
        attachment_url_prefixes=[redacted_url(u) for u in tenant.attachment_url_prefixes],
        unknown_policy=tenant.unknown_policy,
        suppression=tenant.suppression or SuppressionSettings(),
        suspended_batches=suspended,
        send_windows=tenant.send_windows,
    )
