"""The retry policy: when to try again after a temporary failure, and when to stop."""

from __future__ import annotations

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exponential backoff with jitter, a retry cap and a maximum message age.

    For the n-th retry (n ≥ 1), with a jitter sample ``u`` in [-1, 1]::

        delay(n) = min(max_delay_s, base_delay_s × factor^(n−1) × (1 + jitter × u))

    so the delay never exceeds ``max_delay_s`` and never goes below
    ``base_delay_s × (1 − jitter)``. A message is tried at most ``max_retries + 1`` times;
    a message older than ``max_age_s`` at its next attempt fails with ``expired``.
    """

    #: Delay before the first retry.
    base_delay_s: float = 60.0
    #: Each further retry waits this many times longer.
    factor: float = 2.5
    #: Cap of the delay between retries.
    max_delay_s: float = 7200.0
    #: Spread of each delay, as a share of it (0-1).
    jitter: float = 0.1
    #: Retries after the first attempt before the message fails.
    max_retries: int = 8
    #: A message older than this at its next attempt fails as `expired`.
    max_age_s: float = 172800.0


def retry_delay(policy: RetryPolicy, retry_number: int, jitter_sample: float) -> float:
    """Seconds to wait before retry ``retry_number`` (1-based); see :class:`RetryPolicy`."""
    n = max(1, retry_number)
    sample = min(1.0, max(-1.0, jitter_sample))
    # Cap the exponent so a huge retry number cannot overflow the float.
    raw = policy.base_delay_s * policy.factor ** min(n - 1, 64)
    return max(0.0, min(policy.max_delay_s, raw * (1.0 + policy.jitter * sample)))
