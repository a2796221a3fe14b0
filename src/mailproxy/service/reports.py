"""Delivery reports: which tenants' applications are due a call, and the calls.

One loop wakes on new report entries (and at least every ``REPORT_POLL_S``), starts a
call task for each tenant that is due and not already being called, and sleeps until the
next one is due. Calls share ``concurrency`` slots that a slow application gives up after
``slot_hold_s``; a lease in the outbox makes one process at a time call a tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from mailproxy.domain.errors import MailProxyError
from mailproxy.domain.model import ReportBacklog, Tenant
from mailproxy.domain.reporting import SyncState, after_call, next_call_ts
from mailproxy.ports.reporting import ReportSender
from mailproxy.ports.store import ConfigStore, ReportOutbox
from mailproxy.service.config_cache import ConfigCache
from mailproxy.service.options import ReportingOptions

log = logging.getLogger("mailproxy")
T = TypeVar("T")

#: The report loop also looks for new events this often, so events written by another
#: process sharing the database go out within about a second too (this process's own
#: state changes wake it at once).
REPORT_POLL_S = 1.0


class ReportScheduler:
    """Calls each tenant's application with its report entries, or a heartbeat."""

    def __init__(
        self,
        *,
        outbox: ReportOutbox,
        config: ConfigStore,
        config_cache: ConfigCache,
        reporter: ReportSender | None,
        options: ReportingOptions,
        worker_id: str,
        clock: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self._config = config
        self._config_cache = config_cache
        self.reporter = reporter
        self._options = options
        self._worker_id = worker_id
        self._clock = clock
        self._slots = asyncio.Semaphore(options.concurrency)
        self._wake_event = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._calling: dict[str, asyncio.Task[None]] = {}
        self._sync: dict[str, SyncState] = {}

    def wake(self) -> None:
        """New report entries exist: look for due tenants now."""
        self._wake_event.set()

    def force(self, tenant_id: str | None) -> None:
        """Call the tenant's application (every known tenant's, without ``tenant_id``) at
        the next wake, even with nothing to report."""
        for state_tenant in [tenant_id] if tenant_id is not None else list(self._sync):
            state = self._sync.get(state_tenant, SyncState(tenant_id=state_tenant))
            self._sync[state_tenant] = msgspec.structs.replace(state, forced=True)
        self._wake_event.set()

    def start(self, *, run_loop: bool) -> None:
        """Accept calls again and, with ``run_loop`` and a sender, start the report loop."""
        self._stopping = False
        if run_loop and self.reporter is not None:
            self._loop_task = asyncio.create_task(self._loop(), name="mailproxy-reports")

    def begin_stop(self) -> None:
        """Start no new call (calls under way finish their current batch)."""
        self._stopping = True

    async def stop(self, grace_s: float) -> None:
        """End the loop, wait up to ``grace_s`` for the calls under way, close the sender."""
        self._stopping = True
        self._wake_event.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._calling:
            await asyncio.wait(list(self._calling.values()), timeout=grace_s)
        if self.reporter is not None:
            await self.reporter.close()

    async def sync_status(self) -> list[tuple[Tenant, SyncState, ReportBacklog, float | None]]:
        """Per tenant: its report-call state in this process, its unacknowledged events,
        and when its next call is due (None without a callback URL)."""
        rows = []
        backlogs = await self._outbox.report_backlogs()
        for tenant in await self._config.list_tenants():
            backlog = backlogs.get(tenant.id, ReportBacklog(0, None))
            state = self._sync.get(tenant.id, SyncState(tenant_id=tenant.id))
            due = (
                next_call_ts(state, backlog.count > 0, self._options.sync_interval_s)
                if tenant.client_base_url
                else None
            )
            rows.append((tenant, state, backlog, due))
        return rows

    def url_warning(self, tenant: Tenant) -> str | None:
        """What an operator should know when ``tenant``'s delivery reports can never be
        sent as configured (the reporter refuses its URL without trying), else None."""
        refusal = None if self.reporter is None else self.reporter.refusal(tenant)
        if refusal is None:
            return None
        return f"delivery reports to {tenant.client_base_url} cannot be sent: {refusal}"

    async def report_once(self) -> int:
        """Make every report call that is due now and wait for them; return how many
        calls were made (deterministic tests drive reports with this)."""
        tenants, _ = await self._due_tenants(self._clock())
        await asyncio.gather(*(self._report_tenant(t) for t in tenants))
        return len(tenants)

    async def _due_tenants(self, now: float) -> tuple[list[Tenant], float | None]:
        """In one pass over the tenants with a callback URL that are not being called:
        those due now, and in how many seconds the next of the others is (None: none)."""
        due: list[Tenant] = []
        soonest: float | None = None
        with_reports = await self._outbox.tenants_with_pending_reports()
        for tenant in await self._config_cache.tenants():
            if not tenant.client_base_url or tenant.id in self._calling:
                continue
            state = self._sync.setdefault(tenant.id, SyncState(tenant_id=tenant.id))
            at = next_call_ts(state, tenant.id in with_reports, self._options.sync_interval_s)
            if at <= now:
                due.append(tenant)
            else:
                soonest = at if soonest is None else min(soonest, at)
        return due, None if soonest is None else soonest - now

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake_event.clear()
            try:
                due, due_in = await self._due_tenants(self._clock())
                for tenant in due:
                    task = asyncio.create_task(self._report_tenant(tenant))
                    self._calling[tenant.id] = task
                    task.add_done_callback(functools.partial(self._call_done, tenant.id))
                timeout = REPORT_POLL_S if due_in is None else min(REPORT_POLL_S, due_in)
            except MailProxyError as exc:
                log.error("report.loop_failed", extra={"error": str(exc)})
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake_event.wait()
            if self._wake_event.is_set() and self._options.gather_s > 0 and not self._stopping:
                await asyncio.sleep(self._options.gather_s)

    def _call_done(self, tenant_id: str, _task: asyncio.Task[None]) -> None:
        self._calling.pop(tenant_id, None)
        self._wake_event.set()

    async def _report_tenant(self, tenant: Tenant) -> None:
        """Call the tenant's application until it has nothing more to take now: a full
        batch or ``queued > 0`` calls again at once; a failure backs off."""
        try:
            while not self._stopping and await self._call_tenant(tenant):
                pass
        finally:
            with contextlib.suppress(MailProxyError):
                await self._outbox.release_reports(tenant.id, self._worker_id)

    async def _call_tenant(self, tenant: Tenant) -> bool:
        """One call with the tenant's next batch; whether to call again at once."""
        assert self.reporter is not None
        try:
            # One process at a time calls a tenant's application; the lease is taken, or
            # renewed, before every read and call (the loop only starts tenants that are
            # due, so a lease is rarely taken for nothing).
            if not await self._outbox.lease_reports(
                tenant.id, self._worker_id, self._clock(), self._options.lease_s
            ):
                return False
            stored = await self._outbox.pending_reports(tenant.id, self._options.batch)
        except MailProxyError as exc:
            log.error("report.read_failed", extra={"tenant": tenant.id, "error": str(exc)})
            return False
        state = self._sync.get(tenant.id, SyncState(tenant_id=tenant.id))
        if next_call_ts(state, bool(stored), self._options.sync_interval_s) > self._clock():
            return False
        events = [r.event for r in stored]
        answer = await self.in_report_slot(self.reporter.post(tenant, events))
        now = self._clock()
        self._sync[tenant.id] = after_call(
            state,
            acknowledged=answer.acknowledged,
            error=answer.error,
            next_sync_after=answer.next_sync_after,
            now=now,
            retry_max_delay_s=self._options.retry_max_s,
        )
        if not answer.acknowledged:
            log.warning(
                "report.failed",
                extra={"tenant": tenant.id, "entries": len(events), "error": answer.error},
            )
            return False
        if events:
            try:
                await self._outbox.acknowledge_reports(tenant.id, [e.event_id for e in events], now)
            except MailProxyError as exc:
                log.error("report.ack_failed", extra={"tenant": tenant.id, "error": str(exc)})
                return False
        log.info("report.sent", extra={"tenant": tenant.id, "entries": len(events)})
        return len(events) >= self._options.batch or answer.queued > 0

    async def in_report_slot(self, call: Awaitable[T]) -> T:
        """Run one report call in one of the ``concurrency`` slots; a call still running
        after ``slot_hold_s`` gives its slot up and goes on beside them (it ends within the
        sender's own deadline), so applications that answer slowly never hold back the
        others' calls by more than that."""
        await self._slots.acquire()
        running = asyncio.ensure_future(call)
        holding = True
        try:
            await asyncio.wait({running}, timeout=self._options.slot_hold_s)
            self._slots.release()
            holding = False
            return await running
        except asyncio.CancelledError:
            running.cancel()
            await asyncio.wait({running})
            raise
        finally:
            if holding:
                self._slots.release()
