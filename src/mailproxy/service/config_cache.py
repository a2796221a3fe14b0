"""What this process remembers of the tenants and accounts it reads on the hot paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from mailproxy.domain.model import Account, Tenant
from mailproxy.ports.store import ConfigStore

T = TypeVar("T")

#: How long a looked-up tenant or account is trusted before it is read again, so that a
#: change made by another process sharing the database is seen within this delay.
CONFIG_CACHE_S = 5.0


class ConfigCache:
    """Tenants and accounts read through ``config``, each trusted for ``CONFIG_CACHE_S``.
    Submission, dispatch and reports read them per message; the admin paths drop what
    they change, so this process sees its own changes at once.

    A read that was under way while this process changed something is returned to its
    caller but not kept: it may hold what the change replaced, and keeping it would undo
    the change here for ``CONFIG_CACHE_S``."""

    def __init__(self, config: ConfigStore, monotonic: Callable[[], float]) -> None:
        self._config = config
        self._monotonic = monotonic
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._tenant_list: tuple[float, list[Tenant]] | None = None
        self._accounts: dict[str, tuple[float, list[Account]]] = {}
        #: Counts the changes this process made, so that a read can tell whether one
        #: happened while it waited for the store.
        self._changes = 0

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop what this process cached of a tenant it has just changed."""
        self._changes += 1
        self._tenants.pop(tenant_id, None)
        self._tenant_list = None

    def forget_accounts(self, tenant_id: str) -> None:
        self._changes += 1
        self._accounts.pop(tenant_id, None)

    async def tenants(self) -> list[Tenant]:
        """Every tenant, as the report loop reads them at each wake."""
        hit = self._tenant_list
        if hit is not None and self._monotonic() - hit[0] < CONFIG_CACHE_S:
            return hit[1]
        changes = self._changes
        tenants = await self._config.list_tenants()
        if changes == self._changes:
            self._tenant_list = (self._monotonic(), tenants)
        return tenants

    async def tenant(self, tenant_id: str) -> Tenant | None:
        return await self._cached(self._tenants, tenant_id, self._config.get_tenant)

    async def fresh_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant as stored now, read whatever the cache holds, and kept for the
        reads that follow (an add-messages request checks its tenant, then submits)."""
        self._tenants.pop(tenant_id, None)
        return await self.tenant(tenant_id)

    async def accounts(self, tenant_id: str) -> list[Account]:
        return await self._cached(self._accounts, tenant_id, self._config.list_accounts)

    async def account(self, tenant_id: str, account_id: str | None) -> Account | None:
        """The named account, or without a name the tenant's default one (its only one
        when it has a single account)."""
        accounts = await self.accounts(tenant_id)
        if account_id is not None:
            return next((a for a in accounts if a.id == account_id), None)
        defaults = [a for a in accounts if a.is_default]
        if defaults:
            return defaults[0]
        return accounts[0] if len(accounts) == 1 else None

    async def _cached(
        self, cache: dict[str, tuple[float, T]], key: str, load: Callable[[str], Awaitable[T]]
    ) -> T:
        hit = cache.get(key)
        if hit is not None and self._monotonic() - hit[0] < CONFIG_CACHE_S:
            return hit[1]
        changes = self._changes
        value = await load(key)
        if changes == self._changes:
            cache[key] = (self._monotonic(), value)
        return value
