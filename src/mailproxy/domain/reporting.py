"""Delivery-report calls to a tenant's application: when to call, how to sign, how to
back off. Pure; the service keeps one :class:`SyncState` per tenant.

Rules (HTTP API, "Delivery reports"):

- events waiting → call now (after a failure: at the backoff instant, 1 s doubling up to
  ``retry_max_delay_s``); ≤ ``batch_size`` entries a call, oldest first;
- nothing waiting → a heartbeat (empty report) ``sync_interval_s`` after the last
  successful call, never before the application's ``next_sync_after``;
- ``run_now`` → call at once, heartbeat or not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgspec

from mailproxy.domain.model import Tenant

#: The first retry delay after a failed call; it doubles per consecutive failure.
REPORT_RETRY_BASE_S = 1.0


class SyncState(msgspec.Struct, frozen=True, kw_only=True):
    """What this process knows of a tenant's report calls."""

    tenant_id: str
    last_sync_ts: float | None = None
    last_error: str | None = None
    failures: int = 0
    #: Not before this instant after a failure.
    retry_at: float = 0.0
    #: No heartbeat before this instant (the application's ``next_sync_after``).
    quiet_until: float = 0.0
    #: Call at once (``run-now``).
    forced: bool = False
    #: Calls made by this process, and how many of them failed.
    calls: int = 0
    failed_calls: int = 0


def retry_delay(failures: int, max_delay_s: float) -> float:
    """1 s, 2 s, 4 s, … capped at ``max_delay_s``."""
    return min(max_delay_s, REPORT_RETRY_BASE_S * 2.0 ** max(0, failures - 1))


def next_call_ts(state: SyncState, pending: bool, sync_interval_s: float) -> float:
    """The instant the tenant's next call is due (may be in the past: due now)."""
    if state.forced:
        return state.retry_at if state.failures else 0.0
    if pending:
        return state.retry_at
    heartbeat = 0.0 if state.last_sync_ts is None else state.last_sync_ts + sync_interval_s
    return max(heartbeat, state.quiet_until, state.retry_at)


def after_call(
    state: SyncState,
    *,
    acknowledged: bool,
    error: str | None,
    next_sync_after: float | None,
    now: float,
    retry_max_delay_s: float,
) -> SyncState:
    """The state after a call answered (or failed) at ``now``."""
    if acknowledged:
        return msgspec.structs.replace(
            state,
            last_sync_ts=now,
            last_error=None,
            failures=0,
            retry_at=0.0,
            quiet_until=next_sync_after or 0.0,
            forced=False,
            calls=state.calls + 1,
        )
    failures = state.failures + 1
    return msgspec.structs.replace(
        state,
        last_error=error or "call failed",
        failures=failures,
        retry_at=now + retry_delay(failures, retry_max_delay_s),
        forced=False,
        calls=state.calls + 1,
        failed_calls=state.failed_calls + 1,
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """One signature: ``v1=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def signature_header(tenant_secrets: Sequence[str | None], timestamp: int, body: bytes) -> str:
    """``X-Mail-Proxy-Signature``: the signatures with each secret given (the current one
    first, then the previous one during a rotation), joined by ``", "``; None entries are
    skipped. With one secret it is exactly :func:`signature`, so a receiver that
    compares the whole header keeps working until a rotation starts; during one, a
    receiver accepts the call when any entry matches a secret it knows."""
    given = [s for s in tenant_secrets if s]
    return ", ".join(signature(s, timestamp, body) for s in dict.fromkeys(given))


def rotate_webhook_secret(tenant: Tenant, new_secret: str) -> Tenant:
    """The tenant after a rotation: ``new_secret`` signs, and the secret it replaces stays
    live as ``webhook_secret_previous`` (replacing any older one) until retired."""
    return msgspec.structs.replace(
        tenant, webhook_secret=new_secret, webhook_secret_previous=tenant.webhook_secret
    )


def retire_webhook_secret(tenant: Tenant) -> Tenant:
    """The tenant with its previous webhook secret gone: only the current one signs."""
    return msgspec.structs.replace(tenant, webhook_secret_previous=None)
