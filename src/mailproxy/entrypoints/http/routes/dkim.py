"""The routes of a tenant's DKIM keys: add (made by the service or imported), list,
remove. Answers never hold a private key; each key comes with its DNS record."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath

from mailproxy.domain.access import Caller
from mailproxy.domain.dkim import DkimKey, dns_record
from mailproxy.entrypoints.http.auth import scoped
from mailproxy.entrypoints.http.routing import route
from mailproxy.entrypoints.http.schemas import OkAnswer
from mailproxy.service import MailProxy

# --- bodies and answers ---------------------------------------------------------------


class DkimKeyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /tenant/{id}/dkim: a key to sign the domain's mail with (made when no
    ``private_key`` is given)."""

    domain: str
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    #: PEM (PKCS#8 or PKCS#1, unencrypted); write-only.
    private_key: str | None = None


class DnsRecordOut(msgspec.Struct, kw_only=True):
    """The TXT record that publishes a DKIM key."""

    name: str
    type: str
    value: str


class DkimKeyRecord(msgspec.Struct, kw_only=True):
    """A DKIM key as answered: never its private key. ``active``: it signs its domain's
    mail (a rotated-out key stays published until it is removed). ``dns``: the record
    to publish for it."""

    domain: str
    selector: str
    algorithm: str
    created_ts: int
    active: bool
    dns: DnsRecordOut


class DkimKeyAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    key: DkimKeyRecord
    dns: DnsRecordOut


class DkimKeysAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    keys: list[DkimKeyRecord]


DKIM_KEY_EXAMPLE = Example(
    summary="a new RSA key for example.com, made by the service",
    value={"domain": "example.com", "selector": "mail2026", "algorithm": "rsa-sha256"},
)


# --- routes -----------------------------------------------------------------------------


def key_record(key: DkimKey) -> DkimKeyRecord:
    return DkimKeyRecord(
        domain=key.domain, selector=key.selector, algorithm=key.algorithm,
        created_ts=int(key.created_ts), active=key.active, dns=dns_of(key),
    )  # fmt: skip


def dns_of(key: DkimKey) -> DnsRecordOut:
    record = dns_record(key)
    return DnsRecordOut(name=record.name, type=record.type, value=record.value)


@route(post, "/tenant/{tenant_id:str}/dkim", "dkim", summary="Add a DKIM key", tenant=True)
async def add_dkim_key(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[DkimKeyBody, Body(examples=[DKIM_KEY_EXAMPLE])],
    tenant_id: FromPath[str],
) -> DkimKeyAnswer:
    """A key that signs the domain's mail from now on (the domain's earlier keys stay
    published, inactive, until removed: a rotation). Made by the service (RSA-2048 or
    Ed25519) unless ``private_key`` gives one. Publish ``dns`` before mail goes out."""
    scope = await scoped(proxy, caller, tenant_id)
    body = {k: v for k, v in msgspec.to_builtins(data).items() if v is not None}
    key, _ = await proxy.dkim.add(scope, body)
    return DkimKeyAnswer(key=key_record(key), dns=dns_of(key))


@route(get, "/tenant/{tenant_id:str}/dkim", "dkim", summary="List DKIM keys", tenant=True)
async def list_dkim_keys(
    proxy: NamedDependency[MailProxy], caller: NamedDependency[Caller], tenant_id: FromPath[str]
) -> DkimKeysAnswer:
    """The tenant's keys, oldest first, each with its DNS record."""
    scope = await scoped(proxy, caller, tenant_id)
    return DkimKeysAnswer(keys=[key_record(k) for k in await proxy.dkim.list(scope)])


@route(
    delete, "/tenant/{tenant_id:str}/dkim/{domain:str}/{selector:str}", "dkim",
    summary="Remove a DKIM key", tenant=True,
)  # fmt: skip
async def remove_dkim_key(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: FromPath[str],
    domain: FromPath[str],
    selector: FromPath[str],
) -> OkAnswer:
    """Remove a key; 404 when the tenant has none by that name. When it was the one that
    signed, the domain's newest remaining key signs."""
    scope = await scoped(proxy, caller, tenant_id)
    await proxy.dkim.remove(scope, domain, selector)
    return OkAnswer()


DKIM_ROUTES = [add_dkim_key, list_dkim_keys, remove_dkim_key]
