"""Report entries: how one is built from a message, and the entries of what is learnt
after an attempt — bounces, complaints and delays (:mod:`mailproxy.domain.bounces`) and
PEC receipts (:mod:`mailproxy.domain.pec`). Pure."""

from __future__ import annotations

import msgspec

from mailproxy.domain.bounces import (
    BounceFact,
    BounceRecord,
    ComplaintFact,
    DelayFact,
    refusal_bounce,
)
from mailproxy.domain.model import QueuedMessage, RefusedRecipient, ReportEvent, Transition
from mailproxy.domain.pec import PecReceipt, PecStage


def report_event(
    message: QueuedMessage,
    event_id: str,
    kind: str,
    attempt: int,
    possible_duplicate: bool,
    **fields: object,
) -> ReportEvent:
    """A report entry of ``kind`` about ``message``: its ids, its account (the one that
    sent it, and ``failover_from`` when a fallback did), its metadata, and ``fields``."""
    return ReportEvent(
        event=kind,  # type: ignore[arg-type]
        event_id=event_id,
        id=message.id,
        tenant_id=message.tenant_id,
        account_id=message.account_id,
        attempt=attempt,
        metadata=message.spec.metadata,
        possible_duplicate=possible_duplicate,
        failover_from=message.failover_from,
        **fields,  # type: ignore[arg-type]
    )


def with_refusal_bounces(
    message: QueuedMessage,
    transition: Transition,
    refused: tuple[RefusedRecipient, ...],
    event_id: str,
    now: float,
) -> Transition:
    """``transition`` with a hard bounce (record and ``bounced`` event) for each refusal
    that proves its address dead (:func:`mailproxy.domain.bounces.refusal_bounce`)."""
    facts = [
        fact
        for r in refused
        if r.code is not None and (fact := refusal_bounce(r.address, r.code, r.reason))
    ]
    if not facts:
        return transition
    records = tuple(bounce_record(fact, now) for fact in facts)
    events = tuple(
        bounce_event(message, record, f"{event_id}.b{n}") for n, record in enumerate(records, 1)
    )
    return msgspec.structs.replace(transition, events=transition.events + events, bounces=records)


#: A diagnostic is the remote server's text: kept to one line of this many characters.
MAX_DIAGNOSTIC_CHARS = 500


def _one_line(text: str | None) -> str | None:
    if text is None:
        return None
    return " ".join(text.split())[:MAX_DIAGNOSTIC_CHARS] or None


def bounce_record(fact: BounceFact | ComplaintFact | DelayFact, now: float) -> BounceRecord:
    """The record a message keeps of a bounce, complaint or delay that came at ``now``
    (a diagnostic as one line of at most :data:`MAX_DIAGNOSTIC_CHARS`)."""
    if isinstance(fact, BounceFact):
        return BounceRecord(
            kind="bounce", recipient=fact.recipient, ts=now, type=fact.type,
            status=fact.status, diagnostic=_one_line(fact.diagnostic), source=fact.source,
        )  # fmt: skip
    if isinstance(fact, ComplaintFact):
        return BounceRecord(
            kind="complaint", recipient=fact.recipient, ts=now, feedback_type=fact.feedback_type
        )
    return BounceRecord(
        kind="delay", recipient=fact.recipient, ts=now, status=fact.status,
        diagnostic=_one_line(fact.diagnostic),
    )  # fmt: skip


def bounce_event(message: QueuedMessage, record: BounceRecord, event_id: str) -> ReportEvent:
    """The report entry of ``record`` (``bounced``, ``complained`` or ``delayed``): the
    message keeps its status, so the attempt is the last one made."""
    at = int(record.ts)
    common = (message, event_id)
    attempt, duplicate = max(1, message.attempts), message.possible_duplicate
    if record.kind == "bounce":
        return report_event(
            *common, "bounced", attempt, duplicate, bounced_ts=at, recipient=record.recipient,
            bounce_type=record.type, status=record.status, diagnostic=record.diagnostic,
            source=record.source,
        )  # fmt: skip
    if record.kind == "complaint":
        return report_event(
            *common, "complained", attempt, duplicate, complained_ts=at,
            recipient=record.recipient, feedback_type=record.feedback_type,
        )  # fmt: skip
    return report_event(
        *common, "delayed", attempt, duplicate, delayed_ts=at, recipient=record.recipient,
        status=record.status, diagnostic=record.diagnostic,
    )  # fmt: skip


def pec_receipt_event(
    message: QueuedMessage, receipt: PecReceipt, event_id: str, now: float
) -> ReportEvent | None:
    """The report entry of ``receipt`` about ``message`` (None for a kind not reported)."""
    if receipt.kind is None:
        return None
    at = round(receipt.ts if receipt.ts is not None else now)
    return report_event(
        message, event_id, receipt.kind, message.attempts, False,
        pec_details=receipt.details,
        recipient=msgspec.UNSET if receipt.recipient is None else receipt.recipient,
        **{f"{receipt.kind}_ts": at},
    )  # fmt: skip


def pec_timeout_event(
    message: QueuedMessage, stage: PecStage, waited_s: float, now: float
) -> ReportEvent:
    """The ``pec_timeout`` entry of ``message``, whose ``stage`` receipt did not come in
    ``waited_s``. Its id is the message's and the stage's: a timeout is reported once."""
    return report_event(
        message, f"pec-timeout-{stage}-{message.tenant_id}-{message.pk}", "pec_timeout",
        message.attempts, False, pec_timeout_ts=round(now),
        pec_details=f"no {stage} receipt within {waited_s:.0f} s",
    )  # fmt: skip
