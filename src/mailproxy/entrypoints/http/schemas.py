"""The request and answer bodies of the REST API (msgspec Structs; their field names are
the HTTP contract, see docs/guides/http-api.md), the examples shown in the schema, and
:func:`decode_body` for the routes that read an optional body themselves.

Every integer a client sends has the domain's range in the schema, so that it is refused
with the field's name before anything else reads it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi.spec import Example

from mailproxy.domain.bounces import SuppressionSettings
from mailproxy.domain.decoding import convert_error
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import ClientAuth, RateLimits, Status
from mailproxy.domain.policy import Why
from mailproxy.domain.send_windows import SendWindows
from mailproxy.domain.validation import MAX_CONNECTIONS, MAX_COUNT, MAX_TS

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType

# --- bounds of client integers --------------------------------------------------------------

Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]
Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Connections = Annotated[int, msgspec.Meta(ge=1, le=MAX_CONNECTIONS)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]

# --- answers every route shares ---------------------------------------------------------------


class OkAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True


class ErrorAnswer(msgspec.Struct, kw_only=True):
    ok: bool = False
    error: str
    request_id: str | msgspec.UnsetType = msgspec.UNSET


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, plus the ``ok``/``error`` members every answer has."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError]
    ok: bool = False
    error: str


class AddMessagesBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /commands/add-messages. Each message is checked on its own (see MESSAGE in
    the API contract); a bad one is rejected with a reason while the others are queued.
    ``tenant_id`` names the tenant of every message, as the query parameter does."""

    messages: list[dict[str, Any]]
    tenant_id: str | None = None
    default_priority: int | str | None = None


ADD_MESSAGES_EXAMPLE = Example(
    summary="two messages, one with an attachment",
    value={
        "messages": [
            {
                "id": "invoice-2041",
                "account_id": "main",
                "from": "Billing <billing@example.com>",
                "to": ["customer@example.com"],
                "subject": "Your invoice",
                "body": "Please find your invoice attached.",
                "attachments": [{"filename": "invoice.pdf", "storage_path": "base64:JVBERi0xLjQK"}],
                "metadata": {"order": 2041},
            },
            {
                "id": "welcome-77",
                "from": "hello@example.com",
                "to": "new.user@example.com",
                "subject": "Welcome",
                "body_html": "<p>Welcome aboard!</p>",
                "priority": "high",
            },
        ],
        "default_priority": 2,
    },
)


# --- accounts and tenants ---------------------------------------------------------------


class RateLimitsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Messages per minute, hour and day (each 1..2147483647, or null for no limit)."""

    per_minute: Count | None = None
    per_hour: Count | None = None
    per_day: Count | None = None


class BounceMailboxBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An IMAP mailbox that receives the account's bounces; ``password`` is write-only."""

    host: str
    port: Port = 993
    user: str
    password: str | None = None
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    folder: str = "INBOX"
    processed_folder: str | None = None
    poll_s: Annotated[float, msgspec.Meta(ge=5, le=86_400)] = 60.0


class BounceMailboxRecord(msgspec.Struct, kw_only=True):
    """A bounce mailbox as answered: every field but ``password``, and ``has_password``."""

    host: str
    port: int
    user: str
    has_password: bool
    tls: str
    folder: str
    processed_folder: str | None
    poll_s: float


class SuppressionRuleBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A tenant's soft-bounce rule: ``soft_bounce_limit`` soft bounces within
    ``soft_bounce_window_s`` suppress an address for ``soft_bounce_suppress_s``."""

    soft_bounce_limit: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 3
    soft_bounce_window_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)] = 7 * 86_400.0
    soft_bounce_suppress_s: Annotated[float, msgspec.Meta(gt=0, le=3660 * 86_400)] = 7 * 86_400.0


class AccountBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /account: an SMTP account, or a ``capture`` sandbox that writes .eml files."""

    id: str
    tenant_id: str | Unset = UNSET
    kind: Literal["smtp", "capture"] | Unset = UNSET
    host: str | Unset | None = UNSET
    port: Port | Unset | None = UNSET
    user: str | Unset | None = UNSET
    password: str | Unset | None = UNSET
    use_tls: bool | Unset | None = UNSET
    tls_verify: bool | Unset = UNSET
    tls_ca_file: str | Unset | None = UNSET
    limit_per_minute: Count | Unset | None = UNSET
    limit_per_hour: Count | Unset | None = UNSET
    limit_per_day: Count | Unset | None = UNSET
    limit_behavior: Literal["defer", "reject"] | Unset = UNSET
    max_connections: Connections | Unset = UNSET
    is_default: bool | Unset = UNSET
    return_path: str | Unset | None = UNSET
    bounce_mailbox: BounceMailboxBody | Unset | None = UNSET
    #: Accounts of the same tenant, in order, that send while this one is paused or its
    #: rate windows would hold a message longer than ``failover_after_s``.
    fallback_accounts: list[str] | Unset = UNSET
    failover_after_s: Annotated[float, msgspec.Meta(ge=0, le=7 * 86_400)] | Unset = UNSET
    #: A PEC account: its ``bounce_mailbox`` receives the receipts (``pec_*`` events).
    pec: bool | Unset = UNSET
    #: When its medium and low messages may go, replacing the tenant's windows.
    send_windows: SendWindows | Unset | None = UNSET


class TenantChanges(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /tenant/{id}: the fields to change (the others stay)."""

    name: str | Unset = UNSET
    active: bool | Unset = UNSET
    client_base_url: str | Unset | None = UNSET
    client_sync_path: str | Unset = UNSET
    client_attachment_path: str | Unset = UNSET
    client_auth: ClientAuth | Unset = UNSET
    rate_limits: RateLimitsBody | Unset | None = UNSET
    webhook_secret: str | Unset | None = UNSET
    attachment_url_prefixes: list[str] | Unset = UNSET
    unknown_policy: Literal["at_least_once", "at_most_once"] | Unset | None = UNSET
    suppression: SuppressionRuleBody | Unset | None = UNSET
    #: When its medium and low messages may go: weekly windows in an IANA time zone.
    send_windows: SendWindows | Unset | None = UNSET


class TenantBody(TenantChanges, kw_only=True, forbid_unknown_fields=True):
    """POST /tenant: only ``id`` is required."""

    id: str


ACCOUNT_EXAMPLE = Example(
    summary="an SMTP account with limits",
    value={
        "id": "main",
        "tenant_id": "acme",
        "host": "smtp.example.com",
        "port": 587,
        "user": "mailer",
        "password": "app-password",
        "limit_per_minute": 60,
        "is_default": True,
    },
)
TENANT_EXAMPLE = Example(
    summary="a tenant that receives delivery reports",
    value={
        "id": "acme",
        "name": "Acme Corp",
        "client_base_url": "https://app.example.com",
        "client_auth": {"method": "bearer", "token": "callback-token"},
        "rate_limits": {"per_hour": 5000},
    },
)

TENANT_CHANGES_EXAMPLE = Example(
    summary="a new name and report URL",
    value={"name": "Acme Corporation", "client_base_url": "https://app.example.com"},
)
IDS_EXAMPLE = Example(summary="two messages by id", value={"ids": ["hello-1", "hello-2"]})


def given_fields(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a client sent (UNSET ones left out)."""
    given: dict[str, Any] = msgspec.to_builtins(data)
    return given


class RejectedMessage(msgspec.Struct):
    id: str
    reason: str


class AddMessagesAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    queued: int
    rejected: list[RejectedMessage]
    error: str | msgspec.UnsetType = msgspec.UNSET


class HistoryRecord(msgspec.Struct):
    event: str
    ts: int
    detail: str | None


class MessageRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    account_id: str
    status: Status
    priority: int
    batch_code: str | None
    deferred_ts: int | None
    sent_ts: int | None
    error_ts: int | None
    error: str | None
    smtp_code: int | None
    attempts: int
    created_at: int
    updated_at: int
    message_id: str
    metadata: dict[str, Any] | None
    possible_duplicate: bool
    history: list[HistoryRecord] | msgspec.UnsetType = msgspec.UNSET
    why: Why | msgspec.UnsetType | None = msgspec.UNSET
    #: What bounce mailboxes and SMTP refusals said of the message after it was sent
    #: (in ``GET /messages/{id}`` and in each record of ``GET /messages``).
    bounces: list[BounceRecordOut] | msgspec.UnsetType = msgspec.UNSET
    complaints: list[ComplaintRecordOut] | msgspec.UnsetType = msgspec.UNSET
    delays: list[DelayRecordOut] | msgspec.UnsetType = msgspec.UNSET


class BounceRecordOut(msgspec.Struct, kw_only=True):
    """A bounce kept with a message (``type`` hard or soft)."""

    recipient: str | None
    type: str | None
    status: str | None
    diagnostic: str | None
    ts: int
    source: str | None


class DelayRecordOut(msgspec.Struct, kw_only=True):
    """A DSN with Action ``delayed``: the relay is still trying."""

    recipient: str | None
    status: str | None
    diagnostic: str | None
    ts: int


class ComplaintRecordOut(msgspec.Struct, kw_only=True):
    recipient: str | None
    feedback_type: str | None
    ts: int


class SuppressionRecord(msgspec.Struct, kw_only=True):
    address: str
    reason: str
    created_ts: int
    expires_ts: int | None
    source_message_id: str | None
    detail: str | None


class SuppressionsAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    suppressions: list[SuppressionRecord]
    next_cursor: str | None


class ManualSuppressionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    address: str
    expires_ts: Timestamp | None = None
    detail: str | None = None


class SuppressionsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /suppressions: manual entries, each with an optional expiry."""

    tenant_id: str | None = None
    entries: list[ManualSuppressionBody]


class AddedAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    added: int


SUPPRESSIONS_EXAMPLE = Example(
    summary="suppress two addresses, one for a month",
    value={
        "entries": [
            {"address": "former.customer@example.com", "detail": "asked to stop"},
            {"address": "on.leave@example.org", "expires_ts": 1798761600},
        ]
    },
)


class MessagesAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    messages: list[MessageRecord]
    next_cursor: str | None


class MessageAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    message: MessageRecord


class IdsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    ids: list[str]


class DeleteAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    removed: int
    not_found: list[str]
    in_flight: list[str]


class CleanupBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    older_than_seconds: Seconds | None = None


class RemovedAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    removed: int


class SuspendAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant_id: str
    suspended_batches: list[str]
    pending_messages: int


class AccountRecord(msgspec.Struct, kw_only=True):
    """An account as answered: every field but ``password``, and ``has_password``."""

    id: str
    tenant_id: str
    kind: str
    host: str | None
    port: int | None
    user: str | None
    has_password: bool
    use_tls: bool | None
    tls_verify: bool
    tls_ca_file: str | None
    limit_per_minute: int | None
    limit_per_hour: int | None
    limit_per_day: int | None
    limit_behavior: str
    max_connections: int
    is_default: bool
    return_path: str | None
    bounce_mailbox: BounceMailboxRecord | None
    fallback_accounts: list[str]
    failover_after_s: float
    send_windows: SendWindows | None
    pec: bool


class AccountAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    account: AccountRecord


class AccountsAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    accounts: list[AccountRecord]


class ClientAuthRecord(msgspec.Struct):
    method: str


class TenantRecord(msgspec.Struct, kw_only=True):
    """A tenant as answered: no secrets; ``client_auth`` shows only its method."""

    id: str
    name: str
    active: bool
    client_base_url: str | None
    client_sync_path: str
    client_attachment_path: str
    client_auth: ClientAuthRecord
    rate_limits: RateLimits | None
    has_webhook_secret: bool
    #: A rotation is in progress: the previous webhook secret still signs report calls.
    has_webhook_secret_previous: bool
    attachment_url_prefixes: list[str]
    unknown_policy: str | None
    suppression: SuppressionSettings
    suspended_batches: list[str]
    send_windows: SendWindows | None


class TenantAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant: TenantRecord
    #: What will not work as configured (a report URL the egress rule refuses); left out
    #: when there is nothing to say.
    warnings: list[str] | msgspec.UnsetType = msgspec.UNSET


class CreatedTenantAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant: TenantRecord
    api_key: str
    webhook_secret: str
    warnings: list[str] | msgspec.UnsetType = msgspec.UNSET


class TenantsAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenants: list[TenantRecord]


class NoBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a command that takes none (run-now, suspend, activate): empty or
    ``{}``; any field is refused rather than ignored (they take the query's)."""


class ApiKeyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    expires_at: Timestamp | None = None


class ApiKeyAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    api_key: str


class WebhookSecretAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    webhook_secret: str


class SyncStatusRecord(msgspec.Struct, kw_only=True):
    id: str
    last_sync_ts: int | None
    next_sync_due: int | None
    in_dnd: bool
    pending_reports: int
    last_error: str | None
    #: Why no call can succeed as configured (the egress rule refuses the URL), or null.
    warning: str | None = None


class SyncStatusAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    sync_interval_seconds: int
    tenants: list[SyncStatusRecord]


class HealthAnswer(msgspec.Struct, kw_only=True):
    ok: bool
    status: str
    version: str | msgspec.UnsetType = msgspec.UNSET


class StatusAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    active: bool
    version: str
    queue: dict[str, int]


class InstanceAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    name: str
    version: str
    settings: dict[str, Any]


def decode_body(raw: bytes, model: type[Any], *, empty_ok: bool = False) -> Any:
    """Decode a JSON body into ``model``; 422 (naming the field) when it does not fit."""
    if not raw.strip():
        if empty_ok:
            return model()
        raise InvalidInput("body", "missing body: expected a JSON object")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise convert_error(exc, model, whole="body") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidInput("body", f"malformed JSON: {exc}") from None
