"""The observability port: what the service reports as it works, for metrics.

The service calls these synchronously on the event loop; implementations must be cheap
and must not raise. Contract: ``tests/contract/test_delivery_events.py``.
"""

from __future__ import annotations

from typing import Literal, Protocol

#: How an attempt ended, as counted: ``rate_limited`` is a deferral by a rate limit
#: (no attempt was made), the others are attempts.
AttemptResult = Literal["sent", "deferred", "error", "unknown", "rate_limited"]


#: Whether a message that had to be DKIM-signed was.
SigningResult = Literal["signed", "failed"]

#: What became of one bounce-mailbox message (``domain.bounces.MailboxOutcome``).
MailboxResult = Literal["applied", "unmatched", "ignored", "unparsed"]


class DeliveryEvents(Protocol):
    def accepted(self, tenant_id: str, count: int, seconds: float) -> None:
        """``count`` messages of the tenant were committed by a call that took
        ``seconds``."""

    def attempted(
        self,
        tenant_id: str,
        account_id: str,
        result: AttemptResult,
        seconds: float | None,
    ) -> None:
        """An attempt ended with ``result``; ``seconds`` is the SMTP transaction time
        (None when no transaction happened)."""

    def delivered(self, tenant_id: str, account_id: str, accept_to_sent_s: float) -> None:
        """A message was sent, ``accept_to_sent_s`` after it was accepted."""

    def configured(self, tenant_id: str, account_id: str) -> None:
        """The account exists (it was configured before the service started, added, or
        replaced): what is counted per account starts at 0 now rather than at its first
        event, so that a dashboard or an alert on it reads 0, not "no data". Saying it
        again changes nothing."""

    def forget(self, tenant_id: str, account_id: str | None = None) -> None:
        """The account (every account of the tenant and the tenant itself, when
        ``account_id`` is None) was deleted: drop everything kept about it, so that no
        series of it is exported any more and what is kept stays bounded by what exists.
        Forgetting what was never seen is a no-op."""

    def mailbox_read(self, result: MailboxResult) -> None:
        """A bounce-mailbox message was read for the first time and ended ``result``."""

    def bounce_recorded(self, tenant_id: str, kind: str) -> None:
        """A ``bounce``, ``complaint`` or ``delay`` was kept with one of the tenant's
        messages (from a mailbox or an SMTP refusal)."""

    def signed(self, tenant_id: str, outcome: SigningResult) -> None:
        """A message of the tenant was DKIM-signed for an attempt, or could not be (the
        attempt then failed without sending)."""

    def pec_receipt(self, kind: str, count: int) -> None:
        """``count`` PEC receipts of ``kind`` (an ``X-Ricevuta``: ``accettazione``,
        ``avvenuta-consegna``, …) were applied to sent messages, or ``count`` messages
        waited past their deadline (``timeout``)."""

    def failed_over(self, tenant_id: str, account_id: str) -> None:
        """An attempt of a message of ``account_id`` was made through one of its
        fallbacks (the account was paused, or its rate windows full)."""
