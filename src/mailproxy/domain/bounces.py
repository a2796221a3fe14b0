"""Bounces, complaints and the suppression list: the facts a bounce mailbox (or an SMTP
refusal) tells about a sent message, and what they do to the tenant's suppression list.

Rules (HTTP API, "Bounces, complaints and suppression"):

- a hard bounce that proves the address dead (:func:`proves_dead`: ``5.1.1`` and its
  kin, no status at all, a detector's permanent failure, a ``5.1.x`` / plain ``550``
  refusal at RCPT) suppresses the recipient (``hard_bounce``, no expiry);
- a complaint (ARF) suppresses the recipient (``complaint``, no expiry);
- every other bounce counts (:func:`counts_toward_rule`: ``4.x.x``, and a hard bounce
  for a reason of the message such as ``5.7.1`` policy or ``5.2.2`` mailbox full); when
  the ``soft_bounce_limit``-th message within ``soft_bounce_window_s`` bounced at an
  address this way, it is suppressed for ``soft_bounce_suppress_s`` (``soft_bounce``);
- a delay (DSN ``Action: delayed``) is reported and never counts;
- manual entries (``manual``) carry an optional expiry.

An entry that exists keeps the stronger reason (complaint > hard_bounce > manual >
soft_bounce) and the later of the two expiries (none: never expires).

Addresses are compared exactly on the local part and case-insensitively on the domain
(RFC 5321 §2.4: a local part may be case-sensitive, a domain never is), a
non-ASCII domain in its IDNA form: see :func:`address_key`.

Pure: ``now`` comes in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from mailproxy.domain.pec import PecReceipt

BounceType = Literal["hard", "soft"]
BounceSource = Literal["dsn", "smtp", "heuristic"]
SuppressionReason = Literal["hard_bounce", "complaint", "soft_bounce", "manual"]
SUPPRESSION_REASONS: tuple[SuppressionReason, ...] = (
    "hard_bounce", "complaint", "soft_bounce", "manual",
)  # fmt: skip
#: Which reason wins when an address is suppressed again.
_STRENGTH: dict[str, int] = {"soft_bounce": 1, "manual": 2, "hard_bounce": 3, "complaint": 4}
DAY_S = 86_400.0


class BounceFact(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient's failure after (or at) the hand-over."""

    recipient: str
    type: BounceType
    #: The enhanced status code (``"5.1.1"``), or None when the report gives none.
    status: str | None = None
    diagnostic: str | None = None
    source: BounceSource = "dsn"


class ComplaintFact(msgspec.Struct, frozen=True, kw_only=True):
    """A recipient (or their provider) reported the message as unwanted (RFC 5965)."""

    recipient: str | None
    #: ARF ``Feedback-Type`` (``abuse``, ``fraud``, ``virus``, ``other``, ...).
    feedback_type: str = "abuse"


class DelayFact(msgspec.Struct, frozen=True, kw_only=True):
    """A DSN with ``Action: delayed``: still trying; reported, never counted."""

    recipient: str
    status: str | None = None
    diagnostic: str | None = None


ReportKind = Literal["dsn", "arf", "heuristic", "auto_reply", "unparsed"]


class ParsedReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one message of a bounce mailbox says.

    ``kind`` ``auto_reply`` (RFC 3834 auto-replies, out-of-office) carries no facts and is
    set aside; ``unparsed`` carries none either and is left in the mailbox for people.
    ``tokens`` are the correlation tokens found (VERP addresses the report was sent to
    first, then the quoted ``X-Mail-Proxy-Ref``), most specific first.
    """

    kind: ReportKind
    bounces: tuple[BounceFact, ...] = ()
    complaints: tuple[ComplaintFact, ...] = ()
    delays: tuple[DelayFact, ...] = ()
    tokens: tuple[str, ...] = ()
    #: The quoted original's ``Message-ID`` (when the report quotes one).
    original_message_id: str | None = None
    #: For people: the report's ``Subject`` and why it was not understood.
    summary: str = ""


class BounceRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A bounce, complaint or delay as kept with its message (``GET /messages/{id}``)."""

    kind: Literal["bounce", "complaint", "delay"]
    recipient: str | None
    ts: float
    type: BounceType | None = None
    status: str | None = None
    diagnostic: str | None = None
    source: BounceSource | None = None
    feedback_type: str | None = None


class SuppressionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's soft-bounce rule (``suppression.*``)."""

    soft_bounce_limit: int = 3
    soft_bounce_window_s: float = 7 * DAY_S
    soft_bounce_suppress_s: float = 7 * DAY_S


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    """One suppressed address of a tenant (SUPPRESSION in the HTTP API)."""

    tenant_id: str
    address: str
    reason: SuppressionReason
    created_ts: float
    expires_ts: float | None = None
    source_message_id: str | None = None
    detail: str | None = None


def address_key(address: str) -> str:
    """The form addresses are compared in: the local part as it is, the domain in lower
    case (``Jane@Example.COM`` and ``Jane@example.com`` are one; ``jane@`` is another)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip()
    domain = domain.lower()
    if not domain.isascii():
        # The envelope carries the IDNA form; a report may name either.
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def is_active(entry: Suppression, now: float) -> bool:
    return entry.expires_ts is None or entry.expires_ts > now


def merged(existing: Suppression | None, new: Suppression, now: float) -> Suppression:
    """The entry kept when ``new`` is added for an address that may already have one:
    the stronger reason's, with the later of the two expiries (None is later than any
    instant), so that adding an entry never shortens a suppression. An expired entry
    counts as absent."""
    if existing is None or not is_active(existing, now):
        return new
    later = (
        None
        if existing.expires_ts is None or new.expires_ts is None
        else max(existing.expires_ts, new.expires_ts)
    )
    kept = new if _STRENGTH[new.reason] > _STRENGTH[existing.reason] else existing
    return msgspec.structs.replace(kept, expires_ts=later)


def proves_dead(record: BounceRecord) -> bool:
    """A hard bounce that says the address itself does not work: an enhanced status of
    :data:`ADDRESS_DEAD` (``5.1.1`` …), or none at all (a DSN without a status, a
    detector's permanent failure). A hard bounce with another status (``5.7.1`` policy,
    ``5.2.2`` mailbox full, ``5.3.4`` too big) failed this message, not the address."""
    return (
        record.kind == "bounce"
        and record.type == "hard"
        and (record.status is None or record.status in ADDRESS_DEAD)
    )


def counts_toward_rule(record: BounceRecord) -> bool:
    """A bounce that the soft-bounce rule counts: every bounce that does not prove the
    address dead (soft ones, and hard ones with a status of another kind)."""
    return record.kind == "bounce" and bool(record.recipient) and not proves_dead(record)


def suppression_after(
    record: BounceRecord,
    *,
    tenant_id: str,
    message_id: str | None,
    counted_in_window: int,
    settings: SuppressionSettings,
    now: float,
) -> Suppression | None:
    """The suppression ``record`` (a bounce or complaint of one of the tenant's messages)
    brings, or None.

    ``counted_in_window`` is how many of the tenant's messages bounced at the address in
    ``settings.soft_bounce_window_s`` before ``now`` with a bounce that
    :func:`counts_toward_rule`, this one's message included.
    """
    if record.kind == "delay" or not record.recipient:
        return None
    detail = (
        f"feedback: {record.feedback_type}"
        if record.kind == "complaint"
        else record.diagnostic or record.status
    )
    common = {
        "tenant_id": tenant_id, "address": record.recipient, "created_ts": now,
        "source_message_id": message_id, "detail": detail,
    }  # fmt: skip
    if record.kind == "complaint":
        return Suppression(reason="complaint", **common)  # type: ignore[arg-type]
    if proves_dead(record):
        return Suppression(reason="hard_bounce", **common)  # type: ignore[arg-type]
    if 0 < settings.soft_bounce_limit <= counted_in_window:
        expires = now + settings.soft_bounce_suppress_s
        return Suppression(reason="soft_bounce", expires_ts=expires, **common)  # type: ignore[arg-type]
    return None


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of an SMTP reply text
    (``"5.1.1 <x>: Recipient address rejected"`` → ``"5.1.1"``), or None."""
    head = text.strip().split(" ", 1)[0].rstrip(".,;:")
    parts = head.split(".")
    if (
        len(parts) == 3
        and parts[0] in ("2", "4", "5")
        and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts[1:])
    ):
        return head
    return None


#: Enhanced codes that say the address itself does not work (RFC 3463 §3.2): bad
#: mailbox (5.1.1), bad system / domain (5.1.2), bad syntax (5.1.3), moved (5.1.6),
#: null MX (5.1.10, RFC 7505).
ADDRESS_DEAD = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})


def refusal_bounce(recipient: str, code: int, text: str) -> BounceFact | None:
    """The hard bounce an SMTP refusal of ``recipient`` amounts to, or None.

    Counts as one: an enhanced status of :data:`ADDRESS_DEAD`, or a plain ``550`` /
    ``551`` / ``553`` with no enhanced code (the classic "no such user"). A 5xx with any
    other enhanced code (``5.7.1`` policy, ``5.2.2`` mailbox full, ``5.3.4`` too big)
    is a failure of this message, not proof that the address is dead.
    """
    status = enhanced_status(text)
    dead = status in ADDRESS_DEAD if status is not None else code in (550, 551, 553)
    if not dead:
        return None
    return BounceFact(
        recipient=recipient,
        type="hard",
        status=status,
        diagnostic=f"{code} {text}".strip(),
        source="smtp",
    )


MailboxOutcome = Literal["applied", "unmatched", "ignored", "unparsed"]


class MailboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What one bounce-mailbox message did, as a store commits it in one transaction:
    the message's key (mailbox, UIDVALIDITY, UID) with ``outcome``, and, when it was
    ``applied`` to a sent message, the records kept with that message, their report
    events and the suppressions they bring."""

    mailbox: str
    uidvalidity: int
    uid: int
    outcome: MailboxOutcome
    summary: str = ""
    #: The tenant the mailbox belongs to (None: the instance's shared mailbox).
    mailbox_tenant_id: str | None = None
    tenant_id: str | None = None
    message_pk: int | None = None
    message_id: str | None = None
    records: tuple[BounceRecord, ...] = ()
    #: The report events of ``records``, one each, in the same order.
    events: tuple[Any, ...] = ()
    settings: SuppressionSettings = SuppressionSettings()
    #: A PEC receipt about the message (``events`` then holds its report entry, if any).
    pec: PecReceipt | None = None


def without_known(entry: MailboxEntry, kept: Iterable[BounceRecord]) -> MailboxEntry:
    """``entry`` without the records (and their events) its message already keeps: a
    bounce or complaint of one recipient counts once per kind and type, so the same
    report read twice (a mailbox configured both as an account's and as the shared one,
    a server that sends its report again) changes nothing the second time. Every delay
    is news: a server tells of a delay again as it goes on."""
    known = {_fact_key(r) for r in kept if r.kind != "delay"}
    keep = [
        i for i, r in enumerate(entry.records) if r.kind == "delay" or _fact_key(r) not in known
    ]
    if len(keep) == len(entry.records):
        return entry
    return msgspec.structs.replace(
        entry,
        records=tuple(entry.records[i] for i in keep),
        events=tuple(entry.events[i] for i in keep),
    )


def _fact_key(record: BounceRecord) -> tuple[str, str | None, str | None]:
    recipient = address_key(record.recipient) if record.recipient else None
    return (record.kind, recipient, record.type)


class UnparsedReport(msgspec.Struct, frozen=True, kw_only=True):
    """A mailbox message nobody could read, left in place for people (status page)."""

    mailbox: str
    uid: int
    summary: str
    seen_ts: float
    tenant_id: str | None = None


class SuppressionPage(msgspec.Struct, frozen=True):
    suppressions: list[Suppression]
    next_cursor: str | None


def suppressions_for(
    records: Sequence[BounceRecord],
    *,
    tenant_id: str,
    message_id: str | None,
    settings: SuppressionSettings,
    counted: Mapping[str, int],
    now: float,
) -> list[Suppression]:
    """The suppressions ``records`` of one message bring (:func:`suppression_after` per
    record); ``counted`` holds each address's count for the rule, by :func:`address_key`,
    this message included. A store merges them into the list."""
    found = []
    for record in records:
        key = address_key(record.recipient) if record.recipient else ""
        entry = suppression_after(
            record, tenant_id=tenant_id, message_id=message_id,
            counted_in_window=counted.get(key, 0), settings=settings, now=now,
        )  # fmt: skip
        if entry is not None:
            found.append(entry)
    return found
