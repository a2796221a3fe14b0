"""Contract of the AccessStore port (tenant keys, idempotency records) and of deleting an
account that still has messages, on every store."""

from __future__ import annotations

import pytest

from mailproxy.domain.access import TenantKey, key_digest
from mailproxy.domain.errors import Conflict
from mailproxy.domain.model import Account, Status, Tenant
from tests.conftest import NOW_T, new_message

DAY = 86400.0


async def test_a_rotated_key_replaces_the_old_one_and_revoking_removes_it(store):
    old = TenantKey("t1", key_digest("old-key"))
    await store.put_tenant_key(old)
    assert await store.find_tenant_key(key_digest("old-key")) == old
    new = TenantKey("t1", key_digest("new-key"), expires_ts=NOW_T + DAY)
    await store.put_tenant_key(new)
    assert await store.find_tenant_key(key_digest("old-key")) is None
    assert await store.find_tenant_key(key_digest("new-key")) == new
    assert await store.delete_tenant_key("t1")
    assert not await store.delete_tenant_key("t1")
    assert await store.find_tenant_key(key_digest("new-key")) is None


async def test_deleting_a_tenant_removes_its_key(store):
    await store.put_tenant(Tenant(id="t1"))
    await store.put_tenant_key(TenantKey("t1", key_digest("k")))
    assert await store.delete_tenant("t1")
    assert await store.find_tenant_key(key_digest("k")) is None


async def test_idempotency_replays_refuses_another_body_and_waits_for_the_first(store):
    begin = store.begin_idempotent
    assert (await begin("admin", "k1", "fp1", NOW_T, ttl_s=DAY, stale_s=60)).state == "new"
    assert (await begin("admin", "k1", "fp1", NOW_T + 1, ttl_s=DAY, stale_s=60)).state == "busy"
    await store.finish_idempotent("admin", "k1", 200, b'{"ok":true}')
    replay = await begin("admin", "k1", "fp1", NOW_T + 2, ttl_s=DAY, stale_s=60)
    assert (replay.state, replay.status, replay.body) == ("replay", 200, b'{"ok":true}')
    assert (await begin("admin", "k1", "fp2", NOW_T + 3, ttl_s=DAY, stale_s=60)).state == (
        "mismatch"
    )
    # Scoped per caller; forgotten after the time to live.
    assert (await begin("tenant:t1", "k1", "fp2", NOW_T, ttl_s=DAY, stale_s=60)).state == "new"
    assert (await begin("admin", "k1", "fp2", NOW_T + DAY, ttl_s=DAY, stale_s=60)).state == "new"


async def test_an_abandoned_or_forgotten_start_lets_the_key_be_used_again(store):
    begin = store.begin_idempotent
    assert (await begin("admin", "k", "fp", NOW_T, ttl_s=DAY, stale_s=60)).state == "new"
    assert (await begin("admin", "k", "fp", NOW_T + 61, ttl_s=DAY, stale_s=60)).state == "new"
    await store.forget_idempotent("admin", "k")
    assert (await begin("admin", "k", "fp", NOW_T + 62, ttl_s=DAY, stale_s=60)).state == "new"


async def test_a_restarted_worker_releases_only_its_own_unfinished_keys(store):
    begin = store.begin_idempotent
    assert (await begin("admin", "k1", "fp", NOW_T, ttl_s=DAY, stale_s=60, owner="w1")).state == (
        "new"
    )
    assert (await begin("admin", "k2", "fp", NOW_T, ttl_s=DAY, stale_s=60, owner="w2")).state == (
        "new"
    )
    assert (await begin("admin", "k3", "fp", NOW_T, ttl_s=DAY, stale_s=60, owner="w1")).state == (
        "new"
    )
    await store.finish_idempotent("admin", "k3", 200, b"{}")
    assert await store.release_idempotent("w1") == 1
    again = [
        (await begin("admin", k, "fp", NOW_T + 1, ttl_s=DAY, stale_s=60, owner="w1")).state
        for k in ("k1", "k2", "k3")
    ]
    assert again == ["new", "busy", "replay"]


async def test_an_account_with_queued_messages_is_deleted_only_with_force(store):
    await store.put_tenant(Tenant(id="t1"))
    await store.put_account(Account(id="a1", tenant_id="t1", kind="capture"))
    await store.put_account(Account(id="a2", tenant_id="t1", kind="capture"))
    await store.enqueue([new_message("m1"), new_message("m2", account_id="a2")], NOW_T)
    with pytest.raises(Conflict, match="queued"):
        await store.delete_account("t1", "a1")
    assert await store.get_account("t1", "a1") is not None

    assert await store.delete_account("t1", "a1", force=True, now=NOW_T + 5, deletion_id="ev")
    assert await store.get_account("t1", "a1") is None
    m1 = await store.get_message("t1", "m1")
    assert (m1.status, m1.error, m1.final_ts) == (Status.ERROR, "account deleted", NOW_T + 5)
    (report,) = await store.pending_reports("t1", 10)
    assert (report.event.event, report.event.id, report.event.event_id) == ("error", "m1", "ev.m1")
    assert (await store.get_message("t1", "m2")).status is Status.PENDING
    assert not await store.delete_account("t1", "a1", force=True, now=NOW_T + 6)
