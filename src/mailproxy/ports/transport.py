"""The transport port: send one rendered message on one account.

Contract suite: ``tests/system/test_smtp_transport.py`` (SMTP) and
``tests/contract/test_transport.py`` (every transport against a local SMTP sink or folder).
"""

from __future__ import annotations

from typing import Protocol

from mailproxy.domain.mime import Outgoing
from mailproxy.domain.model import Account
from mailproxy.domain.outcome import Outcome


class Transport(Protocol):
    def check(self, account: Account) -> None:
        """Refuse, without I/O, an account this transport would never use (raise
        ``InvalidInput`` naming the field): e.g. an SMTP host that is an address the
        egress rule forbids. Called when an account is stored."""

    async def send(self, account: Account, message: Outgoing) -> Outcome:
        """Try once to hand ``message`` over on ``account`` and say how it went.

        Never raises for anything the remote side does (a reply code, a refused or lost
        connection, a timeout, a TLS or authentication failure): those are outcomes,
        classified by :func:`mailproxy.domain.outcome.classify`. Recipients refused
        individually while others were accepted are listed in ``Delivered.refused``.
        """

    async def close(self) -> None:
        """Close pooled connections politely (QUIT). Idempotent."""
