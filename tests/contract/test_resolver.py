"""Contract of the Resolver port, on every resolver, with the system's lookup stubbed
in-process (no test resolves through the system's DNS): literals answer themselves,
names their addresses, unknown names an OSError, and a scope whose lookups never end
holds only its share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mailproxy.adapters.resolver import ThreadedResolver

NAMES = {"relay.acme.example": ["192.0.2.10", "2001:db8::10"]}


@pytest.fixture
def system_lookup(monkeypatch) -> Iterator[list[str]]:
    asked: list[str] = []
    never = threading.Event()

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host.endswith(".stuck.test"):
            never.wait(5)
        if host in NAMES:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in NAMES[host]
            ]  # fmt: skip
        raise socket.gaierror(socket.EAI_NONAME, "name not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    never.set()


@pytest.fixture(params=["threaded"])
def resolver(request, system_lookup):
    return ThreadedResolver(threads=4, share=1)


async def test_a_literal_is_its_own_answer_without_a_lookup(resolver, system_lookup):
    assert list(await resolver("192.0.2.7", 25)) == ["192.0.2.7"]
    assert list(await resolver("[2001:db8::7]", 25)) == ["2001:db8::7"]
    assert system_lookup == []


async def test_a_name_gives_its_addresses_in_order(resolver):
    assert list(await resolver("relay.acme.example", 25, "t1")) == NAMES["relay.acme.example"]


async def test_an_unknown_name_is_an_os_error(resolver):
    with pytest.raises(OSError):
        await resolver("nowhere.test", 25, "t1")


async def test_a_scope_whose_lookups_never_end_holds_only_its_share(resolver):
    for n in range(3):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await resolver(f"mx{n}.stuck.test", 25, "evil")
    async with asyncio.timeout(2):  # a bound for a broken build, not a measurement
        assert list(await resolver("relay.acme.example", 25, "good"))
