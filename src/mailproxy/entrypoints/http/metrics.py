"""``GET /metrics``: the Prometheus exposition of one app's registry — the delivery
metrics of the proxy's :class:`~mailproxy.adapters.prometheus.PrometheusMetrics` when it
has them (one registry per app, no global state), the failed authentications, and the
queue gauges of :class:`QueueGauges`, read from the store at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy


class TenantGauges(msgspec.Struct, frozen=True):
    """One tenant's values at a scrape."""

    tenant_id: str
    report_backlog: int
    report_calls_ok: int
    report_calls_failed: int
    oldest_pending_age_s: float
    oldest_report_age_s: float


class GaugeSnapshot(msgspec.Struct, frozen=True):
    """Everything the gauges show, read in one pass."""

    pending: dict[Status, int] = {}
    tenants: list[TenantGauges] = []
    #: Attachment cache (hits, misses) of this process; None without a cache.
    attachment_cache: tuple[int, int] | None = None


class QueueGauges:
    """A prometheus_client collector: :meth:`refresh` reads the queue counts, the tenants
    with their report backlogs and the oldest message not yet final of every tenant — four
    store reads, however many tenants there are — and :meth:`collect` renders what the
    last refresh read. Series are rebuilt from each snapshot, so a tenant deleted
    (by any process) loses its series at the next scrape, and a concurrent scrape never
    sees half of them."""

    def __init__(self, proxy: MailProxy) -> None:
        self._proxy = proxy
        self._snapshot = GaugeSnapshot()

    async def refresh(self) -> None:
        """Read a new snapshot; the delivery series of tenants the store no longer has
        are dropped from the proxy's metrics."""
        proxy = self._proxy
        events = proxy.events
        # Tenants with delivery series before the store is read: those the store then no
        # longer has were deleted (perhaps by another process), and their series go.
        seen = events.tenant_ids() if isinstance(events, PrometheusMetrics) else set()
        pending = await proxy.counts()
        oldest_not_final = await proxy.store.oldest_not_final()
        now = proxy.now()
        tenants = []
        for tenant, sync, backlog, _ in await proxy.sync_status():
            oldest = oldest_not_final.get(tenant.id)
            pending_age = 0.0 if oldest is None else max(0.0, now - oldest)
            report_age = 0.0 if backlog.oldest_ts is None else max(0.0, now - backlog.oldest_ts)
            tenants.append(
                TenantGauges(
                    tenant_id=tenant.id,
                    report_backlog=backlog.count,
                    report_calls_ok=sync.calls - sync.failed_calls,
                    report_calls_failed=sync.failed_calls,
                    oldest_pending_age_s=pending_age,
                    oldest_report_age_s=report_age,
                )
            )
        cache = proxy.attachment_cache
        self._snapshot = GaugeSnapshot(
            pending=pending,
            tenants=tenants,
            attachment_cache=None if cache is None else (cache.hits, cache.misses),
        )
        if isinstance(events, PrometheusMetrics):
            for gone in seen - {row.tenant_id for row in tenants}:
                events.forget(gone)

    def describe(self) -> list[Metric]:
        return list(self._families(GaugeSnapshot()))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._snapshot)

    @staticmethod
    def _families(snapshot: GaugeSnapshot) -> Iterator[Metric]:
        tenant = ["tenant_id"]
        backlog = GaugeMetricFamily(
            "gmp_report_backlog", "Unacknowledged delivery-report entries per tenant", labels=tenant
        )
        calls = GaugeMetricFamily(
            "gmp_report_calls",
            "Report calls made by this process since it started, by outcome",
            labels=["tenant_id", "outcome"],
        )
        oldest_pending = GaugeMetricFamily(
            "gmp_oldest_pending_age_seconds",
            "Age of the oldest message not yet final, per tenant",
            labels=tenant,
        )
        oldest_report = GaugeMetricFamily(
            "gmp_report_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged report entry per tenant",
            labels=tenant,
        )
        for row in snapshot.tenants:
            backlog.add_metric([row.tenant_id], row.report_backlog)
            calls.add_metric([row.tenant_id, "ok"], row.report_calls_ok)
            calls.add_metric([row.tenant_id, "failed"], row.report_calls_failed)
            oldest_pending.add_metric([row.tenant_id], row.oldest_pending_age_s)
            oldest_report.add_metric([row.tenant_id], row.oldest_report_age_s)
        cache = GaugeMetricFamily(
            "gmp_attachment_cache",
            "Attachment cache lookups of this process since it started, by result",
            labels=["result"],
        )
        if snapshot.attachment_cache is not None:
            hits, misses = snapshot.attachment_cache
            cache.add_metric(["hit"], hits)
            cache.add_metric(["miss"], misses)
        pending = GaugeMetricFamily(
            "gmp_pending_messages",
            "Stored messages by status (every status, 0 when none)",
            labels=["status"],
        )
        for status in Status:  # zero too: a status emptied since the last scrape shows 0
            pending.add_metric([str(status)], snapshot.pending.get(status, 0))
        yield from (backlog, calls, cache, oldest_pending, oldest_report, pending)


class HttpMetrics:
    """The registry of one app (the proxy's delivery metrics' registry when it has one)
    with the queue gauges and the failed-authentication counter registered on it."""

    def __init__(self, proxy: MailProxy) -> None:
        events = proxy.events
        self.registry = (
            events.registry if isinstance(events, PrometheusMetrics) else CollectorRegistry()
        )
        self.queue = QueueGauges(proxy)
        self.registry.register(self.queue)
        self._auth_failures = Counter(
            "gmp_auth_failures",
            "Failed authentications (API and /ui sign-in): wrong credentials, and attempts "
            "refused unchecked because their address had too many",
            ["outcome"],
            registry=self.registry,
        )

    def count_auth_failure(self, outcome: str) -> None:
        """One failed authentication: ``"wrong"`` or ``"throttled"``."""
        self._auth_failures.labels(outcome=outcome).inc()
