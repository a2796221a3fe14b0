"""Contract of the DeliveryEvents port, on every implementation: each event is taken
without raising, for any result and with or without a transaction time."""

from __future__ import annotations

import pytest

from mailproxy.adapters.prometheus import PrometheusMetrics


@pytest.fixture(params=["prometheus"])
def events(request):
    return PrometheusMetrics()


@pytest.mark.parametrize("result", ["sent", "deferred", "error", "unknown", "rate_limited"])
def test_every_result_is_taken_with_or_without_a_transaction_time(events, result):
    events.attempted("t1", "a1", result, 0.01)
    events.attempted("t1", "a1", result, None)
    events.accepted("t1", 3, 0.002)
    events.delivered("t1", "a1", 1.5)


def test_prometheus_counts_by_tenant_and_account():
    metrics = PrometheusMetrics()
    for _ in range(3):
        metrics.attempted("t1", "a1", "sent", 0.01)
    metrics.attempted("t2", "a1", "sent", None)
    sample = metrics.registry.get_sample_value
    assert sample("gmp_sent_total", {"tenant_id": "t1", "account_id": "a1"}) == 3
    assert sample("gmp_sent_total", {"tenant_id": "t2", "account_id": "a1"}) == 1
    assert (
        sample("gmp_smtp_transaction_seconds_count", {"tenant_id": "t2", "account_id": "a1"})
        is None
    )


def test_forgetting_is_taken_for_what_was_seen_and_what_was_not(events):
    events.attempted("t1", "a1", "sent", 0.01)
    events.forget("t1", "a1")
    events.forget("t1")
    events.forget("never-seen")
    events.forget("never-seen", "a9")
    events.attempted("t1", "a1", "sent", 0.01)  # a tenant made again starts afresh


def test_prometheus_forgets_an_account_then_its_tenant():
    metrics = PrometheusMetrics()
    for account in ("a1", "a2"):
        metrics.attempted("t1", account, "sent", 0.01)
    metrics.accepted("t1", 1, 0.001)
    sample = metrics.registry.get_sample_value
    metrics.forget("t1", "a1")
    assert sample("gmp_sent_total", {"tenant_id": "t1", "account_id": "a1"}) is None
    assert sample("gmp_sent_total", {"tenant_id": "t1", "account_id": "a2"}) == 1
    metrics.forget("t1")
    families = {m.name: m.samples for m in metrics.registry.collect()}
    assert not any(
        s.labels.get("tenant_id") == "t1" for samples in families.values() for s in samples
    )
