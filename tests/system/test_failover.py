"""Failover between accounts, end to end: the service (SQLite, the SMTP transport, the
HTTP report sender) with a primary account and a fallback, each on its own aiosmtpd sink
on loopback. A primary whose credentials are refused, or whose own rate windows are full,
hands its messages to the fallback; the reports say which account sent each and that it
failed over; once the primary works again, a probe brings the traffic back. No message
reaches two sinks."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult

from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.service import MailProxy
from tests.conftest import Clock
from tests.report_receiver import Receiver, running_receiver
from tests.smtp_sink import SinkHandler, running_sink
from tests.system.conftest import reporting_service

pytestmark = pytest.mark.system


def refuse_logins(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    return AuthResult(success=False, handled=False)


@pytest.fixture
def receiver():
    with running_receiver() as running:
        yield running


@pytest.fixture
def primary_sink():
    with running_sink(authenticator=refuse_logins, auth_require_tls=False) as running:
        yield running


@pytest.fixture
def backup_sink():
    with running_sink() as running:
        yield running


def account(account_id: str, port: int, **fields: Any) -> dict[str, Any]:
    return {"id": account_id, "tenant_id": "acme", "host": "127.0.0.1", "port": port,
            "use_tls": False, **fields}  # fmt: skip


@pytest.fixture
async def proxy(tmp_path: Path, receiver: Receiver, backup_sink) -> AsyncIterator[MailProxy]:
    metrics, clock = PrometheusMetrics(), Clock()
    async with reporting_service(
        tmp_path, clock, timeout_s=2, run_dispatcher=False, events=metrics
    ) as service:
        await service.put_tenant({"id": "acme", "client_base_url": receiver.url})
        await service.put_account(account("backup", backup_sink[1]))
        service.metrics, service.clock = metrics, clock  # type: ignore[attr-defined]
        yield service


async def send(proxy: MailProxy, *ids: str) -> None:
    messages = [{"id": i, "from": "app@example.com", "to": [f"{i}@example.com"], "subject": i}
                for i in ids]  # fmt: skip
    result = await proxy.submit(messages, tenant_id="acme")
    assert result.queued == len(ids)
    await proxy.run_until_idle()
    await proxy.report_once()


def arrived(sink: tuple[SinkHandler, int]) -> list[str]:
    return sorted(r.rcpt_tos[0].partition("@")[0] for r in sink[0].received)


def sent_entries(receiver: Receiver) -> dict[str, tuple[str, str | None]]:
    """Per message id: the account that sent it and the one it failed over from."""
    return {
        e["id"]: (e["account_id"], e.get("failover_from"))
        for call in receiver.calls
        for e in call.entries
        if e["event"] == "sent"
    }


async def test_refused_credentials_send_through_the_fallback_until_a_probe_succeeds(
    proxy, receiver, primary_sink, backup_sink
):
    await proxy.put_account(
        account("primary", primary_sink[1], user="app", password="wrong", is_default=True,
                fallback_accounts=["backup"])
    )  # fmt: skip
    await send(proxy, "m1", "m2", "m3")
    assert arrived(primary_sink) == []
    assert arrived(backup_sink) == ["m1", "m2", "m3"]
    assert sent_entries(receiver) == dict.fromkeys(("m1", "m2", "m3"), ("backup", "primary"))
    deferred = [e for c in receiver.calls for e in c.entries if e["event"] == "deferred"]
    # Claimed together before the first failure: each found the account broken once.
    assert sorted((e["id"], e["account_id"], e["smtp_code"]) for e in deferred) == [
        (m, "primary", 535) for m in ("m1", "m2", "m3")
    ]
    labels = {"tenant_id": "acme", "account_id": "primary"}
    assert proxy.metrics.registry.get_sample_value("gmp_failovers_total", labels) == 3
    # The credentials fixed and the pause over: the first message is the probe, and
    # once it went through, the primary takes its own again.
    await proxy.put_account(
        account("primary", primary_sink[1], is_default=True, fallback_accounts=["backup"])
    )
    proxy.clock.advance(61)  # type: ignore[attr-defined]
    await send(proxy, "m4")
    await send(proxy, "m5", "m6")
    assert arrived(primary_sink) == ["m4", "m5", "m6"]
    assert arrived(backup_sink) == ["m1", "m2", "m3"]
    entries = sent_entries(receiver)
    assert [entries[m] for m in ("m4", "m5", "m6")] == [("primary", None)] * 3


async def test_full_own_rate_windows_hand_the_rest_to_the_fallback(proxy, receiver, backup_sink):
    with running_sink() as primary_sink:
        await proxy.put_account(
            account("primary", primary_sink[1], is_default=True, limit_per_minute=1,
                    fallback_accounts=["backup"], failover_after_s=10)
        )  # fmt: skip
        await send(proxy, "m1", "m2", "m3")
        assert len(primary_sink[0].received) == 1
    assert len(backup_sink[0].received) == 2
    entries = sent_entries(receiver)
    assert sorted(entries.values()) == [("backup", "primary"), ("backup", "primary"),
                                        ("primary", None)]  # fmt: skip
    message = await proxy.get_message("acme", next(m for m, e in entries.items() if e[1]))
    assert (message.account_id, message.status.value) == ("primary", "sent")


async def test_a_primary_that_refuses_connections_hands_its_messages_over(
    proxy, receiver, backup_sink
):
    with socket.socket() as unused:  # a loopback port with nothing listening
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    await proxy.put_account(account("primary", port, is_default=True, fallback_accounts=["backup"]))
    await send(proxy, "m1", "m2")
    assert arrived(backup_sink) == ["m1", "m2"]
    assert sent_entries(receiver) == dict.fromkeys(("m1", "m2"), ("backup", "primary"))
    deferred = [e for c in receiver.calls for e in c.entries if e["event"] == "deferred"]
    assert {(e["account_id"], e.get("failover_from")) for e in deferred} == {("primary", None)}


async def test_a_fallback_must_be_another_account_of_the_tenant(proxy, backup_sink):
    for fallbacks, expected in (
        (["nosuch"], "no account nosuch in tenant acme"),
        (["primary"], "primary is this account"),
        (["backup", "backup"], "backup named twice"),
    ):
        with pytest.raises(Exception, match=expected):
            await proxy.put_account(account("primary", backup_sink[1], fallback_accounts=fallbacks))
