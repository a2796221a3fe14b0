"""The SMTP listener in-process, on the service as ``serve`` builds it (SQLite file): the
throttle of failed AUTH per address, and the shutdown that finishes transactions in DATA
and answers 421 to the rest."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.bootstrap import build_proxy
from mailproxy.config import load_settings
from mailproxy.entrypoints.smtp import (
    AUTH_CHECKS_AT_ONCE,
    COMMAND_BUDGETS,
    SubmissionListener,
    submission_listening,
)
from mailproxy.service import MailProxy
from tests.conftest import until

pytestmark = pytest.mark.system

#: A bound against a hang, not a measurement.
WITHIN_S = 20.0


class LineClient:
    """A client that writes SMTP lines and reads replies as they come (including the ones
    a server sends unasked, such as a 421 at shutdown)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> str:
        """One whole reply (its last line), within a bound."""
        async with asyncio.timeout(WITHIN_S):
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    return ""  # the server closed the connection
                if line[3:4] != "-":
                    return line.rstrip("\r\n")

    async def send(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def login(self, user: str, key: str) -> str:
        await self.reply()  # greeting
        await self.send("EHLO client.test")
        token = base64.b64encode(f"\0{user}\0{key}".encode()).decode()
        return await self.send(f"AUTH PLAIN {token}")


@asynccontextmanager
async def serving(
    tmp_path: Path, **settings: str
) -> AsyncIterator[tuple[MailProxy, SubmissionListener, int, str]]:
    """The proxy ``serve`` would build on a SQLite file, a tenant ``acme`` with a capture
    account, and SMTP submission on a free loopback port: (proxy, listener, port, key)."""
    environ = {"GMP_DB_PATH": str(tmp_path / "mail.db"), **settings}
    config = load_settings(environ=environ)
    proxy = build_proxy(config)
    listening_socket = socket.create_server(("127.0.0.1", 0))
    port = listening_socket.getsockname()[1]
    async with proxy:
        created = await proxy.create_tenant({"id": "acme"})
        await proxy.put_account(
            {"id": "out", "tenant_id": "acme", "kind": "capture", "is_default": True}
        )
        async with submission_listening(proxy, config, listening_socket) as listener:
            yield proxy, listener, port, created.api_key


async def connect(port: int) -> LineClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return LineClient(reader, writer)


def metric(proxy: MailProxy, name: str) -> float:
    events = proxy.events
    assert isinstance(events, PrometheusMetrics)
    for line in generate_latest(events.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_address_with_too_many_failed_logins_is_answered_454_unchecked(tmp_path):
    async with serving(
        tmp_path,
        GMP_SECURITY_AUTH_MAX_FAILURES="2",
        GMP_SUBMISSION_AUTH_FAILURE_DELAY_S="0",
    ) as (proxy, _, port, key):
        for _ in range(2):
            client = await connect(port)
            assert (await client.login("acme", "wrong")).startswith("535 ")
            client.writer.close()
        client = await connect(port)
        # Even the right key is not checked now: a guesser learns nothing.
        assert (await client.login("acme", key)).startswith("454 4.7.0")
        client.writer.close()
        failures = 'gmp_submission_auth_failures_total{outcome="%s"}'
        assert metric(proxy, failures % "wrong") == 2
        assert metric(proxy, failures % "throttled") == 1


async def test_shutdown_finishes_the_transaction_in_data_and_refuses_the_others(tmp_path):
    async with serving(tmp_path) as (proxy, listener, port, key):
        in_data = await connect(port)
        assert (await in_data.login("acme", key)).startswith("235 ")
        assert (await in_data.send("MAIL FROM:<app@example.com>")).startswith("250 ")
        assert (await in_data.send("RCPT TO:<jane@example.com>")).startswith("250 ")
        assert (await in_data.send("DATA")).startswith("354 ")
        in_data.writer.write(b"Subject: finished at shutdown\r\n\r\nfirst half\r\n")
        idle = await connect(port)
        assert (await idle.login("acme", key)).startswith("235 ")

        stopping = asyncio.create_task(listener.stop(grace_s=WITHIN_S))
        await asyncio.sleep(0)  # the stop has begun: new transactions are refused
        assert (await idle.send("MAIL FROM:<app@example.com>")).startswith("421 4.3.2")
        with pytest.raises(OSError):
            await connect(port)
        assert not stopping.done()  # waiting for the transaction in DATA

        finished = await in_data.send("second half\r\n.")
        assert finished.startswith("250 2.0.0 queued as ")
        message_id = finished.removeprefix("250 2.0.0 queued as ")
        await stopping
        assert (await in_data.reply()).startswith("421 4.3.2")
        assert await in_data.reply() == ""  # closed
        stored = await proxy.get_message("acme", message_id)
        assert stored.id == message_id
        for client in (in_data, idle):
            client.writer.close()
            await client.writer.wait_closed()


async def test_the_submission_recipient_limit_replaces_the_http_apis(tmp_path):
    async with serving(
        tmp_path, GMP_DELIVERY_MAX_RECIPIENTS="2", GMP_SUBMISSION_MAX_RECIPIENTS="3"
    ) as (proxy, _, port, key):
        client = await connect(port)
        assert (await client.login("acme", key)).startswith("235 ")
        assert (await client.send("MAIL FROM:<app@example.com>")).startswith("250 ")
        for n in range(3):
            assert (await client.send(f"RCPT TO:<r{n}@example.com>")).startswith("250 ")
        assert (await client.send("RCPT TO:<r3@example.com>")).startswith("452 4.5.3")
        assert (await client.send("DATA")).startswith("354 ")
        queued = await client.send("Subject: three\r\n\r\nbody\r\n.")
        assert queued.startswith("250 2.0.0 queued as ")
        stored = await proxy.get_message("acme", queued.removeprefix("250 2.0.0 queued as "))
        assert list(stored.spec.to) == [f"r{n}@example.com" for n in range(3)]
        client.writer.close()
        await client.writer.wait_closed()


async def test_sessions_are_capped_per_address_and_a_closed_one_frees_its_place(tmp_path):
    async with serving(tmp_path, GMP_SUBMISSION_MAX_SESSIONS_PER_ADDRESS="2") as (_, _, port, _):
        first, second = await connect(port), await connect(port)
        for client in (first, second):
            assert (await client.reply()).startswith("220 ")
        third = await connect(port)
        assert (await third.reply()).startswith("421 4.7.0")
        assert await third.reply() == ""  # closed
        first.writer.close()
        await first.writer.wait_closed()

        async def admitted() -> bool:
            again = await connect(port)
            greeting = await again.reply()
            again.writer.close()
            await again.writer.wait_closed()
            return greeting.startswith("220 ")

        await until(admitted, WITHIN_S)
        for client in (second, third):
            client.writer.close()
            await client.writer.wait_closed()


async def test_a_command_repeated_past_its_budget_ends_the_session(tmp_path):
    async with serving(tmp_path) as (_, _, port, _):
        client = await connect(port)
        await client.reply()
        client.writer.write(b"NOOP\r\n" * (COMMAND_BUDGETS["NOOP"] + 1))
        replies = [await client.reply() for _ in range(COMMAND_BUDGETS["NOOP"] + 1)]
        assert all(reply.startswith("250 ") for reply in replies[:-1])
        assert replies[-1].startswith("421 4.7.0 NOOP")
        assert await client.reply() == ""
        client.writer.close()
        await client.writer.wait_closed()


async def test_data_is_read_as_rfc_5321_says_and_bounded(tmp_path):
    async with serving(tmp_path, GMP_SUBMISSION_MAX_MESSAGE_BYTES="1000") as (proxy, _, port, key):
        client = await connect(port)
        assert (await client.login("acme", key)).startswith("235 ")

        async def transaction(content: bytes) -> str:
            assert (await client.send("MAIL FROM:<app@example.com>")).startswith("250 ")
            assert (await client.send("RCPT TO:<jane@example.com>")).startswith("250 ")
            assert (await client.send("DATA")).startswith("354 ")
            client.writer.write(content + b".\r\n")
            return await client.reply()

        # Dot-stuffed lines lose their first dot; the limit counts the message, not
        # the stuffing: 1000 bytes exactly are taken.
        stuffed = b"Subject: s\r\n\r\n" + b"..x\r\n" * 245 + b"1234\r\n"
        assert len(stuffed) - 245 == 1000
        queued = await transaction(stuffed)
        assert queued.startswith("250 2.0.0 queued as ")
        stored = await proxy.get_message("acme", queued.removeprefix("250 2.0.0 queued as "))
        assert stored.spec.raw is not None
        assert stored.spec.raw.endswith(b"\r\n\r\n" + b".x\r\n" * 245 + b"1234\r\n")
        assert (await transaction(stuffed + b"3\r\n")).startswith("552 5.3.4")
        assert (await transaction(b"Subject: s\r\n\r\n" + b"x" * 1200 + b"\r\n")).startswith(
            "500 5.5.6"
        )
        # Bare line ends become CRLF when kept: the limit holds for what is kept.
        bare = b"Subject: s\n\n" + b"x\n" * 490
        assert len(bare) < 1000 < len(bare.replace(b"\n", b"\r\n"))
        assert (await transaction(bare + b"\r\n")).startswith("552 5.3.4")
        # The session goes on after each refusal.
        assert (await client.send("NOOP")).startswith("250 ")
        client.writer.close()
        await client.writer.wait_closed()


async def test_bad_senders_recipients_and_auth_lines_are_refused_plainly(tmp_path):
    async with serving(tmp_path) as (_, _, port, key):
        client = await connect(port)
        assert (await client.login("acme", key)).startswith("235 ")
        assert (await client.send("MAIL FROM:<>")).startswith("501 5.1.7")
        client.writer.write(b"MAIL FROM:<app@example.com> SMTPUTF8\r\n")
        assert (await client.reply()).startswith("250 ")
        client.writer.write(b"RCPT TO:<r\xff\xfe@example.com>\r\n")
        assert (await client.reply()).startswith("501 5.1.3")
        client.writer.close()
        await client.writer.wait_closed()

        other = await connect(port)
        await other.reply()
        await other.send("EHLO client.test")
        assert (await other.send("AUTH LOGIN")).startswith("334 ")
        answer = await other.send("QUFB" * 500)  # past the line limit inside AUTH
        assert answer == "500 5.5.0 Command not understood"
        assert (await other.send("NOOP")).startswith("250 ")
        other.writer.close()
        await other.writer.wait_closed()


async def test_guesses_sent_at_once_are_checked_a_few_at_a_time(tmp_path):
    # Each wrong guess holds its turn for the failure delay; the throttle (here: three
    # failures) is read when a guess's turn comes, so the later ones are refused
    # unchecked.
    async with serving(
        tmp_path,
        GMP_SUBMISSION_AUTH_FAILURE_DELAY_S="0.5",
        GMP_SECURITY_AUTH_MAX_FAILURES=str(AUTH_CHECKS_AT_ONCE),
    ) as (_, _, port, _):
        clients = [await connect(port) for _ in range(AUTH_CHECKS_AT_ONCE + 3)]
        answers = await asyncio.gather(*(c.login("acme", "guess") for c in clients))
        assert sorted(a[:3] for a in answers) == ["454"] * 3 + ["535"] * AUTH_CHECKS_AT_ONCE
        for client in clients:
            client.writer.close()
            await client.writer.wait_closed()


async def test_many_right_logins_at_once_from_one_address_all_succeed(tmp_path):
    async with serving(tmp_path) as (_, _, port, key):
        clients = [await connect(port) for _ in range(AUTH_CHECKS_AT_ONCE * 4)]
        answers = await asyncio.gather(*(c.login("acme", key) for c in clients))
        assert all(a.startswith("235 ") for a in answers)
        for client in clients:
            client.writer.close()
            await client.writer.wait_closed()
