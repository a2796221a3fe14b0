"""The bounce-mailbox port: read the messages of one mailbox folder, and set aside those
whose facts are committed.

The poller (``service/bounces.py``) connects, reads :attr:`MailboxSession.uidvalidity`
and :meth:`MailboxSession.uids`, fetches each message, commits what it says to the store
(keyed by mailbox, UIDVALIDITY and UID, so a message is applied once however often it is
read), and only then calls :meth:`MailboxSession.set_aside`. A crash between the commit
and the set-aside leaves the message in place: the next pass finds its key committed and
sets it aside without applying it again.

Contract suite: ``tests/contract/test_bounce_mailbox.py``, run against the in-memory
mailbox and against a real Dovecot over IMAP (TLS, IDLE and plain polling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class MailboxSession(Protocol):
    """One open connection to one folder (selected)."""

    @property
    def uidvalidity(self) -> int:
        """The folder's UIDVALIDITY (RFC 3501 §2.3.1.1): when it changes, earlier UIDs
        name other messages."""

    async def uids(self) -> list[int]:
        """The UIDs of the folder's messages not set aside yet, ascending."""

    async def fetch(self, uid: int) -> bytes | None:
        """The message's raw bytes (without marking it read), or None when it is gone; an
        adapter may stop after its first octets (the IMAP one after 2 MiB, as much as the
        parser reads)."""

    async def set_aside(self, uids: Sequence[int]) -> None:
        """Move the messages to the processed folder (created when missing), or flag
        them when there is none, so that :meth:`uids` no longer lists them. Idempotent:
        UIDs already gone are ignored."""

    async def wait(self, timeout_s: float) -> None:
        """Return when new mail may have arrived (IMAP IDLE where the server offers it)
        or after ``timeout_s``, whichever comes first."""

    async def close(self) -> None:
        """Log out and close the connection; never raises. Idempotent."""


class Mailbox(Protocol):
    """Where one mailbox is, and how to open it."""

    @property
    def key(self) -> str:
        """A stable name of the mailbox and folder (``user@host:port/folder``): the
        processed-message records are kept under it."""

    async def open(self) -> MailboxSession:
        """Connect, authenticate, select the folder. Raises ``MailboxUnavailable``
        (``domain.errors``) saying why: unreachable, TLS or certificate failure, refused
        login, missing folder."""
