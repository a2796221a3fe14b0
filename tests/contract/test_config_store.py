"""Contract of the ConfigStore port, run against every store adapter."""

from __future__ import annotations

import msgspec

from mailproxy.domain.model import Account, RateLimits, Tenant
from tests.conftest import NOW_T, new_message


async def test_tenant_round_trip_and_listing(store):
    tenant = Tenant(
        id="b", name="B", rate_limits=RateLimits(per_minute=5), unknown_policy="at_most_once"
    )
    await store.put_tenant(tenant)
    await store.put_tenant(Tenant(id="a", name="A"))
    assert await store.get_tenant("b") == tenant
    assert [t.id for t in await store.list_tenants()] == ["a", "b"]
    await store.put_tenant(msgspec.structs.replace(tenant, name="B2"))
    assert (await store.get_tenant("b")).name == "B2"
    assert await store.get_tenant("zzz") is None


async def test_accounts_are_keyed_by_tenant(store):
    await store.put_account(Account(id="main", tenant_id="t1", host="h1", port=25))
    await store.put_account(Account(id="main", tenant_id="t2", host="h2", port=25))
    assert (await store.get_account("t1", "main")).host == "h1"
    assert (await store.get_account("t2", "main")).host == "h2"
    assert await store.delete_account("t1", "main")
    assert await store.get_account("t1", "main") is None
    assert await store.get_account("t2", "main") is not None
    assert await store.delete_account("t1", "main") is False


async def test_a_new_default_account_replaces_the_old_default(store):
    await store.put_account(Account(id="a", tenant_id="t1", kind="capture", is_default=True))
    await store.put_account(Account(id="b", tenant_id="t1", kind="capture", is_default=True))
    await store.put_account(Account(id="c", tenant_id="t2", kind="capture", is_default=True))
    defaults = [a.id for a in await store.list_accounts("t1") if a.is_default]
    assert defaults == ["b"]
    assert (await store.get_account("t2", "c")).is_default


async def test_deleting_a_tenant_removes_everything_it_owns(store):
    await store.put_tenant(Tenant(id="t1"))
    await store.put_tenant(Tenant(id="t2"))
    await store.put_account(Account(id="a1", tenant_id="t1", kind="capture"))
    await store.enqueue(
        [new_message("m1", tenant_id="t1"), new_message("m1", tenant_id="t2")], NOW_T
    )
    assert await store.delete_tenant("t1")
    assert await store.get_tenant("t1") is None
    assert await store.list_accounts("t1") == []
    assert await store.get_message("t1", "m1") is None
    assert await store.get_message("t2", "m1") is not None
    assert await store.delete_tenant("t1") is False
