"""In-memory bounce mailbox: a real adapter of the mailbox port, for tests and embedding.

It behaves as the IMAP mailbox does on a server with IDLE: UIDs ascend from 1 and are
never reused, set-aside messages move to a processed folder (or, without one, stay
flagged), and :meth:`MemorySession.wait` returns as soon as mail arrived that the session
had not listed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from mailproxy.domain.errors import MailboxUnavailable


class MemoryMailbox:
    """Implements :class:`~mailproxy.ports.mailbox.Mailbox` in memory.

    ``messages`` holds the folder (UID → raw bytes), ``processed`` what was moved to the
    processed folder (in the order set aside), ``flagged`` the UIDs set aside in place
    when ``processed_folder`` is None. ``unavailable``, while set, is the reason
    :meth:`open` and every call of an open session fail with (an unreachable server, a
    refused login, a lost connection).
    """

    def __init__(
        self,
        key: str = "bounces@memory:0/INBOX",
        *,
        uidvalidity: int = 1,
        processed_folder: str | None = "Processed",
    ) -> None:
        self._key = key
        self.uidvalidity = uidvalidity
        self.processed_folder = processed_folder
        self.messages: dict[int, bytes] = {}
        self.processed: list[bytes] = []
        self.flagged: set[int] = set()
        self.unavailable: str | None = None
        #: How many times :meth:`open` succeeded.
        self.opened = 0
        self._next_uid = 1
        self._sessions: set[MemorySession] = set()

    @property
    def key(self) -> str:
        return self._key

    def deliver(self, raw: bytes) -> int:
        """Put ``raw`` into the folder; its UID."""
        uid = self._next_uid
        self._next_uid += 1
        self.messages[uid] = raw
        for session in self._sessions:
            session.arrived.set()
        return uid

    def renumber(self, uidvalidity: int) -> None:
        """What a server does when it rebuilds the folder: a new UIDVALIDITY, and every
        message gets a new UID (from 1 again)."""
        self.uidvalidity = uidvalidity
        raws = [self.messages[uid] for uid in sorted(self.messages) if uid not in self.flagged]
        self.messages, self.flagged = {}, set()
        self._next_uid = 1
        for raw in raws:
            self.deliver(raw)

    def check(self) -> None:
        if self.unavailable is not None:
            raise MailboxUnavailable(self._key, self.unavailable)

    async def open(self) -> MemorySession:
        self.check()
        self.opened += 1
        session = MemorySession(self)
        self._sessions.add(session)
        return session

    def forget(self, session: MemorySession) -> None:
        self._sessions.discard(session)


class MemorySession:
    """Implements :class:`~mailproxy.ports.mailbox.MailboxSession` on a
    :class:`MemoryMailbox`."""

    def __init__(self, mailbox: MemoryMailbox) -> None:
        self._mailbox = mailbox
        self._uidvalidity = mailbox.uidvalidity
        self._closed = False
        #: Set when mail arrives that :meth:`uids` did not list yet.
        self.arrived = asyncio.Event()

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    def _check(self) -> None:
        if self._closed:
            raise MailboxUnavailable(self._mailbox.key, "the session is closed")
        self._mailbox.check()

    async def uids(self) -> list[int]:
        self._check()
        self.arrived.clear()
        mailbox = self._mailbox
        return sorted(uid for uid in mailbox.messages if uid not in mailbox.flagged)

    async def fetch(self, uid: int) -> bytes | None:
        self._check()
        return self._mailbox.messages.get(uid)

    async def set_aside(self, uids: Sequence[int]) -> None:
        self._check()
        mailbox = self._mailbox
        for uid in sorted(set(uids)):
            if uid not in mailbox.messages or uid in mailbox.flagged:
                continue
            if mailbox.processed_folder is None:
                mailbox.flagged.add(uid)
            else:
                mailbox.processed.append(mailbox.messages.pop(uid))

    async def wait(self, timeout_s: float) -> None:
        self._check()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.arrived.wait()

    async def close(self) -> None:
        self._closed = True
        self._mailbox.forget(self)


__all__ = ["MemoryMailbox", "MemorySession"]
