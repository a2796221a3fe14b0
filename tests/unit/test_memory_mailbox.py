"""What the in-memory bounce mailbox offers beyond the port's contract, for the tests of
the poller: a folder rebuilt under a new UIDVALIDITY, and a mailbox that breaks."""

from __future__ import annotations

import pytest

from mailproxy.adapters.memory_mailbox import MemoryMailbox
from mailproxy.domain.errors import MailboxUnavailable


async def test_renumbering_gives_a_new_uidvalidity_and_new_uids_to_what_was_not_set_aside():
    mailbox = MemoryMailbox(processed_folder=None)
    first, second, third = (mailbox.deliver(f"m{n}".encode()) for n in range(3))
    session = await mailbox.open()
    await session.set_aside([first])
    mailbox.renumber(7)
    renumbered = await mailbox.open()
    assert renumbered.uidvalidity == 7
    assert await renumbered.uids() == [1, 2]
    assert [await renumbered.fetch(uid) for uid in (1, 2)] == [b"m1", b"m2"]
    assert (second, third) == (2, 3)


async def test_an_unavailable_mailbox_fails_to_open_and_breaks_open_sessions():
    mailbox = MemoryMailbox("bounces@memory:0/INBOX")
    session = await mailbox.open()
    mailbox.unavailable = "connection lost"
    with pytest.raises(MailboxUnavailable, match="connection lost"):
        await mailbox.open()
    with pytest.raises(MailboxUnavailable, match="connection lost"):
        await session.uids()
    await session.close()
    mailbox.unavailable = None
    assert await (await mailbox.open()).uids() == []
    assert mailbox.opened == 2
