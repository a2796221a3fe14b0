"""The resolver port: the addresses of a host name, for outbound connections that the
egress rule checks before they are made.

Contract suite: ``tests/contract/test_resolver.py`` (every resolver, with the system's
lookup stubbed in-process: no test resolves through the system's DNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Resolver(Protocol):
    async def __call__(self, host: str, port: int, scope: str | None = None) -> Sequence[str]:
        """The addresses of ``host`` (an address literal is its own answer, without a
        lookup), for a lookup made on behalf of ``scope`` (a tenant; None: the
        service's own). Raises ``OSError`` when the name does not resolve. Lookups of
        one scope that never end hold at most that scope's share of the resolver: the
        others' lookups still run."""
        ...
