"""Secrets at rest: Fernet encryption of the secret fields a store keeps, as decorators of
the ConfigStore and AccessStore ports.

What is sealed: an account's SMTP ``password`` and its bounce mailbox's ``password``; a
tenant's ``client_auth`` token and password, ``webhook_secret`` and
``webhook_secret_previous``, and the private keys of its DKIM keys; the answer bodies of
idempotency records (``POST /tenant`` answers hold a new API key and webhook secret).
A sealed text reads ``fernet:<token>`` (a body ``fernet:`` + token bytes), so a value
written before a key was configured is recognised as plaintext and still works; it is
sealed when written again, or by ``mail-proxy NAME rotate-key``.

Keys: :class:`FernetCipher` takes one or more Fernet keys (``security.encryption_key``,
comma-separated); the first encrypts, every one decrypts (``MultiFernet``). Without a key
nothing is sealed and a sealed value cannot be read: :meth:`SealedConfigStore.check`
says so at start-up, naming the setting, instead of failing at each use.

The decorators delegate everything else to the store they wrap, ``open`` and ``close``
included (both idempotent there), so a MailProxy given the store and its decorators
opens the database once and closes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailproxy.domain.access import IdempotentStart, TenantKey
from mailproxy.domain.errors import InvalidInput, StorageError
from mailproxy.domain.model import Account, Tenant
from mailproxy.ports.store import AccessStore, ConfigStore

#: Marks a sealed value; anything else is plaintext written without a key.
SEALED_PREFIX = "fernet:"
_SEALED_BYTES = SEALED_PREFIX.encode()
#: Marks a plaintext written without a key that would otherwise look sealed (a password a
#: client chose to start with ``fernet:``): it is stored escaped, never taken for a token.
ESCAPED_PREFIX = "plain:"
SETTING = "security.encryption_key"


class _OpenableConfigStore(ConfigStore, Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


class _OpenableAccessStore(AccessStore, Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


class LockedSecret(StorageError):
    """A stored secret cannot be decrypted: no key configured, or none of the keys fits."""


class FernetCipher:
    """Seal and open secret texts with Fernet keys; the first key seals, all open.

    ``keys`` are url-safe base64 Fernet keys; a malformed one is :class:`InvalidInput`
    naming ``security.encryption_key`` (and its position, never its value). No keys:
    :meth:`seal` returns the text as it is and :meth:`open` refuses sealed values.
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        fernets = []
        for n, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                where = f"key {n} of {len(keys)}" if len(keys) > 1 else "the key"
                raise InvalidInput(
                    SETTING,
                    f"invalid setting {SETTING}: {where} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)",
                ) from None
        self._fernet = MultiFernet(fernets) if fernets else None

    @property
    def enabled(self) -> bool:
        """True when a key is configured (new secrets are sealed)."""
        return self._fernet is not None

    @staticmethod
    def is_sealed(text: str | bytes) -> bool:
        if isinstance(text, bytes):
            return text.startswith(_SEALED_BYTES)
        return text.startswith(SEALED_PREFIX)

    def seal(self, text: str) -> str:
        """``fernet:<token>`` of ``text`` under the first key. Without a key, ``text``
        itself, escaped (``plain:``) when it starts like a sealed or escaped value, so
        that what a client chose is never taken for a token."""
        if self._fernet is None:
            escape = text.startswith((SEALED_PREFIX, ESCAPED_PREFIX))
            return ESCAPED_PREFIX + text if escape else text
        return SEALED_PREFIX + self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, text: str) -> str:
        """The plaintext of a sealed text; a plaintext one as it is. Raises
        :class:`LockedSecret` when no configured key opens it."""
        if text.startswith(ESCAPED_PREFIX):
            return text[len(ESCAPED_PREFIX) :]
        if not self.is_sealed(text):
            return text
        return self._decrypt(text[len(SEALED_PREFIX) :].encode()).decode()

    def seal_bytes(self, data: bytes) -> bytes:
        # Answer bodies are the service's own JSON: they never start like a token.
        if self._fernet is None:
            return data
        return _SEALED_BYTES + self._fernet.encrypt(data)

    def open_bytes(self, data: bytes) -> bytes:
        if not self.is_sealed(data):
            return data
        return self._decrypt(data[len(_SEALED_BYTES) :])

    def _decrypt(self, token: bytes) -> bytes:
        if self._fernet is None:
            raise LockedSecret(
                f"stored secrets are encrypted but {SETTING} is not set: "
                "configure the key they were encrypted with"
            )
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise LockedSecret(
                f"a stored secret cannot be decrypted with {SETTING}: the key it was "
                "encrypted with is not among the configured keys"
            ) from None


def _map_tenant(tenant: Tenant, fn: Callable[[str], str]) -> Tenant:
    def each(value: str | None) -> str | None:
        return None if value is None else fn(value)

    auth = tenant.client_auth
    return msgspec.structs.replace(
        tenant,
        client_auth=msgspec.structs.replace(
            auth, token=each(auth.token), password=each(auth.password)
        ),
        webhook_secret=each(tenant.webhook_secret),
        webhook_secret_previous=each(tenant.webhook_secret_previous),
        dkim_keys=tuple(
            msgspec.structs.replace(k, private_key=fn(k.private_key)) for k in tenant.dkim_keys
        ),
    )


def _map_account(account: Account, fn: Callable[[str], str]) -> Account:
    mailbox = account.bounce_mailbox
    if mailbox is not None and mailbox.password is not None:
        mailbox = msgspec.structs.replace(mailbox, password=fn(mailbox.password))
    password = None if account.password is None else fn(account.password)
    return msgspec.structs.replace(account, password=password, bounce_mailbox=mailbox)


def _secrets_of_account(account: Account) -> list[str]:
    mailbox = account.bounce_mailbox
    values = (account.password, mailbox.password if mailbox is not None else None)
    return [value for value in values if value is not None]


class ResealCount(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`SealedConfigStore.reseal` rewrote."""

    tenants: int
    accounts: int
    secrets: int


class SealedConfigStore:
    """Implements ``ConfigStore`` over ``inner``, sealing the secret fields of tenants and
    accounts on the way in and opening them on the way out (callers see plaintext)."""

    def __init__(self, inner: _OpenableConfigStore, cipher: FernetCipher) -> None:
        self._inner = inner
        self._cipher = cipher

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def put_tenant(self, tenant: Tenant) -> None:
        await self._inner.put_tenant(_map_tenant(tenant, self._cipher.seal))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        tenant = await self._inner.get_tenant(tenant_id)
        return None if tenant is None else _map_tenant(tenant, self._cipher.open)

    async def list_tenants(self) -> list[Tenant]:
        return [_map_tenant(t, self._cipher.open) for t in await self._inner.list_tenants()]

    async def delete_tenant(self, tenant_id: str) -> bool:
        return await self._inner.delete_tenant(tenant_id)

    async def put_account(self, account: Account) -> None:
        await self._inner.put_account(_map_account(account, self._cipher.seal))

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        account = await self._inner.get_account(tenant_id, account_id)
        return None if account is None else _map_account(account, self._cipher.open)

    async def list_accounts(self, tenant_id: str) -> list[Account]:
        accounts = await self._inner.list_accounts(tenant_id)
        return [_map_account(a, self._cipher.open) for a in accounts]

    async def delete_account(
        self,
        tenant_id: str,
        account_id: str,
        *,
        force: bool = False,
        now: float = 0.0,
        deletion_id: str = "",
    ) -> bool:
        return await self._inner.delete_account(
            tenant_id, account_id, force=force, now=now, deletion_id=deletion_id
        )

    async def check(self) -> int:
        """Open every stored secret once; return how many are still plaintext. Raises
        :class:`LockedSecret` (naming the setting) if one cannot be opened, so that a
        missing or wrong key stops start-up with one line."""
        plaintext = 0
        for tenant in await self._inner.list_tenants():
            values = _secrets_of_tenant(tenant)
            for account in await self._inner.list_accounts(tenant.id):
                values += _secrets_of_account(account)
            for value in values:
                self._cipher.open(value)
                plaintext += not self._cipher.is_sealed(value)
        return plaintext

    async def reseal(self, progress: Callable[[ResealCount], None] | None = None) -> ResealCount:
        """Write every tenant and account back with its secrets sealed under the first
        key (plaintext ones included); ``progress`` is called after each tenant. Another
        process changing the same tenant at the same instant may lose that change."""
        if not self._cipher.enabled:
            raise InvalidInput(SETTING, f"{SETTING} is not set: there is no key to encrypt with")
        tenants = accounts = count = 0
        for stored in await self._inner.list_tenants():
            secrets = len(_secrets_of_tenant(stored))
            if secrets:
                await self._inner.put_tenant(_map_tenant(stored, self._rotate))
            for account in await self._inner.list_accounts(stored.id):
                if held := len(_secrets_of_account(account)):
                    await self._inner.put_account(_map_account(account, self._rotate))
                    accounts += 1
                    secrets += held
            tenants += 1
            count += secrets
            if progress is not None:
                progress(ResealCount(tenants=tenants, accounts=accounts, secrets=count))
        return ResealCount(tenants=tenants, accounts=accounts, secrets=count)

    def _rotate(self, value: str) -> str:
        return self._cipher.seal(self._cipher.open(value))


def _secrets_of_tenant(tenant: Tenant) -> list[str]:
    auth = tenant.client_auth
    values = (auth.token, auth.password, tenant.webhook_secret, tenant.webhook_secret_previous)
    return [v for v in values if v is not None] + [k.private_key for k in tenant.dkim_keys]


class SealedAccessStore:
    """Implements ``AccessStore`` over ``inner``, sealing the answer bodies of idempotency
    records (key digests are not secret and pass through)."""

    def __init__(self, inner: _OpenableAccessStore, cipher: FernetCipher) -> None:
        self._inner = inner
        self._cipher = cipher

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def put_tenant_key(self, key: TenantKey) -> None:
        await self._inner.put_tenant_key(key)

    async def find_tenant_key(self, digest: str) -> TenantKey | None:
        return await self._inner.find_tenant_key(digest)

    async def delete_tenant_key(self, tenant_id: str) -> bool:
        return await self._inner.delete_tenant_key(tenant_id)

    async def begin_idempotent(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        now: float,
        *,
        ttl_s: float,
        stale_s: float,
        owner: str = "",
    ) -> IdempotentStart:
        start = await self._inner.begin_idempotent(
            scope, key, fingerprint, now, ttl_s=ttl_s, stale_s=stale_s, owner=owner
        )
        if start.body is None:
            return start
        return msgspec.structs.replace(start, body=self._cipher.open_bytes(start.body))

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        await self._inner.finish_idempotent(scope, key, status, self._cipher.seal_bytes(body))

    async def forget_idempotent(self, scope: str, key: str) -> None:
        await self._inner.forget_idempotent(scope, key)

    async def release_idempotent(self, owner: str) -> int:
        return await self._inner.release_idempotent(owner)
