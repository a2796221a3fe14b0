"""The routes of messages: add (with an optional ``Idempotency-Key``), list, read one,
delete, clean up, wake the dispatcher, suspend and activate a tenant or a batch."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, FromQuery, QueryParameter

from mailproxy.domain.access import Caller, scope_tenant
from mailproxy.domain.errors import Forbidden, InvalidInput
from mailproxy.domain.model import Status, SubmitResult
from mailproxy.entrypoints.http.auth import scoped
from mailproxy.entrypoints.http.records import message_record
from mailproxy.entrypoints.http.routing import TenantQuery, route, tenant_named
from mailproxy.entrypoints.http.schemas import (
    ADD_MESSAGES_EXAMPLE,
    IDS_EXAMPLE,
    AddMessagesAnswer,
    AddMessagesBody,
    CleanupBody,
    DeleteAnswer,
    IdsBody,
    MessageAnswer,
    MessagesAnswer,
    NoBody,
    OkAnswer,
    RejectedMessage,
    RemovedAnswer,
    SuspendAnswer,
    decode_body,
)
from mailproxy.service import MailProxy

#: Rejection reasons that do not make an add-messages request a failure when nothing was
#: queued: the client re-sent what is already on its way.
HARMLESS_REJECTIONS = frozenset({"already sent", "in flight"})

BatchCode = Annotated[str | None, QueryParameter(max_length=64)]


@route(
    post,
    "/commands/add-messages",
    "messages",
    summary="Queue messages",
    tenant=True,
    responses={
        400: ResponseSpec(
            AddMessagesAnswer,
            description="nothing queued for a reason other than a repeat (already sent, in flight)",
        )
    },
)
async def add_messages(
    request: Request[Any, Any, Any],
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[AddMessagesBody, Body(examples=[ADD_MESSAGES_EXAMPLE])],
    tenant_id: TenantQuery = None,
) -> Response[AddMessagesAnswer]:
    """Queue messages; each bad one is rejected with a reason, the others are committed
    to storage before the answer. The tenant is named by ``tenant_id`` (query or body; a
    tenant key implies its own) or by each message. Optional ``Idempotency-Key`` header."""
    named = tenant_named(tenant_id, data.tenant_id)
    scope = scope_tenant(caller, named) if caller.tenant_id or named else None
    if caller.tenant_id is not None:
        for message in data.messages:
            own = message.get("tenant_id")
            if own is not None and own != caller.tenant_id:
                raise Forbidden("a tenant key acts only inside its own tenant")
    elif scope is not None:
        await proxy.get_tenant(scope)
    key = request.headers.get("idempotency-key")
    if key is None:
        result = await proxy.submit(
            data.messages, tenant_id=scope, default_priority=data.default_priority
        )
    else:
        # The scope is part of what is fingerprinted: one key reused for another tenant
        # is a different request.
        fingerprint = hashlib.sha256(f"{scope}\n".encode() + await request.body()).hexdigest()
        result = await proxy.submit_once(
            data.messages,
            caller=caller,
            idempotency_key=key,
            fingerprint=fingerprint,
            tenant_id=scope,
            default_priority=data.default_priority,
        )
    status, answer = add_messages_answer(result, data.messages)
    return Response(answer, status_code=status)


def add_messages_answer(
    result: SubmitResult, messages: Sequence[object]
) -> tuple[int, AddMessagesAnswer]:
    """The HTTP rendering of a submission's result (a fresh one or one stored under an
    Idempotency-Key) for the request's ``messages``: 400 when nothing was queued for a
    reason other than a harmless repeat, 200 otherwise. Each message's ranges are the
    domain's, rejected one by one."""
    rejected = [RejectedMessage(r.id, r.reason) for r in result.rejected]
    if result.queued == 0 and any(r.reason not in HARMLESS_REJECTIONS for r in rejected):
        first = rejected[0]
        error = f"no message queued: {first.id or without_id(messages)}: {first.reason}"
        return 400, AddMessagesAnswer(ok=False, queued=0, rejected=rejected, error=error)
    return 200, AddMessagesAnswer(queued=result.queued, rejected=rejected)


def without_id(messages: Sequence[object]) -> str:
    """The place of the first message that has no usable id (``messages[2]``): how an
    error names a rejected message whose id is missing, empty or not a string. Those are
    the rejections without an id, and the first of them comes first in the answer."""
    for index, message in enumerate(messages):
        ident = message.get("id") if isinstance(message, dict) else None
        if not (isinstance(ident, str) and ident):
            return f"messages[{index}]"
    return "a message without an id"


@route(get, "/messages", "messages", summary="List messages", tenant=True)
async def list_messages(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
    status: Annotated[list[Status] | None, QueryParameter(description="repeatable")] = None,
    batch_code: BatchCode = None,
    active_only: FromQuery[bool] = False,
    include_history: FromQuery[bool] = False,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, QueryParameter(max_length=32)] = None,
) -> MessagesAnswer:
    """The tenant's messages in acceptance order, filtered, a page at a time."""
    scope = await scoped(proxy, caller, tenant_id)
    page = await proxy.list_messages(
        scope,
        statuses=status or (),
        batch_code=batch_code,
        active_only=active_only,
        limit=limit,
        cursor=cursor,
    )
    bounces = await proxy.suppressions.bounces_of(scope, [m.id for m in page.messages])
    records = []
    for message in page.messages:
        history = await proxy.message_history(scope, message.id) if include_history else None
        records.append(
            message_record(message, history=history, bounces=bounces.get(message.id, []))
        )
    return MessagesAnswer(messages=records, next_cursor=page.next_cursor)


@route(get, "/messages/{message_id:str}", "messages", summary="Show a message", tenant=True)
async def get_message(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    message_id: FromPath[str],
    tenant_id: TenantQuery = None,
) -> MessageAnswer:
    """One message with its history, while it is not final why it has not gone, and the
    bounces, complaints and delays reported of it since it was sent."""
    scope = await scoped(proxy, caller, tenant_id)
    message = await proxy.get_message(scope, message_id)
    history = await proxy.message_history(scope, message_id)
    why = await proxy.why(scope, message_id)
    bounces = (await proxy.suppressions.bounces_of(scope, [message_id])).get(message_id, [])
    record = message_record(message, history=history, why=why, bounces=bounces)
    return MessageAnswer(message=record)


@route(post, "/commands/delete-messages", "messages", summary="Delete messages", tenant=True)
async def delete_messages(
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    data: Annotated[IdsBody, Body(examples=[IDS_EXAMPLE])],
    tenant_id: TenantQuery = None,
) -> DeleteAnswer:
    """Remove messages whatever their status, except those being sent right now."""
    scope = await scoped(proxy, caller, tenant_id)
    result = await proxy.delete_messages(scope, data.ids)
    return DeleteAnswer(
        removed=result.removed, not_found=result.not_found, in_flight=result.in_flight
    )


@route(
    post,
    "/commands/cleanup-messages",
    "messages",
    summary="Remove old reported messages",
    tenant=True,
)
async def cleanup_messages(
    request: Request[Any, Any, Any],
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
) -> RemovedAnswer:
    """Remove final, reported messages older than ``older_than_seconds``."""
    body: CleanupBody = decode_body(await request.body(), CleanupBody, empty_ok=True)
    scope = await scoped(proxy, caller, tenant_id)
    removed = await proxy.cleanup(scope, body.older_than_seconds)
    return RemovedAnswer(removed=removed)


async def no_body(request: Request[Any, Any, Any]) -> None:
    """A command's body is empty or ``{}``: a field in it would otherwise be ignored (a
    ``batch_code`` there would suspend the whole tenant)."""
    try:
        decode_body(await request.body(), NoBody, empty_ok=True)
    except InvalidInput as exc:
        raise InvalidInput(
            exc.field,
            f"{exc.reason} (this command takes no body: tenant_id and batch_code go in the query)",
        ) from None


@route(post, "/commands/run-now", "messages", summary="Send now", tenant=True)
async def run_now(
    request: Request[Any, Any, Any],
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
) -> OkAnswer:
    """Wake the dispatcher at once."""
    await no_body(request)
    scope = None
    if tenant_id is not None or caller.tenant_id is not None:
        scope = await scoped(proxy, caller, tenant_id)
    proxy.run_now(scope)
    return OkAnswer()


async def suspension(
    request: Request[Any, Any, Any],
    proxy: MailProxy,
    caller: Caller,
    tenant_id: str | None,
    batch_code: str | None,
    change: Callable[[str, str | None], Awaitable[Any]],
) -> SuspendAnswer:
    await no_body(request)
    scope = await scoped(proxy, caller, tenant_id)
    state = await change(scope, batch_code)
    return SuspendAnswer(
        tenant_id=state.tenant_id,
        suspended_batches=state.suspended_batches,
        pending_messages=state.pending_messages,
    )


@route(post, "/commands/suspend", "messages", summary="Suspend sending", tenant=True)
async def suspend(
    request: Request[Any, Any, Any],
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
    batch_code: BatchCode = None,
) -> SuspendAnswer:
    """Stop sending the tenant's messages, or one batch's; they stay queued."""
    return await suspension(request, proxy, caller, tenant_id, batch_code, proxy.suspend)


@route(post, "/commands/activate", "messages", summary="Resume sending", tenant=True)
async def activate(
    request: Request[Any, Any, Any],
    proxy: NamedDependency[MailProxy],
    caller: NamedDependency[Caller],
    tenant_id: TenantQuery = None,
    batch_code: BatchCode = None,
) -> SuspendAnswer:
    """Resume a suspended tenant or batch; the dispatcher wakes at once."""
    return await suspension(request, proxy, caller, tenant_id, batch_code, proxy.activate)


MESSAGE_ROUTES = [
    add_messages, list_messages, get_message, delete_messages, cleanup_messages, run_now,
    suspend, activate,
]  # fmt: skip
