"""Queue policy: the order of the queue (priorities with aging), fairness across tenants,
sliding-window rate limits, the account circuit breaker, and "why not yet".

Pure functions over value types; the stores reproduce the queries they imply and the
contract suite proves that they agree with these functions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from mailproxy.domain.model import (
    Account,
    AccountPause,
    QueuedMessage,
    Status,
    Tenant,
    due_second,
)
from mailproxy.domain.retry import RetryPolicy, retry_delay

# --- queue order ------------------------------------------------------------------------

#: Seconds of waiting that one priority step is worth (see :func:`queue_rank`).
DEFAULT_AGING_S = 600.0


def queue_rank(priority: int, accepted_ts: float, aging_s: float = DEFAULT_AGING_S) -> float:
    """The sort key of a queued message: lower goes first.

    ``rank = accepted_ts + priority × aging_s``: each priority step is worth ``aging_s``
    seconds of waiting. Messages of one priority keep their acceptance order (FIFO); a
    message of priority p goes before any message of a lower priority (higher number)
    accepted up to ``aging_s`` seconds later; and a priority-3 (low) message waits at
    most ``3 × aging_s`` (30 minutes by default) behind an endless stream of priority-0
    messages — the no-starvation bound. Ties are broken by acceptance order (``seq``).
    """
    return accepted_ts + priority * aging_s


def queue_order(message: QueuedMessage) -> tuple[float, int]:
    """The order in which one account's due messages are claimed: rank, then acceptance
    order. Stores reproduce this in their queries; the contract suite proves they agree."""
    return (message.rank, message.seq)


def fair_order(
    candidates: Iterable[QueuedMessage],
    limit: int,
    *,
    tenant_limit: int | None = None,
    held: Mapping[str, int] | None = None,
) -> list[QueuedMessage]:
    """Choose up to ``limit`` of ``candidates`` so that tenants share the workers fairly.

    Round-robin over tenants: round 1 takes each tenant's first message in queue order,
    round 2 each tenant's second, and so on; inside a round messages go in queue order.
    With ``tenant_limit``, no tenant ends up holding more than that many messages, the
    ones it already ``held`` (by tenant) included.

    Bound: a message that is first in its tenant's queue is among the first T picks of
    the next claim, where T is the number of tenants with due work — so a tenant's bulk
    can delay another tenant's immediate message by at most the send slots already busy
    when it arrives, never by its own backlog. The tenant limit keeps that bound against
    a tenant whose sends never end quickly (a server that stalls, an attachment that
    drips): it can hold ``tenant_limit`` slots, never all of them.
    """
    held = held or {}
    by_tenant: dict[str, list[QueuedMessage]] = {}
    for message in sorted(candidates, key=queue_order):
        by_tenant.setdefault(message.tenant_id, []).append(message)
    if tenant_limit is not None:
        for tenant_id, queue in by_tenant.items():
            del queue[max(0, tenant_limit - held.get(tenant_id, 0)) :]
    picked: list[QueuedMessage] = []
    depth = 0
    while len(picked) < limit:
        round_ = [queue[depth] for queue in by_tenant.values() if depth < len(queue)]
        if not round_:
            break
        picked.extend(sorted(round_, key=queue_order)[: limit - len(picked)])
        depth += 1
    return picked


def tenant_share(slots: int, parts: int = 2) -> int:
    """How many of ``slots`` one tenant may hold at once: a ``parts``-th of them, at least
    one. A tenant whose remote peer stalls (an SMTP server, an attachment server, a name
    server) then holds its share, never all, and the other tenants' work still starts
    at once."""
    return max(1, slots // parts)


def held_by_tenant(held_by_account: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Messages a worker holds per tenant, from its count per (tenant, account)."""
    totals: dict[str, int] = {}
    for (tenant_id, _), count in held_by_account.items():
        totals[tenant_id] = totals.get(tenant_id, 0) + count
    return totals


def suspension_of(suspended: Collection[str], batch_code: str | None) -> str | None:
    """Which suspension holds a message of ``batch_code`` in a tenant whose suspensions
    are ``suspended`` (``"*"`` for the whole tenant, else batch codes): ``"*"``, the batch
    code, or None."""
    if "*" in suspended:
        return "*"
    if batch_code is not None and batch_code in suspended:
        return batch_code
    return None


# --- rate limits ------------------------------------------------------------------------


class RateWindow(msgspec.Struct, frozen=True):
    """At most ``limit`` (at least 1; validation sees to it) sends on ``key`` in any
    ``window_s`` seconds."""

    key: str
    limit: int
    window_s: float
    #: For people: ``"account a1: 3/minute"``.
    label: str


class WindowLengths(msgspec.Struct, frozen=True, kw_only=True):
    """The lengths of the minute, hour and day windows (shorter in tests)."""

    minute_s: float = 60.0
    hour_s: float = 3600.0
    day_s: float = 86400.0


def rate_windows(
    tenant: Tenant | None, account: Account, lengths: WindowLengths | None = None
) -> list[RateWindow]:
    """Every window that applies to a send on ``account``: the account's own limits and
    its tenant's (shared by all the tenant's accounts). Keys include the tenant, so two
    tenants' accounts with the same id never share a window."""
    lengths = lengths or WindowLengths()
    account_key = account_window_key(account.tenant_id, account.id)
    tenant_key = f"tenant\x1f{account.tenant_id}"
    windows: list[RateWindow] = []
    spans = (("minute", lengths.minute_s), ("hour", lengths.hour_s), ("day", lengths.day_s))
    account_limits = (account.limit_per_minute, account.limit_per_hour, account.limit_per_day)
    for (unit, span), limit in zip(spans, account_limits, strict=True):
        if limit is not None:
            windows.append(
                RateWindow(account_key, limit, span, f"account {account.id}: {limit}/{unit}")
            )
    limits = tenant.rate_limits if tenant is not None else None
    if limits is not None:
        tenant_limits = (limits.per_minute, limits.per_hour, limits.per_day)
        for (unit, span), limit in zip(spans, tenant_limits, strict=True):
            if limit is not None:
                windows.append(
                    RateWindow(
                        tenant_key, limit, span, f"tenant {account.tenant_id}: {limit}/{unit}"
                    )
                )
    return windows


def slot_free_at(reserved_ts: Sequence[float], window: RateWindow, now: float) -> float:
    """The earliest instant ≥ ``now`` at which one more send fits in ``window``.

    ``reserved_ts`` are the instants of the sends (made or reserved, possibly in the
    future) on the window's key, in ascending order. A send at ``t`` fits when fewer than
    ``limit`` of them are later than ``t − window_s``: then every interval of length
    ``window_s`` that contains ``t`` holds at most ``limit`` sends, future reservations
    included. With ``n ≥ limit`` sends, that instant is the ``(n − limit + 1)``-th oldest
    plus ``window_s``.
    """
    if window.limit <= 0:
        return float("inf")
    recent = [ts for ts in reserved_ts if ts > now - window.window_s]
    excess = len(recent) - window.limit
    if excess < 0:
        return now
    return max(now, recent[excess] + window.window_s)


class SlotGrant(msgspec.Struct, frozen=True):
    """A reservation in every window: the send may start at ``at_ts``; ``window`` is the
    label of the window that made it wait (None when it did not wait), ``key`` its key."""

    at_ts: float
    window: str | None = None
    key: str | None = None


def account_window_key(tenant_id: str, account_id: str) -> str:
    """The key of an account's own rate windows (a tenant's are shared by its accounts)."""
    return f"account\x1f{tenant_id}\x1f{account_id}"


def grant_slot(
    reserved: Mapping[str, Sequence[float]], windows: Sequence[RateWindow], now: float
) -> SlotGrant:
    """The earliest instant at which every window has room (see :func:`slot_free_at`).

    ``reserved`` maps each window key to its reserved instants, ascending. Waiting for the
    latest window is enough: reservations only age out, so the others still have room.
    """
    grant = SlotGrant(now)
    for window in windows:
        free = slot_free_at(reserved.get(window.key, ()), window, now)
        if free > grant.at_ts:
            grant = SlotGrant(free, window.label, window.key)
    return grant


# --- the account circuit breaker --------------------------------------------------------


def pause_account(
    tenant_id: str,
    account_id: str,
    previous_failures: int,
    reason: str,
    now: float,
    policy: RetryPolicy,
    jitter_sample: float,
) -> AccountPause:
    """The pause after one more account failure: the retry backoff of the account's
    consecutive failures (60 s, 150 s, … capped at ``max_delay_s``)."""
    failures = previous_failures + 1
    return AccountPause(
        tenant_id=tenant_id,
        account_id=account_id,
        failures=failures,
        until_ts=now + retry_delay(policy, failures, jitter_sample),
        reason=reason,
    )


#: Messages claimed per connection: one being sent and one ready behind it, so that a
#: connection does not idle while the next claim commits.
CLAIMS_PER_CONNECTION = 2


def account_room(
    max_connections: int, in_flight: int, pause: AccountPause | None, now: float
) -> int:
    """How many more messages of an account one worker may claim:
    ``CLAIMS_PER_CONNECTION × max_connections`` minus those it holds; none while the
    account is paused; one probe at a time once a pause for failures ends (a pause for
    full rate windows, ``failures`` 0, simply ends)."""
    if holds_back(pause, now):
        assert pause is not None
        return max(0, 1 - in_flight) if pause.until_ts <= now else 0
    return max(0, CLAIMS_PER_CONNECTION * max_connections - in_flight)


def holds_back(pause: AccountPause | None, now: float) -> bool:
    """Whether ``pause`` still limits its account: running, or ended after failures and
    not yet cleared by a probe that got past the account's own checks."""
    return pause is not None and (pause.until_ts > now or pause.failures > 0)


def rate_saturation(
    tenant_id: str,
    account_id: str,
    grant_until_ts: float,
    after_s: float,
    pause: AccountPause | None,
) -> AccountPause:
    """The pause of an account whose own rate windows would hold a message until
    ``grant_until_ts``, longer than its ``failover_after_s`` (``after_s``): while it
    lasts, any message of the account would wait longer than that, so its messages go
    through its fallbacks. No failure is counted (nothing failed); a pause for failures
    already running keeps its count and lasts at least as long as it did."""
    until = grant_until_ts - after_s
    if pause is not None:
        until = max(until, pause.until_ts)
    return AccountPause(
        tenant_id=tenant_id, account_id=account_id, failures=pause.failures if pause else 0,
        until_ts=until, reason="rate windows full",
    )  # fmt: skip


AccountKey = tuple[str, str]


class ClaimPlan(msgspec.Struct, frozen=True):
    """What one claim may take: ``rooms``, messages per account it may claim (sent by
    that account), and ``routes``, the accounts whose messages go through a fallback now
    (home account → the fallback that sends them, which they share the room of)."""

    rooms: dict[AccountKey, int]
    routes: dict[AccountKey, AccountKey]

    def heads_wanted(self) -> dict[AccountKey, int]:
        """How many due messages to read from each account's queue, in queue order: its
        own room, plus its fallback's when it is routed."""
        wanted = {key: room for key, room in self.rooms.items() if room > 0}
        for home, via in self.routes.items():
            wanted[home] = wanted.get(home, 0) + self.rooms[via]
        return wanted


def plan_claim(
    accounts: Mapping[AccountKey, tuple[int, tuple[str, ...]]],
    in_flight: Mapping[AccountKey, int],
    pauses: Mapping[AccountKey, AccountPause],
    now: float,
) -> ClaimPlan:
    """The rooms and failover routes of one claim. ``accounts``: each account's
    ``max_connections`` and ``fallback_accounts``; ``in_flight``: what the worker holds
    per sending account.

    An account is routed while it is paused (for failures or full rate windows) or
    probing after a pause for failures: its messages past its own room (none while
    paused, the probe while probing) go through the first of its fallbacks that exists,
    is not paused nor probing, and has room. Half-open probing returns the traffic: once
    the probe succeeds the pause is gone and nothing is routed."""
    rooms = {
        key: account_room(limits[0], in_flight.get(key, 0), pauses.get(key), now)
        for key, limits in accounts.items()
    }
    routes: dict[AccountKey, AccountKey] = {}
    for home, (_, fallbacks) in accounts.items():
        if not holds_back(pauses.get(home), now):
            continue
        for fallback_id in fallbacks:
            via = (home[0], fallback_id)
            if via == home or via not in accounts or rooms[via] <= 0:
                continue
            if holds_back(pauses.get(via), now):
                continue  # paused or probing: it takes no one else's messages
            routes[home] = via
            break
    return ClaimPlan(rooms=rooms, routes=routes)


def routed_heads(
    plan: ClaimPlan, heads: Mapping[AccountKey, Sequence[QueuedMessage]]
) -> list[QueuedMessage]:
    """The candidates of a claim from each account's due ``heads`` (in queue order, as
    many as :meth:`ClaimPlan.heads_wanted`): an account's first ones up to its room as
    they are, the rest of a routed account's as sent by its fallback (``account_id`` the
    fallback's, ``failover_from`` its own); every sending account's share, its own and
    routed ones merged in queue order, cut at its room."""
    by_sender: dict[AccountKey, list[QueuedMessage]] = {}
    for home, queue in heads.items():
        own = plan.rooms.get(home, 0)
        by_sender.setdefault(home, []).extend(queue[:own])
        via = plan.routes.get(home)
        if via is not None:
            by_sender.setdefault(via, []).extend(
                msgspec.structs.replace(m, account_id=via[1], failover_from=home[1])
                for m in queue[own:]
            )
    candidates: list[QueuedMessage] = []
    for sender, queue in by_sender.items():
        candidates.extend(sorted(queue, key=queue_order)[: plan.rooms.get(sender, 0)])
    return candidates


# --- why not yet ------------------------------------------------------------------------

WaitReason = Literal[
    "queued",
    "scheduled",
    "rate_limit",
    "retry",
    "suspended",
    "account_paused",
    "sending",
    "send_window",
]


class Why(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a message that is not final has not gone yet (``why`` in GET /messages/{id})."""

    reason: WaitReason
    detail: str | None = None
    next_attempt_ts: int | None = None
    ahead: int | None = None


def explain(
    message: QueuedMessage,
    now: float,
    *,
    ahead: int = 0,
    suspended: str | None = None,
    pause: AccountPause | None = None,
) -> Why | None:
    """Why ``message`` has not gone yet, or None once it is final.

    ``ahead`` counts the due messages of its account that go before it; ``suspended`` is
    ``"*"`` (the tenant) or the batch code when its scope is suspended; ``pause`` is its
    account's pause, if any.
    """
    status = message.status
    if status in (Status.SENT, Status.ERROR, Status.UNKNOWN):
        return None
    if status is Status.SENDING:
        return Why(reason="sending", detail=f"attempt {message.attempts + 1}")
    if status is Status.SUSPENDED or suspended is not None:
        scope = "tenant" if suspended in (None, "*") else f"batch {suspended}"
        return Why(reason="suspended", detail=f"{scope} suspended")
    if pause is not None and pause.until_ts > now:
        return Why(
            reason="account_paused",
            detail=f"account {pause.account_id}: {pause.reason}",
            next_attempt_ts=due_second(max(pause.until_ts, message.due_ts)),
        )
    if message.due_ts > now:
        if message.wait_reason == "send_window":
            return Why(
                reason="send_window",
                detail="outside the send window",
                next_attempt_ts=due_second(message.due_ts),
            )
        if message.wait_reason == "rate_limit":
            return Why(
                reason="rate_limit",
                detail=message.wait_detail,
                next_attempt_ts=due_second(message.due_ts),
            )
        if message.attempts:
            return Why(
                reason="retry",
                detail=f"after attempt {message.attempts}: {message.error}",
                next_attempt_ts=due_second(message.due_ts),
            )
        return Why(reason="scheduled", next_attempt_ts=due_second(message.due_ts))
    return Why(reason="queued", ahead=ahead)
