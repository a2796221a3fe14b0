"""The two-tier attachment cache (``ContentCache``): small items in a memory LRU (item and
byte caps), larger ones in files under a folder (byte cap, oldest evicted first), both
with a time to live. Keys are MD5 hex digests, so a file name never comes from a client.
"""

from __future__ import annotations

import asyncio
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
        self._memory: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
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

    async def get(self, md5: str) -> bytes | None:
        if not _MD5.fullmatch(md5):
            return None
        found = self._memory.get(md5)
        if found is not None and self._clock() - found[0] < self._ttl:
            self._memory.move_to_end(md5)
            self.hits += 1
            return found[1]
        if found is not None:
            self._drop(md5)
        content = await asyncio.to_thread(self._disk_get, md5) if self._disk else None
        if content is None:
            self.misses += 1
        else:
            self.hits += 1
        return content

    async def put(self, md5: str, content: bytes) -> None:
        if not _MD5.fullmatch(md5):
            return
        if len(content) <= self._small:
            self._drop(md5)
            self._memory[md5] = (self._clock(), content)
            self._memory_bytes += len(content)
            while len(self._memory) > self._max_items or self._memory_bytes > self._max_bytes:
                self._drop(next(iter(self._memory)))
        elif self._disk is not None and len(content) <= self._disk_max:
            await asyncio.to_thread(self._disk_put, md5, content)

    def _drop(self, md5: str) -> None:
        found = self._memory.pop(md5, None)
        if found is not None:
            self._memory_bytes -= len(found[1])

    def _path(self, md5: str) -> Path:
        assert self._disk is not None
        return self._disk / md5[:2] / md5

    def _disk_get(self, md5: str) -> bytes | None:
        path = self._path(md5)
        try:
            if self._clock() - path.stat().st_mtime >= self._ttl:
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except OSError:
            return None

    def _disk_put(self, md5: str, content: bytes) -> None:
        path = self._path(md5)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
        os.utime(path, (self._clock(), self._clock()))
        self._evict_disk()

    def _evict_disk(self) -> None:
        assert self._disk is not None
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self._disk.glob("??/*")]
        total = sum(size for _, size, _ in files)
        now = self._clock()
        for mtime, size, path in sorted(files):
            if total <= self._disk_max and now - mtime < self._ttl:
                break
            path.unlink(missing_ok=True)
            total -= size
