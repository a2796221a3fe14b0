"""The message lifecycle: queue order, allowed transitions, and what follows an attempt."""

from __future__ import annotations

import math

from mailproxy.domain.model import (
    HistoryEntry,
    QueuedMessage,
    ReportEvent,
    Status,
    Transition,
    UnknownPolicy,
)
from mailproxy.domain.outcome import (
    AccountBroken,
    Delivered,
    Outcome,
    Permanent,
    Temporary,
    Unknown,
)
from mailproxy.domain.retry import RetryPolicy, retry_delay

#: Which state may follow which. ``sending`` is left by an attempt's outcome or by a
#: release (a claim given back unsent); ``error`` and ``scheduled``/``pending`` may be
#: replaced by a re-submission of the same id.
ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.SENDING, Status.SUSPENDED, Status.PENDING, Status.SCHEDULED}),
    Status.SCHEDULED: frozenset(
        {Status.SENDING, Status.PENDING, Status.SUSPENDED, Status.SCHEDULED}
    ),
    Status.DEFERRED: frozenset(
        {Status.SENDING, Status.SUSPENDED, Status.PENDING, Status.SCHEDULED}
    ),
    Status.SUSPENDED: frozenset({Status.PENDING, Status.SCHEDULED, Status.DEFERRED}),
    Status.SENDING: frozenset(
        {Status.SENT, Status.ERROR, Status.DEFERRED, Status.UNKNOWN, Status.PENDING}
    ),
    Status.UNKNOWN: frozenset(),
    Status.ERROR: frozenset({Status.PENDING, Status.SCHEDULED}),
    Status.SENT: frozenset(),
}


def is_final(status: Status) -> bool:
    """Final: ``sent``, ``error``, and ``unknown`` (reached only under at-most-once; under
    at-least-once an unknown attempt leads straight back to ``deferred``)."""
    return status in (Status.SENT, Status.ERROR, Status.UNKNOWN)


def can_transition(old: Status, new: Status) -> bool:
    return new in ALLOWED_TRANSITIONS[old]


def queue_order(message: QueuedMessage) -> tuple[int, int]:
    """The order in which due messages are claimed: priority (0 first), then acceptance
    order (``seq``) within a priority. Stores reproduce this in their queries; the
    contract suite proves they agree."""
    return (message.priority, message.seq)


def visible_status(message: QueuedMessage, now: float) -> Status:
    """The status a client sees: a scheduled message whose time has come is pending."""
    if message.status is Status.SCHEDULED and message.due_ts <= now:
        return Status.PENDING
    return message.status


def initial_status(deferred_ts: float | None, now: float) -> tuple[Status, float]:
    """Status and due instant of a newly accepted message."""
    if deferred_ts is not None and deferred_ts > now:
        return Status.SCHEDULED, float(deferred_ts)
    return Status.PENDING, now


def _event(
    message: QueuedMessage,
    event_id: str,
    kind: str,
    attempt: int,
    possible_duplicate: bool,
    **fields: object,
) -> ReportEvent:
    return ReportEvent(
        event=kind,  # type: ignore[arg-type]
        event_id=event_id,
        id=message.id,
        tenant_id=message.tenant_id,
        account_id=message.account_id,
        attempt=attempt,
        metadata=message.spec.metadata,
        possible_duplicate=possible_duplicate,
        **fields,  # type: ignore[arg-type]
    )


def decide(
    message: QueuedMessage,
    outcome: Outcome,
    *,
    now: float,
    policy: RetryPolicy,
    unknown_policy: UnknownPolicy,
    jitter_sample: float,
    event_id: str,
) -> Transition:
    """What follows one attempt on ``message`` that ended with ``outcome``.

    - Delivered → ``sent``. Permanent → ``error``.
    - Temporary → ``deferred`` until ``now + retry_delay``; ``error`` once the attempts
      reach ``max_retries + 1`` or the next try would be past ``max_age_s`` (``expired``).
    - Unknown → an ``unknown`` report at once; at-most-once: final ``unknown``;
      at-least-once: retried like a temporary failure, flagged ``possible_duplicate``
      (no separate ``deferred`` report for that step).
    - AccountBroken → ``deferred`` without consuming an attempt: the account is at
      fault, not the message; the age limit still applies.
    """
    attempt = message.attempts + 1
    duplicate = message.possible_duplicate

    if isinstance(outcome, Delivered):
        return Transition(
            status=Status.SENT,
            due_ts=message.due_ts,
            attempts=attempt,
            possible_duplicate=duplicate,
            smtp_code=outcome.smtp_code,
            sent_ts=now,
            events=(
                _event(
                    message,
                    event_id,
                    "sent",
                    attempt,
                    duplicate,
                    sent_ts=int(now),
                    smtp_code=outcome.smtp_code,
                    refused_recipients=outcome.refused or None,
                ),
            ),
            history=HistoryEntry("sent", now, f"attempt {attempt}"),
        )
    if isinstance(outcome, Permanent):
        return _fail(message, event_id, attempt, duplicate, outcome.reason, outcome.smtp_code, now)
    if isinstance(outcome, Unknown):
        unknown_event = _event(
            message,
            event_id,
            "unknown",
            attempt,
            duplicate,
            unknown_ts=int(now),
            error=outcome.reason,
        )
        if unknown_policy == "at_most_once":
            return Transition(
                status=Status.UNKNOWN,
                due_ts=message.due_ts,
                attempts=attempt,
                possible_duplicate=duplicate,
                error=outcome.reason,
                error_ts=now,
                events=(unknown_event,),
                history=HistoryEntry("unknown", now, outcome.reason),
            )
        retry = _retry(
            message,
            f"{event_id}.1",
            attempt,
            True,
            outcome.reason,
            None,
            now,
            policy,
            jitter_sample,
            report_deferral=False,
        )
        return Transition(
            status=retry.status,
            due_ts=retry.due_ts,
            attempts=retry.attempts,
            possible_duplicate=True,
            error=retry.error,
            error_ts=retry.error_ts,
            events=(unknown_event, *retry.events),
            history=HistoryEntry("unknown", now, outcome.reason),
        )
    if isinstance(outcome, AccountBroken):
        return _retry(
            message,
            event_id,
            message.attempts,
            duplicate,
            outcome.reason,
            outcome.smtp_code,
            now,
            policy,
            jitter_sample,
            report_deferral=True,
            consume_attempt=False,
        )
    assert isinstance(outcome, Temporary)
    return _retry(
        message,
        event_id,
        attempt,
        duplicate,
        outcome.reason,
        outcome.smtp_code,
        now,
        policy,
        jitter_sample,
        report_deferral=True,
    )


def _fail(
    message: QueuedMessage,
    event_id: str,
    attempt: int,
    duplicate: bool,
    reason: str,
    code: int | None,
    now: float,
) -> Transition:
    return Transition(
        status=Status.ERROR,
        due_ts=message.due_ts,
        attempts=attempt,
        possible_duplicate=duplicate,
        error=reason,
        smtp_code=code,
        error_ts=now,
        events=(
            _event(
                message,
                event_id,
                "error",
                attempt,
                duplicate,
                error_ts=int(now),
                error=reason,
                smtp_code=code,
            ),
        ),
        history=HistoryEntry("error", now, reason),
    )


def _retry(
    message: QueuedMessage,
    event_id: str,
    attempt: int,
    duplicate: bool,
    reason: str,
    code: int | None,
    now: float,
    policy: RetryPolicy,
    jitter_sample: float,
    *,
    report_deferral: bool,
    consume_attempt: bool = True,
) -> Transition:
    if consume_attempt and attempt > policy.max_retries:
        return _fail(
            message,
            event_id,
            attempt,
            duplicate,
            f"{reason} (gave up after {attempt} attempts)",
            code,
            now,
        )
    next_ts = now + retry_delay(policy, max(1, attempt), jitter_sample)
    if next_ts - message.created_ts > policy.max_age_s:
        return _fail(message, event_id, attempt, duplicate, f"expired: {reason}", code, now)
    events: tuple[ReportEvent, ...] = ()
    if report_deferral:
        events = (
            _event(
                message,
                event_id,
                "deferred",
                attempt,
                duplicate,
                deferred_ts=math.ceil(next_ts),
                deferred_reason=reason,
                smtp_code=code,
            ),
        )
    return Transition(
        status=Status.DEFERRED,
        due_ts=next_ts,
        attempts=attempt,
        possible_duplicate=duplicate,
        error=reason,
        smtp_code=code,
        events=events,
        history=HistoryEntry("deferred", now, reason),
    )


def resubmission_refusal(existing: Status) -> str | None:
    """Why a re-submitted id may not replace the stored message, or None if it may.

    Not yet sent → replaced (the corrected-campaign flow); ``sent`` → ``"already sent"``;
    ``sending`` or ``unknown`` (the server may have it) → ``"in flight"``.
    """
    if existing is Status.SENT:
        return "already sent"
    if existing in (Status.SENDING, Status.UNKNOWN):
        return "in flight"
    return None


def requeue_status(attempts: int, due_ts: float, now: float) -> Status:
    """The status of a claimed message given back without an attempt (released, or its
    lease recovered): ``deferred`` if it was tried before, else pending or scheduled."""
    if attempts:
        return Status.DEFERRED
    return Status.SCHEDULED if due_ts > now else Status.PENDING
