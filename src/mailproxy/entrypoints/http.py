"""The REST API (the HTTP contract of mailproxy) on Litestar.

``create_app(proxy, settings)`` builds the app; nothing is created at import. Every answer
is JSON with ``"ok"``; errors map from the library's error tree in one place
(:func:`_problem_from`): ``InvalidInput`` → 422 problem details naming the field,
``NotFound`` → 404, ``Conflict`` → 409, ``Forbidden`` → 403, ``StorageError`` → 503, and
anything unexpected → 500 with a request id (logged with its traceback, never sent).

Authentication: ``X-API-Token`` or ``Authorization: Bearer``. The admin token (compared in
constant time) acts everywhere; a tenant key acts only inside its tenant. Which routes a
tenant key may use is declared per route (``opt={"tenant": True}``); the others are the
admin's. ``/health`` and ``/schema`` are public; ``/metrics`` needs the admin token unless
``security.metrics_public`` is true (it names every tenant and account id).

Failed authentication is throttled per client address (:mod:`mailproxy.domain.throttle`,
shared with the ``/ui`` sign-in): past ``security.auth_max_failures`` wrong tokens within
``security.auth_failure_window_s``, the answer is 429 with ``Retry-After`` and the token is
not checked. A missing token is no guess and does not count; neither do successes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Example, SecurityScheme
from litestar.params import Body, FromPath, FromQuery, JSONBody, QueryParameter
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailproxy import __version__
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.bootstrap import build_proxy
from mailproxy.config import Settings, load_settings
from mailproxy.domain.access import (
    ADMIN,
    MIN_ADMIN_TOKEN,
    SHORT_ADMIN_TOKEN,
    Caller,
    require_admin,
    same_secret,
    scope_tenant,
)
from mailproxy.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MailProxyError,
    NotFound,
    StorageError,
)
from mailproxy.domain.model import (
    Account,
    ClientAuth,
    HistoryEntry,
    QueuedMessage,
    RateLimits,
    Status,
    Tenant,
)
from mailproxy.domain.policy import Why
from mailproxy.domain.throttle import FailedAuthentications, ThrottlePolicy
from mailproxy.domain.validation import MAX_CONNECTIONS, MAX_COUNT, MAX_TS
from mailproxy.entrypoints.status_page import Sessions, status_page_routes
from mailproxy.service import MailProxy

log = logging.getLogger("mailproxy.http")

#: Rejection reasons that do not make an add-messages request a failure when nothing was
#: queued: the client re-sent what is already on its way.
HARMLESS_REJECTIONS = frozenset({"already sent", "in flight"})


class Unauthorized(MailProxyError):
    """No token, or one that is not the admin token nor a live tenant key."""


class TooManyAttempts(MailProxyError):
    """Too many failed authentications from this address: try again after
    ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed authentications: retry in {math.ceil(retry_after_s)} s")
        self.retry_after_s = retry_after_s


# --- answer models ------------------------------------------------------------------------


class OkAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True


class ErrorAnswer(msgspec.Struct, kw_only=True):
    ok: bool = False
    error: str
    request_id: str | msgspec.UnsetType = msgspec.UNSET


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, plus the ``ok``/``error`` members every answer has."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError]
    ok: bool = False
    error: str


class AddMessagesBody(msgspec.Struct, kw_only=True):
    """POST /commands/add-messages. Each message is checked on its own (see MESSAGE in
    the API contract); a bad one is rejected with a reason while the others are queued."""

    messages: list[dict[str, Any]]
    default_priority: int | str | None = None


ADD_MESSAGES_EXAMPLE = Example(
    summary="two messages, one with an attachment",
    value={
        "messages": [
            {
                "id": "invoice-2041",
                "account_id": "main",
                "from": "Billing <billing@example.com>",
                "to": ["customer@example.com"],
                "subject": "Your invoice",
                "body": "Please find your invoice attached.",
                "attachments": [{"filename": "invoice.pdf", "storage_path": "base64:JVBERi0xLjQK"}],
                "metadata": {"order": 2041},
            },
            {
                "id": "welcome-77",
                "from": "hello@example.com",
                "to": "new.user@example.com",
                "subject": "Welcome",
                "body_html": "<p>Welcome aboard!</p>",
                "priority": "high",
            },
        ],
        "default_priority": 2,
    },
)


UNSET = msgspec.UNSET
Unset = msgspec.UnsetType

# --- bounds of client integers --------------------------------------------------------------
# Every integer of a request body gets its range (the domain's) in the schema, so that it is
# refused with the field's name before anything else reads it.

Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]
Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Connections = Annotated[int, msgspec.Meta(ge=1, le=MAX_CONNECTIONS)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]


class RateLimitsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Messages per minute, hour and day (each 1..2147483647, or null for no limit)."""

    per_minute: Count | None = None
    per_hour: Count | None = None
    per_day: Count | None = None


class AccountBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /account: an SMTP account, or a ``capture`` sandbox that writes .eml files."""

    id: str
    tenant_id: str | Unset = UNSET
    kind: Literal["smtp", "capture"] | Unset = UNSET
    host: str | Unset | None = UNSET
    port: Port | Unset | None = UNSET
    user: str | Unset | None = UNSET
    password: str | Unset | None = UNSET
    use_tls: bool | Unset | None = UNSET
    tls_verify: bool | Unset = UNSET
    tls_ca_file: str | Unset | None = UNSET
    limit_per_minute: Count | Unset | None = UNSET
    limit_per_hour: Count | Unset | None = UNSET
    limit_per_day: Count | Unset | None = UNSET
    limit_behavior: Literal["defer", "reject"] | Unset = UNSET
    max_connections: Connections | Unset = UNSET
    is_default: bool | Unset = UNSET


class TenantChanges(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /tenant/{id}: the fields to change (the others stay)."""

    name: str | Unset = UNSET
    active: bool | Unset = UNSET
    client_base_url: str | Unset | None = UNSET
    client_sync_path: str | Unset = UNSET
    client_attachment_path: str | Unset = UNSET
    client_auth: ClientAuth | Unset = UNSET
    rate_limits: RateLimitsBody | Unset | None = UNSET
    webhook_secret: str | Unset | None = UNSET
    attachment_url_prefixes: list[str] | Unset = UNSET
    unknown_policy: Literal["at_least_once", "at_most_once"] | Unset | None = UNSET


class TenantBody(TenantChanges, kw_only=True, forbid_unknown_fields=True):
    """POST /tenant: only ``id`` is required."""

    id: str


ACCOUNT_EXAMPLE = Example(
    summary="an SMTP account with limits",
    value={
        "id": "main",
        "tenant_id": "acme",
        "host": "smtp.example.com",
        "port": 587,
        "user": "mailer",
        "password": "app-password",
        "limit_per_minute": 60,
        "is_default": True,
    },
)
TENANT_EXAMPLE = Example(
    summary="a tenant that receives delivery reports",
    value={
        "id": "acme",
        "name": "Acme Corp",
        "client_base_url": "https://app.example.com",
        "client_auth": {"method": "bearer", "token": "callback-token"},
        "rate_limits": {"per_hour": 5000},
    },
)


def _given(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a client sent (UNSET ones left out)."""
    given: dict[str, Any] = msgspec.to_builtins(data)
    return given


class RejectedMessage(msgspec.Struct):
    id: str
    reason: str


class AddMessagesAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    queued: int
    rejected: list[RejectedMessage]
    error: str | msgspec.UnsetType = msgspec.UNSET


class HistoryRecord(msgspec.Struct):
    event: str
    ts: int
    detail: str | None


class MessageRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    account_id: str
    status: Status
    priority: int
    batch_code: str | None
    deferred_ts: int | None
    sent_ts: int | None
    error_ts: int | None
    error: str | None
    smtp_code: int | None
    attempts: int
    created_at: int
    updated_at: int
    message_id: str
    metadata: dict[str, Any] | None
    possible_duplicate: bool
    history: list[HistoryRecord] | msgspec.UnsetType = msgspec.UNSET
    why: Why | msgspec.UnsetType | None = msgspec.UNSET


class MessagesAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    messages: list[MessageRecord]
    next_cursor: str | None


class MessageAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    message: MessageRecord


class IdsBody(msgspec.Struct, kw_only=True):
    ids: list[str]


class DeleteAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    removed: int
    not_found: list[str]
    in_flight: list[str]


class CleanupBody(msgspec.Struct, kw_only=True):
    older_than_seconds: Seconds | None = None


class RemovedAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    removed: int


class SuspendAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant_id: str
    suspended_batches: list[str]
    pending_messages: int


class AccountRecord(msgspec.Struct, kw_only=True):
    """An account as answered: every field but ``password``, and ``has_password``."""

    id: str
    tenant_id: str
    kind: str
    host: str | None
    port: int | None
    user: str | None
    has_password: bool
    use_tls: bool | None
    tls_verify: bool
    tls_ca_file: str | None
    limit_per_minute: int | None
    limit_per_hour: int | None
    limit_per_day: int | None
    limit_behavior: str
    max_connections: int
    is_default: bool


class AccountAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    account: AccountRecord


class AccountsAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    accounts: list[AccountRecord]


class ClientAuthRecord(msgspec.Struct):
    method: str


class TenantRecord(msgspec.Struct, kw_only=True):
    """A tenant as answered: no secrets; ``client_auth`` shows only its method."""

    id: str
    name: str
    active: bool
    client_base_url: str | None
    client_sync_path: str
    client_attachment_path: str
    client_auth: ClientAuthRecord
    rate_limits: RateLimits | None
    has_webhook_secret: bool
    #: A rotation is in progress: the previous webhook secret still signs report calls.
    has_webhook_secret_previous: bool
    attachment_url_prefixes: list[str]
    unknown_policy: str | None
    suspended_batches: list[str]


class TenantAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant: TenantRecord


class CreatedTenantAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenant: TenantRecord
    api_key: str
    webhook_secret: str


class TenantsAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    tenants: list[TenantRecord]


class ApiKeyBody(msgspec.Struct, kw_only=True):
    expires_at: Timestamp | None = None


class ApiKeyAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    api_key: str


class WebhookSecretAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    webhook_secret: str


class SyncStatusRecord(msgspec.Struct, kw_only=True):
    id: str
    last_sync_ts: int | None
    next_sync_due: int | None
    in_dnd: bool
    pending_reports: int
    last_error: str | None


class SyncStatusAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    sync_interval_seconds: int
    tenants: list[SyncStatusRecord]


class HealthAnswer(msgspec.Struct, kw_only=True):
    ok: bool
    status: str
    version: str | msgspec.UnsetType = msgspec.UNSET


class StatusAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    active: bool
    version: str
    queue: dict[str, int]


class InstanceAnswer(msgspec.Struct, kw_only=True):
    ok: bool = True
    name: str
    version: str
    settings: dict[str, Any]


ERROR_RESPONSES = {
    401: ResponseSpec(ErrorAnswer, description="missing or unknown token"),
    403: ResponseSpec(ErrorAnswer, description="another tenant, or an admin-only action"),
    404: ResponseSpec(ErrorAnswer, description="no such object in the caller's tenant"),
    409: ResponseSpec(ErrorAnswer, description="conflicts with the current state"),
    413: ResponseSpec(ErrorAnswer, description="body over the size limit"),
    429: ResponseSpec(ErrorAnswer, description="too many failed authentications (Retry-After)"),
    422: ResponseSpec(
        Problem, description="invalid request", media_type="application/problem+json"
    ),
    503: ResponseSpec(ErrorAnswer, description="storage unavailable"),
}


def route(
    method: type[HTTPRouteHandler],
    path: str,
    tag: str,
    *,
    tenant: bool = False,
    public: bool = False,
    **options: Any,
) -> HTTPRouteHandler:
    """A route of the API: ``tenant`` routes accept tenant keys (the others are the
    admin's), ``public`` ones need no token; every answer is 200 on success and the
    error answers are documented."""
    if method is not get:
        options.setdefault("status_code", 200)
    return method(
        path,
        opt={"tenant": tenant, "public": public},
        responses=ERROR_RESPONSES,
        tags=[tag],
        **options,
    )


# --- conversions --------------------------------------------------------------------------


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def message_record(
    message: QueuedMessage,
    *,
    history: list[HistoryEntry] | None = None,
    why: Why | msgspec.UnsetType | None = msgspec.UNSET,
) -> MessageRecord:
    waiting = message.status in (Status.SCHEDULED, Status.DEFERRED)
    return MessageRecord(
        id=message.id,
        tenant_id=message.tenant_id,
        account_id=message.account_id,
        status=message.status,
        priority=message.priority,
        batch_code=message.batch_code,
        deferred_ts=_ts(message.due_ts) if waiting else None,
        sent_ts=_ts(message.sent_ts),
        error_ts=_ts(message.error_ts),
        error=message.error,
        smtp_code=message.smtp_code,
        attempts=message.attempts,
        created_at=int(message.created_ts),
        updated_at=int(message.updated_ts),
        message_id=message.message_id,
        metadata=message.spec.metadata,
        possible_duplicate=message.possible_duplicate,
        history=(
            msgspec.UNSET
            if history is None
            else [HistoryRecord(h.event, int(h.ts), h.detail) for h in history]
        ),
        why=why,
    )


#: Setting names that hold a secret: left out of every answer that shows settings.
_SECRET_NAME = re.compile(r"(token|password|secret|_key|_keys)$")
#: Query parameters of a URL that carry a credential (libpq ``password``, presigned
#: signatures, access tokens).
_SECRET_PARAM = re.compile(r"pass|secret|token|sig|credential|key", re.IGNORECASE)
REDACTED = "***"


def redacted_url(value: str) -> str:
    """``value`` with the password of its userinfo and any credential-like query parameter
    replaced by ``***``; a string that is not a URL is returned as it is."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return REDACTED  # not parseable: it may hold anything
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    query = urlencode(
        [
            (name, REDACTED if _SECRET_PARAM.search(name) else item)
            for name, item in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as shown by ``GET /instance``: no secret setting, and URL-valued ones
    (``storage.db_path``, endpoints) without their passwords."""
    values: dict[str, Any] = msgspec.to_builtins(settings)
    for name, section in values.items():
        if isinstance(section, dict):
            values[name] = {
                key: redacted_url(value) if isinstance(value, str) else value
                for key, value in section.items()
                if not _SECRET_NAME.search(key)
            }
        elif isinstance(section, str):
            values[name] = redacted_url(section)
    return values


def account_record(account: Account) -> AccountRecord:
    fields = msgspec.structs.asdict(account)
    fields.pop("password")
    return AccountRecord(**fields, has_password=account.password is not None)


def tenant_record(tenant: Tenant, suspended: list[str]) -> TenantRecord:
    return TenantRecord(
        id=tenant.id,
        name=tenant.name,
        active=tenant.active,
        client_base_url=(
            None if tenant.client_base_url is None else redacted_url(tenant.client_base_url)
        ),
        client_sync_path=tenant.client_sync_path,
        client_attachment_path=tenant.client_attachment_path,
        client_auth=ClientAuthRecord(tenant.client_auth.method),
        rate_limits=tenant.rate_limits,
        has_webhook_secret=tenant.webhook_secret is not None,
        has_webhook_secret_previous=tenant.webhook_secret_previous is not None,
        attachment_url_prefixes=[redacted_url(u) for u in tenant.attachment_url_prefixes],
        unknown_policy=tenant.unknown_policy,
        suspended_batches=suspended,
    )


def _decode(raw: bytes, model: type[Any], *, empty_ok: bool = False) -> Any:
    """Decode a JSON body into ``model``; 422 (naming the field) when it does not fit."""
    if not raw.strip():
        if empty_ok:
            return model()
        raise InvalidInput("body", "missing body: expected a JSON object")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("$.", 1)[-1].split("[")[0] if "$." in text else "body"
        raise InvalidInput(field, f"invalid body: {text}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidInput("body", f"malformed JSON: {exc}") from None


# --- the app ------------------------------------------------------------------------------


TenantQuery = Annotated[
    str | None,
    QueryParameter(
        description="the tenant (the admin must name it; implied by a tenant key)",
        max_length=64,
    ),
]


def create_app(
    proxy: MailProxy, settings: Settings, *, insecure: bool = False, own_proxy: bool = True
) -> Litestar:
    """The Litestar app serving ``proxy``; unless ``own_proxy`` is false (the caller opens
    and closes it), the app opens the proxy at startup and shuts it down (finishing
    in-flight sends) at shutdown. Raises :class:`InvalidInput` when there is no admin
    token and ``insecure`` is false (see the CLI's ``serve --insecure``)."""
    admin_token = settings.server.api_token
    if admin_token is None and not insecure:
        raise InvalidInput("server.api_token", "no admin token: set GMP_API_TOKEN")
    if admin_token is not None and len(admin_token) < MIN_ADMIN_TOKEN:
        raise InvalidInput(
            "server.api_token", f"admin token too short: at least {MIN_ADMIN_TOKEN} characters"
        )
    if admin_token is not None and len(admin_token) < SHORT_ADMIN_TOKEN:
        log.warning(
            "server.short_admin_token", extra={"advice": f"use {SHORT_ADMIN_TOKEN}+ characters"}
        )
    proxy_clock = proxy.now
    # The delivery metrics' registry when the proxy has one (one registry per app, no
    # global state); the queue gauges below are read from the store at each scrape.
    events = proxy.events
    metrics_registry = (
        events.registry if isinstance(events, PrometheusMetrics) else CollectorRegistry()
    )
    backlog_gauge = Gauge(
        "gmp_report_backlog",
        "Unacknowledged delivery-report entries per tenant",
        ["tenant_id"],
        registry=metrics_registry,
    )
    report_calls_gauge = Gauge(
        "gmp_report_calls",
        "Report calls made by this process since it started, by outcome",
        ["tenant_id", "outcome"],
        registry=metrics_registry,
    )
    cache_gauge = Gauge(
        "gmp_attachment_cache",
        "Attachment cache lookups of this process since it started, by result",
        ["result"],
        registry=metrics_registry,
    )
    oldest_pending_gauge = Gauge(
        "gmp_oldest_pending_age_seconds",
        "Age of the oldest message not yet final, per tenant",
        ["tenant_id"],
        registry=metrics_registry,
    )
    oldest_report_gauge = Gauge(
        "gmp_report_oldest_pending_age_seconds",
        "Age of the oldest unacknowledged report entry per tenant",
        ["tenant_id"],
        registry=metrics_registry,
    )
    pending_gauge = Gauge(
        "gmp_pending_messages",
        "Stored messages by status",
        ["status"],
        registry=metrics_registry,
    )
    auth_failures = Counter(
        "gmp_auth_failures",
        "Failed authentications (API and /ui sign-in): wrong credentials, and attempts "
        "refused unchecked because their address had too many",
        ["outcome"],
        registry=metrics_registry,
    )
    security = settings.security
    failures = FailedAuthentications(
        ThrottlePolicy(
            max_failures=security.auth_max_failures, window_s=security.auth_failure_window_s
        )
    )
    session_secret = (
        security.encryption_keys[0].encode()
        if security.encryption_keys
        else secrets.token_bytes(32)
    )
    sessions = (
        None
        if admin_token is None
        else Sessions(admin_token, session_secret, security.ui_session_s)
    )

    def count_failure(outcome: str) -> None:
        auth_failures.labels(outcome=outcome).inc()

    per_tenant_gauges = (
        backlog_gauge,
        report_calls_gauge,
        oldest_pending_gauge,
        oldest_report_gauge,
    )

    async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
        token = connection.headers.get("x-api-token")
        if token is None:
            scheme, _, value = connection.headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            if admin_token is None:
                return ADMIN  # --insecure on loopback
            raise Unauthorized("missing token: send X-API-Token or Authorization: Bearer")
        client = connection.client.host if connection.client is not None else "unknown"
        wait = failures.retry_after(client, proxy_clock())
        if wait is not None:
            count_failure("throttled")
            raise TooManyAttempts(wait)
        if admin_token is not None and same_secret(token, admin_token):
            return ADMIN
        tenant_id = await proxy.tenant_of_key(token)
        if tenant_id is None:
            failures.failed(client, proxy_clock())
            count_failure("wrong")
            raise Unauthorized("invalid token")
        return Caller(tenant_id)

    async def authorize(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Guard of every route (before its body is read): public routes and the schema
        pass; the others need a token, and the admin's routes refuse tenant keys."""
        if handler.opt.get("public", False) or connection.scope["path"].startswith("/schema"):
            return
        caller = await authenticate(connection)
        if not handler.opt.get("tenant", False):
            require_admin(caller)
        connection.state.caller = caller

    async def who(request: Request[Any, Any, Any]) -> Caller:
        """The caller the guard authenticated."""
        caller: Caller = request.state.caller
        return caller

    async def scoped(caller: Caller, tenant_id: str | None) -> str:
        """The tenant a request acts on; 404 for an admin naming a missing tenant."""
        scope = scope_tenant(caller, tenant_id)
        await proxy.get_tenant(scope)
        return scope

    # --- messages ---------------------------------------------------------------------

    @route(post, "/commands/add-messages", "messages", tenant=True)
    async def add_messages(
        request: Request[Any, Any, Any],
        data: Annotated[AddMessagesBody, Body(examples=[ADD_MESSAGES_EXAMPLE])],
        tenant_id: TenantQuery = None,
    ) -> Response[bytes]:
        """Queue messages; each bad one is rejected with a reason, the others are committed
        to storage before the answer. Optional ``Idempotency-Key`` header."""
        caller = await who(request)
        raw = await request.body()
        body = data
        scope = scope_tenant(caller, tenant_id) if caller.tenant_id or tenant_id else None
        if caller.tenant_id is not None:
            for message in body.messages:
                named = message.get("tenant_id")
                if named is not None and named != caller.tenant_id:
                    raise Forbidden("a tenant key acts only inside its own tenant")
        elif scope is not None:
            await proxy.get_tenant(scope)

        # Each message's ranges are the domain's (validation), rejected one by one.
        key = request.headers.get("idempotency-key")
        if key is None:
            result = await proxy.submit(
                body.messages, tenant_id=scope, default_priority=body.default_priority
            )
        else:
            result = await proxy.submit_once(
                body.messages,
                caller=caller,
                idempotency_key=key,
                fingerprint=hashlib.sha256(f"{scope}\n".encode() + raw).hexdigest(),
                tenant_id=scope,
                default_priority=body.default_priority,
            )
        rejected = [RejectedMessage(r.id, r.reason) for r in result.rejected]
        answer = AddMessagesAnswer(queued=result.queued, rejected=rejected)
        status = 200
        if result.queued == 0 and any(r.reason not in HARMLESS_REJECTIONS for r in rejected):
            status = 400
            answer = AddMessagesAnswer(
                ok=False,
                queued=0,
                rejected=rejected,
                error=f"no message queued: {rejected[0].id}: {rejected[0].reason}",
            )
        return Response(msgspec.json.encode(answer), status_code=status, media_type=MediaType.JSON)

    @route(get, "/messages", "messages", tenant=True)
    async def list_messages(
        request: Request[Any, Any, Any],
        tenant_id: TenantQuery = None,
        status: Annotated[list[Status] | None, QueryParameter(description="repeatable")] = None,
        batch_code: Annotated[str | None, QueryParameter(max_length=64)] = None,
        active_only: FromQuery[bool] = False,
        include_history: FromQuery[bool] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=32)] = None,
    ) -> MessagesAnswer:
        """The tenant's messages in acceptance order, filtered, a page at a time."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        page = await proxy.list_messages(
            scope,
            statuses=status or (),
            batch_code=batch_code,
            active_only=active_only,
            limit=limit,
            cursor=cursor,
        )
        records = []
        for message in page.messages:
            history = await proxy.message_history(scope, message.id) if include_history else None
            records.append(message_record(message, history=history))
        return MessagesAnswer(messages=records, next_cursor=page.next_cursor)

    @route(get, "/messages/{message_id:str}", "messages", tenant=True)
    async def get_message(
        request: Request[Any, Any, Any], message_id: FromPath[str], tenant_id: TenantQuery = None
    ) -> MessageAnswer:
        """One message with its history and, while it is not final, why it has not gone."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        message = await proxy.get_message(scope, message_id)
        history = await proxy.message_history(scope, message_id)
        why = await proxy.why(scope, message_id)
        return MessageAnswer(message=message_record(message, history=history, why=why))

    @route(post, "/commands/delete-messages", "messages", tenant=True)
    async def delete_messages(
        request: Request[Any, Any, Any], data: JSONBody[IdsBody], tenant_id: TenantQuery = None
    ) -> DeleteAnswer:
        """Remove messages whatever their status, except those being sent right now."""
        caller = await who(request)
        body = data
        scope = await scoped(caller, tenant_id)
        result = await proxy.delete_messages(scope, body.ids)
        return DeleteAnswer(
            removed=result.removed, not_found=result.not_found, in_flight=result.in_flight
        )

    @route(post, "/commands/cleanup-messages", "messages", tenant=True)
    async def cleanup_messages(
        request: Request[Any, Any, Any], tenant_id: TenantQuery = None
    ) -> RemovedAnswer:
        """Remove final, reported messages older than ``older_than_seconds``."""
        caller = await who(request)
        body: CleanupBody = _decode(await request.body(), CleanupBody, empty_ok=True)
        scope = await scoped(caller, tenant_id)
        removed = await proxy.cleanup(scope, body.older_than_seconds)
        return RemovedAnswer(removed=removed)

    @route(post, "/commands/run-now", "messages", tenant=True)
    async def run_now(request: Request[Any, Any, Any], tenant_id: TenantQuery = None) -> OkAnswer:
        """Wake the dispatcher at once."""
        caller = await who(request)
        scope = None
        if tenant_id is not None or caller.tenant_id is not None:
            scope = await scoped(caller, tenant_id)
        proxy.run_now(scope)
        return OkAnswer()

    async def suspension(
        caller: Caller,
        tenant_id: str | None,
        batch_code: str | None,
        change: Callable[[str, str | None], Awaitable[Any]],
    ) -> SuspendAnswer:
        scope = await scoped(caller, tenant_id)
        state = await change(scope, batch_code)
        return SuspendAnswer(
            tenant_id=state.tenant_id,
            suspended_batches=state.suspended_batches,
            pending_messages=state.pending_messages,
        )

    @route(post, "/commands/suspend", "messages", tenant=True)
    async def suspend(
        request: Request[Any, Any, Any],
        tenant_id: TenantQuery = None,
        batch_code: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> SuspendAnswer:
        """Stop sending the tenant's messages, or one batch's; they stay queued."""
        caller = await who(request)
        return await suspension(caller, tenant_id, batch_code, proxy.suspend)

    @route(post, "/commands/activate", "messages", tenant=True)
    async def activate(
        request: Request[Any, Any, Any],
        tenant_id: TenantQuery = None,
        batch_code: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> SuspendAnswer:
        """Resume a suspended tenant or batch; the dispatcher wakes at once."""
        caller = await who(request)
        return await suspension(caller, tenant_id, batch_code, proxy.activate)

    # --- accounts ---------------------------------------------------------------------

    @route(post, "/account", "accounts", tenant=True)
    async def put_account(
        request: Request[Any, Any, Any],
        data: Annotated[AccountBody, Body(examples=[ACCOUNT_EXAMPLE])],
        tenant_id: TenantQuery = None,
    ) -> AccountAnswer:
        """Create or replace an SMTP (or capture) account."""
        caller = await who(request)
        fields = _given(data)
        scope = await scoped(caller, fields.get("tenant_id") or tenant_id)
        if tenant_id is not None and tenant_id != scope:
            raise InvalidInput("tenant_id", "invalid tenant_id: query and body differ")
        account = await proxy.put_account(fields | {"tenant_id": scope}, caller=caller)
        if not account.tls_verify:
            log.warning("account.tls_verify_off", extra={"tenant": scope, "account": account.id})
        return AccountAnswer(account=account_record(account))

    @route(get, "/accounts", "accounts", tenant=True)
    async def list_accounts(
        request: Request[Any, Any, Any], tenant_id: TenantQuery = None
    ) -> AccountsAnswer:
        """The tenant's accounts."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        return AccountsAnswer(
            accounts=[account_record(a) for a in await proxy.list_accounts(scope)]
        )

    @route(delete, "/account/{account_id:str}", "accounts", tenant=True)
    async def delete_account(
        request: Request[Any, Any, Any],
        account_id: FromPath[str],
        tenant_id: TenantQuery = None,
        force: FromQuery[bool] = False,
    ) -> OkAnswer:
        """Remove an account; 409 while it has queued messages unless ``force``, which
        fails them with ``account deleted``."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        await proxy.delete_account(scope, account_id, force=force)
        return OkAnswer()

    # --- tenants ----------------------------------------------------------------------

    async def record_of(tenant: Tenant) -> TenantRecord:
        return tenant_record(tenant, await proxy.store.suspended_batches(tenant.id))

    @route(post, "/tenant", "tenants")
    async def create_tenant(
        request: Request[Any, Any, Any],
        data: Annotated[TenantBody, Body(examples=[TENANT_EXAMPLE])],
    ) -> CreatedTenantAnswer:
        """Create a tenant; its API key and webhook secret are shown only in this answer."""
        await who(request)
        created = await proxy.create_tenant(_given(data))
        return CreatedTenantAnswer(
            tenant=await record_of(created.tenant),
            api_key=created.api_key,
            webhook_secret=created.webhook_secret,
        )

    @route(get, "/tenants", "tenants")
    async def list_tenants(request: Request[Any, Any, Any]) -> TenantsAnswer:
        """Every tenant."""
        await who(request)
        return TenantsAnswer(tenants=[await record_of(t) for t in await proxy.list_tenants()])

    @route(get, "/tenants/sync-status", "tenants")
    async def sync_status(request: Request[Any, Any, Any]) -> SyncStatusAnswer:
        """Delivery-report state per tenant: last successful call, next call due, whether
        the application asked for quiet (``next_sync_after``), backlog and last error."""
        await who(request)
        now = proxy_clock()
        records = [
            SyncStatusRecord(
                id=tenant.id,
                last_sync_ts=_ts(state.last_sync_ts),
                next_sync_due=None if due is None else int(max(due, now)),
                in_dnd=state.quiet_until > now,
                pending_reports=backlog.count,
                last_error=state.last_error,
            )
            for tenant, state, backlog, due in await proxy.sync_status()
        ]
        return SyncStatusAnswer(
            sync_interval_seconds=int(settings.reporting.sync_interval_s), tenants=records
        )

    @route(get, "/tenant/{tenant_id:str}", "tenants", tenant=True)
    async def get_tenant(request: Request[Any, Any, Any], tenant_id: FromPath[str]) -> TenantAnswer:
        """One tenant (admin, or that tenant's key)."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        return TenantAnswer(tenant=await record_of(await proxy.get_tenant(scope)))

    @route(put, "/tenant/{tenant_id:str}", "tenants", tenant=True)
    async def update_tenant(
        request: Request[Any, Any, Any], data: JSONBody[TenantChanges], tenant_id: FromPath[str]
    ) -> TenantAnswer:
        """Change some fields; a tenant key may change only ``name``."""
        caller = await who(request)
        scope = await scoped(caller, tenant_id)
        tenant = await proxy.update_tenant(scope, _given(data), caller)
        return TenantAnswer(tenant=await record_of(tenant))

    @route(delete, "/tenant/{tenant_id:str}", "tenants")
    async def delete_tenant(request: Request[Any, Any, Any], tenant_id: FromPath[str]) -> OkAnswer:
        """Remove a tenant with its accounts, messages and history."""
        await who(request)
        await proxy.delete_tenant(tenant_id)
        return OkAnswer()

    @route(post, "/tenant/{tenant_id:str}/api-key", "tenants")
    async def rotate_key(request: Request[Any, Any, Any], tenant_id: FromPath[str]) -> ApiKeyAnswer:
        """A new API key for the tenant; the old one stops working at once."""
        await who(request)
        body: ApiKeyBody = _decode(await request.body(), ApiKeyBody, empty_ok=True)
        key = await proxy.rotate_tenant_key(tenant_id, expires_ts=body.expires_at)
        return ApiKeyAnswer(api_key=key)

    @route(delete, "/tenant/{tenant_id:str}/api-key", "tenants")
    async def revoke_key(request: Request[Any, Any, Any], tenant_id: FromPath[str]) -> OkAnswer:
        """Revoke the tenant's API key."""
        await who(request)
        await proxy.revoke_tenant_key(tenant_id)
        return OkAnswer()

    @route(post, "/tenant/{tenant_id:str}/webhook-secret", "tenants")
    async def rotate_secret(
        request: Request[Any, Any, Any], tenant_id: FromPath[str]
    ) -> WebhookSecretAnswer:
        """A new webhook secret, shown only in this answer. The one it replaces keeps
        signing report calls beside it (``webhook_secret_previous``) until
        ``DELETE /tenant/{id}/webhook-secret/previous``."""
        await who(request)
        return WebhookSecretAnswer(webhook_secret=await proxy.rotate_webhook_secret(tenant_id))

    @route(delete, "/tenant/{tenant_id:str}/webhook-secret/previous", "tenants")
    async def retire_secret(request: Request[Any, Any, Any], tenant_id: FromPath[str]) -> OkAnswer:
        """End a webhook secret rotation: the previous secret stops signing."""
        await who(request)
        await proxy.retire_webhook_secret(tenant_id)
        return OkAnswer()

    # --- service ----------------------------------------------------------------------

    @route(get, "/health", "service", public=True)
    async def health() -> Response[HealthAnswer]:
        """Liveness and storage reachability (503 when storage cannot be reached)."""
        try:
            await proxy.counts("")  # no tenant has the empty id: a cheap round trip
        except MailProxyError:
            return Response(HealthAnswer(ok=False, status="unavailable"), status_code=503)
        return Response(HealthAnswer(ok=True, status="ok", version=__version__))

    @route(get, "/status", "service", tenant=True)
    async def status(request: Request[Any, Any, Any]) -> StatusAnswer:
        """Queue counts by status (the tenant's own for a tenant key)."""
        caller = await who(request)
        counts = await proxy.counts(caller.tenant_id)
        return StatusAnswer(
            active=True,
            version=__version__,
            queue={str(s): counts.get(s, 0) for s in Status},
        )

    @route(get, "/instance", "service")
    async def instance(request: Request[Any, Any, Any]) -> InstanceAnswer:
        """The instance's settings, without secrets (see :func:`public_settings`)."""
        await who(request)
        return InstanceAnswer(
            name=settings.instance_name, version=__version__, settings=public_settings(settings)
        )

    @route(get, "/metrics", "service", public=True, media_type=CONTENT_TYPE_LATEST)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text exposition."""
        if not settings.security.metrics_public:
            require_admin(await authenticate(request))
        for state, count in (await proxy.counts()).items():
            pending_gauge.labels(status=str(state)).set(count)
        if proxy.attachment_cache is not None:
            cache_gauge.labels(result="hit").set(proxy.attachment_cache.hits)
            cache_gauge.labels(result="miss").set(proxy.attachment_cache.misses)
        now = proxy_clock()
        # Tenants with delivery series before the store is read: those the store then no
        # longer has were deleted (perhaps by another process), and their series go.
        seen = events.tenant_ids() if isinstance(events, PrometheusMetrics) else set()
        rows = []
        for tenant, sync, backlog, _ in await proxy.sync_status():
            oldest = await proxy.list_messages(tenant.id, active_only=True, limit=1)
            pending_age = max(0.0, now - oldest.messages[0].created_ts) if oldest.messages else 0.0
            report_age = 0.0 if backlog.oldest_ts is None else max(0.0, now - backlog.oldest_ts)
            rows.append((tenant.id, sync, backlog.count, pending_age, report_age))
        # Rebuilt at each scrape without an await in between: a tenant deleted (by any
        # process) loses its series, and a concurrent scrape never sees half of them.
        for gauge in per_tenant_gauges:
            gauge.clear()
        for tenant_id, sync, backlog_count, pending_age, report_age in rows:
            oldest_pending_gauge.labels(tenant_id=tenant_id).set(pending_age)
            backlog_gauge.labels(tenant_id=tenant_id).set(backlog_count)
            ok_calls = sync.calls - sync.failed_calls
            report_calls_gauge.labels(tenant_id=tenant_id, outcome="ok").set(ok_calls)
            report_calls_gauge.labels(tenant_id=tenant_id, outcome="failed").set(sync.failed_calls)
            oldest_report_gauge.labels(tenant_id=tenant_id).set(report_age)
        if isinstance(events, PrometheusMetrics):
            for gone in seen - {row[0] for row in rows}:
                events.forget(gone)
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    # --- errors -----------------------------------------------------------------------

    def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return _problem_from(request, exc)

    handlers = [
        add_messages, list_messages, get_message, delete_messages, cleanup_messages, run_now,
        suspend, activate, put_account, list_accounts, delete_account, create_tenant,
        list_tenants, sync_status, get_tenant, update_tenant, delete_tenant, rotate_key,
        revoke_key, rotate_secret, retire_secret, health, status, instance, metrics,
    ]  # fmt: skip
    routes = [
        *handlers,
        *status_page_routes(
            proxy, admin_token, sessions=sessions, failures=failures, on_failure=count_failure
        ),
    ]

    @contextlib.asynccontextmanager
    async def running(app: Litestar) -> AsyncIterator[None]:
        async with proxy:
            yield

    return Litestar(
        route_handlers=routes,
        lifespan=[running] if own_proxy else [],
        before_request=bind_request_id,
        after_request=unbind_request_id,
        guards=[authorize],
        exception_handlers={Exception: on_error},
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="mailproxy",
            version=__version__,
            description=(
                "Durable, rate-limited email delivery: queue messages, send them over "
                "SMTP, report every outcome."
            ),
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "token": SecurityScheme(
                        type="apiKey", name="X-API-Token", security_scheme_in="header"
                    ),
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                }
            ),
            security=[{"token": []}, {"bearer": []}],
        ),
        debug=False,
        logging_config=None,
    )


async def bind_request_id(request: Request[Any, Any, Any]) -> None:
    """Every log line of a request carries its ``request_id``."""
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex)


async def unbind_request_id(response: Response[Any]) -> Response[Any]:
    structlog.contextvars.unbind_contextvars("request_id")
    return response


def _problem_from(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one place that maps errors to answers."""
    if isinstance(exc, InvalidInput):
        return _problem(
            422, "Unprocessable Content", exc.reason, [FieldError(exc.field, exc.reason)]
        )
    if isinstance(exc, ValidationException):
        errors = [
            FieldError(str(e.get("key", "")), str(e.get("message", "")))
            for e in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(e, dict)
        ]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or exc.detail
        return _problem(422, "Unprocessable Content", f"invalid request: {detail}", errors)
    if isinstance(exc, RecursionError | UnicodeDecodeError) or (
        isinstance(exc, ClientException) and exc.status_code == 400
    ):
        if isinstance(exc, RecursionError):
            detail = "malformed JSON: nested too deeply"
        elif isinstance(exc, UnicodeDecodeError):  # msgspec's error for bytes that are not UTF-8
            detail = f"malformed JSON: not UTF-8 at byte {exc.start}"
        else:
            detail = f"malformed body: {exc.detail}"
        return _problem(422, "Unprocessable Content", detail, [FieldError("body", detail)])
    status = {
        Unauthorized: 401,
        Forbidden: 403,
        NotFound: 404,
        Conflict: 409,
        StorageError: 503,
    }.get(type(exc))
    if status is not None:
        return Response(ErrorAnswer(error=str(exc)), status_code=status)
    if isinstance(exc, TooManyAttempts):
        return Response(
            ErrorAnswer(error=str(exc)),
            status_code=429,
            headers={"Retry-After": str(math.ceil(exc.retry_after_s))},
        )
    if isinstance(exc, HTTPException):
        return Response(
            ErrorAnswer(error=exc.detail),
            status_code=exc.status_code,
            headers=exc.headers or None,
        )
    request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex
    log.error(
        "http.unexpected_error",
        extra={"path": request.url.path, "request_id": request_id},
        exc_info=exc,
    )
    return Response(
        ErrorAnswer(error=f"internal error (request id {request_id})", request_id=request_id),
        status_code=500,
    )


def _problem(status: int, title: str, detail: str, errors: list[FieldError]) -> Response[Problem]:
    return Response(
        Problem(title=title, status=status, detail=detail, errors=errors, error=detail),
        status_code=status,
        media_type="application/problem+json",
    )


__all__ = ["create_app"]


def from_environment() -> Litestar:
    """An app built from ``GMP_*`` settings (and ``GMP_CONFIG``, a config.ini path), for
    ASGI servers that import a factory, e.g. ``uvicorn --factory
    mailproxy.entrypoints.http:from_environment``. The admin token is required here."""
    environ = dict(os.environ)
    config_file = environ.pop("GMP_CONFIG", None)
    settings = load_settings(config_file, environ)
    return create_app(build_proxy(settings), settings)
