"""Bounces end to end with real servers: ``mail-proxy serve`` sends through a private
Postfix to a user that does not exist; Postfix accepts the message, then bounces it with
a genuine DSN to the VERP return path, which it delivers into a private Dovecot; the
service reads the mailbox over IMAP (implicit TLS, the test CA), reports ``bounced`` to
the tenant's application and suppresses the address; the next message to it is never
handed to SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import until
from tests.mailservers import (
    BOUNCE_DOMAIN,
    LOCAL_DOMAIN,
    Dovecot,
    Postfix,
)
from tests.report_receiver import Receiver, running_receiver
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

#: The mailbox is read at least this often (IDLE usually brings the DSN at once).
POLL_S = 5.0
#: A bound for Postfix to accept, bounce and deliver the DSN into the maildir: a guard
#: against a hang, not a measurement.
DSN_WITHIN_S = 60.0
DEAD = f"nosuchuser@{LOCAL_DOMAIN}"
#: A bound for an applied bounce to reach the application (a guard against a hang).
REPORTED_WITHIN_S = 10.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def entries(receiver: Receiver, event: str) -> list[dict]:
    return [e for call in receiver.calls for e in call.entries if e["event"] == event]


async def test_an_unknown_user_behind_postfix_bounces_is_reported_and_suppressed(
    tmp_path: Path, dovecot: Dovecot, postfix: Postfix, receiver: Receiver
):
    user = postfix.mailbox_user
    server = start_server(tmp_path)
    url, _ = next(server)
    try:
        admin = {"X-API-Token": TOKEN}
        async with httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as api:
            created = await api.post(
                "/tenant", json={"id": "acme", "client_base_url": receiver.url}
            )
            assert created.status_code == 200, created.text
            account = {
                "id": "main", "tenant_id": "acme", "host": "127.0.0.1", "port": postfix.port,
                "use_tls": False, "is_default": True, "tls_ca_file": str(dovecot.ca_file),
                "return_path": f"bounces+{{token}}@{BOUNCE_DOMAIN}",
                "bounce_mailbox": {
                    "host": "127.0.0.1", "port": dovecot.imaps_port, "user": user,
                    "password": dovecot.users[user], "tls": "implicit",
                    "processed_folder": "Processed", "poll_s": POLL_S,
                },
            }  # fmt: skip
            stored = await api.post("/account", json=account)
            assert stored.status_code == 200, stored.text
            assert stored.json()["account"]["bounce_mailbox"]["has_password"] is True
            assert "password" not in stored.json()["account"]["bounce_mailbox"]

            first = {"id": "m1", "from": "shop@example.com", "to": [DEAD], "subject": "Welcome"}
            queued = await api.post("/commands/add-messages", params={"tenant_id": "acme"},
                                    json={"messages": [first]})  # fmt: skip
            assert queued.json()["queued"] == 1

            async def sent() -> bool:
                return bool(entries(receiver, "sent"))

            await until(sent, DSN_WITHIN_S)

            # The DSN reaches the maildir; from then, at most two poll intervals.
            async def dsn_arrived() -> bool:
                return bool(dovecot.messages(user)) or bool(entries(receiver, "bounced"))

            await until(dsn_arrived, DSN_WITHIN_S)

            async def applied() -> bool:
                got = await api.get("/messages/m1", params={"tenant_id": "acme"})
                return bool(got.json()["message"]["bounces"])

            # Read and applied within two poll intervals; then reported (the report
            # loop's own retries are bounded elsewhere).
            await until(applied, 2 * POLL_S)

            async def bounced() -> bool:
                return bool(entries(receiver, "bounced"))

            await until(bounced, REPORTED_WITHIN_S)
            (bounce,) = entries(receiver, "bounced")
            assert (bounce["id"], bounce["recipient"], bounce["bounce_type"], bounce["source"]) == (
                "m1", DEAD, "hard", "dsn",
            )  # fmt: skip
            assert bounce["status"] == "5.1.1"

            listed = (await api.get("/suppressions", params={"tenant_id": "acme"})).json()
            assert [(s["address"], s["reason"]) for s in listed["suppressions"]] == [
                (DEAD, "hard_bounce")
            ]
            shown = (await api.get("/messages/m1", params={"tenant_id": "acme"})).json()["message"]
            assert shown["status"] == "sent"
            assert [b["recipient"] for b in shown["bounces"]] == [DEAD]
            listed = (await api.get("/messages", params={"tenant_id": "acme"})).json()
            assert [r["bounces"] for r in listed["messages"]] == [shown["bounces"]]

            async def set_aside() -> bool:
                return not dovecot.messages(user) and bool(dovecot.messages(user, "Processed"))

            await until(set_aside, 30)

            second = {"id": "m2", "from": "shop@example.com", "to": [DEAD], "subject": "Again"}
            await api.post("/commands/add-messages", params={"tenant_id": "acme"},
                           json={"messages": [second]})  # fmt: skip

            async def failed() -> bool:
                return any(e["id"] == "m2" for e in entries(receiver, "error"))

            await until(failed, 30)
            (error,) = [e for e in entries(receiver, "error") if e["id"] == "m2"]
            assert error["error"] == "suppressed"
            record = (await api.get("/messages/m2", params={"tenant_id": "acme"})).json()["message"]
            # Never handed to SMTP: no attempt was started.
            assert "sending" not in [h["event"] for h in record["history"]]
    finally:
        server.close()  # the generator's own cleanup stops the server
