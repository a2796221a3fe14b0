"""Delivery metrics in a Prometheus ``CollectorRegistry`` that the caller owns (no global
registry): counters of attempts by result, histograms of enqueue latency, accept-to-sent
latency and SMTP transaction time. Implements ``DeliveryEvents``.

Label cardinality is bounded by configuration, never by client input: ``tenant_id`` and
``account_id`` label values are ids of configured tenants and accounts (at most one series
per account and metric), and ``result`` has five values. Every configured account has its
counters from the start, at 0 (:meth:`PrometheusMetrics.configured`); the series of a
deleted account or tenant are removed (:meth:`PrometheusMetrics.forget`), so the
exposition is bounded by what exists, not by what ever existed.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Histogram

from mailproxy.ports.observability import AttemptResult, MailboxResult, SigningResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class PrometheusMetrics:
    """Implements ``DeliveryEvents`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["tenant_id", "account_id"]
        self._counters = {
            "sent": Counter("gmp_sent", "Messages sent", labels, registry=self.registry),
            "error": Counter(
                "gmp_errors", "Messages failed for good", labels, registry=self.registry
            ),
            "deferred": Counter(
                "gmp_deferred", "Attempts that will be retried", labels, registry=self.registry
            ),
            "unknown": Counter(
                "gmp_unknown", "Attempts without a known answer", labels, registry=self.registry
            ),
            "rate_limited": Counter(
                "gmp_rate_limited", "Sends held back by a rate limit", labels,
                registry=self.registry,
            ),
        }  # fmt: skip
        self._enqueue = Histogram(
            "gmp_enqueue_seconds", "Time to validate and commit an accepted batch",
            ["tenant_id"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._accept_to_sent = Histogram(
            "gmp_accept_to_sent_seconds", "From acceptance to the SMTP 250",
            ["tenant_id"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._smtp = Histogram(
            "gmp_smtp_transaction_seconds", "One SMTP transaction",
            ["tenant_id", "account_id"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

        self._mailbox = Counter(
            "gmp_bounce_mailbox_messages", "Bounce-mailbox messages read, by what they were",
            ["result"], registry=self.registry,
        )  # fmt: skip
        self._unparsed = Counter(
            "gmp_bounces_unparsed",
            "Bounce-mailbox messages nobody could read (left in the mailbox)",
            registry=self.registry,
        )
        for result in ("applied", "unmatched", "ignored", "unparsed"):
            self._mailbox.labels(result=result)
        self._bounces = Counter(
            "gmp_bounces", "Bounces, complaints and delays kept with messages",
            ["tenant_id", "kind"], registry=self.registry,
        )  # fmt: skip
        self._signatures = Counter(
            "gmp_dkim_signatures", "Messages DKIM-signed for an attempt, and signing failures",
            ["tenant_id", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._failovers = Counter(
            "gmp_failovers",
            "Attempts made through a fallback account, by the account failed over from",
            ["tenant_id", "account_id"], registry=self.registry,
        )  # fmt: skip
        self._pec = Counter(
            "gmp_pec_receipts",
            "PEC receipts applied to sent messages by kind (X-Ricevuta), and timeouts",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        #: The accounts each tenant has series of: what :meth:`forget` removes.
        self._series: dict[str, set[str]] = {}

    def configured(self, tenant_id: str, account_id: str) -> None:
        # Prometheus' advice for series that appear with their first event: create them
        # at 0 (a rate or an alert over a missing series reads "no data").
        self._series.setdefault(tenant_id, set()).add(account_id)
        for counter in self._counters.values():
            counter.labels(tenant_id=tenant_id, account_id=account_id)

    def accepted(self, tenant_id: str, count: int, seconds: float) -> None:
        self._series.setdefault(tenant_id, set())
        self._enqueue.labels(tenant_id=tenant_id).observe(seconds)

    def attempted(
        self, tenant_id: str, account_id: str, result: AttemptResult, seconds: float | None
    ) -> None:
        self._series.setdefault(tenant_id, set()).add(account_id)
        self._counters[result].labels(tenant_id=tenant_id, account_id=account_id).inc()
        if seconds is not None:
            self._smtp.labels(tenant_id=tenant_id, account_id=account_id).observe(seconds)

    def delivered(self, tenant_id: str, account_id: str, accept_to_sent_s: float) -> None:
        self._series.setdefault(tenant_id, set())
        self._accept_to_sent.labels(tenant_id=tenant_id).observe(accept_to_sent_s)

    def forget(self, tenant_id: str, account_id: str | None = None) -> None:
        accounts = self._series.get(tenant_id, set())
        gone = set(accounts) if account_id is None else {account_id} & accounts
        for account in gone:
            for metric in (*self._counters.values(), self._smtp, self._failovers):
                with contextlib.suppress(KeyError):  # no series of this metric yet
                    metric.remove(tenant_id, account)
            accounts.discard(account)
        if account_id is None:
            for metric in (self._enqueue, self._accept_to_sent):
                with contextlib.suppress(KeyError):
                    metric.remove(tenant_id)
            for kind in ("bounce", "complaint", "delay"):
                with contextlib.suppress(KeyError):
                    self._bounces.remove(tenant_id, kind)
            for outcome in ("signed", "failed"):
                with contextlib.suppress(KeyError):
                    self._signatures.remove(tenant_id, outcome)
            self._series.pop(tenant_id, None)

    def mailbox_read(self, result: MailboxResult) -> None:
        self._mailbox.labels(result=result).inc()
        if result == "unparsed":
            self._unparsed.inc()

    def bounce_recorded(self, tenant_id: str, kind: str) -> None:
        self._series.setdefault(tenant_id, set())
        self._bounces.labels(tenant_id=tenant_id, kind=kind).inc()

    def signed(self, tenant_id: str, outcome: SigningResult) -> None:
        self._series.setdefault(tenant_id, set())
        self._signatures.labels(tenant_id=tenant_id, outcome=outcome).inc()

    def pec_receipt(self, kind: str, count: int) -> None:
        self._pec.labels(kind=kind).inc(count)

    def failed_over(self, tenant_id: str, account_id: str) -> None:
        self._series.setdefault(tenant_id, set()).add(account_id)
        self._failovers.labels(tenant_id=tenant_id, account_id=account_id).inc()

    def tenant_ids(self) -> set[str]:
        """The tenants that have series here (for pruning those deleted elsewhere)."""
        return set(self._series)
