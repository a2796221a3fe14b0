"""A crash during a stream of SMTP submissions: ``mail-proxy serve`` is killed (SIGKILL)
while four clients submit, and started again on the same database. Every message that
got its ``250`` is delivered; the clients then submit again, under the same
``X-Mail-Proxy-Id``, every message that got no answer; in the end each message reaches
the sink once, or, when the kill cut its SMTP transaction to the sink short, again,
marked ``possible_duplicate`` (the at-least-once rule for an attempt that may have
succeeded); a resubmission never makes a second copy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from tests.conftest import until
from tests.smtp_sink import free_port, running_sink
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

CLIENTS = 4
PER_CLIENT = 150
KILL_AFTER = 120
#: Bounds against a hang, not measurements.
WITHIN_S = 120.0


def raw(n: int) -> bytes:
    return (
        f"X-Mail-Proxy-Id: m{n}\r\nFrom: app@example.com\r\nTo: r{n}@example.com\r\n"
        f"Subject: message {n}\r\n\r\nbody {n}\r\n"
    ).encode()


async def submit(
    port: int, key: str, numbers: list[int], acked: set[int], stop: asyncio.Event,
    repeats: list[str] | None = None,
) -> None:  # fmt: skip
    """Submit ``numbers`` one after the other; a ``250`` adds to ``acked``; the first
    failure (the server went away) ends the client."""
    try:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            start_tls=False,
            timeout=10,
            local_hostname="client.test",
        )
        await client.connect()
        await client.login("acme", key)
        for n in numbers:
            if stop.is_set():
                return
            try:
                await client.sendmail("app@example.com", [f"r{n}@example.com"], raw(n))
            except aiosmtplib.SMTPDataError as refused:
                # Submitted again after the crash, and already taken then: refused as a
                # repeat ("already sent", "in flight"), never queued twice.
                if repeats is None:
                    raise
                repeats.append(refused.message)
                continue
            acked.add(n)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError):
        return


def subjects(sink) -> list[str]:
    return [
        line.split(b": ", 1)[1].decode()
        for received in sink.received
        for line in received.content.split(b"\r\n")
        if line.startswith(b"Subject: ")
    ]


async def test_every_acknowledged_submission_is_delivered_and_only_marked_ones_twice(
    tmp_path: Path,
):
    smtp_port = free_port()
    env = {"GMP_SUBMISSION_PORT": str(smtp_port)}
    with running_sink() as (sink, sink_port):
        first = start_server(tmp_path, env)
        url, process = next(first)
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Token": TOKEN}) as api:
            key = (await api.post("/tenant", json={"id": "acme"})).json()["api_key"]
            account = {"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                       "port": sink_port, "use_tls": False, "is_default": True}  # fmt: skip
            assert (await api.post("/account", json=account)).status_code == 200
        acked: set[int] = set()
        stop = asyncio.Event()
        everything = list(range(CLIENTS * PER_CLIENT))
        clients = [
            asyncio.create_task(submit(smtp_port, key, everything[c::CLIENTS], acked, stop))
            for c in range(CLIENTS)
        ]

        async def enough() -> bool:
            return len(acked) >= KILL_AFTER

        await until(enough, WITHIN_S)
        process.kill()  # SIGKILL while the clients are in the middle of their streams
        process.wait()
        await asyncio.gather(*clients)
        first.close()
        unanswered = [n for n in everything if n not in acked]
        assert unanswered, "every submission was answered before the kill"

        second = start_server(tmp_path, env)
        url, _ = next(second)
        try:
            repeats: list[str] = []
            await submit(smtp_port, key, unanswered, acked, asyncio.Event(), repeats)
            assert all("already sent" in r or "in flight" in r for r in repeats), repeats

            async def all_delivered() -> bool:
                return len(set(subjects(sink))) == len(everything)

            await until(all_delivered, WITHIN_S)
            delivered = subjects(sink)
            twice = sorted({s for s in delivered if delivered.count(s) > 1})
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Token": TOKEN}) as api:
                marked = [
                    (await api.get(f"/messages/m{s.split()[1]}", params={"tenant_id": "acme"}))
                    .json()["message"]["possible_duplicate"]
                    for s in twice
                ]  # fmt: skip
        finally:
            second.close()
    assert sorted(set(delivered)) == sorted(f"message {n}" for n in everything)
    # Sent twice only where the kill cut an SMTP transaction short (the sink may have had
    # it): at-least-once sends it again, marked, and at most the clients' share of them.
    assert marked == [True] * len(twice), twice
    assert len(twice) <= CLIENTS
