"""Fixtures of the contract suites."""

from __future__ import annotations

import pytest

from mailproxy.domain.model import Account, Tenant


@pytest.fixture
async def accounts(store):
    """Tenants t1 and t2, each with an account a1 that allows many sends at once (messages
    are claimed only for existing accounts, at most ``max_connections`` at a time)."""
    for tenant_id in ("t1", "t2"):
        await store.put_tenant(Tenant(id=tenant_id))
        await store.put_account(
            Account(id="a1", tenant_id=tenant_id, kind="capture", max_connections=1000)
        )
