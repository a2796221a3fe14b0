"""The change-feed port: how a process learns that another process sharing its store
made work (messages accepted or due again, report events written).

Optional: without one, a process sees other processes' work at its next timer (the next
due message it knows of, the report loop's poll). Implemented by the PostgreSQL store
(LISTEN/NOTIFY); a store provides one when it is one (``isinstance(store, ChangeFeed)``).
Contract: ``tests/contract/test_change_feed.py``, and the system tests with several
processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class ChangeFeed(Protocol):
    async def watch(self, on_queue: Callable[[], None], on_reports: Callable[[], None]) -> None:
        """Start calling ``on_queue`` when any process makes messages claimable and
        ``on_reports`` when any process writes report events, until the store closes.
        Returns once listening (or once the first attempt to listen has failed; it keeps
        trying). The callbacks run on the event loop and must not block."""
