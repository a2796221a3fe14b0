"""Who the client is, against the real ``mail-proxy serve``: a forwarded address is
believed only from a proxy the operator names, so no client dodges the authentication
throttle, or locks another address out, by setting ``X-Forwarded-For``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system


def wrong_tokens(url: str, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return [
            client.get(
                "/tenants",
                headers={"X-API-Token": "wrong-token-xyz", "X-Forwarded-For": address},
            ).status_code
            for address in forwarded_for
        ]


def test_a_forged_forwarded_address_neither_dodges_nor_aims_the_throttle(tmp_path: Path):
    env = {"GMP_SECURITY_AUTH_MAX_FAILURES": "3"}
    with contextlib.contextmanager(start_server)(tmp_path, env) as (url, _):
        answers = wrong_tokens(url, [f"203.0.113.{n}" for n in range(6)])
        assert answers == [401, 401, 401, 429, 429, 429]  # one address: this connection's
        with httpx.Client(base_url=url, timeout=10) as client:
            admin = client.get("/tenants", headers={"X-API-Token": TOKEN})
        assert admin.status_code == 429  # the same address, whatever the header says


def test_a_named_proxy_s_forwarded_address_is_the_client_s(tmp_path: Path):
    env = {"GMP_SECURITY_AUTH_MAX_FAILURES": "3", "GMP_SERVER_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with contextlib.contextmanager(start_server)(tmp_path, env) as (url, _):
        assert wrong_tokens(url, [f"203.0.113.{n}" for n in range(6)]) == [401] * 6
        assert wrong_tokens(url, ["198.51.100.9"] * 4) == [401, 401, 401, 429]
        with httpx.Client(base_url=url, timeout=10) as client:
            admin = client.get(
                "/tenants", headers={"X-API-Token": TOKEN, "X-Forwarded-For": "192.0.2.1"}
            )
        assert admin.status_code == 200
