"""Domain rules of delivery-report calls (schedule, backoff, signature) and of egress."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy.domain.egress import address_allowed, check_http_url, parse_networks
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.reporting import (
    SyncState,
    after_call,
    next_call_ts,
    retry_delay,
    signature,
)

NOW = 1_800_000_000.0


@given(st.integers(min_value=1, max_value=100))
def test_report_backoff_doubles_from_one_second_and_is_capped(failures):
    assert retry_delay(failures, 300) == min(300, 2 ** (failures - 1))
    assert retry_delay(failures + 1, 300) >= retry_delay(failures, 300)


def test_when_a_tenant_is_called():
    fresh = SyncState(tenant_id="t")
    assert next_call_ts(fresh, pending=False, sync_interval_s=300) == 0  # first contact
    synced = after_call(
        fresh, acknowledged=True, error=None, next_sync_after=None, now=NOW, retry_max_delay_s=300
    )
    assert next_call_ts(synced, pending=True, sync_interval_s=300) == 0  # news: at once
    assert next_call_ts(synced, pending=False, sync_interval_s=300) == NOW + 300
    quiet = after_call(
        synced, acknowledged=True, error=None, next_sync_after=NOW + 900, now=NOW,
        retry_max_delay_s=300,
    )  # fmt: skip
    assert next_call_ts(quiet, pending=False, sync_interval_s=300) == NOW + 900
    assert next_call_ts(quiet, pending=True, sync_interval_s=300) == 0
    failed = after_call(
        synced, acknowledged=False, error="HTTP 500", next_sync_after=None, now=NOW,
        retry_max_delay_s=300,
    )  # fmt: skip
    assert (failed.failures, failed.last_error, failed.last_sync_ts) == (1, "HTTP 500", NOW)
    assert next_call_ts(failed, pending=True, sync_interval_s=300) == NOW + 1
    forced = SyncState(tenant_id="t", last_sync_ts=NOW, forced=True)
    assert next_call_ts(forced, pending=False, sync_interval_s=300) == 0


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"delivery_report":[]}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", 1700000000, body) == f"v1={expected}"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),  # CGNAT: not private, not global either
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
    ],
)
def test_only_public_addresses_are_reachable_by_default(address, allowed):
    assert address_allowed(address) is allowed


def test_the_operator_may_allow_networks():
    allow = parse_networks("127.0.0.0/8, 10.0.0.0/8")
    assert address_allowed("127.0.0.1", allow)
    assert address_allowed("::ffff:10.9.9.9", allow)
    assert not address_allowed("192.168.1.1", allow)
    with pytest.raises(InvalidInput, match="egress_allow"):
        parse_networks("10.0.0.0/8, nonsense")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://app.example.com", "http or https"),
        ("https://", "no host"),
        ("https://user:pw@app.example.com", "credentials"),
        ("https://app.example.com:99999", "bad port"),
    ],
)
def test_callback_urls_are_checked_when_configured(url, problem):
    with pytest.raises(InvalidInput, match=problem):
        check_http_url("client_base_url", url)
    assert check_http_url("client_base_url", "https://app.example.com/x")
