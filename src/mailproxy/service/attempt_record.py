"""What one settled attempt leaves behind: a log line and the delivery metrics."""

from __future__ import annotations

import logging

from mailproxy.domain.model import QueuedMessage, Status, Transition, due_second
from mailproxy.domain.outcome import Outcome, RateLimited, Unknown
from mailproxy.ports.observability import AttemptResult, DeliveryEvents

log = logging.getLogger("mailproxy")


def attempt_result(outcome: Outcome, transition: Transition) -> AttemptResult:
    """The attempt as the logs and metrics name it."""
    if transition.status is Status.SENT:
        return "sent"
    if transition.status is Status.ERROR:
        return "error"
    if isinstance(outcome, Unknown):
        return "unknown"
    if isinstance(outcome, RateLimited):
        return "rate_limited"
    return "deferred"


def record_attempt(
    events: DeliveryEvents | None,
    message: QueuedMessage,
    outcome: Outcome,
    transition: Transition,
    smtp_seconds: float | None,
    now: float,
) -> None:
    """One log line per attempt (``delivery.<result>``) and the metrics."""
    result = attempt_result(outcome, transition)
    final = transition.status in (Status.SENT, Status.ERROR, Status.UNKNOWN)
    log.info(
        f"delivery.{result}",
        extra={
            "tenant": message.tenant_id,
            "account": message.account_id,
            "failover_from": message.failover_from,
            "message_id": message.id,
            "attempt": transition.attempts,
            "smtp_code": transition.smtp_code,
            "ms": None if smtp_seconds is None else round(smtp_seconds * 1000, 1),
            "error": transition.error if result != "sent" else None,
            "next_attempt_ts": None if final else due_second(transition.due_ts),
        },
    )
    if events is None:
        return
    if result == "sent":
        events.delivered(message.tenant_id, message.account_id, now - message.created_ts)
    events.attempted(message.tenant_id, message.account_id, result, smtp_seconds)
    if message.failover_from is not None and not isinstance(outcome, RateLimited):
        events.failed_over(message.tenant_id, message.failover_from)
    for record in transition.bounces:
        events.bounce_recorded(message.tenant_id, record.kind)
