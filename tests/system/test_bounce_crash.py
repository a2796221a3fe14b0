"""A crash while a mailbox of 500 bounces is being worked through: ``mail-proxy serve`` is
killed (SIGKILL) mid-way and started again on the same database; every bounce is applied
exactly once (one record per message, one ``bounced`` entry per message, every address
suppressed) and the mailbox ends empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import bounce_mail
from tests.conftest import until
from tests.mailservers import Dovecot, running_dovecot
from tests.report_receiver import Receiver, running_receiver
from tests.smtp_sink import running_sink
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

BOUNCES = 500
#: Bounds against a hang, not measurements.
WITHIN_S = 120.0


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot({"bounces": "bounce-password"}) as server:
        yield server


async def suppressed(api: httpx.AsyncClient) -> int:
    listed = await api.get("/suppressions", params={"tenant_id": "acme", "limit": 1000})
    return len(listed.json()["suppressions"])


async def test_a_killed_service_applies_each_bounce_exactly_once(tmp_path: Path, dovecot: Dovecot):
    admin = {"X-API-Token": TOKEN}
    with running_sink() as (sink, port), running_receiver() as receiver:
        first = start_server(tmp_path)
        url, process = next(first)
        async with httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as api:
            await api.post("/tenant", json={"id": "acme", "client_base_url": receiver.url})
            account = {
                "id": "main", "tenant_id": "acme", "host": "127.0.0.1", "port": port,
                "use_tls": False, "is_default": True,
                "return_path": f"bounces+{{token}}@{bounce_mail.BOUNCE_DOMAIN}",
            }  # fmt: skip
            assert (await api.post("/account", json=account)).status_code == 200
            messages = [
                {"id": f"m{n}", "from": "shop@example.com", "to": [f"gone{n}@example.com"],
                 "subject": "s"}
                for n in range(BOUNCES)
            ]  # fmt: skip
            for start in range(0, BOUNCES, 100):
                batch = {"messages": messages[start : start + 100]}
                await api.post("/commands/add-messages", params={"tenant_id": "acme"}, json=batch)

            async def all_sent() -> bool:
                return len(sink.received) >= BOUNCES

            await until(all_sent, WITHIN_S)
            for received in sink.received:
                token = received.mail_from.split("+", 1)[1].split("@")[0]
                dovecot.deliver("bounces", bounce_mail.dsn(token, received.rcpt_tos[0]))
            mailbox = {
                "host": "127.0.0.1", "port": dovecot.imaps_port, "user": "bounces",
                "password": "bounce-password", "processed_folder": "Processed", "poll_s": 5,
            }  # fmt: skip
            with_mailbox = account | {
                "bounce_mailbox": mailbox,
                "tls_ca_file": str(dovecot.ca_file),
            }
            assert (await api.post("/account", json=with_mailbox)).status_code == 200

            async def some_applied() -> bool:
                return await suppressed(api) >= 50

            await until(some_applied, WITHIN_S)
        process.kill()  # SIGKILL, in the middle of the mailbox
        process.wait()
        first.close()
        assert dovecot.messages("bounces"), "the whole mailbox went before the kill"

        second = start_server(tmp_path)
        url, _ = next(second)
        try:
            async with httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as api:

                async def everything_applied() -> bool:
                    return await suppressed(api) == BOUNCES and not dovecot.messages("bounces")

                await until(everything_applied, WITHIN_S)
                for n in range(BOUNCES):
                    shown = await api.get(f"/messages/m{n}", params={"tenant_id": "acme"})
                    assert len(shown.json()["message"]["bounces"]) == 1, n

                async def all_reported() -> bool:
                    return len(bounced_ids(receiver)) == BOUNCES

                await until(all_reported, WITHIN_S)
        finally:
            second.close()
    assert len(dovecot.messages("bounces", "Processed")) == BOUNCES
    # A re-sent entry keeps its event_id: one event per message, however often delivered.
    events = {e["event_id"]: e["id"] for e in bounced(receiver)}
    assert sorted(events.values()) == sorted(f"m{n}" for n in range(BOUNCES))


def bounced(receiver: Receiver) -> list[dict]:
    return [e for call in receiver.calls for e in call.entries if e["event"] == "bounced"]


def bounced_ids(receiver: Receiver) -> set[str]:
    return {e["id"] for e in bounced(receiver)}
