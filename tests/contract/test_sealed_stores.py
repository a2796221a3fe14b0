"""The ConfigStore and AccessStore contracts again, on every store seen through the
sealing decorators (:mod:`mailproxy.adapters.sealed`) with a key: encrypting secrets
changes nothing a caller can observe. Plus what only the decorators promise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from mailproxy.adapters.sealed import (
    FernetCipher,
    LockedSecret,
    SealedAccessStore,
    SealedConfigStore,
)
from mailproxy.domain.model import Account, ClientAuth, Tenant
from tests.conftest import NOW_T, STORE_KINDS, drop_schema, make_store
from tests.contract.test_access_store import *  # noqa: F403  (the suite, collected again)
from tests.contract.test_config_store import *  # noqa: F403

CIPHER = FernetCipher([Fernet.generate_key().decode()])


class SealedView:
    """One object for every port, as the suites use a store: the config and access
    methods through the decorators, the rest straight to the store."""

    def __init__(self, inner: Any, cipher: FernetCipher) -> None:
        self.inner = inner
        self._sealed = (SealedConfigStore(inner, cipher), SealedAccessStore(inner, cipher))

    def __getattr__(self, name: str) -> Any:
        for part in self._sealed:
            if name in type(part).__dict__:
                return getattr(part, name)
        return getattr(self.inner, name)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SealedView]:
    inner = make_store(request.param, tmp_path)
    view = SealedView(inner, CIPHER)
    await view.open()
    try:
        yield view
    finally:
        await view.close()
        await drop_schema(inner)


SECRET_TENANT = Tenant(
    id="t1",
    client_auth=ClientAuth(method="basic", user="u", password="cb-pass"),
    webhook_secret="whsec-now",
    webhook_secret_previous="whsec-before",
)


async def test_what_the_inner_store_keeps_is_sealed_and_callers_see_plaintext(store):
    await store.put_tenant(SECRET_TENANT)
    await store.put_account(Account(id="a", tenant_id="t1", kind="capture", password="smtp"))
    kept = await store.inner.get_tenant("t1")
    for value in (kept.client_auth.password, kept.webhook_secret, kept.webhook_secret_previous):
        assert value.startswith("fernet:")
    assert (kept.client_auth.user, kept.client_auth.method) == ("u", "basic")
    assert (await store.inner.get_account("t1", "a")).password.startswith("fernet:")
    assert await store.get_tenant("t1") == SECRET_TENANT
    assert await store.list_tenants() == [SECRET_TENANT]
    assert [a.password for a in await store.list_accounts("t1")] == ["smtp"]
    assert await store.check() == 0


async def test_stored_answers_are_sealed_and_replayed_in_plaintext(store):
    begin = store.begin_idempotent
    await begin("admin", "k", "fp", NOW_T, ttl_s=60, stale_s=60)
    await store.finish_idempotent("admin", "k", 200, b'{"api_key":"secret"}')
    raw = await store.inner.begin_idempotent("admin", "k", "fp", NOW_T, ttl_s=60, stale_s=60)
    assert raw.body.startswith(b"fernet:")
    assert b"secret" not in raw.body
    replay = await begin("admin", "k", "fp", NOW_T, ttl_s=60, stale_s=60)
    assert (replay.state, replay.body) == ("replay", b'{"api_key":"secret"}')


async def test_a_store_sealed_with_another_key_or_none_is_locked(store):
    await store.put_tenant(SECRET_TENANT)
    for cipher in (FernetCipher(), FernetCipher([Fernet.generate_key().decode()])):
        other = SealedConfigStore(store.inner, cipher)
        with pytest.raises(LockedSecret, match=r"security\.encryption_key"):
            await other.check()
        with pytest.raises(LockedSecret):
            await other.get_tenant("t1")


@pytest.mark.parametrize("password", ["fernet:hunter2", "plain:hunter2", "fernet:"])
@pytest.mark.parametrize("cipher", [FernetCipher(), CIPHER], ids=["no key", "key"])
async def test_a_secret_that_looks_sealed_is_kept_as_the_client_gave_it(store, cipher, password):
    # A tenant key chose the password: it must never lock the store (every restart
    # checks every stored secret) nor be taken for a token.
    sealed = SealedConfigStore(store.inner, cipher)
    await sealed.put_tenant(Tenant(id="t1", webhook_secret=password))
    await sealed.put_account(Account(id="a", tenant_id="t1", kind="capture", password=password))
    assert await sealed.check() >= 0
    assert [a.password for a in await sealed.list_accounts("t1")] == [password]
    assert (await sealed.get_tenant("t1")).webhook_secret == password
