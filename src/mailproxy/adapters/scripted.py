"""Scripted adapters for an application's own tests (and the service's): a transport and a
report sender that answer as a script says and record what they were given, and a store
wrapper that counts the calls made to it. Both pass the
contract suites of their ports (``tests/contract/test_transport.py``,
``tests/contract/test_report_sender.py``), so a test written against them holds against
SMTP and HTTP.

    transport = ScriptedTransport()
    transport.script["welcome-ada"] = [Temporary("451 try later", 451)]  # then Delivered
    proxy = MailProxy(store=store, config=store, outbox=store,
                      transports={"smtp": transport}, reporter=RecordingReportSender())
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from mailproxy.domain.mime import Outgoing
from mailproxy.domain.model import Account, ReportEvent, Tenant
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

    async def close(self) -> None:
        return None


__all__ = ["RecordingReportSender", "ReportCall", "ScriptedTransport"]


class CountingStore:
    """A store (any adapter, or anything with async methods) with every awaited call
    counted by method name in :attr:`calls`: the store round trips an operation makes.

        store = CountingStore(MemoryStore())
        proxy = MailProxy(store=store, config=store, outbox=store, access=store, ...)
        store.calls.clear(); await proxy.submit(batch); print(store.calls)
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await value(*args, **kwargs)

        return counted
