"""What a store applies by itself when it writes a message: the status it is stored with
when it comes (back) to the queue, whether a re-submission may replace it, and whether
its account may be deleted. Pure."""

from __future__ import annotations

from collections.abc import Collection

from mailproxy.domain.model import QUEUED_STATUSES, Status
from mailproxy.domain.policy import suspension_of


def resubmission_refusal(existing: Status, possible_duplicate: bool = False) -> str | None:
    """Why a re-submitted id may not replace the stored message, or None if it may.

    Not yet sent → replaced (the corrected-campaign flow); ``sent`` → ``"already sent"``;
    ``sending`` or ``unknown``, or an earlier attempt ended unknown (the server may have
    it: a replacement would go out with another Message-ID and without
    ``possible_duplicate``) → ``"in flight"``.
    """
    if existing is Status.SENT:
        return "already sent"
    if existing in (Status.SENDING, Status.UNKNOWN) or possible_duplicate:
        return "in flight"
    return None


def stored_status(status: Status, suspended: Collection[str], batch_code: str | None) -> Status:
    """The status a message is stored with when it is accepted or goes back to the queue
    (``status``): ``suspended`` while its tenant or its batch is suspended (see
    :func:`mailproxy.domain.policy.suspension_of`); a suspended message is never claimed
    until its scope is activated."""
    if status in QUEUED_STATUSES and suspension_of(suspended, batch_code) is not None:
        return Status.SUSPENDED
    return status


def account_deletion_refusal(account_id: str, waiting: int, *, force: bool) -> str | None:
    """Why an account may not be deleted, or None if it may: while ``waiting`` messages
    (queued or suspended) remain, only with ``force``, which fails each of them
    (:func:`mailproxy.domain.lifecycle.abandoned_with_account`) in the same transaction.
    Messages being sent finish their attempt either way."""
    if waiting and not force:
        return (
            f"account {account_id} still has {waiting} queued messages "
            "(delete with force to fail them)"
        )
    return None


def requeue_status(attempts: int, due_ts: float, now: float) -> Status:
    """The status of a claimed message given back without an attempt (released, or its
    lease recovered): ``deferred`` if it was tried before, else pending or scheduled."""
    if attempts:
        return Status.DEFERRED
    return Status.SCHEDULED if due_ts > now else Status.PENDING
