"""Shared fixtures: every storage test runs against every store adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.lifecycle import decide, initial_status
from mailproxy.domain.model import Account, NewMessage, Tenant
from mailproxy.domain.policy import queue_rank
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.validation import parse_message

STORE_KINDS = ["memory", "sqlite"]
NOW_T = 1_800_000_000.0


def make_store(kind: str, tmp_path: Path) -> MemoryStore | SqliteStore:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(tmp_path / "store.db")


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MemoryStore | SqliteStore]:
    """An open store of each kind; the SQLite one is a real file."""
    store = make_store(request.param, tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Clock:
    """A controllable clock for tests: ``clock()`` reads, ``advance`` moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_message(
    message_id: str,
    *,
    tenant_id: str = "t1",
    account_id: str = "a1",
    priority: int = 2,
    now: float = 1_800_000_000.0,
    deferred_ts: float | None = None,
    batch_code: str | None = None,
) -> NewMessage:
    spec = parse_message(
        {
            "id": message_id,
            "from": "s@example.com",
            "to": ["r@example.com"],
            "subject": "hi",
            "metadata": {"n": message_id},
        }
    )
    status, due = initial_status(deferred_ts, now)
    return NewMessage(
        tenant_id=tenant_id,
        id=message_id,
        account_id=account_id,
        priority=priority,
        rank=queue_rank(priority, now),
        status=status,
        due_ts=due,
        batch_code=batch_code,
        message_id=f"{message_id}@example.com",
        date_ts=now,
        spec=spec,
    )


TENANT = Tenant(id="t1", name="Tenant one")
ACCOUNT = Account(id="a1", tenant_id="t1", kind="capture", is_default=True)


def transition_for(claim, outcome, *, now: float, event_id: str):
    """The domain's transition for a claimed message and an attempt outcome, with the
    default policies (what the service would apply)."""
    return decide(
        claim.message,
        outcome,
        now=now,
        policy=RetryPolicy(),
        unknown_policy="at_least_once",
        jitter_sample=0.0,
        event_id=event_id,
        pause=claim.pause,
    )
