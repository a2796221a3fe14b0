"""The attachment source port: fetch the bytes of an attachment reference.

Inline ``base64`` content needs no source (it is decoded by the domain). Filesystem,
endpoint and URL sources plug in here; a service without a source for a fetch mode
rejects such attachments at enqueue with a reason naming the mode.
"""

from __future__ import annotations

from typing import Protocol

from mailproxy.domain.model import AttachmentRef, Tenant


class AttachmentSource(Protocol):
    #: The fetch modes this source serves (``"filesystem"``, ``"endpoint"``, ``"http_url"``).
    fetch_modes: frozenset[str]

    def check(self, tenant: Tenant, attachment: AttachmentRef) -> None:
        """Refuse, without I/O, a reference that policy or syntax forbids (raise
        ``InvalidInput`` naming the attachment)."""

    async def fetch(self, tenant: Tenant, attachment: AttachmentRef) -> bytes:
        """The attachment's bytes. Raises ``AttachmentUnavailable`` with ``temporary`` set
        when a retry may succeed (a 5xx, a timeout) and unset when it cannot (4xx, missing
        file, a size or policy limit)."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


class ContentCache(Protocol):
    """Attachment bytes by scope (the tenant) and MD5 (hex), so that a second message of
    the same tenant with the same marker does not fetch again. An entry is found only in
    the scope it was put in: a digest is a name anyone can learn, never a credential.
    Contract: ``tests/contract/test_content_cache.py``."""

    hits: int
    misses: int

    async def get(self, scope: str, md5: str) -> bytes | None:
        """The content cached under ``md5`` in ``scope``, or None (expired, evicted, never
        put there)."""

    async def put(self, scope: str, md5: str, content: bytes) -> None:
        """Keep ``content`` under ``md5`` in ``scope`` (the caller has checked that it
        matches)."""
