"""Retry policy properties and the transitions that follow an attempt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from mailproxy.domain.lifecycle import (
    ALLOWED_TRANSITIONS,
    can_transition,
    decide,
    initial_status,
    is_final,
    visible_status,
)
from mailproxy.domain.model import QueuedMessage, Status
from mailproxy.domain.outcome import AccountBroken, Delivered, Permanent, Temporary, Unknown
from mailproxy.domain.retry import RetryPolicy, retry_delay
from mailproxy.domain.storage_rules import resubmission_refusal
from tests.conftest import new_message

NOW = 1_800_000_000.0
policies = st.builds(
    RetryPolicy,
    base_delay_s=st.floats(0.1, 1000),
    factor=st.floats(1, 5),
    max_delay_s=st.floats(1, 100_000),
    jitter=st.floats(0, 1),
)


@given(policies, st.integers(1, 10_000), st.floats(-1, 1))
def test_a_delay_never_exceeds_its_cap_nor_goes_negative(policy, n, sample):
    assert 0 <= retry_delay(policy, n, sample) <= policy.max_delay_s


@given(policies, st.integers(1, 50))
def test_without_jitter_delays_never_shrink(policy, n):
    assert retry_delay(policy, n, 0.0) <= retry_delay(policy, n + 1, 0.0)


def test_default_schedule_matches_the_formula():
    policy = RetryPolicy()
    assert [retry_delay(policy, n, 0.0) for n in (1, 2, 3)] == [60.0, 150.0, 375.0]
    assert retry_delay(policy, 8, 0.0) == 7200.0
    assert retry_delay(policy, 1, 1.0) == pytest.approx(66.0)


def queued(attempts=0, created=NOW, duplicate=False):
    new = new_message("m1", now=created)
    fields = {f: getattr(new, f) for f in new.__struct_fields__}
    return QueuedMessage(
        pk=1,
        seq=1,
        created_ts=created,
        **{**fields, "status": Status.SENDING},
        attempts=attempts,
        possible_duplicate=duplicate,
    )


def run(message, outcome, unknown_policy="at_least_once", now=NOW, policy=None):
    return decide(
        message,
        outcome,
        now=now,
        policy=policy or RetryPolicy(),
        unknown_policy=unknown_policy,
        jitter_sample=0.0,
        event_id="ev",
    )


def test_delivered_becomes_sent_with_a_sent_event():
    t = run(queued(), Delivered(250))
    assert (t.status, t.attempts, t.sent_ts) == (Status.SENT, 1, NOW)
    assert [e.event for e in t.events] == ["sent"]
    assert t.events[0].metadata == {"n": "m1"}


def test_permanent_becomes_error_with_the_code():
    t = run(queued(), Permanent("SMTP 550 at RCPT: no such user", 550))
    assert t.status is Status.ERROR
    assert t.events[0].smtp_code == 550
    assert "550" in t.events[0].error


def test_temporary_defers_then_gives_up_after_max_retries():
    policy = RetryPolicy(max_retries=2)
    t1 = run(queued(attempts=0), Temporary("451", 451), policy=policy)
    assert (t1.status, t1.due_ts, t1.events[0].deferred_ts) == (Status.DEFERRED, NOW + 60, NOW + 60)
    t3 = run(queued(attempts=2), Temporary("451", 451), policy=policy)
    assert t3.status is Status.ERROR
    assert "gave up after 3 attempts" in t3.error


def test_a_message_past_its_age_expires():
    t = run(queued(attempts=1, created=NOW - 172_790), Temporary("451", 451))
    assert t.status is Status.ERROR
    assert t.error.startswith("expired")


def test_unknown_is_retried_and_flagged_under_at_least_once():
    t = run(queued(), Unknown("EOF after the final dot"))
    assert (t.status, t.possible_duplicate) == (Status.DEFERRED, True)
    assert [e.event for e in t.events] == ["unknown"]


def test_unknown_is_final_under_at_most_once():
    t = run(queued(), Unknown("EOF after the final dot"), unknown_policy="at_most_once")
    assert t.status is Status.UNKNOWN
    assert is_final(t.status)


def test_later_reports_of_a_possible_duplicate_say_so():
    t = run(queued(attempts=1, duplicate=True), Delivered(250))
    assert t.events[0].possible_duplicate


def test_account_failures_do_not_consume_attempts():
    t = run(queued(attempts=3), AccountBroken("SMTP 535 at AUTH", 535))
    assert (t.status, t.attempts) == (Status.DEFERRED, 3)
    assert t.events[0].deferred_reason.startswith("SMTP 535")


@given(
    st.sampled_from(
        [
            Delivered(250),
            Permanent("x", 550),
            Temporary("y", 451),
            Unknown("z"),
            AccountBroken("w", 535),
        ]
    ),
    st.integers(0, 12),
    st.sampled_from(["at_least_once", "at_most_once"]),
)
def test_every_decision_is_an_allowed_transition_from_sending(outcome, attempts, policy):
    t = run(queued(attempts=attempts), outcome, unknown_policy=policy)
    assert can_transition(Status.SENDING, t.status)
    assert t.due_ts >= NOW or is_final(t.status)


def test_sent_is_absorbing_and_resubmission_rules():
    assert ALLOWED_TRANSITIONS[Status.SENT] == frozenset()
    assert resubmission_refusal(Status.SENT) == "already sent"
    assert resubmission_refusal(Status.SENDING) == "in flight"
    assert resubmission_refusal(Status.UNKNOWN) == "in flight"
    assert resubmission_refusal(Status.ERROR) is None
    assert resubmission_refusal(Status.DEFERRED) is None
    assert resubmission_refusal(Status.DEFERRED, possible_duplicate=True) == "in flight"
    assert resubmission_refusal(Status.ERROR, possible_duplicate=True) == "in flight"


def test_scheduled_messages_show_pending_once_due():
    status, due = initial_status(NOW + 10, NOW)
    assert status is Status.SCHEDULED
    scheduled = replace(queued(), status=Status.SCHEDULED, due_ts=due)
    assert visible_status(scheduled, NOW) is Status.SCHEDULED
    assert visible_status(scheduled, NOW + 10) is Status.PENDING
