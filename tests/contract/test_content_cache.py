"""Contract of the ContentCache port: the two-tier cache with its memory tier alone and
with a disk tier (a real folder)."""

from __future__ import annotations

import hashlib

import pytest

from mailproxy.adapters.attachment_cache import TwoTierCache
from tests.conftest import Clock


def md5(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


@pytest.fixture(params=["memory", "disk"])
def tiers(request, tmp_path):
    clock = Clock()
    disk = tmp_path / "cache" if request.param == "disk" else None
    return request.param, clock, lambda **kw: TwoTierCache(disk_dir=disk, clock=clock, **kw)


async def test_put_then_get_counts_hits_and_misses(tiers):
    _, _, make = tiers
    cache = make()
    assert await cache.get("t1", md5(b"a")) is None
    await cache.put("t1", md5(b"a"), b"a")
    assert await cache.get("t1", md5(b"a")) == b"a"
    assert (cache.hits, cache.misses) == (1, 1)


async def test_entries_expire_after_the_ttl(tiers):
    _, clock, make = tiers
    cache = make(ttl_s=60, small_item_bytes=1)
    big = b"x" * 100
    await cache.put("t1", md5(b"a"), b"a")
    await cache.put("t1", md5(big), big)
    clock.advance(61)
    assert await cache.get("t1", md5(b"a")) is None
    assert await cache.get("t1", md5(big)) is None


async def test_the_memory_tier_evicts_the_least_recently_used(tiers):
    _, _, make = tiers
    cache = make(memory_max_items=2)
    for item in (b"a", b"b"):
        await cache.put("t1", md5(item), item)
    assert await cache.get("t1", md5(b"a")) == b"a"  # a is now the most recent
    await cache.put("t1", md5(b"c"), b"c")
    assert await cache.get("t1", md5(b"b")) is None
    assert await cache.get("t1", md5(b"a")) == b"a"


async def test_large_items_go_to_disk_within_its_cap(tiers):
    kind, clock, make = tiers
    cache = make(small_item_bytes=10, disk_max_bytes=250)
    items = [bytes([n]) * 100 for n in range(3)]
    for item in items:
        await cache.put("t1", md5(item), item)
        clock.advance(1)
    found = [await cache.get("t1", md5(item)) for item in items]
    if kind == "memory":
        assert found == [None, None, None]  # no disk tier: large items are not kept
    else:
        assert found == [None, items[1], items[2]]  # the oldest went over the cap


async def test_keys_that_are_not_md5_are_ignored(tiers):
    _, _, make = tiers
    cache = make()
    await cache.put("t1", "../../etc/passwd", b"x")
    assert await cache.get("t1", "../../etc/passwd") is None


@pytest.mark.parametrize("size", [1, 100])  # the memory tier, and the disk tier when there
async def test_an_entry_is_found_only_in_its_own_scope(tiers, size):
    kind, _, make = tiers
    cache = make(small_item_bytes=10)
    content = b"s" * size
    await cache.put("tenant-a", md5(content), content)
    assert await cache.get("tenant-b", md5(content)) is None
    kept = kind == "disk" or size <= 10
    assert await cache.get("tenant-a", md5(content)) == (content if kept else None)


async def test_scopes_that_look_like_paths_stay_inside_the_cache(tiers, tmp_path):
    _, _, make = tiers
    cache = make(small_item_bytes=1)
    content = b"x" * 50
    await cache.put("../../escape", md5(content), content)
    assert not (tmp_path.parent / "escape").exists()
    assert not any(p.name == "escape" for p in tmp_path.rglob("*"))


async def test_files_of_the_layout_before_tenant_scopes_are_removed(tmp_path):
    # Entries once lived at <dir>/<md5[:2]>/<md5>: never found again, they must not keep
    # taking room under the cap.
    old = tmp_path / "cache" / "ab" / ("ab" + "0" * 30)
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 100)
    cache = TwoTierCache(disk_dir=tmp_path / "cache", small_item_bytes=1, clock=Clock())
    await cache.put("t1", md5(b"y" * 50), b"y" * 50)
    assert not old.exists()
    assert await cache.get("t1", md5(b"y" * 50)) == b"y" * 50
