"""The reporting port: deliver a batch of report events to a tenant's application.

The outbox (:class:`mailproxy.ports.store.ReportOutbox`) keeps the events; a reporter
reads them, hands them to a ``ReportSender`` and acknowledges them only when the sender
says the application took them. The HTTP adapter posts ``{"delivery_report": [...]}`` to
``client_base_url + client_sync_path`` as the HTTP API describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from mailproxy.domain.model import ReportEvent, Tenant


class SyncAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What the application answered to one report call."""

    #: True when the application took every entry of the call (an HTTP 2xx).
    acknowledged: bool
    #: The application has just queued this many messages: call again as soon as there
    #: is news.
    queued: int = 0
    #: No heartbeat before this instant (real reports are not held back).
    next_sync_after: float | None = None
    #: Why the call failed, for logs and the sync status (never the response body).
    error: str | None = None


class ReportSender(Protocol):
    async def post(self, tenant: Tenant, events: Sequence[ReportEvent]) -> SyncAnswer:
        """Send ``events`` (possibly none: a heartbeat) to ``tenant``'s application, oldest
        first, in one call, and say whether it acknowledged them.

        Never raises for anything the application or the network does (an error status,
        a timeout, a refused connection, a redirect): those are ``acknowledged=False`` with
        ``error`` set. The caller re-sends the same events later; event ids stay stable.
        """

    def refusal(self, tenant: Tenant) -> str | None:
        """Why every call to ``tenant``'s application would be refused before it connects,
        as far as that is known without I/O — its ``client_base_url`` names an address,
        or ``localhost``, that the egress rule forbids — or None. A name is judged when it
        is resolved, at each call."""

    async def close(self) -> None:
        """Release connections. Idempotent."""
