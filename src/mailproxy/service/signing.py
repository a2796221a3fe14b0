"""A tenant's DKIM keys as callers manage them: add (made here or imported), list,
remove; the DNS record each needs. The keys live with the tenant (``Tenant.dkim_keys``),
so the dispatcher finds them in its cached copy of the tenant, with no read per message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from mailproxy.domain.dkim import (
    DkimKey,
    DnsRecord,
    check_algorithm,
    check_key_name,
    dns_record,
    with_key_added,
    without_key,
)
from mailproxy.domain.errors import InvalidInput, NotFound
from mailproxy.domain.model import Tenant
from mailproxy.ports.signing import MessageSigner
from mailproxy.ports.store import ConfigStore
from mailproxy.service.config_cache import ConfigCache

#: Fields a new key's body may have.
KEY_FIELDS = frozenset({"domain", "selector", "algorithm", "private_key"})
NO_SIGNER = "DKIM signing needs the dkim extra: pip install 'mailproxy[dkim]'"
#: A PEM of the largest key taken (RSA 4096) is about 3,300 characters.
MAX_PEM_CHARS = 16_384


class DkimKeys:
    def __init__(
        self,
        *,
        config: ConfigStore,
        config_cache: ConfigCache,
        signer: MessageSigner | None,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._config_cache = config_cache
        self._signer = signer
        self._clock = clock

    async def add(self, tenant_id: str, data: Mapping[str, Any]) -> tuple[DkimKey, DnsRecord]:
        """Add a key (``domain``, ``selector``, ``algorithm`` rsa-sha256 by default, and a
        PEM ``private_key``, made here when absent): from now on it signs its domain's
        mail, the domain's earlier keys stay published but no longer sign. Returns it
        with the DNS record to publish. :class:`InvalidInput` names the bad field,
        :class:`Conflict` a selector already used for the domain."""
        if not isinstance(data, Mapping):
            raise InvalidInput("body", "invalid body: expected an object")
        unknown = set(data) - KEY_FIELDS
        if unknown:
            raise InvalidInput(sorted(unknown)[0], f"unknown field: {', '.join(sorted(unknown))}")
        domain, selector = check_key_name(data.get("domain"), data.get("selector"))
        algorithm = check_algorithm(data.get("algorithm", "rsa-sha256"))
        if self._signer is None:
            raise InvalidInput("algorithm", NO_SIGNER)
        tenant = await self._tenant(tenant_id)
        given = data.get("private_key")
        if given is not None and (not isinstance(given, str) or len(given) > MAX_PEM_CHARS):
            raise InvalidInput("private_key", "invalid private_key: a PEM text")
        # Making an RSA key takes a quarter of a second, checking one a tenth: not on the
        # event loop, which serves everybody else meanwhile.
        private_pem, public_key = await asyncio.to_thread(self._signer.key_pair, given, algorithm)
        key = DkimKey(
            domain=domain, selector=selector, algorithm=algorithm, private_key=private_pem,
            public_key=public_key, created_ts=self._clock(),
        )  # fmt: skip
        keys = with_key_added(tenant.dkim_keys, key)
        await self._save(msgspec.structs.replace(tenant, dkim_keys=keys))
        return keys[-1], dns_record(key)

    async def list(self, tenant_id: str) -> list[DkimKey]:
        """The tenant's keys, oldest first."""
        return list((await self._tenant(tenant_id)).dkim_keys)

    async def remove(self, tenant_id: str, domain: str, selector: str) -> None:
        """Remove a key (:class:`NotFound` when the tenant has none by that name)."""
        tenant = await self._tenant(tenant_id)
        keys = without_key(tenant.dkim_keys, domain, selector)
        await self._save(msgspec.structs.replace(tenant, dkim_keys=keys))

    async def _tenant(self, tenant_id: str) -> Tenant:
        tenant = await self._config_cache.fresh_tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant

    async def _save(self, tenant: Tenant) -> None:
        await self._config.put_tenant(tenant)
        self._config_cache.forget_tenant(tenant.id)
