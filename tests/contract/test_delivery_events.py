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


def test_configuring_is_taken_again_and_after_events(events):
    events.configured("t1", "a1")
    events.configured("t1", "a1")
    events.attempted("t1", "a1", "sent", 0.01)
    events.configured("t1", "a1")
    events.forget("t1", "a1")


def test_prometheus_exports_a_configured_account_at_zero_until_it_is_forgotten():
    metrics = PrometheusMetrics()
    metrics.configured("t1", "a1")
    sample = metrics.registry.get_sample_value
    labels = {"tenant_id": "t1", "account_id": "a1"}
    counters = ["gmp_sent_total", "gmp_errors_total", "gmp_deferred_total", "gmp_unknown_total",
                "gmp_rate_limited_total"]  # fmt: skip
    assert [sample(name, labels) for name in counters] == [0, 0, 0, 0, 0]
    metrics.attempted("t1", "a1", "sent", None)
    metrics.configured("t1", "a1")  # a replaced account keeps its counts
    assert sample("gmp_sent_total", labels) == 1
    metrics.forget("t1", "a1")
    assert [sample(name, labels) for name in counters] == [None] * 5


@pytest.mark.parametrize("result", ["applied", "unmatched", "ignored", "unparsed"])
def test_every_mailbox_result_and_bounce_kind_is_taken(events, result):
    events.mailbox_read(result)
    for kind in ("bounce", "complaint", "delay"):
        events.bounce_recorded("t1", kind)


def test_prometheus_counts_unparsed_mailbox_messages_and_bounces_per_tenant():
    metrics = PrometheusMetrics()
    sample = metrics.registry.get_sample_value
    assert sample("gmp_bounces_unparsed_total") == 0
    metrics.mailbox_read("unparsed")
    metrics.mailbox_read("applied")
    metrics.bounce_recorded("t1", "bounce")
    assert sample("gmp_bounces_unparsed_total") == 1
    assert sample("gmp_bounce_mailbox_messages_total", {"result": "applied"}) == 1
    assert sample("gmp_bounces_total", {"tenant_id": "t1", "kind": "bounce"}) == 1
    metrics.forget("t1")
    assert sample("gmp_bounces_total", {"tenant_id": "t1", "kind": "bounce"}) is None


def test_signatures_are_counted_per_tenant_and_forgotten_with_it(events):
    events.signed("t1", "signed")
    events.signed("t1", "failed")
    if isinstance(events, PrometheusMetrics):
        sample = events.registry.get_sample_value
        assert sample("gmp_dkim_signatures_total", {"tenant_id": "t1", "outcome": "signed"}) == 1
        events.forget("t1")
        assert sample("gmp_dkim_signatures_total", {"tenant_id": "t1", "outcome": "signed"}) is None


def test_failovers_are_counted_per_home_account_and_forgotten_with_it(events):
    events.failed_over("t1", "primary")
    events.failed_over("t1", "primary")
    if isinstance(events, PrometheusMetrics):
        sample = events.registry.get_sample_value
        labels = {"tenant_id": "t1", "account_id": "primary"}
        assert sample("gmp_failovers_total", labels) == 2
        events.forget("t1", "primary")
        assert sample("gmp_failovers_total", labels) is None
