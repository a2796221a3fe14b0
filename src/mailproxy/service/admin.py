"""Configuration: tenants, accounts, tenant keys and webhook secrets; suspending and
resuming a tenant's sending; removing its messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from mailproxy.domain.access import (
    ADMIN,
    TENANT_EDITABLE_BY_TENANT,
    Caller,
    TenantKey,
    key_digest,
    tenant_key_refusal,
)
from mailproxy.domain.configuration import parse_account, parse_tenant
from mailproxy.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from mailproxy.domain.model import (
    Account,
    DeleteResult,
    SuspendState,
    Tenant,
)
from mailproxy.domain.reporting import retire_webhook_secret, rotate_webhook_secret
from mailproxy.domain.validation import MAX_TS
from mailproxy.ports.observability import DeliveryEvents
from mailproxy.ports.store import AccessStore, ConfigStore, MessageStore
from mailproxy.ports.transport import Transport
from mailproxy.service.attachments import AttachmentFetcher
from mailproxy.service.config_cache import ConfigCache
from mailproxy.service.options import LimitsOptions, RetentionOptions
from mailproxy.service.send_windows import check_zone


class CreatedTenant(msgspec.Struct, frozen=True):
    """A new tenant with its secrets, which are shown only this once."""

    tenant: Tenant
    api_key: str
    webhook_secret: str


class Admin:
    """Changes to what the service is configured with, validated; each drops what this
    process cached of it, so the change applies here at once."""

    def __init__(
        self,
        *,
        store: MessageStore,
        config: ConfigStore,
        access: AccessStore,
        config_cache: ConfigCache,
        transports: Mapping[str, Transport],
        attachments: AttachmentFetcher,
        events: DeliveryEvents | None,
        limits: LimitsOptions,
        retention: RetentionOptions,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        new_secret: Callable[[], str],
        wake_dispatcher: Callable[[], None],
    ) -> None:
        self._store = store
        self._config = config
        self._access = access
        self._config_cache = config_cache
        self._transports = transports
        self._attachments = attachments
        self._events = events
        self._limits = limits
        self._retention = retention
        self._clock = clock
        self._new_id = new_id
        self._new_secret = new_secret
        self._wake_dispatcher = wake_dispatcher

    # --- tenants ------------------------------------------------------------------------

    async def put_tenant(self, data: Mapping[str, Any] | Tenant) -> Tenant:
        """Create or replace a tenant (validated; raises :class:`InvalidInput`)."""
        tenant = data if isinstance(data, Tenant) else parse_tenant(data)
        check_zone("send_windows", tenant.send_windows)
        await self._config.put_tenant(tenant)
        self._config_cache.forget_tenant(tenant.id)
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant as stored now (:class:`NotFound` when there is none); the read
        refreshes this process's cache of it."""
        tenant = await self._config_cache.fresh_tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        return await self._config.list_tenants()

    async def delete_tenant(self, tenant_id: str) -> None:
        if not await self._config.delete_tenant(tenant_id):
            raise NotFound("tenant", tenant_id)
        self._config_cache.forget_tenant(tenant_id)
        self._attachments.forget_tenant(tenant_id)
        self._config_cache.forget_accounts(tenant_id)
        if self._events is not None:
            self._events.forget(tenant_id)

    async def create_tenant(
        self, data: Mapping[str, Any], *, key_expires_ts: float | None = None
    ) -> CreatedTenant:
        """Create a tenant (:class:`Conflict` if the id exists) with a new API key and a
        webhook secret (the given one, or a generated one)."""
        tenant = parse_tenant(data)
        check_zone("send_windows", tenant.send_windows)
        if await self._config.get_tenant(tenant.id) is not None:
            raise Conflict(f"tenant {tenant.id} already exists")
        if tenant.webhook_secret is None:
            tenant = msgspec.structs.replace(tenant, webhook_secret=self._new_secret())
        await self._config.put_tenant(tenant)
        self._config_cache.forget_tenant(tenant.id)
        api_key = await self.rotate_tenant_key(tenant.id, expires_ts=key_expires_ts)
        assert tenant.webhook_secret is not None
        return CreatedTenant(tenant, api_key, tenant.webhook_secret)

    async def update_tenant(
        self, tenant_id: str, changes: Mapping[str, Any], caller: Caller
    ) -> Tenant:
        """Change some fields of a tenant; the others stay. A tenant key may change only
        its tenant's ``name`` (:class:`Forbidden` otherwise, and nothing is applied)."""
        if not isinstance(changes, Mapping):
            raise InvalidInput("body", "invalid body: expected an object")
        if not caller.is_admin and set(changes) - TENANT_EDITABLE_BY_TENANT:
            fields = ", ".join(sorted(set(changes) - TENANT_EDITABLE_BY_TENANT))
            raise Forbidden(f"only the admin may change: {fields}")
        if changes.get("id", tenant_id) != tenant_id:
            raise InvalidInput("id", "invalid id: the id of a tenant cannot change")
        current = await self.get_tenant(tenant_id)
        merged = msgspec.to_builtins(current) | dict(changes)
        if "webhook_secret" in changes:
            # A secret set by hand replaces the rotation too: a leaked one is revoked.
            merged["webhook_secret_previous"] = None
        tenant = parse_tenant(merged)
        check_zone("send_windows", tenant.send_windows)
        await self._config.put_tenant(tenant)
        self._config_cache.forget_tenant(tenant_id)
        return tenant

    # --- accounts -----------------------------------------------------------------------

    async def put_account(
        self, data: Mapping[str, Any] | Account, *, caller: Caller = ADMIN
    ) -> Account:
        """Create or replace an account of an existing tenant. Nothing connects yet: a
        wrong host or password shows up on the first attempt, as an account problem
        (a host the egress rule forbids, given as an address, is refused at once). What a
        tenant's key may not set is :func:`~mailproxy.domain.access.tenant_key_refusal`;
        it may create at most ``tenant_max_accounts`` accounts."""
        account = data if isinstance(data, Account) else parse_account(data)
        check_zone("send_windows", account.send_windows)
        limits = self._limits
        refusal = (
            None if caller.is_admin else tenant_key_refusal(account, limits.tenant_max_connections)
        )
        if refusal is not None:
            raise Forbidden(refusal)
        await self.get_tenant(account.tenant_id)
        if not caller.is_admin:
            existing = {a.id for a in await self._config.list_accounts(account.tenant_id)}
            if account.id not in existing and len(existing) >= limits.tenant_max_accounts:
                raise Forbidden(
                    f"more than {limits.tenant_max_accounts} accounts need the admin token "
                    "(delivery.tenant_max_accounts)"
                )
        transport = self._transports.get(account.kind)
        if transport is None:
            raise InvalidInput(
                "kind",
                f"invalid kind: no transport for {account.kind!r} on this instance "
                f"(expected one of: {', '.join(sorted(self._transports))})",
            )
        transport.check(account)
        if account.fallback_accounts:
            existing = {a.id for a in await self._config.list_accounts(account.tenant_id)}
            missing = [f for f in account.fallback_accounts if f not in existing]
            if missing:
                raise InvalidInput(
                    "fallback_accounts",
                    f"invalid fallback_accounts: no account {', '.join(missing)} in tenant "
                    f"{account.tenant_id}",
                )
        await self._config.put_account(account)
        self._config_cache.forget_accounts(account.tenant_id)
        if self._events is not None:
            self._events.configured(account.tenant_id, account.id)
        self._wake_dispatcher()
        return account

    async def announce_accounts(self) -> None:
        """Tell the events of every account configured (when the service starts)."""
        if self._events is None:
            return
        for tenant in await self._config.list_tenants():
            for account in await self._config.list_accounts(tenant.id):
                self._events.configured(tenant.id, account.id)

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        await self.get_tenant(tenant_id)
        return await self._config.list_accounts(tenant_id)

    async def delete_account(self, tenant_id: str, account_id: str, *, force: bool = False) -> None:
        """Remove an account. Raises :class:`Conflict` while it has queued messages, unless
        ``force``: then they fail with ``account deleted`` (and are reported)."""
        deleted = await self._config.delete_account(
            tenant_id, account_id, force=force, now=self._clock(), deletion_id=self._new_id()
        )
        if not deleted:
            raise NotFound("account", f"{tenant_id}/{account_id}")
        self._config_cache.forget_accounts(tenant_id)
        if self._events is not None:
            self._events.forget(tenant_id, account_id)

    # --- keys and secrets ---------------------------------------------------------------

    async def rotate_tenant_key(self, tenant_id: str, *, expires_ts: float | None = None) -> str:
        """Give the tenant a new API key (returned once; only its digest is stored); the
        previous key stops working at once."""
        await self.get_tenant(tenant_id)
        if expires_ts is not None and expires_ts <= self._clock():
            raise InvalidInput("expires_at", "invalid expires_at: must be in the future")
        if expires_ts is not None and expires_ts > MAX_TS:
            raise InvalidInput("expires_at", "invalid expires_at: after 9999-12-31")
        key = self._new_secret()
        await self._access.put_tenant_key(TenantKey(tenant_id, key_digest(key), expires_ts))
        return key

    async def revoke_tenant_key(self, tenant_id: str) -> None:
        await self.get_tenant(tenant_id)
        await self._access.delete_tenant_key(tenant_id)

    async def tenant_of_key(self, api_key: str) -> str | None:
        """The tenant whose unexpired API key this is, or None."""
        found = await self._access.find_tenant_key(key_digest(api_key))
        if found is None or not found.valid_at(self._clock()):
            return None
        return found.tenant_id

    async def rotate_webhook_secret(self, tenant_id: str) -> str:
        """Give the tenant a new webhook secret (returned once); the one it replaces keeps
        signing report calls beside it until :meth:`retire_webhook_secret`."""
        tenant = await self.get_tenant(tenant_id)
        secret = self._new_secret()
        await self._config.put_tenant(rotate_webhook_secret(tenant, secret))
        self._config_cache.forget_tenant(tenant_id)
        return secret

    async def retire_webhook_secret(self, tenant_id: str) -> None:
        """End a webhook secret rotation: only the current secret signs."""
        tenant = await self.get_tenant(tenant_id)
        await self._config.put_tenant(retire_webhook_secret(tenant))
        self._config_cache.forget_tenant(tenant_id)

    # --- sending and keeping a tenant's messages ------------------------------------------

    async def suspend(self, tenant_id: str, batch_code: str | None = None) -> SuspendState:
        """Stop sending the tenant's messages (or one batch's); they stay queued."""
        await self.get_tenant(tenant_id)
        return await self._store.suspend(tenant_id, batch_code, self._clock())

    async def activate(self, tenant_id: str, batch_code: str | None = None) -> SuspendState:
        """Resume a suspended tenant or batch and wake the dispatcher at once. Raises
        :class:`~mailproxy.domain.errors.Conflict` for a batch of a suspended tenant."""
        await self.get_tenant(tenant_id)
        state = await self._store.activate(tenant_id, batch_code, self._clock())
        self._wake_dispatcher()
        return state

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        return await self._store.delete_messages(tenant_id, ids)

    async def cleanup(self, tenant_id: str, older_than_s: float | None = None) -> int:
        """Remove the tenant's final messages whose reports are acknowledged and that became
        final more than ``older_than_s`` ago (default: the retention); return how many."""
        age = self._retention.retention_s if older_than_s is None else older_than_s
        if age < 0:
            raise InvalidInput("older_than_seconds", "invalid older_than_seconds: not negative")
        return await self._store.purge_final(tenant_id, self._clock() - age)
