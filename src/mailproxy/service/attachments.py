"""Attachment content for the messages being sent: fetched once per content, within
per-process and per-tenant shares, and kept transfer-encoded when it recurs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from mailproxy.domain.errors import AttachmentUnavailable, InvalidInput
from mailproxy.domain.mime import AttachmentContent, encode_body
from mailproxy.domain.model import AttachmentRef, MessageSpec, Tenant
from mailproxy.domain.policy import tenant_share
from mailproxy.domain.validation import decode_inline
from mailproxy.ports.attachments import AttachmentSource, ContentCache
from mailproxy.service.config_cache import ConfigCache
from mailproxy.service.options import AttachmentOptions

#: Transfer-encoded bodies of recurring (MD5-marked) attachments kept in memory.
ENCODED_BODIES_KEPT = 8


class AttachmentFetcher:
    """The bytes of a message's attachments, from its inline content, the cache or the
    attachment source of its fetch mode."""

    def __init__(
        self,
        sources: Sequence[AttachmentSource],
        cache: ContentCache | None,
        options: AttachmentOptions,
        config_cache: ConfigCache,
    ) -> None:
        self._sources = {mode: s for s in sources for mode in s.fetch_modes}
        self.cache = cache
        self._options = options
        self._config_cache = config_cache
        self._fetch_slots = asyncio.Semaphore(options.fetch_concurrency)
        self._tenant_fetch_share = tenant_share(options.fetch_concurrency)
        self._tenant_fetch_slots: dict[str, asyncio.Semaphore] = {}
        # Both keyed by (tenant, MD5): a digest names content, it never grants it, so one
        # tenant's marker can never reach what another tenant's fetch brought in.
        self._encoded: dict[tuple[str, str], bytes] = {}
        self._fetching: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    def check(self, tenant: Tenant, ref: AttachmentRef) -> None:
        """Refuse, at submission, a reference no configured source may fetch for
        ``tenant`` (:class:`InvalidInput`)."""
        if ref.fetch_mode == "base64":
            return
        source = self._sources.get(ref.fetch_mode)
        if source is None:
            raise InvalidInput("attachments", f"attachment source not configured: {ref.fetch_mode}")
        source.check(tenant, ref)

    def forget_tenant(self, tenant_id: str) -> None:
        self._tenant_fetch_slots.pop(tenant_id, None)

    async def close(self) -> None:
        for source in self._sources.values():
            await source.close()

    async def contents(self, tenant_id: str, spec: MessageSpec) -> list[AttachmentContent]:
        """The bytes of every attachment of a message, at most ``max_total_bytes`` in all;
        fetched ones come from the cache when their MD5 is known, and are checked against
        it when they are fetched."""
        contents = []
        total = 0
        for ref in spec.attachments:
            encoded = None
            if ref.fetch_mode == "base64":
                content = decode_inline(ref.storage_path)
            else:
                content = await self._fetched(tenant_id, ref)
                if ref.content_md5:
                    encoded = self._encoded_body((tenant_id, ref.content_md5), content)
            total += len(content)
            if total > self._options.max_total_bytes:
                raise AttachmentUnavailable(
                    ref.filename,
                    f"attachments larger than {self._options.max_total_bytes} bytes in all",
                    temporary=False,
                )
            contents.append(
                AttachmentContent(ref.filename, content, ref.mime_type, encoded, ref.content_id)
            )
        return contents

    def _encoded_body(self, key: tuple[str, str], content: bytes) -> bytes:
        """The transfer form of a recurring attachment, kept for the next message that
        carries it (base64 of 1 MB costs about 10 ms; the few most recent are kept)."""
        encoded = self._encoded.pop(key, None)
        if encoded is None:
            encoded = encode_body(content)
        self._encoded[key] = encoded
        while len(self._encoded) > ENCODED_BODIES_KEPT:
            self._encoded.pop(next(iter(self._encoded)))
        return encoded

    async def _fetched(self, tenant_id: str, ref: AttachmentRef) -> bytes:
        """An attachment's bytes: from the cache when its MD5 is known, else fetched once
        however many messages ask for the same MD5 at the same time."""
        md5 = ref.content_md5
        if md5 and self.cache is not None:
            cached = await self.cache.get(tenant_id, md5)
            if cached is not None:
                return cached
        if not md5:
            return await self._fetch(tenant_id, ref)
        key = (tenant_id, md5)
        running = self._fetching.get(key)
        if running is None:
            running = asyncio.ensure_future(self._fetch(tenant_id, ref))
            self._fetching[key] = running
            running.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(running)

    async def _fetch(self, tenant_id: str, ref: AttachmentRef) -> bytes:
        tenant = await self._config_cache.tenant(tenant_id)
        source = self._sources.get(ref.fetch_mode)
        if tenant is None or source is None:
            raise AttachmentUnavailable(
                ref.filename, f"no source for {ref.fetch_mode}", temporary=False
            )
        share = self._tenant_fetch_slots.get(tenant_id)
        if share is None:
            share = self._tenant_fetch_slots[tenant_id] = asyncio.Semaphore(
                self._tenant_fetch_share
            )
        async with share, self._fetch_slots:
            content = await source.fetch(tenant, ref)
        if ref.content_md5:
            if hashlib.md5(content, usedforsecurity=False).hexdigest() != ref.content_md5:
                raise AttachmentUnavailable(
                    ref.filename, "content does not match its MD5", temporary=False
                )
            if self.cache is not None:
                await self.cache.put(tenant_id, ref.content_md5, content)
        return content
