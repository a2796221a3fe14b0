"""Tenants and accounts as a caller defines them, validated (HTTP API: TENANT, POST
/account)."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from mailproxy.domain.bounces import DAY_S
from mailproxy.domain.correlation import TOKEN_PLACEHOLDER, envelope_sender
from mailproxy.domain.decoding import convert_error
from mailproxy.domain.egress import check_http_url
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.headers import CONTROL
from mailproxy.domain.model import Account, BounceMailboxSpec, Tenant
from mailproxy.domain.send_windows import check_send_windows
from mailproxy.domain.validation import (
    MAX_CONNECTIONS,
    MAX_COUNT,
    check_addr_spec,
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
    rule = tenant.suppression
    if rule is not None and (
        not 0 <= rule.soft_bounce_limit <= 1000
        or not 0 < rule.soft_bounce_window_s <= 366 * DAY_S
        or not 0 < rule.soft_bounce_suppress_s <= 3660 * DAY_S
    ):
        raise InvalidInput(
            "suppression",
            "invalid suppression: soft_bounce_limit 0..1000 (0: never), soft_bounce_window_s "
            "up to a year, soft_bounce_suppress_s up to ten years",
        )
    if not tenant.name:
        tenant = msgspec.structs.replace(tenant, name=tenant.id)
    if tenant.send_windows is not None:
        check_send_windows("send_windows", tenant.send_windows)
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
    if account.return_path is not None:
        check_return_path("return_path", account.return_path)
    if account.bounce_mailbox is not None:
        check_bounce_mailbox("bounce_mailbox", account.bounce_mailbox)
    check_fallbacks(account)
    if account.pec and account.bounce_mailbox is None:
        raise InvalidInput(
            "pec", "invalid pec: a PEC account needs its bounce_mailbox, where receipts arrive"
        )
    if account.send_windows is not None:
        check_send_windows("send_windows", account.send_windows)
    return account


#: Fallbacks an account may name: past a few, failing over is not the problem to solve.
MAX_FALLBACKS = 5
MAX_FAILOVER_AFTER_S = 7 * 86_400.0


def check_fallbacks(account: Account) -> None:
    """``fallback_accounts``: at most :data:`MAX_FALLBACKS` account ids, each once, not
    the account itself; ``failover_after_s`` within a week. Whether they exist in the
    tenant is the caller's to check (this sees one account)."""
    fallbacks = account.fallback_accounts
    field = "fallback_accounts"
    if len(fallbacks) > MAX_FALLBACKS:
        raise InvalidInput(field, f"invalid {field}: at most {MAX_FALLBACKS}")
    for n, fallback_id in enumerate(fallbacks):
        check_path_id(f"{field}[{n}]", fallback_id)
        if fallback_id == account.id:
            raise InvalidInput(field, f"invalid {field}: {fallback_id} is this account")
        if fallback_id in fallbacks[:n]:
            raise InvalidInput(field, f"invalid {field}: {fallback_id} named twice")
    if not 0 <= account.failover_after_s <= MAX_FAILOVER_AFTER_S:
        raise InvalidInput(
            "failover_after_s", f"invalid failover_after_s: 0..{MAX_FAILOVER_AFTER_S:.0f} seconds"
        )


#: The longest a token ever is (``domain.correlation``): a return path is checked with it.
_LONGEST_TOKEN = "mp1" + "a" * 40


def check_return_path(field: str, return_path: str) -> str:
    """An envelope sender, ASCII, with at most one ``{token}``, that stays a valid address
    with the longest token in place."""
    if not return_path.isascii():
        raise InvalidInput(field, f"invalid {field}: ASCII only (it is the envelope sender)")
    if return_path.count(TOKEN_PLACEHOLDER) > 1:
        raise InvalidInput(field, f"invalid {field}: at most one {TOKEN_PLACEHOLDER}")
    if TOKEN_PLACEHOLDER in return_path.rpartition("@")[2]:
        raise InvalidInput(field, f"invalid {field}: {TOKEN_PLACEHOLDER} goes in the local part")
    check_addr_spec(field, envelope_sender(return_path, _LONGEST_TOKEN))
    return return_path


MIN_POLL_S, MAX_POLL_S = 5.0, 86_400.0


def check_bounce_mailbox(field: str, mailbox: BounceMailboxSpec) -> BounceMailboxSpec:
    """A bounce mailbox's settings, each within its range (``field`` prefixes the names)."""
    if not mailbox.host or CONTROL.search(mailbox.host) or " " in mailbox.host:
        raise InvalidInput(f"{field}.host", f"invalid {field}.host")
    if not 0 < mailbox.port < 65536:
        raise InvalidInput(f"{field}.port", f"invalid {field}.port: 1..65535")
    for name in ("user", "folder", "processed_folder", "password"):
        value = getattr(mailbox, name)
        if value is not None and (not value or CONTROL.search(value)):
            raise InvalidInput(f"{field}.{name}", f"invalid {field}.{name}")
    if mailbox.processed_folder == mailbox.folder:
        raise InvalidInput(
            f"{field}.processed_folder", f"invalid {field}.processed_folder: same as folder"
        )
    if not MIN_POLL_S <= mailbox.poll_s <= MAX_POLL_S:
        raise InvalidInput(
            f"{field}.poll_s", f"invalid {field}.poll_s: {MIN_POLL_S:g}..{MAX_POLL_S:g} seconds"
        )
    return mailbox
