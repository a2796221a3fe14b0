"""The message lifecycle: queue order, allowed transitions, and what follows an attempt."""

from __future__ import annotations

from typing import Literal

import msgspec

from mailproxy.domain.model import (
    AccountPause,
    HistoryEntry,
    QueuedMessage,
    ReportEvent,
    Status,
    Transition,
    UnknownPolicy,
    due_second,
)
from mailproxy.domain.outcome import (
    AccountBroken,
    Delivered,
    Outcome,
    OutsideWindow,
    Permanent,
    RateLimited,
    Temporary,
    Unknown,
)
from mailproxy.domain.policy import pause_account, rate_saturation
from mailproxy.domain.report_events import report_event, with_refusal_bounces
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
        {
            Status.SENT,
            Status.ERROR,
            Status.DEFERRED,
            Status.UNKNOWN,
            Status.PENDING,
            Status.SCHEDULED,
        }
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


def decide(
    message: QueuedMessage,
    outcome: Outcome,
    *,
    now: float,
    policy: RetryPolicy,
    unknown_policy: UnknownPolicy,
    jitter_sample: float,
    event_id: str,
    pause: AccountPause | None = None,
    failover: bool = False,
) -> Transition:
    """What follows one attempt on ``message`` that ended with ``outcome``.

    - Delivered → ``sent``. Permanent → ``error``.
    - Temporary → ``deferred`` until ``now + retry_delay``; ``error`` once the attempts
      reach ``max_retries + 1`` or the next try would be past ``max_age_s`` (``expired``).
    - Unknown → an ``unknown`` report at once; at-most-once: final ``unknown``;
      at-least-once: retried like a temporary failure, flagged ``possible_duplicate``
      (no separate ``deferred`` report for that step).
    - AccountBroken → the account is paused (circuit breaker, backoff over its
      consecutive failures) and the message ``deferred`` until the pause ends, without
      consuming an attempt; the age limit still applies. With ``failover`` (its account
      has fallbacks) it is due at once: the next claim gives it to a fallback; and a
      Temporary failure of the account (``account_level``: connection, greeting, 421)
      pauses it in the same way.
    - RateLimited (no attempt was made) → ``deferred`` to the instant its reserved slot
      starts, reason ``rate_limit``, no attempt consumed; with ``reject``: final ``error``
      ``rate_limit_exceeded``; when the wait is longer than ``failover_after_s``: back to
      ``pending`` at once, the sending account paused for as long as its windows hold
      messages that long (:func:`mailproxy.domain.policy.rate_saturation`), so that a
      fallback sends it.
    - OutsideWindow (no attempt was made) → ``scheduled`` for the window's opening, reason
      ``send_window``, nothing reported.

    Rate-limit reservations are consumed when the server may have the message (delivered
    or unknown), kept by a rate deferral, and released otherwise. ``pause`` is the
    account's pause when the message was claimed: any outcome that got past the account's
    own checks ends it.
    """
    transition = _transition_after(
        message, outcome, now, policy, unknown_policy, jitter_sample, event_id, pause, failover
    )
    # Refusals that prove an address dead are hard bounces whatever becomes of the
    # message: sent to the others, failed, or retried for a recipient refused for now.
    if isinstance(outcome, Delivered | Permanent | Temporary) and outcome.refused:
        transition = with_refusal_bounces(message, transition, outcome.refused, event_id, now)
    if isinstance(outcome, Delivered | Unknown):
        slots: Literal["consume", "release", "keep"] = "consume"
    elif isinstance(outcome, RateLimited) and transition.status is Status.DEFERRED:
        slots = "keep"  # the future slot it waits for
    else:
        slots = "release"
    account_checked = not isinstance(outcome, AccountBroken | RateLimited | OutsideWindow) and not (
        isinstance(outcome, Temporary) and outcome.account_level
    )
    return msgspec.structs.replace(
        transition, slots=slots, clear_pause=pause is not None and account_checked
    )


def _transition_after(
    message: QueuedMessage,
    outcome: Outcome,
    now: float,
    policy: RetryPolicy,
    unknown_policy: UnknownPolicy,
    jitter_sample: float,
    event_id: str,
    pause: AccountPause | None,
    failover: bool,
) -> Transition:
    attempt = message.attempts + 1
    duplicate = message.possible_duplicate
    if isinstance(outcome, RateLimited):
        return _rate_limited(message, outcome, event_id, now, pause)
    if isinstance(outcome, OutsideWindow):
        # Not a failure, nothing to report: the message waits, as if it had been
        # accepted outside its window.
        return Transition(
            status=Status.SCHEDULED, due_ts=outcome.opens_ts, attempts=message.attempts,
            possible_duplicate=duplicate, error=message.error, smtp_code=message.smtp_code,
            history=HistoryEntry("scheduled", now, "send window closed"),
            wait_reason="send_window",
        )  # fmt: skip
    if isinstance(outcome, Delivered):
        return _delivered(message, outcome, event_id, now)
    if isinstance(outcome, Permanent):
        return _fail(message, event_id, attempt, duplicate, outcome.reason, outcome.smtp_code, now)
    if isinstance(outcome, Unknown):
        return _unknown(message, outcome, event_id, now, policy, unknown_policy, jitter_sample)
    if isinstance(outcome, AccountBroken) or (
        # An account that cannot be reached now (connection, greeting, 421) hands its
        # messages to a fallback when it has one; without, each message retries.
        isinstance(outcome, Temporary) and outcome.account_level and failover
    ):
        return _account_broken(
            message, outcome, event_id, now, policy, jitter_sample, pause, failover
        )
    assert isinstance(outcome, Temporary)
    return _retry(
        message, event_id, attempt, duplicate, outcome.reason, outcome.smtp_code, now, policy,
        jitter_sample, report_deferral=True,
    )  # fmt: skip


def _rate_limited(
    message: QueuedMessage,
    outcome: RateLimited,
    event_id: str,
    now: float,
    pause: AccountPause | None,
) -> Transition:
    duplicate = message.possible_duplicate
    after_s = outcome.failover_after_s
    if after_s is not None and outcome.until_ts - now > after_s:
        # Back to the queue at once, the sending account paused while its windows would
        # hold a message longer than that: the next claim gives the message (and the
        # account's others) to a fallback.
        return Transition(
            status=Status.PENDING, due_ts=now, attempts=message.attempts,
            possible_duplicate=duplicate, error=message.error, smtp_code=message.smtp_code,
            history=HistoryEntry(
                "failover", now, f"{outcome.window} full until {due_second(outcome.until_ts)}"
            ),
            pause=rate_saturation(
                message.tenant_id, message.account_id, outcome.until_ts, after_s, pause
            ),
        )  # fmt: skip
    if outcome.reject:
        return _fail(
            message, event_id, message.attempts, duplicate,
            f"rate_limit_exceeded: {outcome.window}", None, now,
        )  # fmt: skip
    return _defer(
        message, event_id, message.attempts, duplicate, now, outcome.until_ts,
        reason="rate_limit", wait_reason="rate_limit", wait_detail=outcome.window,
        error=message.error, code=None,
    )  # fmt: skip


def _delivered(message: QueuedMessage, outcome: Delivered, event_id: str, now: float) -> Transition:
    attempt = message.attempts + 1
    duplicate = message.possible_duplicate
    return Transition(
        status=Status.SENT,
        due_ts=message.due_ts,
        attempts=attempt,
        possible_duplicate=duplicate,
        smtp_code=outcome.smtp_code,
        sent_ts=now,
        events=(
            report_event(
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


def _unknown(
    message: QueuedMessage,
    outcome: Unknown,
    event_id: str,
    now: float,
    policy: RetryPolicy,
    unknown_policy: UnknownPolicy,
    jitter_sample: float,
) -> Transition:
    attempt = message.attempts + 1
    duplicate = message.possible_duplicate
    unknown_event = report_event(
        message, event_id, "unknown", attempt, duplicate, unknown_ts=int(now),
        error=outcome.reason,
    )  # fmt: skip
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
        message, f"{event_id}.1", attempt, True, outcome.reason, None, now, policy,
        jitter_sample, report_deferral=False,
    )  # fmt: skip
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


def _account_broken(
    message: QueuedMessage,
    outcome: AccountBroken | Temporary,
    event_id: str,
    now: float,
    policy: RetryPolicy,
    jitter_sample: float,
    pause: AccountPause | None,
    failover: bool,
) -> Transition:
    duplicate = message.possible_duplicate
    paused = pause_account(
        message.tenant_id, message.account_id, pause.failures if pause is not None else 0,
        outcome.reason, now, policy, jitter_sample,
    )  # fmt: skip
    if paused.until_ts - message.created_ts > policy.max_age_s:
        return _fail(
            message, event_id, message.attempts, duplicate, f"expired: {outcome.reason}",
            outcome.smtp_code, now,
        )  # fmt: skip
    deferral = _defer(
        message, event_id, message.attempts, duplicate, now, now if failover else paused.until_ts,
        reason=outcome.reason, wait_reason="account_paused", wait_detail=outcome.reason,
        error=outcome.reason, code=outcome.smtp_code,
    )  # fmt: skip
    return msgspec.structs.replace(deferral, pause=paused)


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
            report_event(
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
) -> Transition:
    if attempt > policy.max_retries:
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
    return _defer(
        message,
        event_id,
        attempt,
        duplicate,
        now,
        next_ts,
        reason=reason,
        wait_reason="retry",
        wait_detail=reason,
        error=reason,
        code=code,
        report=report_deferral,
    )


def _defer(
    message: QueuedMessage,
    event_id: str,
    attempts: int,
    duplicate: bool,
    now: float,
    until_ts: float,
    *,
    reason: str,
    wait_reason: str,
    wait_detail: str | None,
    error: str | None,
    code: int | None,
    report: bool = True,
) -> Transition:
    events: tuple[ReportEvent, ...] = ()
    if report:
        events = (
            report_event(
                message,
                event_id,
                "deferred",
                attempts,
                duplicate,
                deferred_ts=due_second(until_ts),
                deferred_reason=reason,
                smtp_code=code,
            ),
        )
    return Transition(
        status=Status.DEFERRED,
        due_ts=until_ts,
        attempts=attempts,
        possible_duplicate=duplicate,
        error=error,
        smtp_code=code,
        events=events,
        history=HistoryEntry(
            "deferred", now, reason if wait_reason == "retry" else f"{wait_reason}: {wait_detail}"
        ),
        wait_reason=wait_reason,
        wait_detail=wait_detail,
    )


#: The error of a message whose account was deleted before it was sent.
ACCOUNT_DELETED = "account deleted"


def orphaned(message: QueuedMessage, decided: Transition, now: float, event_id: str) -> Transition:
    """What follows an attempt that would wait for another one (``decided``) when the
    message's account was deleted while the attempt ran: no account will ever claim it
    again, so it fails with ``account deleted``, keeping the attempt just made and whether
    the server may already have the message."""
    return msgspec.structs.replace(
        _fail(message, event_id, decided.attempts, decided.possible_duplicate,
              ACCOUNT_DELETED, decided.smtp_code, now),
        slots="consume" if decided.slots == "consume" else "release",
    )  # fmt: skip


def abandoned_with_account(message: QueuedMessage, now: float, deletion_id: str) -> Transition:
    """A waiting message of an account deleted with ``force``: it will never be attempted
    again, so it fails with ``account deleted``, reported like any other failure. Its
    event id is ``{deletion_id}.{message id}``: one deletion, one distinct event each."""
    return _fail(
        message, f"{deletion_id}.{message.id}", message.attempts, message.possible_duplicate,
        ACCOUNT_DELETED, None, now,
    )  # fmt: skip
