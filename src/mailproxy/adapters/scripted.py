"""Scripted adapters for an application's own tests (and the service's): a transport and a
report sender that answer as a script says and record what they were given, an
attachment source holding documents in memory, and a store wrapper that counts the
calls made to it. Each fake passes the contract suite of its port
(``tests/contract/test_transport.py``, ``tests/contract/test_report_sender.py``,
``tests/contract/test_attachment_sources.py``), so a test written against them holds
against SMTP, HTTP and real attachment sources.

    transport = ScriptedTransport()
    transport.script["welcome-ada"] = [Temporary("451 try later", 451)]  # then Delivered
    proxy = MailProxy(store=store,
                      transports={"smtp": transport}, reporter=RecordingReportSender())
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from mailproxy.domain.errors import AttachmentUnavailable, InvalidInput
from mailproxy.domain.mime import Outgoing
from mailproxy.domain.model import Account, AttachmentRef, ReportEvent, Tenant
from mailproxy.domain.outcome import Delivered, Outcome
from mailproxy.ports.reporting import SyncAnswer


class ScriptedTransport:
    """Implements ``Transport``: each message handed over is kept in :attr:`sent`, and
    answered by the next step of ``script[message id]`` (``Delivered(250)`` once the
    script is used up). An exception as a step is raised, to test how a caller survives a
    transport's bug; every other answer follows the port's contract."""

    def __init__(self) -> None:
        self.script: dict[str, list[Outcome | Exception]] = {}
        self.sent: list[Outgoing] = []
        #: Set at each handed-over message, for tests that wait for the next one.
        self.handed_over = asyncio.Event()

    @property
    def sent_ids(self) -> list[str]:
        return [message.id for message in self.sent]

    def check(self, account: Account) -> None:
        return None

    async def send(self, account: Account, message: Outgoing) -> Outcome:
        self.sent.append(message)
        steps = self.script.get(message.id)
        step = steps.pop(0) if steps else Delivered(250)
        if isinstance(step, Exception):
            raise step
        self.handed_over.set()
        return step

    async def close(self) -> None:
        return None


class ReportCall(msgspec.Struct, frozen=True):
    tenant_id: str
    events: tuple[ReportEvent, ...]


class RecordingReportSender:
    """Implements ``ReportSender``: each call is kept in :attr:`calls` and acknowledged,
    unless :attr:`answers` holds the next answer to give. A tenant without a
    ``client_base_url`` is not called, as with HTTP."""

    def __init__(self) -> None:
        self.calls: list[ReportCall] = []
        self.answers: list[SyncAnswer] = []

    async def post(self, tenant: Tenant, events: Sequence[ReportEvent]) -> SyncAnswer:
        if not tenant.client_base_url:
            return SyncAnswer(acknowledged=False, error="no client_base_url")
        self.calls.append(ReportCall(tenant.id, tuple(events)))
        return self.answers.pop(0) if self.answers else SyncAnswer(acknowledged=True)

    def refusal(self, tenant: Tenant) -> str | None:
        return None  # no egress rule: every URL is called

    async def close(self) -> None:
        return None


class MemoryAttachmentSource:
    """Implements ``AttachmentSource`` from documents kept in memory per tenant, for tests
    that would otherwise need a file tree or an HTTP server: ``put`` a document under a
    tenant and a storage path, and a message of that tenant naming the path gets its bytes.
    Each tenant sees only its own documents; a path that climbs (``..``) or is absolute is
    refused by ``check``, as the filesystem source refuses it. What was fetched is kept in
    :attr:`fetched` as ``(tenant id, storage path)``."""

    def __init__(
        self, fetch_modes: frozenset[str] = frozenset({"filesystem", "endpoint", "http_url"})
    ) -> None:
        self.fetch_modes = fetch_modes
        self.documents: dict[tuple[str, str], bytes] = {}
        self.fetched: list[tuple[str, str]] = []

    def put(self, tenant_id: str, storage_path: str, content: bytes) -> None:
        self.documents[tenant_id, storage_path] = content

    def check(self, tenant: Tenant, attachment: AttachmentRef) -> None:
        path = attachment.storage_path
        if path.startswith("/") or ".." in path.split("/"):
            raise InvalidInput(
                "attachments.storage_path", "invalid attachments.storage_path: outside the store"
            )

    async def fetch(self, tenant: Tenant, attachment: AttachmentRef) -> bytes:
        try:
            self.check(tenant, attachment)
        except InvalidInput as exc:
            raise AttachmentUnavailable(attachment.filename, exc.reason, temporary=False) from None
        content = self.documents.get((tenant.id, attachment.storage_path))
        if content is None:
            raise AttachmentUnavailable(attachment.filename, "not found", temporary=False)
        self.fetched.append((tenant.id, attachment.storage_path))
        return content

    async def close(self) -> None:
        pass


class CountingStore:
    """A store (any adapter, or anything with async methods) with every call of a
    coroutine method counted by method name in :attr:`calls`: the store round trips an
    operation makes. Other attributes pass through as they are.

        store = CountingStore(MemoryStore())
        proxy = MailProxy(store=store, ...)
        store.calls.clear(); await proxy.submit(batch); print(store.calls)
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(value):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await value(*args, **kwargs)

        return counted


__all__ = [
    "CountingStore",
    "MemoryAttachmentSource",
    "RecordingReportSender",
    "ReportCall",
    "ScriptedTransport",
]
