"""Throttling of failed authentication, per client address: a pure policy (``now`` comes in).

After ``max_failures`` failed attempts from one address within ``window_s``, that address is
refused (429 with ``Retry-After``) without its credential being checked, until the oldest
of those failures is ``window_s`` old; then one more attempt is let through, and so on. So a
guesser gets at most ``max_failures`` guesses per ``window_s`` per address. Successes do
not count and do not clear the failures (a right guess among wrong ones is no reason to
allow more guesses).

Memory is bounded: at most ``max_failures`` instants per address, and at most
``max_clients`` addresses; past that, the address whose last failure is the oldest is
forgotten first. Someone with more addresses than ``max_clients`` can thus get some of
theirs forgotten; the cap is a memory bound, not a defence against a botnet.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import msgspec


class ThrottlePolicy(msgspec.Struct, frozen=True, kw_only=True):
    #: Failures allowed per address within ``window_s`` (0: no throttling).
    max_failures: int = 10
    window_s: float = 60.0
    #: Addresses tracked at most.
    max_clients: int = 10_000


class FailedAuthentications:
    """The recent failures per address, judged by a :class:`ThrottlePolicy`."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again, or None if it may try now."""
        limit = self.policy.max_failures
        failures = self._failures.get(client)
        if limit <= 0 or failures is None or len(failures) < limit:
            return None
        wait = failures[0] + self.policy.window_s - now
        return wait if wait > 0 else None

    def failed(self, client: str, now: float) -> None:
        """Count a failed attempt of ``client`` at ``now``."""
        limit = self.policy.max_failures
        if limit <= 0:
            return
        failures = self._failures.pop(client, None)
        if failures is None:
            failures = deque(maxlen=limit)
        failures.append(now)
        self._failures[client] = failures  # the most recent failure last
        while len(self._failures) > self.policy.max_clients:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        """How many addresses are tracked."""
        return len(self._failures)
