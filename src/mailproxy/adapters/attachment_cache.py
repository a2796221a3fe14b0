"""The two-tier attachment cache (``ContentCache``): small items in a memory LRU (item and
byte caps), larger ones in files under a folder (byte cap, oldest evicted first), both
with a time to live. Entries are kept per scope (a tenant) and MD5 hex digest: a tenant
that names another's digest finds nothing. File names are digests (of the scope too), so
no part of one ever comes from a client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

_MD5 = re.compile(r"[0-9a-f]{32}")


class TwoTierCache:
    """Implements ``ContentCache``. Items up to ``small_item_bytes`` live in memory;
    larger ones on disk when ``disk_dir`` is set (else they are not cached)."""

    def __init__(
        self,
        *,
        memory_max_items: int = 100,
        memory_max_bytes: int = 50 * 1024 * 1024,
        small_item_bytes: int = 1024 * 1024,
        disk_dir: str | Path | None = None,
        disk_max_bytes: int = 500 * 1024 * 1024,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._memory: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._memory_bytes = 0
        self._max_items = memory_max_items
        self._max_bytes = memory_max_bytes
        self._small = min(small_item_bytes, memory_max_bytes)
        self._disk = Path(disk_dir) if disk_dir else None
        self._disk_max = disk_max_bytes
        self._ttl = ttl_s
        self._clock = clock
        self.hits = 0
        self.misses = 0

    async def get(self, scope: str, md5: str) -> bytes | None:
        if not _MD5.fullmatch(md5):
            return None
        key = (scope, md5)
        found = self._memory.get(key)
        if found is not None and self._clock() - found[0] < self._ttl:
            self._memory.move_to_end(key)
            self.hits += 1
            return found[1]
        if found is not None:
            self._drop(key)
        content = await asyncio.to_thread(self._disk_get, key) if self._disk else None
        if content is None:
            self.misses += 1
        else:
            self.hits += 1
        return content

    async def put(self, scope: str, md5: str, content: bytes) -> None:
        if not _MD5.fullmatch(md5):
            return
        key = (scope, md5)
        if len(content) <= self._small:
            self._drop(key)
            self._memory[key] = (self._clock(), content)
            self._memory_bytes += len(content)
            while len(self._memory) > self._max_items or self._memory_bytes > self._max_bytes:
                self._drop(next(iter(self._memory)))
        elif self._disk is not None and len(content) <= self._disk_max:
            await asyncio.to_thread(self._disk_put, key, content)

    def _drop(self, key: tuple[str, str]) -> None:
        found = self._memory.pop(key, None)
        if found is not None:
            self._memory_bytes -= len(found[1])

    def _path(self, key: tuple[str, str]) -> Path:
        assert self._disk is not None
        scope, md5 = key
        folder = hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self._disk / folder / md5[:2] / md5

    def _disk_get(self, key: tuple[str, str]) -> bytes | None:
        path = self._path(key)
        try:
            if self._clock() - path.stat().st_mtime >= self._ttl:
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except OSError:
            return None

    def _disk_put(self, key: tuple[str, str], content: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
        os.utime(path, (self._clock(), self._clock()))
        self._evict_disk()

    def _evict_disk(self) -> None:
        assert self._disk is not None
        # Files of the layout before entries were kept per tenant (``??/<md5>``) are
        # never found again: they go, so that the cap counts only what can be found.
        for stale in self._disk.glob("??/*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self._disk.glob("*/??/*")]
        total = sum(size for _, size, _ in files)
        now = self._clock()
        for mtime, size, path in sorted(files):
            if total <= self._disk_max and now - mtime < self._ttl:
                break
            path.unlink(missing_ok=True)
            total -= size
