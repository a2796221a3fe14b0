"""The routes of tenants: create, list, read, change, delete; their report-call state;
their API key and webhook secret (rotated, revoked, retired)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import Body, FromPath

from mailproxy.config import Settings
from mailproxy.domain.access import Caller
from mailproxy.domain.model import Tenant
from mailproxy.entrypoints.http.auth import scoped, tenant_in_scope
from mailproxy.entrypoints.http.records import tenant_record, whole_seconds
from mailproxy.entrypoints.http.routing import route
from mailproxy.entrypoints.http.schemas import (
    TENANT_CHANGES_EXAMPLE,
    TENANT_EXAMPLE,
    ApiKeyAnswer,
    ApiKeyBody,
    CreatedTenantAnswer,
    OkAnswer,
    SyncStatusAnswer,
    SyncStatusRecord,
    TenantAnswer,
    TenantBody,
    TenantChanges,
    TenantRecord,
    TenantsAnswer,
    WebhookSecretAnswer,
    decode_body,
    given_fields,
)
from mailproxy.service import MailProxy


async def record_of(proxy: MailProxy, tenant: Tenant) -> TenantRecord:
    """The tenant as answered, with its suspended batches."""
    return tenant_record(tenant, await proxy.store.suspended_batches(tenant.id))


@route(post, "/tenant", "tenants", summary="Create a tenant")
async def create_tenant(
    proxy: NamedDependency[MailProxy], data: Annotated[TenantBody, Body(examples=[TENANT_EXAMPLE])]
) -> CreatedTenantAnswer:
    """Create a tenant; its API key and webhook secret are shown only in this answer."""
    created = await proxy.create_tenant(given_fields(data))
    return CreatedTenantAnswer(
        tenant=await record_of(proxy, created.tenant),
        api_key=created.api_key,
        webhook_secret=created.webhook_secret,
        warnings=warnings_of(proxy, created.tenant),
    )


def warnings_of(proxy: MailProxy, tenant: Tenant) -> list[str] | msgspec.UnsetType:
    """The warnings of a tenant's answer: stored as asked, yet reports cannot be sent
    (a warning, not a refusal: the operator may allow the network later, and clients
    that store such a tenant today keep working)."""
    warning = proxy.report_url_warning(tenant)
    return msgspec.UNSET if warning is None else [warning]


@route(get, "/tenants", "tenants", summary="List tenants")
async def list_tenants(proxy: NamedDependency[MailProxy]) -> TenantsAnswer:
    """Every tenant."""
    return TenantsAnswer(tenants=[await record_of(proxy, t) for t in await proxy.list_tenants()])


@route(get, "/tenants/sync-status", "tenants", summary="Delivery-report state of every tenant")
async def sync_status(
    proxy: NamedDependency[MailProxy], settings: NamedDependency[Settings]
) -> SyncStatusAnswer:
    """Delivery-report state per tenant: last successful call, next call due, whether
    the application asked for quiet (``next_sync_after``), backlog and last error."""
    now = proxy.now()
    records = [
        SyncStatusRecord(
            id=tenant.id,
            last_sync_ts=whole_seconds(state.last_sync_ts),
            next_sync_due=None if due is None else int(max(due, now)),
            in_dnd=state.quiet_until > now,
            pending_reports=backlog.count,
            last_error=state.last_error,
            warning=proxy.report_url_warning(tenant),
        )
        for tenant, state, backlog, due in await proxy.sync_status()
    ]
    return SyncStatusAnswer(
        sync_interval_seconds=int(settings.reporting.sync_interval_s), tenants=records
    )


@route(get, "/tenant/{tenant_id:str}", "tenants", summary="Show a tenant", tenant=True)
async def get_tenant(
    proxy: NamedDependency[MailProxy], caller: NamedDependency[Caller], tenant_id: FromPath[str]
) -> TenantAnswer:
    """One tenant (admin, or that tenant's key)."""
    tenant = await tenant_in_scope(proxy, caller, tenant_id)
    return TenantAnswer(tenant=await record_of(proxy, tenant), warnings=warnings_of(proxy, tenant))


@route(put, "/tenant/{tenant_id:str}", "tenants", summary="Update a tenant", tenant=True)
async def update_tenant(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[TenantChanges, Body(examples=[TENANT_CHANGES_EXAMPLE])],
    tenant_id: FromPath[str],
) -> TenantAnswer:
    """Change some fields; a tenant key may change only ``name``."""
    scope = await scoped(proxy, caller, tenant_id)
    tenant = await proxy.update_tenant(scope, given_fields(data), caller)
    return TenantAnswer(tenant=await record_of(proxy, tenant), warnings=warnings_of(proxy, tenant))


@route(delete, "/tenant/{tenant_id:str}", "tenants", summary="Delete a tenant")
async def delete_tenant(proxy: NamedDependency[MailProxy], tenant_id: FromPath[str]) -> OkAnswer:
    """Remove a tenant with its accounts, messages and history."""
    await proxy.delete_tenant(tenant_id)
    return OkAnswer()


@route(post, "/tenant/{tenant_id:str}/api-key", "tenants", summary="Issue a new API key")
async def rotate_key(
    request: Request[Any, Any, Any], proxy: NamedDependency[MailProxy], tenant_id: FromPath[str]
) -> ApiKeyAnswer:
    """A new API key for the tenant; the old one stops working at once."""
    body: ApiKeyBody = decode_body(await request.body(), ApiKeyBody, empty_ok=True)
    key = await proxy.rotate_tenant_key(tenant_id, expires_ts=body.expires_at)
    return ApiKeyAnswer(api_key=key)


@route(delete, "/tenant/{tenant_id:str}/api-key", "tenants", summary="Revoke the API key")
async def revoke_key(proxy: NamedDependency[MailProxy], tenant_id: FromPath[str]) -> OkAnswer:
    """Revoke the tenant's API key."""
    await proxy.revoke_tenant_key(tenant_id)
    return OkAnswer()


@route(
    post, "/tenant/{tenant_id:str}/webhook-secret", "tenants", summary="Rotate the webhook secret"
)
async def rotate_secret(
    proxy: NamedDependency[MailProxy], tenant_id: FromPath[str]
) -> WebhookSecretAnswer:
    """A new webhook secret, shown only in this answer. The one it replaces keeps
    signing report calls beside it (``webhook_secret_previous``) until
    ``DELETE /tenant/{id}/webhook-secret/previous``."""
    return WebhookSecretAnswer(webhook_secret=await proxy.rotate_webhook_secret(tenant_id))


@route(
    delete,
    "/tenant/{tenant_id:str}/webhook-secret/previous",
    "tenants",
    summary="Retire the previous webhook secret",
)
async def retire_secret(proxy: NamedDependency[MailProxy], tenant_id: FromPath[str]) -> OkAnswer:
    """End a webhook secret rotation: the previous secret stops signing."""
    await proxy.retire_webhook_secret(tenant_id)
    return OkAnswer()


TENANT_ROUTES = [
    create_tenant, list_tenants, sync_status, get_tenant, update_tenant, delete_tenant,
    rotate_key, revoke_key, rotate_secret, retire_secret,
]  # fmt: skip
