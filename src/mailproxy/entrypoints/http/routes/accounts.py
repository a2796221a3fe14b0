"""The routes of a tenant's SMTP (and capture) accounts: create or replace, list, delete."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.params import Body, FromPath, FromQuery

from mailproxy.domain.access import Caller
from mailproxy.entrypoints.http.auth import scoped
from mailproxy.entrypoints.http.records import account_record
from mailproxy.entrypoints.http.routing import TenantQuery, route, tenant_named
from mailproxy.entrypoints.http.schemas import (
    ACCOUNT_EXAMPLE,
    AccountAnswer,
    AccountBody,
    AccountsAnswer,
    OkAnswer,
    given_fields,
)
from mailproxy.service import MailProxy

log = logging.getLogger("mailproxy.http")


@route(post, "/account", "accounts", summary="Create or replace an account", tenant=True)
async def put_account(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[AccountBody, Body(examples=[ACCOUNT_EXAMPLE])],
    tenant_id: TenantQuery = None,
) -> AccountAnswer:
    """Create or replace an SMTP (or capture) account."""
    fields = given_fields(data)
    scope = await scoped(proxy, caller, tenant_named(tenant_id, fields.get("tenant_id")))
    account = await proxy.put_account(fields | {"tenant_id": scope}, caller=caller)
    if not account.tls_verify:
        log.warning("account.tls_verify_off", extra={"tenant": scope, "account": account.id})
    return AccountAnswer(account=account_record(account))


@route(get, "/accounts", "accounts", summary="List accounts", tenant=True)
async def list_accounts(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
) -> AccountsAnswer:
    """The tenant's accounts."""
    scope = await scoped(proxy, caller, tenant_id)
    return AccountsAnswer(accounts=[account_record(a) for a in await proxy.list_accounts(scope)])


@route(delete, "/account/{account_id:str}", "accounts", summary="Delete an account", tenant=True)
async def delete_account(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    account_id: FromPath[str],
    tenant_id: TenantQuery = None,
    force: FromQuery[bool] = False,
) -> OkAnswer:
    """Remove an account; 409 while it has queued messages unless ``force``, which
    fails them with ``account deleted``."""
    scope = await scoped(proxy, caller, tenant_id)
    await proxy.delete_account(scope, account_id, force=force)
    return OkAnswer()


ACCOUNT_ROUTES = [put_account, list_accounts, delete_account]
