"""The report entries of PEC receipts (:mod:`mailproxy.domain.pec`): one per receipt
that is reported, and one ``pec_timeout`` per deadline a message waited past."""

from __future__ import annotations

import msgspec

from mailproxy.domain.model import QueuedMessage, ReportEvent
from mailproxy.domain.pec import PecReceipt, PecStage


def pec_receipt_event(
    message: QueuedMessage, receipt: PecReceipt, event_id: str, now: float
) -> ReportEvent | None:
    """The report entry of ``receipt`` about ``message`` (None for a kind not reported)."""
    if receipt.kind is None:
        return None
    at = round(receipt.ts if receipt.ts is not None else now)
    event = ReportEvent(
        event=receipt.kind, event_id=event_id, id=message.id, tenant_id=message.tenant_id,
        account_id=message.account_id, attempt=message.attempts,
        metadata=message.spec.metadata, pec_details=receipt.details,
        recipient=msgspec.UNSET if receipt.recipient is None else receipt.recipient,
    )  # fmt: skip
    return msgspec.structs.replace(event, **{f"{receipt.kind}_ts": at})


def pec_timeout_event(
    message: QueuedMessage, stage: PecStage, waited_s: float, now: float
) -> ReportEvent:
    """The ``pec_timeout`` entry of ``message``, whose ``stage`` receipt did not come in
    ``waited_s``. Its id is the message's and the stage's: a timeout is reported once."""
    return ReportEvent(
        event="pec_timeout", event_id=f"pec-timeout-{stage}-{message.tenant_id}-{message.pk}",
        id=message.id, tenant_id=message.tenant_id, account_id=message.account_id,
        attempt=message.attempts, metadata=message.spec.metadata, pec_timeout_ts=round(now),
        pec_details=f"no {stage} receipt within {waited_s:.0f} s",
    )  # fmt: skip
