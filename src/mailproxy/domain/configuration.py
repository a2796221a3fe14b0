"""Tenants and accounts as a caller defines them, validated (HTTP API: TENANT, POST
/account)."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from mailproxy.domain.decoding import convert_error
from mailproxy.domain.egress import check_http_url
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.headers import CONTROL
from mailproxy.domain.model import Account, Tenant
from mailproxy.domain.validation import (
    MAX_CONNECTIONS,
    MAX_COUNT,
    check_path_id,
    is_tenant_id,
)


def parse_tenant(raw: object) -> Tenant:
    """Validate a tenant definition, per the HTTP API (TENANT)."""
    try:
        tenant = msgspec.convert(raw, Tenant)
    except msgspec.ValidationError as exc:
        raise convert_error(exc, Tenant) from None
    if not is_tenant_id(tenant.id):
        raise InvalidInput("id", "invalid id: 1..64 of A-Z a-z 0-9 _ . -, not . or ..")
    if tenant.client_base_url is not None:
        check_http_url("client_base_url", tenant.client_base_url)
        # Paths are appended to it, and a query there would be a credential kept in
        # the clear beside the sealed client_auth: credentials go in client_auth.
        base = urlsplit(tenant.client_base_url)
        if base.query or base.fragment or tenant.client_base_url.endswith(("?", "#")):
            raise InvalidInput(
                "client_base_url",
                "invalid client_base_url: no query or fragment (credentials go in client_auth)",
            )
    for path_field in ("client_sync_path", "client_attachment_path"):
        if not getattr(tenant, path_field).startswith("/"):
            raise InvalidInput(path_field, f"invalid {path_field}: must start with /")
    limits = tenant.rate_limits
    for unit in ("per_minute", "per_hour", "per_day"):
        value = getattr(limits, unit) if limits is not None else None
        if value is not None and not 1 <= value <= MAX_COUNT:
            raise InvalidInput(f"rate_limits.{unit}", f"invalid rate_limits.{unit}: 1..{MAX_COUNT}")
    if not tenant.name:
        tenant = msgspec.structs.replace(tenant, name=tenant.id)
    return tenant


def parse_account(raw: object) -> Account:
    """Validate an SMTP or capture account, per the HTTP API (POST /account)."""
    try:
        account = msgspec.convert(raw, Account)
    except msgspec.ValidationError as exc:
        raise convert_error(exc, Account) from None
    check_path_id("id", account.id)
    if account.kind == "smtp":
        if not account.host or CONTROL.search(account.host):
            raise InvalidInput("host", "missing host")
        if account.port is None or not 0 < account.port < 65536:
            raise InvalidInput("port", "invalid port: 1..65535")
    if not 1 <= account.max_connections <= MAX_CONNECTIONS:
        raise InvalidInput("max_connections", f"invalid max_connections: 1..{MAX_CONNECTIONS}")
    for name in ("limit_per_minute", "limit_per_hour", "limit_per_day"):
        value = getattr(account, name)
        if value is not None and not 1 <= value <= MAX_COUNT:
            raise InvalidInput(name, f"invalid {name}: 1..{MAX_COUNT}")
    return account
