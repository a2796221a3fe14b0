"""Contract of the ChangeFeed port (mailproxy.ports.changes), run against every store that
provides one: a second process on the same data hears of work another process made.
The memory store and SQLite provide none (a process sees other processes' work at its
next timer), which the last test states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.domain.model import Account, Tenant
from mailproxy.domain.outcome import Delivered
from mailproxy.ports.changes import ChangeFeed
from tests.conftest import (
    NOW_T,
    STORE_KINDS,
    make_store,
    new_message,
    opened,
    transition_for,
    twin_of,
)

#: The store kinds that provide a change feed.
FEED_KINDS = [kind for kind in STORE_KINDS if kind == "postgres"]


class Heard:
    """The wake-ups a watcher got, as events the test can wait for."""

    def __init__(self) -> None:
        self.queue = asyncio.Event()
        self.reports = asyncio.Event()

    async def settle(self) -> None:
        """Wait for the wake-ups of starting to listen, then forget them."""
        await asyncio.wait_for(self.queue.wait(), 5)
        await asyncio.wait_for(self.reports.wait(), 5)
        self.queue.clear()
        self.reports.clear()


@pytest.fixture(params=FEED_KINDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple]:
    """A store with a change feed and a second one on the same data, watched."""
    async with opened(make_store(request.param, tmp_path)) as writer:
        watcher = twin_of(writer)
        await watcher.open()
        try:
            assert isinstance(watcher, ChangeFeed)
            heard = Heard()
            await watcher.watch(heard.queue.set, heard.reports.set)
            await heard.settle()
            yield writer, heard
        finally:
            await watcher.close()


async def test_accepted_messages_wake_the_other_process(pair):
    writer, heard = pair
    await writer.enqueue([new_message("m1")], NOW_T)
    await asyncio.wait_for(heard.queue.wait(), 5)


async def claimed(writer):
    """A message of t1/a1 accepted and claimed by ``writer``."""
    await writer.put_tenant(Tenant(id="t1"))
    await writer.put_account(Account(id="a1", tenant_id="t1", kind="capture"))
    await writer.enqueue([new_message("m1")], NOW_T)
    (claim,) = await writer.claim_due(now=NOW_T, limit=1, owner="w", lease_s=60)
    return claim


async def test_report_events_wake_the_other_process(pair):
    writer, heard = pair
    claim = await claimed(writer)
    transition = transition_for(claim, Delivered(), now=NOW_T, event_id="e1")
    assert await writer.complete(claim.lease, transition, NOW_T)
    await asyncio.wait_for(heard.reports.wait(), 5)


async def test_a_message_given_back_wakes_the_other_process(pair):
    writer, heard = pair
    claim = await claimed(writer)
    heard.queue.clear()
    assert await writer.release(claim.lease, NOW_T)
    await asyncio.wait_for(heard.queue.wait(), 5)


@pytest.mark.parametrize("kind", [k for k in STORE_KINDS if k not in FEED_KINDS])
def test_stores_without_a_feed_do_not_claim_one(kind, tmp_path):
    assert not isinstance(make_store(kind, tmp_path), ChangeFeed)
