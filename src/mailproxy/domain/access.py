"""Who is calling: the admin or one tenant, and what each may do.

Tenant API keys are random secrets of 32 bytes; only their SHA-256 digest is stored. A
digest of a high-entropy key needs no slow hash (nothing to guess), and lets the store
find the key by an index lookup instead of comparing against every tenant's key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import msgspec

from mailproxy.domain.errors import Forbidden, InvalidInput
from mailproxy.domain.model import Account

#: The shortest admin token accepted, and the length below which a warning is logged.
MIN_ADMIN_TOKEN = 8
SHORT_ADMIN_TOKEN = 16


class Caller(msgspec.Struct, frozen=True):
    """The authenticated caller: the admin (``tenant_id`` None) or one tenant's key."""

    tenant_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


ADMIN = Caller()


class TenantKey(msgspec.Struct, frozen=True):
    """A stored tenant API key: its digest and optional expiry."""

    tenant_id: str
    digest: str
    expires_ts: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_ts is None or now < self.expires_ts


def key_digest(key: str) -> str:
    """The stored form of a tenant API key (hex SHA-256)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def scope_tenant(caller: Caller, tenant_id: str | None) -> str:
    """The tenant a request acts on: a tenant key's own (naming another is
    :class:`Forbidden`, whether or not it exists); the admin must name one."""
    if caller.tenant_id is not None:
        if tenant_id is not None and tenant_id != caller.tenant_id:
            raise Forbidden("a tenant key acts only inside its own tenant")
        return caller.tenant_id
    if tenant_id is None:
        raise InvalidInput("tenant_id", "missing tenant_id")
    return tenant_id


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("this needs the admin token")


#: Tenant fields a tenant key may change on its own tenant; the others are the admin's.
TENANT_EDITABLE_BY_TENANT = frozenset({"name"})


def tenant_key_refusal(account: Account, max_connections: int) -> str | None:
    """Why a tenant's own key may not store ``account`` (None: it may). Turning TLS
    verification off, naming a CA file, a bounce mailbox without TLS and connections
    beyond the operator's cap (``delivery.tenant_max_connections``) are the admin's."""
    if not account.tls_verify or account.tls_ca_file:
        return "tls_verify and tls_ca_file need the admin token"
    if account.bounce_mailbox is not None and account.bounce_mailbox.tls == "none":
        return "a bounce mailbox without TLS (bounce_mailbox.tls none) needs the admin token"
    if account.max_connections > max_connections:
        return (
            f"max_connections above {max_connections} needs the admin token "
            "(delivery.tenant_max_connections)"
        )
    return None


def idempotency_scope(caller: Caller) -> str:
    """Idempotency keys are scoped per caller: the tenant of a tenant key, or the admin."""
    return "admin" if caller.tenant_id is None else f"tenant:{caller.tenant_id}"


class IdempotentStart(msgspec.Struct, frozen=True):
    """What a store found for an ``Idempotency-Key``: ``new`` (go ahead, then store the
    answer), ``replay`` (the stored answer), ``mismatch`` (the key was used with another
    body) or ``busy`` (the first request with the key is still running)."""

    state: Literal["new", "replay", "mismatch", "busy"]
    status: int | None = None
    body: bytes | None = None


def idempotent_state(
    stored_fingerprint: str,
    status: int | None,
    body: bytes | None,
    created_ts: float,
    fingerprint: str,
    now: float,
    stale_s: float,
) -> IdempotentStart | None:
    """Judge a live record of an idempotency key against a new request; None when the
    record is an abandoned start (older than ``stale_s``, never finished) that the new
    request replaces."""
    if status is None:
        return IdempotentStart("busy") if now - created_ts < stale_s else None
    if stored_fingerprint != fingerprint:
        return IdempotentStart("mismatch")
    return IdempotentStart("replay", status, body)
