"""The SMTP fault matrix, end to end: the service (SQLite, the SMTP transport, the HTTP
report sender) sends one message to a real aiosmtpd sink misbehaving in one way, and the
message's state, its attempts, what reached the sink and the report the receiver got are
exactly what the delivery rules say (docs/index.md, "What it does"; outcomes by phase in
``mailproxy.domain.outcome``). Then the fault goes away, time passes, and whatever was
retryable is delivered (unknown attempts flagged ``possible_duplicate``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult

from tests.conftest import Clock
from tests.report_receiver import Receiver, running_receiver
from tests.smtp_sink import SinkHandler, running_sink
from tests.system.conftest import reporting_service as make_proxy
from tests.tcp_peers import line_server

pytestmark = pytest.mark.system

RECIPIENTS = ["a@example.com", "b@example.com", "c@example.com"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour and what must follow from it on the first attempt."""

    arrange: Callable[[SinkHandler], None]
    status: str
    event: str
    smtp_code: int | None = None
    attempts: int = 1
    at_sink: int = 0
    account: dict[str, Any] = field(default_factory=dict)
    #: After the fault is cleared and time has passed: sent on the next attempt.
    recovers: bool = True
    #: The recipients a "no such user" refusal proves dead (each a ``bounced`` entry).
    bounced: tuple[str, ...] = ()


def reply(command: str, line: str) -> Callable[[SinkHandler], None]:
    return lambda handler: handler.replies.__setitem__(command, line)


def after_dot(behaviour: str) -> Callable[[SinkHandler], None]:
    def arrange(handler: SinkHandler) -> None:
        handler.after_dot = behaviour
        handler.stall_s = 1.5  # past the transport's 0.5 s reply timeout below

    return arrange


def nothing(_: SinkHandler) -> None:
    return None


MATRIX = {
    "4xx at MAIL": Fault(reply("MAIL", "451 4.3.0 try later"), "deferred", "deferred", 451),
    "5xx at MAIL": Fault(
        reply("MAIL", "553 5.1.8 bad sender"), "error", "error", 553, recovers=False
    ),
    "4xx at RCPT": Fault(reply("RCPT", "450 4.2.1 mailbox busy"), "deferred", "deferred", 450),
    "5xx at RCPT": Fault(
        reply("RCPT", "550 5.1.1 no such user"),
        "error",
        "error",
        550,
        recovers=False,
        bounced=tuple(RECIPIENTS),
    ),
    "4xx at DATA": Fault(reply("DATA", "451 4.3.0 local error"), "deferred", "deferred", 451),
    "5xx at DATA": Fault(
        reply("DATA", "554 5.7.1 rejected as spam"), "error", "error", 554, recovers=False
    ),
    "one recipient refused": Fault(
        reply("RCPT:b@example.com", "550 5.1.1 no such user"),
        "sent",
        "sent",
        250,
        at_sink=1,
        recovers=False,
        bounced=("b@example.com",),
    ),
    "disconnect before the final dot": Fault(
        lambda handler: setattr(handler, "drop_at", "RCPT"), "deferred", "deferred"
    ),
    "disconnect after the final dot": Fault(after_dot("drop"), "deferred", "unknown", at_sink=1),
    "stall after the final dot past the timeout": Fault(
        after_dot("stall"), "deferred", "unknown", at_sink=1
    ),
    "TLS required, not offered": Fault(
        nothing, "deferred", "deferred", attempts=0, account={"use_tls": True}
    ),
    "bad credentials": Fault(
        nothing,
        "deferred",
        "deferred",
        535,
        attempts=0,
        account={"user": "app", "password": "wrong"},
    ),
}


def refuse_logins(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    return AuthResult(success=False, handled=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def first_and_final(
    tmp_path: Path,
    port: int,
    receiver: Receiver,
    account: dict[str, Any],
    clear: Callable[[], None],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Send one message to three recipients; return its record and report entries after
    the first attempt, and again after the fault is cleared and an hour has passed."""
    clock = Clock()
    async with make_proxy(tmp_path, clock, timeout_s=2, run_dispatcher=False) as proxy:
        await proxy.put_tenant({"id": "acme", "client_base_url": receiver.url})
        await proxy.put_account({"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                                 "port": port, "use_tls": False, "is_default": True,
                                 **account})  # fmt: skip
        message = {"id": "m1", "from": "app@example.com", "to": RECIPIENTS, "subject": "s"}
        await proxy.submit([message], tenant_id="acme")
        await proxy.run_until_idle()
        await proxy.report_once()
        first = msgspec_record(await proxy.get_message("acme", "m1"))
        first_entries = [e for call in receiver.calls for e in call.entries]
        clear()
        if account.get("use_tls") or account.get("user"):
            await proxy.put_account({"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                                     "port": port, "use_tls": False, "is_default": True})  # fmt: skip
        clock.advance(3600)
        await proxy.run_until_idle()
        await proxy.report_once()
        final = msgspec_record(await proxy.get_message("acme", "m1"))
        entries = [e for call in receiver.calls for e in call.entries]
    return first, first_entries, final, entries


def msgspec_record(message: Any) -> dict[str, Any]:
    return {
        "status": message.status.value,
        "attempts": message.attempts,
        "possible_duplicate": message.possible_duplicate,
    }


@pytest.mark.parametrize("name", list(MATRIX))
async def test_each_smtp_fault_ends_as_the_rules_say(tmp_path, receiver, name):
    fault = MATRIX[name]
    parameters = {}
    if "user" in fault.account:
        parameters = {"authenticator": refuse_logins, "auth_require_tls": False}
    with running_sink(enable_SMTPUTF8=False, **parameters) as (handler, port):
        fault.arrange(handler)

        def clear() -> None:
            handler.replies.clear()
            handler.after_dot = None
            handler.drop_at = None

        first, first_entries, final, entries = await first_and_final(
            tmp_path, port, receiver, fault.account, clear
        )
        copies = len(handler.received)

    assert (first["status"], first["attempts"]) == (fault.status, fault.attempts)
    # A "5.1.1 no such user" refusal is also a hard bounce of that recipient.
    bounced = [e["recipient"] for e in first_entries if e["event"] == "bounced"]
    assert bounced == list(fault.bounced)
    first_entries = [e for e in first_entries if e["event"] != "bounced"]
    entries = [e for e in entries if e["event"] != "bounced"]
    (entry,) = first_entries
    assert entry["event"] == fault.event
    assert entry.get("smtp_code") == fault.smtp_code
    if name == "one recipient refused":
        assert [r["address"] for r in entry["refused_recipients"]] == ["b@example.com"]
        assert handler.received[0].rcpt_tos == ["a@example.com", "c@example.com"]
    if not fault.recovers:
        assert final == first
        assert len(entries) == 1  # final: no further attempt, no further report
        assert copies == fault.at_sink
        return
    unknown = fault.event == "unknown"
    assert final == {"status": "sent", "attempts": fault.attempts + 1,
                     "possible_duplicate": unknown}  # fmt: skip
    assert entries[-1]["event"] == "sent"
    assert entries[-1].get("possible_duplicate", False) is unknown
    assert copies == fault.at_sink + 1  # an unknown attempt's copy, and the retry's


async def test_a_421_greeting_pauses_the_account_and_keeps_the_message(tmp_path, receiver):
    with refusing_server("421 4.3.2 too busy, try later\r\n") as port:
        first, first_entries, _, _ = await first_and_final(
            tmp_path, port, receiver, {}, lambda: None
        )
    assert (first["status"], first["attempts"]) == ("deferred", 1)
    (entry,) = first_entries
    assert (entry["event"], entry["smtp_code"]) == ("deferred", 421)


def refusing_server(greeting: str) -> contextlib.AbstractContextManager[int]:
    """A listener on 127.0.0.1 that greets every connection with ``greeting`` and hangs
    up, as a server over its connection limit does."""
    return line_server([greeting.encode()])
