"""Failed authentication is throttled per client address, through the real app (API tokens
and the ``/ui`` sign-in share one count), and the policy itself (domain.throttle) with
``now`` passed in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.config import load_settings
from mailproxy.domain.throttle import FailedAuthentications, ThrottlePolicy
from mailproxy.entrypoints.http import create_app
from mailproxy.service import MailProxy
from tests.conftest import Clock

TOKEN = "throttle-admin-token"
ADMIN = {"X-API-Token": TOKEN}
WRONG = {"Authorization": "Bearer wrong-guess"}


@pytest.fixture
async def app() -> AsyncIterator[tuple[AsyncTestClient, Clock]]:
    clock = Clock()
    store = MemoryStore()
    proxy = MailProxy(
        store=store, transports={}, events=PrometheusMetrics(),
        clock=clock, run_dispatcher=False,
    )  # fmt: skip
    settings = load_settings(
        environ={
            "GMP_API_TOKEN": TOKEN,
            "GMP_SECURITY_AUTH_MAX_FAILURES": "3",
            "GMP_SECURITY_AUTH_FAILURE_WINDOW_S": "60",
        }
    )
    async with proxy, AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as client:
        yield client, clock


async def test_past_the_failures_even_the_right_token_gets_a_429_until_the_window_passes(app):
    client, clock = app
    for _ in range(3):
        assert (await client.get("/status", headers=WRONG)).status_code == 401
        clock.advance(10)
    refused = await client.get("/status", headers=ADMIN)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "30"  # the first failure is 30 s old
    assert refused.json()["ok"] is False
    clock.advance(30)
    assert (await client.get("/status", headers=ADMIN)).status_code == 200
    assert (await client.get("/status", headers=WRONG)).status_code == 401
    assert (await client.get("/status", headers=ADMIN)).status_code == 429  # 3 in 60 s again


async def test_successes_and_missing_tokens_do_not_count(app):
    client, _ = app
    for _ in range(20):
        assert (await client.get("/status", headers=ADMIN)).status_code == 200
        assert (await client.get("/status")).status_code == 401
    for _ in range(2):
        assert (await client.get("/status", headers=WRONG)).status_code == 401
    assert (await client.get("/status", headers=ADMIN)).status_code == 200


async def test_the_ui_sign_in_and_the_api_share_the_count_and_failures_are_a_metric(app):
    client, clock = app
    assert (await client.post("/ui/login", data={"token": "guess-1"})).status_code == 401
    assert (await client.get("/ui", headers={"X-API-Token": "guess-2"},
                            follow_redirects=False)).status_code == 303  # fmt: skip
    assert (await client.get("/status", headers=WRONG)).status_code == 401
    right = await client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert right.status_code == 429
    assert "set-cookie" not in right.headers
    assert int(right.headers["retry-after"]) == 60
    clock.advance(61)
    scraped = (await client.get("/metrics", headers=ADMIN)).text
    assert 'gmp_auth_failures_total{outcome="wrong"} 3.0' in scraped
    assert 'gmp_auth_failures_total{outcome="throttled"} 1.0' in scraped
    assert (await client.post("/ui/login", data={"token": TOKEN},
                              follow_redirects=False)).status_code == 303  # fmt: skip


# --- the policy ----------------------------------------------------------------------------


def test_each_address_has_its_own_count():
    failures = FailedAuthentications(ThrottlePolicy(max_failures=2, window_s=60))
    failures.failed("10.0.0.1", 0)
    failures.failed("10.0.0.1", 1)
    assert failures.retry_after("10.0.0.1", 2) == 58
    assert failures.retry_after("10.0.0.2", 2) is None
    assert failures.retry_after("10.0.0.1", 60) is None


@pytest.mark.parametrize(
    ("failure_times", "now", "expected"),
    [
        ([], 0, None),
        ([0, 1], 2, None),  # under the limit
        ([0, 1, 2], 3, 57),  # at it: wait until the oldest of the last three is 60 s old
        ([0, 1, 2], 59, 1),
        ([0, 1, 2], 60, None),
        ([0, 1, 2], 61, None),
        ([0, 1, 2, 70], 71, None),  # the last three are 1, 2 and 70: 1 is 70 s old
        ([0, 50, 55, 58], 59, 51),  # the last three are 50, 55, 58
    ],
)
def test_retry_after_counts_the_last_failures_in_the_window(failure_times, now, expected):
    failures = FailedAuthentications(ThrottlePolicy(max_failures=3, window_s=60))
    for at in failure_times:
        failures.failed("a", at)
    assert failures.retry_after("a", now) == expected


def test_memory_is_bounded_by_the_cap_on_addresses_oldest_failure_forgotten_first():
    failures = FailedAuthentications(ThrottlePolicy(max_failures=1, window_s=60, max_clients=100))
    for n in range(10_000):
        failures.failed(f"10.{n // 256}.{n % 256}.1", n / 1000)
    assert len(failures) == 100
    assert failures.retry_after("10.39.15.1", 10) is not None  # the last one, n = 9999
    assert failures.retry_after("10.0.0.1", 10) is None  # the first, long forgotten


def test_zero_failures_allowed_means_no_throttling():
    failures = FailedAuthentications(ThrottlePolicy(max_failures=0))
    for n in range(100):
        failures.failed("a", n)
    assert (failures.retry_after("a", 100), len(failures)) == (None, 0)
