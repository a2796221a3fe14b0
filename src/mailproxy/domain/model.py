"""Value types: tenants, accounts, messages, leases, report events.

Instants are float Unix seconds (``*_ts``); the HTTP contract speaks integer Unix seconds,
so keeping one numeric representation end to end avoids conversions on the hot path.
An instant shown in whole seconds is rounded by :func:`due_second` when something is due
then, and truncated when it is a past event (``int``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from mailproxy.domain.bounces import BounceRecord, BounceSource, BounceType, SuppressionSettings
from mailproxy.domain.dkim import DkimKey
from mailproxy.domain.send_windows import SendWindows


def due_second(ts: float) -> int:
    """The whole second at which something due at ``ts`` may happen: rounded up, so that
    a client waiting until then is never early. Every "next attempt" shown (a message's
    ``deferred_ts``, ``why.next_attempt_ts``, a deferred report entry, the log) uses it."""
    return math.ceil(ts)


class Priority(enum.IntEnum):
    """Delivery priority: lower numbers go first."""

    IMMEDIATE = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3

    @property
    def label(self) -> str:
        return self.name.lower()


DEFAULT_PRIORITY = Priority.MEDIUM
PRIORITY_BY_LABEL: dict[str, Priority] = {p.label: p for p in Priority}


class Status(enum.StrEnum):
    """Message states as a client sees them, per the HTTP API (GET /messages)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    SENDING = "sending"
    SENT = "sent"
    ERROR = "error"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"


#: States a message waits in until a worker claims it.
QUEUED_STATUSES = frozenset({Status.PENDING, Status.SCHEDULED, Status.DEFERRED})

UnknownPolicy = Literal["at_least_once", "at_most_once"]
AccountKind = Literal["smtp", "capture"]


class RateLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None


class ClientAuth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Literal["none", "bearer", "basic"] = "none"
    token: str | None = None
    user: str | None = None
    password: str | None = None


class Tenant(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    # omit_defaults: a stored tenant names only what differs from the defaults, so a
    # field added later (webhook_secret_previous) reaches the database only once it is
    # used, and processes of the previous version sharing it can still read the tenant.
    id: str
    name: str = ""
    active: bool = True
    client_base_url: str | None = None
    client_sync_path: str = "/mail-proxy/sync"
    client_attachment_path: str = "/mail-proxy/attachments"
    client_auth: ClientAuth = ClientAuth()
    rate_limits: RateLimits | None = None
    webhook_secret: str | None = None
    #: The secret before the last rotation, still signing report calls (beside the
    #: current one) until it is retired, so receivers can switch without a gap.
    webhook_secret_previous: str | None = None
    attachment_url_prefixes: tuple[str, ...] = ()
    unknown_policy: UnknownPolicy | None = None
    #: The soft-bounce rule of the suppression list (None: the defaults).
    suppression: SuppressionSettings | None = None
    #: Keys that sign the tenant's mail (``domain.dkim``); changed only through the DKIM
    #: routes, never through a tenant body.
    dkim_keys: tuple[DkimKey, ...] = ()
    #: When its medium and low messages may go (an account's own replace these).
    send_windows: SendWindows | None = None


MailboxTls = Literal["implicit", "starttls", "none"]


class BounceMailboxSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An IMAP mailbox that receives an account's bounces (``bounce_mailbox``), or the
    instance's shared one (``[bounces]``)."""

    host: str
    port: int = 993
    user: str
    password: str | None = None
    tls: MailboxTls = "implicit"
    folder: str = "INBOX"
    #: Where processed messages go; None: they are flagged where they are.
    processed_folder: str | None = None
    poll_s: float = 60.0


class Account(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """An SMTP account of a tenant (or a ``capture`` sandbox that writes ``.eml`` files)."""

    # omit_defaults: as for Tenant, a field added later reaches the database only once
    # it is used, so processes of the previous version sharing it still read the account.

    id: str
    tenant_id: str
    kind: AccountKind = "smtp"
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    use_tls: bool | None = None
    tls_verify: bool = True
    tls_ca_file: str | None = None
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: Literal["defer", "reject"] = "defer"
    max_connections: int = 3
    is_default: bool = False
    #: The envelope sender; ``{token}`` in it makes a VERP address per message
    #: (:mod:`mailproxy.domain.correlation`). None: the message's From.
    return_path: str | None = None
    bounce_mailbox: BounceMailboxSpec | None = None
    #: A PEC (Italian certified e-mail) account: its ``bounce_mailbox`` receives the
    #: provider's receipts, reported as ``pec_*`` events (``domain.pec``).
    pec: bool = False
    #: Accounts of the same tenant, in order, that send this account's messages while
    #: it is paused or its rate windows would hold a message past ``failover_after_s``.
    fallback_accounts: tuple[str, ...] = ()
    failover_after_s: float = 300.0
    #: When its medium and low messages may go, replacing the tenant's.
    send_windows: SendWindows | None = None


class AttachmentRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where an attachment's bytes come from, per the HTTP API (ATTACHMENT)."""

    filename: str
    storage_path: str
    fetch_mode: Literal["base64", "filesystem", "endpoint", "http_url"]
    mime_type: str | None = None
    content_md5: str | None = None
    #: Set: an inline part (``Content-ID: <content_id>``, shown where the HTML says
    #: ``cid:content_id``) in a multipart/related beside the body, not an attachment.
    content_id: str | None = None


class MessageSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A validated message as the client described it, normalised (lists, ints)."""

    id: str
    from_: str = msgspec.field(name="from")
    to: tuple[str, ...]
    subject: str
    tenant_id: str | None = None
    account_id: str | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: str | None = None
    return_path: str | None = None
    body: str = ""
    content_type: Literal["plain", "html"] = "plain"
    body_html: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    message_id: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()
    priority: int | None = None
    deferred_ts: int | None = None
    batch_code: str | None = None
    metadata: dict[str, Any] | None = None
    #: A message submitted as it is (SMTP submission: ``domain.submitted``): sent as these
    #: bytes to ``to`` (the envelope's recipients), ``from`` being the envelope sender.
    raw: bytes | None = None


class RawAccepted(msgspec.Struct, frozen=True):
    """A message submitted as it is, committed: its client id and Message-ID."""

    id: str
    message_id: str


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message ready to be stored: tenant and account resolved, ids and date fixed."""

    tenant_id: str
    id: str
    account_id: str
    priority: int
    #: The queue sort key, :func:`mailproxy.domain.policy.queue_rank`.
    rank: float
    status: Status
    due_ts: float
    batch_code: str | None
    message_id: str
    date_ts: float
    spec: MessageSpec
    #: Why it waits when it is stored ``scheduled`` for a reason of the service's
    #: (``"send_window"``); None for a client's ``deferred_ts`` or no wait.
    wait_reason: str | None = None


class QueuedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message with its delivery state."""

    pk: int
    tenant_id: str
    id: str
    account_id: str
    priority: int
    rank: float
    seq: int
    status: Status
    due_ts: float
    batch_code: str | None
    message_id: str
    date_ts: float
    spec: MessageSpec
    attempts: int = 0
    possible_duplicate: bool = False
    created_ts: float = 0.0
    updated_ts: float = 0.0
    sent_ts: float | None = None
    error_ts: float | None = None
    error: str | None = None
    smtp_code: int | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_ts: float | None = None
    attempt_open: bool = False
    #: Why it waits while ``deferred``: ``"rate_limit"``, ``"retry"`` or
    #: ``"account_paused"``, with a detail for people.
    wait_reason: str | None = None
    wait_detail: str | None = None
    #: When it became final (sent, error, or unknown under at-most-once).
    final_ts: float | None = None
    #: Set while a claim sends it through a fallback: its own account (``account_id`` is
    #: then the fallback's).
    failover_from: str | None = None


class AccountPause(msgspec.Struct, frozen=True, kw_only=True):
    """An account paused after authentication or TLS failures (the circuit breaker): no
    message of it is claimed before ``until_ts``; then one probe at a time (half-open)
    until an attempt gets past the account's own checks."""

    tenant_id: str
    account_id: str
    failures: int
    until_ts: float
    reason: str


class Lease(msgspec.Struct, frozen=True):
    """A worker's claim on one message; every later write is fenced by ``token``."""

    pk: int
    owner: str
    token: str
    expires_ts: float


class Claim(msgspec.Struct, frozen=True):
    message: QueuedMessage
    lease: Lease
    #: The pause of the message's account when it was claimed (this is then a probe).
    pause: AccountPause | None = None
    #: Its envelope recipients on the tenant's suppression list when it was claimed.
    suppressed: frozenset[str] = frozenset()


class RefusedRecipient(msgspec.Struct, frozen=True):
    address: str
    #: The server's reply code; None when the recipient was never offered to a server
    #: (``reason`` ``"suppressed"``).
    code: int | None
    reason: str


class ReportEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One delivery-report entry, per the HTTP API ("Delivery reports")."""

    event: Literal[
        "sent",
        "error",
        "deferred",
        "unknown",
        "bounced",
        "complained",
        "delayed",
        "pec_acceptance",
        "pec_delivery",
        "pec_error",
        "pec_timeout",
    ]
    event_id: str
    id: str
    tenant_id: str
    account_id: str
    attempt: int
    sent_ts: int | None = None
    error_ts: int | None = None
    deferred_ts: int | None = None
    unknown_ts: int | None = None
    error: str | None = None
    deferred_reason: str | None = None
    smtp_code: int | None = None
    metadata: dict[str, Any] | None = None
    possible_duplicate: bool = False
    refused_recipients: tuple[RefusedRecipient, ...] | None = None
    # bounced / complained / delayed (HTTP API, "Bounces, complaints and suppression"):
    # the API shows ``recipient``, ``status`` and ``diagnostic`` as null when a report
    # gives none, so they are left out only when unset (the other events).
    bounced_ts: int | None = None
    complained_ts: int | None = None
    delayed_ts: int | None = None
    recipient: str | msgspec.UnsetType | None = msgspec.UNSET
    bounce_type: BounceType | None = None
    status: str | msgspec.UnsetType | None = msgspec.UNSET
    diagnostic: str | msgspec.UnsetType | None = msgspec.UNSET
    source: BounceSource | None = None
    feedback_type: str | None = None
    #: The message's own account when a fallback (``account_id``) sent it.
    failover_from: str | None = None
    # PEC receipts (HTTP API, "Signing and routing"): when the provider says it
    # happened, and its error text (null when it gave none).
    pec_acceptance_ts: int | None = None
    pec_delivery_ts: int | None = None
    pec_error_ts: int | None = None
    pec_timeout_ts: int | None = None
    pec_details: str | msgspec.UnsetType | None = msgspec.UNSET


class StoredReport(msgspec.Struct, frozen=True):
    """A report event as kept in the outbox, in the order it was written."""

    seq: int
    event: ReportEvent


class ReportBacklog(msgspec.Struct, frozen=True):
    """A tenant's unacknowledged report events: how many, and the oldest one's instant."""

    count: int
    oldest_ts: float | None


class HistoryEntry(msgspec.Struct, frozen=True):
    event: str
    ts: float
    detail: str | None = None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """The state change the domain decided after an attempt; a store applies it atomically
    together with its report events and history entry."""

    status: Status
    due_ts: float
    attempts: int
    possible_duplicate: bool
    error: str | None = None
    smtp_code: int | None = None
    sent_ts: float | None = None
    error_ts: float | None = None
    events: tuple[ReportEvent, ...] = ()
    history: HistoryEntry | None = None
    wait_reason: str | None = None
    wait_detail: str | None = None
    #: What becomes of the message's rate-limit reservation: ``consume`` (the send
    #: happened, or may have: the slot then counts from when the attempt ended, so that
    #: the window holds as the receiving server sees it, however long the send took),
    #: ``release`` (nothing reached the server's queue), ``keep`` (a future slot the
    #: message waits for).
    slots: Literal["consume", "release", "keep"] = "release"
    #: Pause the account (authentication or TLS failure) ...
    pause: AccountPause | None = None
    #: ... or end its pause (an attempt got past the account's own checks).
    clear_pause: bool = False
    #: Recipients the attempt proved dead (a ``5.1.1`` refusal): kept with the message,
    #: each with its ``bounced`` event in ``events``, and suppressed.
    bounces: tuple[BounceRecord, ...] = ()
    #: Sent by a PEC account: the receipts to wait for (``PecWatch``).
    pec_watch: PecWatch | None = None


class PecWatch(msgspec.Struct, frozen=True, kw_only=True):
    """The receipts a message sent by a PEC account waits for: acceptance by
    ``acceptance_due_ts``, a delivery (or error) receipt of each of ``recipients`` by
    ``delivery_due_ts``; past either, a ``pec_timeout`` is reported once."""

    acceptance_due_ts: float
    delivery_due_ts: float
    recipients: int


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[QueuedMessage]
    next_cursor: str | None


class DeleteResult(msgspec.Struct, frozen=True):
    removed: int
    not_found: list[str]
    in_flight: list[str]


class Rejection(msgspec.Struct, frozen=True):
    id: str
    reason: str


class Enqueued(msgspec.Struct, frozen=True):
    """What an enqueue stored: the messages ``refused`` (the others were stored), and the
    earliest due time among the stored ones that wait only for their time (None when
    each stored one is suspended, or none was stored): the dispatcher needs waking only
    when that is sooner than it would wake anyway."""

    refused: list[Rejection]
    next_due_ts: float | None


def earliest_claimable(stored: Iterable[tuple[Status, float]]) -> float | None:
    """The earliest due time of ``stored`` messages (status as stored, due time) that a
    claim may take once their time comes; None when none may (suspended)."""
    return min((due for status, due in stored if status in QUEUED_STATUSES), default=None)


class MinuteCount(msgspec.Struct, frozen=True):
    """How many of a tenant's messages reached a final ``status`` during the minute that
    starts at ``minute_ts`` (whole seconds since the epoch, a multiple of 60)."""

    minute_ts: int
    tenant_id: str
    status: Status
    count: int


def minute_start(ts: float) -> int:
    """The start of the minute holding ``ts``, as ``MinuteCount.minute_ts`` counts it."""
    return int(ts // 60) * 60


class SuspendState(msgspec.Struct, frozen=True):
    """A tenant's suspensions after suspend/activate: ``["*"]`` for the whole tenant or
    the suspended batch codes, and how many not-final messages the scope holds."""

    tenant_id: str
    suspended_batches: list[str]
    pending_messages: int


class SubmitResult(msgspec.Struct, frozen=True):
    queued: int
    rejected: list[Rejection]
