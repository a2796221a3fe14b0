"""Queue policy in the domain: order with aging, fairness, sliding windows, the breaker,
and "why not yet" — tables and hypothesis properties."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy.domain.lifecycle import decide
from mailproxy.domain.model import Account, AccountPause, QueuedMessage, RateLimits, Status, Tenant
from mailproxy.domain.outcome import AccountBroken, Delivered, RateLimited, Temporary, Unknown
from mailproxy.domain.policy import (
    RateWindow,
    WindowLengths,
    account_room,
    explain,
    fair_order,
    grant_slot,
    held_by_tenant,
    plan_claim,
    queue_order,
    queue_rank,
    rate_windows,
    routed_heads,
    slot_free_at,
    suspension_of,
)
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.validation import parse_message

NOW = 1_800_000_000.0
SPEC = parse_message({"id": "m", "from": "s@example.com", "to": "r@example.com", "subject": "s"})


def queued(
    n: int, *, tenant="t1", account="a1", priority=2, accepted=NOW, **fields
) -> QueuedMessage:
    return QueuedMessage(
        pk=n,
        tenant_id=tenant,
        id=f"m{n}",
        account_id=account,
        priority=priority,
        rank=queue_rank(priority, accepted),
        seq=n,
        status=fields.pop("status", Status.PENDING),
        due_ts=fields.pop("due_ts", accepted),
        batch_code=None,
        message_id=f"m{n}@example.com",
        date_ts=accepted,
        spec=SPEC,
        created_ts=accepted,
        **fields,
    )


# --- order -----------------------------------------------------------------------------


def test_priorities_go_in_order_and_fifo_within_one():
    messages = [queued(n, priority=p) for n, p in enumerate([3, 0, 2, 1, 0, 3, 1])]
    ordered = sorted(messages, key=queue_order)
    assert [(m.priority, m.seq) for m in ordered] == [
        (0, 1), (0, 4), (1, 3), (1, 6), (2, 2), (3, 0), (3, 5)
    ]  # fmt: skip


def test_a_low_message_overtakes_newer_immediate_ones_after_three_aging_steps():
    low = queue_rank(3, NOW, aging_s=600)
    assert queue_rank(0, NOW + 1799, aging_s=600) < low
    assert queue_rank(0, NOW + 1801, aging_s=600) > low


@given(
    st.integers(0, 3),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.integers(0, 3),
)
def test_no_starvation_bound_holds(low_priority, accepted, delay, other_priority):
    """A message is overtaken only by messages accepted less than
    (its priority − theirs) × aging_s after it."""
    mine = queue_rank(low_priority, accepted)
    theirs = queue_rank(other_priority, accepted + delay)
    if theirs < mine:
        assert delay < (low_priority - other_priority) * 600.0


def test_fairness_takes_one_message_per_tenant_per_round():
    bulk = [queued(n, tenant="bulk", priority=3) for n in range(50)]
    urgent = queued(100, tenant="urgent", priority=0, accepted=NOW + 5)
    other = queued(101, tenant="other", priority=2, accepted=NOW + 10)
    picked = fair_order([*bulk, urgent, other], limit=4)
    assert [m.id for m in picked] == ["m100", "m101", "m0", "m1"]


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=60),
    st.integers(1, 20),
)
def test_fairness_bound_for_random_arrivals(arrivals, limit):
    """Every tenant's first message is among the first T picks (T tenants with work), and
    picks never exceed the limit or repeat."""
    messages = [
        queued(n, tenant=f"t{tenant}", priority=priority, accepted=NOW + n)
        for n, (tenant, priority) in enumerate(arrivals)
    ]
    picked = fair_order(messages, limit)
    tenants = {m.tenant_id for m in messages}
    assert len(picked) == min(limit, len(messages))
    assert len({m.pk for m in picked}) == len(picked)
    heads = {t: min((m for m in messages if m.tenant_id == t), key=queue_order) for t in tenants}
    first_round = picked[: len(tenants)]
    for head in heads.values():
        if len(picked) >= len(tenants):
            assert head in first_round
    # inside one tenant, picks keep queue order
    for t in tenants:
        mine = [m for m in picked if m.tenant_id == t]
        assert mine == sorted(mine, key=queue_order)


# --- rate windows ----------------------------------------------------------------------


def test_windows_come_from_the_account_and_its_tenant_keyed_by_tenant():
    tenant = Tenant(id="t1", rate_limits=RateLimits(per_hour=100))
    account = Account(id="main", tenant_id="t1", limit_per_minute=3, limit_per_day=1000)
    other = Account(id="main", tenant_id="t2", limit_per_minute=3)
    windows = rate_windows(tenant, account, WindowLengths(minute_s=2, hour_s=10, day_s=20))
    assert [(w.limit, w.window_s, w.label) for w in windows] == [
        (3, 2, "account main: 3/minute"),
        (1000, 20, "account main: 1000/day"),
        (100, 10, "tenant t1: 100/hour"),
    ]
    assert windows[0].key != rate_windows(None, other)[0].key
    assert rate_windows(Tenant(id="t1"), Account(id="a", tenant_id="t1")) == []


def test_slot_frees_exactly_when_the_oldest_send_leaves_the_window():
    window = RateWindow("k", 3, 60, "account a: 3/minute")
    assert slot_free_at([], window, NOW) == NOW
    assert slot_free_at([NOW - 50, NOW - 10], window, NOW) == NOW
    assert slot_free_at([NOW - 50, NOW - 10, NOW - 5], window, NOW) == NOW + 10
    assert slot_free_at([NOW - 70, NOW - 10, NOW - 5], window, NOW) == NOW
    # future reservations count too
    assert slot_free_at([NOW - 10, NOW + 50, NOW + 55], window, NOW) == NOW + 50


def test_the_grant_waits_for_the_fullest_window_and_names_it():
    minute = RateWindow("a", 2, 60, "account a: 2/minute")
    hour = RateWindow("t", 3, 3600, "tenant t: 3/hour")
    reserved = {"a": [NOW - 30], "t": [NOW - 3000, NOW - 1000, NOW - 30]}
    grant = grant_slot(reserved, [minute, hour], NOW)
    assert grant.at_ts == NOW - 3000 + 3600
    assert grant.window == "tenant t: 3/hour"


@settings(max_examples=150)
@given(
    st.integers(1, 5),
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40),
)
def test_a_sliding_window_never_admits_more_than_its_limit_in_any_interval(limit, requests):
    """Granting every request at its grant instant never puts more than ``limit`` sends in
    any interval of the window's length (reservations in the future included)."""
    window = RateWindow("k", limit, 10.0, "k")
    granted: list[float] = []
    for now in sorted(requests):
        at = slot_free_at(sorted(granted), window, now)
        assert at >= now
        granted.append(at)
    granted.sort()
    for start in granted:
        inside = [t for t in granted if start <= t < start + window.window_s]
        assert len(inside) <= limit


# --- breaker, room, suspension -----------------------------------------------------------


def test_account_room_respects_connections_pause_and_half_open_probe():
    pause = AccountPause(tenant_id="t", account_id="a", failures=2, until_ts=NOW + 10, reason="x")
    assert account_room(3, 1, None, NOW) == 5
    assert account_room(3, 6, None, NOW) == 0
    assert account_room(3, 0, pause, NOW) == 0
    assert account_room(3, 0, pause, NOW + 10) == 1
    assert account_room(3, 1, pause, NOW + 10) == 0
    full_windows = msgspec.structs.replace(pause, failures=0)
    assert account_room(3, 0, full_windows, NOW) == 0
    assert account_room(3, 0, full_windows, NOW + 10) == 6  # no probe: nothing failed


@pytest.mark.parametrize(
    ("suspended", "batch", "expected"),
    [
        (set(), "b", None),
        ({"*"}, None, "*"),
        ({"b"}, "b", "b"),
        ({"b"}, "c", None),
        ({"b"}, None, None),
    ],
)
def test_suspension_scope(suspended, batch, expected):
    assert suspension_of(suspended, batch) == expected


def decide_(message, outcome, pause=None, failover=False):
    return decide(
        message,
        outcome,
        now=NOW,
        policy=RetryPolicy(),
        unknown_policy="at_least_once",
        jitter_sample=0.0,
        event_id="e",
        pause=pause,
        failover=failover,
    )


def test_account_failure_pauses_the_account_with_backoff_without_using_an_attempt():
    first = decide_(queued(1), AccountBroken("SMTP 535 at AUTH: bad credentials", 535))
    assert first.status is Status.DEFERRED
    assert first.attempts == 0
    assert first.pause is not None
    assert first.pause.failures == 1
    assert first.due_ts == first.pause.until_ts == NOW + 60
    assert first.wait_reason == "account_paused"
    assert first.slots == "release"
    again = decide_(queued(2), AccountBroken("x"), pause=first.pause)
    assert again.pause is not None
    assert again.pause.failures == 2
    assert again.pause.until_ts == NOW + 150


@pytest.mark.parametrize(
    ("outcome", "slots", "clears"),
    [
        (Delivered(250), "consume", True),
        (Unknown("lost after DATA"), "consume", True),
        (Temporary("SMTP 451 at RCPT", 451), "release", True),
        (Temporary("connection refused", account_level=True), "release", False),
        (RateLimited(NOW + 30, "account a1: 1/minute"), "keep", False),
        (RateLimited(NOW + 30, "account a1: 1/minute", reject=True), "release", False),
    ],
)
def test_reservations_and_pauses_follow_the_outcome(outcome, slots, clears):
    pause = AccountPause(tenant_id="t1", account_id="a1", failures=1, until_ts=NOW - 1, reason="x")
    transition = decide_(queued(1), outcome, pause=pause)
    assert transition.slots == slots
    assert transition.clear_pause is clears


def test_a_rate_limit_defers_to_the_slot_or_rejects():
    deferred = decide_(queued(1), RateLimited(NOW + 42.5, "account a1: 3/minute"))
    assert (deferred.status, deferred.due_ts, deferred.attempts) == (Status.DEFERRED, NOW + 42.5, 0)
    (event,) = deferred.events
    assert (event.event, event.deferred_reason, event.deferred_ts) == (
        "deferred",
        "rate_limit",
        NOW + 43,
    )
    rejected = decide_(queued(1), RateLimited(NOW + 42.5, "account a1: 3/minute", reject=True))
    assert rejected.status is Status.ERROR
    assert rejected.error.startswith("rate_limit_exceeded")


@pytest.mark.parametrize(
    "outcome",
    [AccountBroken("SMTP 535 at AUTH", 535), Temporary("connection refused", account_level=True)],
)
def test_an_account_with_fallbacks_that_fails_is_paused_and_its_message_due_for_one(outcome):
    broken = decide_(queued(1), outcome, failover=True)
    assert (broken.status, broken.due_ts, broken.attempts) == (Status.DEFERRED, NOW, 0)
    assert broken.pause is not None
    assert broken.pause.until_ts == NOW + 60
    # Without fallbacks, a connection failure is the message's retry, as before.
    alone = decide_(queued(1), Temporary("connection refused", account_level=True))
    assert (alone.attempts, alone.pause, alone.wait_reason) == (1, None, "retry")


def test_own_windows_full_past_the_failover_wait_send_the_message_back_for_a_fallback():
    window = "account a1: 3/minute"
    short = decide_(queued(1), RateLimited(NOW + 20, window, failover_after_s=30))
    assert (short.status, short.due_ts, short.slots, short.pause) == (
        Status.DEFERRED, NOW + 20, "keep", None,
    )  # fmt: skip
    long = decide_(queued(1), RateLimited(NOW + 90, window, failover_after_s=30))
    assert (long.status, long.due_ts, long.attempts, long.slots, long.events) == (
        Status.PENDING, NOW, 0, "release", (),
    )  # fmt: skip
    assert long.pause is not None
    assert (long.pause.failures, long.pause.until_ts) == (0, NOW + 60)
    assert long.history is not None
    assert long.history.event == "failover"
    failing = AccountPause(
        tenant_id="t1", account_id="a1", failures=2, until_ts=NOW + 80, reason="x"
    )
    during = decide_(queued(1), RateLimited(NOW + 90, window, failover_after_s=30), pause=failing)
    assert during.pause is not None
    assert (during.pause.failures, during.pause.until_ts) == (2, NOW + 80)


def heads_of(*messages: QueuedMessage) -> list[QueuedMessage]:
    return sorted(messages, key=queue_order)


def test_a_claim_plan_routes_paused_accounts_to_their_first_usable_fallback():
    paused = AccountPause(
        tenant_id="t1", account_id="a1", failures=1, until_ts=NOW + 60, reason="x"
    )
    accounts = {
        ("t1", "a1"): (1, ("gone", "busy", "b1", "b2")),
        ("t1", "busy"): (1, ()),
        ("t1", "b1"): (1, ()),
        ("t1", "b2"): (1, ()),
        ("t1", "ok"): (1, ("b1",)),
    }
    plan = plan_claim(accounts, {("t1", "busy"): 2}, {("t1", "a1"): paused}, NOW)
    assert plan.routes == {("t1", "a1"): ("t1", "b1")}
    assert plan.heads_wanted() == {
        ("t1", "a1"): 2, ("t1", "b1"): 2, ("t1", "b2"): 2, ("t1", "ok"): 2,
    }  # fmt: skip
    own = queued(10, account="b1", accepted=NOW - 600)
    heads = {
        ("t1", "a1"): heads_of(queued(1), queued(2)),
        ("t1", "b1"): heads_of(own),
    }
    candidates = routed_heads(plan, heads)
    assert [(m.pk, m.account_id, m.failover_from) for m in candidates] == [
        (10, "b1", None), (1, "b1", "a1"),
    ]  # fmt: skip
    # A fallback that is itself paused or probing takes no one else's messages.
    probing = msgspec.structs.replace(paused, account_id="b1", until_ts=NOW - 1)
    pauses = {("t1", "a1"): paused, ("t1", "b1"): probing}
    plan = plan_claim(accounts, {("t1", "busy"): 2}, pauses, NOW)
    assert plan.routes == {("t1", "a1"): ("t1", "b2")}
    # Once the pause is cleared, nothing is routed.
    assert plan_claim(accounts, {}, {}, NOW).routes == {}


# --- why -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "context", "expected"),
    [
        (queued(1), {"ahead": 17}, ("queued", None, None, 17)),
        (
            queued(1, due_ts=NOW + 99.2, status=Status.SCHEDULED),
            {},
            ("scheduled", None, NOW + 100, None),
        ),
        (
            queued(
                1,
                due_ts=NOW + 30,
                status=Status.DEFERRED,
                wait_reason="rate_limit",
                wait_detail="account a1: 3/minute",
            ),
            {},
            ("rate_limit", "account a1: 3/minute", NOW + 30, None),
        ),
        (
            queued(
                1,
                due_ts=NOW + 60,
                status=Status.DEFERRED,
                attempts=2,
                error="SMTP 451 at RCPT: busy",
            ),
            {},
            ("retry", "after attempt 2: SMTP 451 at RCPT: busy", NOW + 60, None),
        ),
        (
            queued(1, status=Status.SUSPENDED),
            {"suspended": "spring"},
            ("suspended", "batch spring suspended", None, None),
        ),
        (
            queued(1, status=Status.SUSPENDED),
            {"suspended": "*"},
            ("suspended", "tenant suspended", None, None),
        ),
        (
            queued(1),
            {
                "pause": AccountPause(
                    tenant_id="t1",
                    account_id="a1",
                    failures=1,
                    until_ts=NOW + 5,
                    reason="535 bad credentials",
                )
            },
            ("account_paused", "account a1: 535 bad credentials", NOW + 5, None),
        ),
        (queued(1, status=Status.SENDING), {}, ("sending", "attempt 1", None, None)),
    ],
)
def test_why_explains_each_kind_of_wait(message, context, expected):
    why = explain(message, NOW, **context)
    assert why is not None
    assert (why.reason, why.detail, why.next_attempt_ts, why.ahead) == expected


@pytest.mark.parametrize("status", [Status.SENT, Status.ERROR, Status.UNKNOWN])
def test_why_is_none_once_final(status):
    assert explain(queued(1, status=status), NOW) is None


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=60),
    st.integers(1, 20),
    st.integers(1, 6),
    st.dictionaries(st.sampled_from([f"t{n}" for n in range(5)]), st.integers(0, 8)),
)
def test_no_tenant_ends_a_claim_above_its_limit(arrivals, limit, tenant_limit, held):
    """With a tenant limit, what a tenant already holds plus what it gets never exceeds it,
    and the claim still takes as much as the limits leave."""
    messages = [
        queued(n, tenant=f"t{tenant}", priority=priority, accepted=NOW + n)
        for n, (tenant, priority) in enumerate(arrivals)
    ]
    picked = fair_order(messages, limit, tenant_limit=tenant_limit, held=held)
    counts = {t: sum(m.tenant_id == t for m in picked) for t in {m.tenant_id for m in messages}}
    for tenant, count in counts.items():
        assert count == 0 or held.get(tenant, 0) + count <= tenant_limit
    room = sum(
        min(max(0, tenant_limit - held.get(t, 0)), sum(m.tenant_id == t for m in messages))
        for t in counts
    )
    assert len(picked) == min(limit, room)


def test_held_by_tenant_adds_up_every_account():
    assert held_by_tenant({("t1", "a1"): 2, ("t1", "a2"): 3, ("t2", "a1"): 1}) == {"t1": 5, "t2": 1}
