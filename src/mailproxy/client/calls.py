"""What each call of the HTTP API sends and how its answer is read, written once for the
synchronous and the asynchronous client: a :class:`Call` per route, the errors an answer
becomes, and the retry rule.

Retries: a call marked ``retry`` (reads, and sends that carry an ``Idempotency-Key``, so
that a repeat returns the stored answer instead of queueing twice) is tried again after a
transport error, a 5xx or a 429, up to the client's ``retries``, waiting as the answer's
``Retry-After`` says or else 0.5 s doubling to 8 s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from mailproxy.client import types

T = TypeVar("T")

#: The backoff between tries without a ``Retry-After``: the first wait, the longest.
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 8.0


class ApiError(Exception):
    """The service refused a call: ``status``, its one-line ``error``, and for a body
    that did not fit the schema the ``errors`` per field (RFC 9457 problem details)."""

    def __init__(self, status: int, error: str, errors: Sequence[types.FieldError] = ()) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        self.errors = list(errors)


class Unauthorized(ApiError):
    """401: no token, or one the service does not know."""


class Forbidden(ApiError):
    """403: the token may not do this (a tenant key naming another tenant, or an
    admin-only route)."""


class NotFound(ApiError):
    """404: no such tenant, account, message, key or suppressed address."""


class Conflict(ApiError):
    """409: the call contradicts the current state."""


class InvalidRequest(ApiError):
    """400 or 422: the body or a parameter is wrong (``errors`` names the fields)."""


class Rejected(InvalidRequest):
    """Every message of a send was rejected: ``rejected`` holds each one's reason."""

    def __init__(self, status: int, error: str, rejected: Sequence[types.RejectedMessage]):
        super().__init__(status, error)
        self.rejected = list(rejected)


class TooManyRequests(ApiError):
    """429: throttled; ``retry_after_s`` says when to try again."""

    def __init__(self, status: int, error: str, retry_after_s: float | None) -> None:
        super().__init__(status, error)
        self.retry_after_s = retry_after_s


class ServerError(ApiError):
    """5xx: the service could not do it now (the store unavailable, shutting down)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    422: InvalidRequest,
}  # fmt: skip


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer: ``read`` turns the decoded answer (of
    type ``answer``) into what the method returns."""

    method: str
    path: str
    answer: type[Any]
    read: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Safe to send again: a read, or a send under an Idempotency-Key.
    retry: bool = False
    #: The answer is text (metrics, CSV), not JSON.
    text: bool = False

    def request(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request``."""
        options: dict[str, Any] = {
            "params": {k: v for k, v in self.params.items() if v is not None}
        }
        if self.body is not None:
            options["content"] = msgspec.json.encode(plain(self.body))
            options["headers"] = {"Content-Type": "application/json", **self.headers}
        elif self.headers:
            options["headers"] = dict(self.headers)
        return options

    def result(self, response: httpx.Response) -> T:
        """The method's result from a 2xx ``response``, or the error it is."""
        if response.status_code >= 300:
            raise error_of(response)
        if self.text:
            return self.read(response.text)
        return self.read(msgspec.json.decode(response.content, type=self.answer))


def plain(value: Any) -> Any:
    """A Struct (or anything holding Structs) as JSON-ready builtins; a mapping as is."""
    return msgspec.to_builtins(value)


def error_of(response: httpx.Response) -> ApiError:
    """The typed error of a refused call."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = str(body.get("error") or body.get("detail") or response.reason_phrase)
    status = response.status_code
    if status == 429:
        return TooManyRequests(status, message, retry_after(response))
    if status >= 500:
        return ServerError(status, message)
    if "rejected" in body:
        rejected = msgspec.convert(body["rejected"], list[types.RejectedMessage])
        return Rejected(status, message, rejected)
    errors = msgspec.convert(body.get("errors") or [], list[types.FieldError])
    return _BY_STATUS.get(status, ApiError)(status, message, errors)


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks for (a number of seconds), or None."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def retry_wait(
    call: Call[Any], attempt: int, retries: int, response: httpx.Response | None
) -> float | None:
    """Seconds to wait before trying ``call`` again after try ``attempt`` ended with
    ``response`` (None: a transport error); None when it is not tried again."""
    # A 409 to a send under an Idempotency-Key: the first try is still being handled
    # (its answer was lost on the way); asking again later gets its stored answer.
    still_handled = (
        response is not None and response.status_code == 409 and "Idempotency-Key" in call.headers
    )
    if not call.retry or attempt > retries or not (should_retry(response) or still_handled):
        return None
    return wait_before(attempt, response)


def messages_query(
    tenant_id: str | None,
    status: Sequence[str],
    batch_code: str | None,
    active_only: bool,
    include_history: bool,
    page_size: int,
) -> dict[str, Any]:
    """The query of a ``GET /messages`` listing."""
    return {
        "tenant_id": tenant_id, "status": list(status) or None, "batch_code": batch_code,
        "active_only": "true" if active_only else None,
        "include_history": "true" if include_history else None, "limit": page_size,
    }  # fmt: skip


def should_retry(response: httpx.Response | None) -> bool:
    """Whether a try that ended with ``response`` (None: a transport error) may be
    repeated: no answer, a 5xx, or a 429."""
    return response is None or response.status_code >= 500 or response.status_code == 429


def wait_before(attempt: int, response: httpx.Response | None) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
    asked = retry_after(response) if response is not None else None
    if asked is not None:
        return min(asked, 60.0)
    return min(LONGEST_WAIT_S, FIRST_WAIT_S * 2.0 ** (attempt - 1))


def _segment(value: str) -> str:
    return quote(value, safe="")


def _identity(value: T) -> T:
    return value


# --- the routes ---------------------------------------------------------------------------


def health() -> Call[types.HealthAnswer]:
    return Call("GET", "/health", types.HealthAnswer, _identity, retry=True)


def instance() -> Call[types.InstanceAnswer]:
    return Call("GET", "/instance", types.InstanceAnswer, _identity, retry=True)


def status() -> Call[types.StatusAnswer]:
    return Call("GET", "/status", types.StatusAnswer, _identity, retry=True)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", str, _identity, retry=True, text=True)


def create_tenant(tenant: Any) -> Call[types.CreatedTenantAnswer]:
    return Call("POST", "/tenant", types.CreatedTenantAnswer, _identity, body=tenant)


def list_tenants() -> Call[list[types.TenantRecord]]:
    return Call("GET", "/tenants", types.TenantsAnswer, lambda a: a.tenants, retry=True)


def sync_status() -> Call[list[types.SyncStatusRecord]]:
    return Call(
        "GET", "/tenants/sync-status", types.SyncStatusAnswer, lambda a: a.tenants, retry=True
    )


def get_tenant(tenant_id: str) -> Call[types.TenantRecord]:
    path = f"/tenant/{_segment(tenant_id)}"
    return Call("GET", path, types.TenantAnswer, lambda a: a.tenant, retry=True)


def update_tenant(tenant_id: str, changes: Any) -> Call[types.TenantRecord]:
    path = f"/tenant/{_segment(tenant_id)}"
    return Call("PUT", path, types.TenantAnswer, lambda a: a.tenant, body=changes)


def delete_tenant(tenant_id: str) -> Call[None]:
    return Call("DELETE", f"/tenant/{_segment(tenant_id)}", types.OkAnswer, _nothing)


def rotate_api_key(tenant_id: str, expires_at: int | None) -> Call[str]:
    body = {} if expires_at is None else {"expires_at": expires_at}
    path = f"/tenant/{_segment(tenant_id)}/api-key"
    return Call("POST", path, types.ApiKeyAnswer, lambda a: a.api_key, body=body)


def revoke_api_key(tenant_id: str) -> Call[None]:
    return Call("DELETE", f"/tenant/{_segment(tenant_id)}/api-key", types.OkAnswer, _nothing)


def rotate_webhook_secret(tenant_id: str) -> Call[str]:
    path = f"/tenant/{_segment(tenant_id)}/webhook-secret"
    return Call("POST", path, types.WebhookSecretAnswer, lambda a: a.webhook_secret)


def retire_webhook_secret(tenant_id: str) -> Call[None]:
    path = f"/tenant/{_segment(tenant_id)}/webhook-secret/previous"
    return Call("DELETE", path, types.OkAnswer, _nothing)


def put_account(account: Any, tenant_id: str | None) -> Call[types.AccountRecord]:
    return Call(
        "POST", "/account", types.AccountAnswer, lambda a: a.account,
        params={"tenant_id": tenant_id}, body=account,
    )  # fmt: skip


def list_accounts(tenant_id: str | None) -> Call[list[types.AccountRecord]]:
    return Call(
        "GET", "/accounts", types.AccountsAnswer, lambda a: a.accounts,
        params={"tenant_id": tenant_id}, retry=True,
    )  # fmt: skip


def delete_account(account_id: str, tenant_id: str | None, force: bool) -> Call[None]:
    params = {"tenant_id": tenant_id, "force": "true" if force else None}
    path = f"/account/{_segment(account_id)}"
    return Call("DELETE", path, types.OkAnswer, _nothing, params=params)


def add_messages(
    messages: Sequence[Any],
    tenant_id: str | None,
    default_priority: int | str | None,
    idempotency_key: str | None,
) -> Call[types.AddMessagesAnswer]:
    body: dict[str, Any] = {"messages": [plain(m) for m in messages]}
    if default_priority is not None:
        body["default_priority"] = default_priority
    key = idempotency_key or uuid.uuid4().hex
    return Call(
        "POST", "/commands/add-messages", types.AddMessagesAnswer, _identity,
        params={"tenant_id": tenant_id}, body=body, headers={"Idempotency-Key": key},
        retry=True,
    )  # fmt: skip


def get_message(message_id: str, tenant_id: str | None) -> Call[types.MessageRecord]:
    return Call(
        "GET", f"/messages/{_segment(message_id)}", types.MessageAnswer, lambda a: a.message,
        params={"tenant_id": tenant_id}, retry=True,
    )  # fmt: skip


def messages_page(params: Mapping[str, Any], cursor: str | None) -> Call[types.MessagesAnswer]:
    return Call(
        "GET", "/messages", types.MessagesAnswer, _identity,
        params={**params, "cursor": cursor}, retry=True,
    )  # fmt: skip


def delete_messages(ids: Sequence[str], tenant_id: str | None) -> Call[types.DeleteAnswer]:
    return Call(
        "POST", "/commands/delete-messages", types.DeleteAnswer, _identity,
        params={"tenant_id": tenant_id}, body={"ids": list(ids)},
    )  # fmt: skip


def cleanup_messages(tenant_id: str | None) -> Call[int]:
    return Call(
        "POST", "/commands/cleanup-messages", types.RemovedAnswer, lambda a: a.removed,
        params={"tenant_id": tenant_id},
    )  # fmt: skip


def run_now(tenant_id: str | None) -> Call[None]:
    params = {"tenant_id": tenant_id}
    return Call("POST", "/commands/run-now", types.OkAnswer, _nothing, params=params)


def suspend(tenant_id: str | None, batch_code: str | None) -> Call[types.SuspendAnswer]:
    params = {"tenant_id": tenant_id, "batch_code": batch_code}
    return Call("POST", "/commands/suspend", types.SuspendAnswer, _identity, params=params)


def activate(tenant_id: str | None, batch_code: str | None) -> Call[types.SuspendAnswer]:
    params = {"tenant_id": tenant_id, "batch_code": batch_code}
    return Call("POST", "/commands/activate", types.SuspendAnswer, _identity, params=params)


def suppressions_page(
    params: Mapping[str, Any], cursor: str | None
) -> Call[types.SuppressionsAnswer]:
    return Call(
        "GET", "/suppressions", types.SuppressionsAnswer, _identity,
        params={**params, "cursor": cursor}, retry=True,
    )  # fmt: skip


def add_suppressions(entries: Sequence[Any], tenant_id: str | None) -> Call[int]:
    return Call(
        "POST", "/suppressions", types.AddedAnswer, lambda a: a.added,
        params={"tenant_id": tenant_id}, body={"entries": [plain(e) for e in entries]},
    )  # fmt: skip


def remove_suppression(address: str, tenant_id: str | None) -> Call[None]:
    path = f"/suppressions/{quote(address, safe='@+')}"
    return Call("DELETE", path, types.OkAnswer, _nothing, params={"tenant_id": tenant_id})


def export_suppressions(tenant_id: str | None) -> Call[str]:
    return Call(
        "GET", "/suppressions/export", str, _identity, params={"tenant_id": tenant_id},
        retry=True, text=True,
    )  # fmt: skip


def add_dkim_key(tenant_id: str, key: Any) -> Call[types.DkimKeyAnswer]:
    path = f"/tenant/{_segment(tenant_id)}/dkim"
    return Call("POST", path, types.DkimKeyAnswer, _identity, body=key)


def list_dkim_keys(tenant_id: str) -> Call[list[types.DkimKeyRecord]]:
    path = f"/tenant/{_segment(tenant_id)}/dkim"
    return Call("GET", path, types.DkimKeysAnswer, lambda a: a.keys, retry=True)


def remove_dkim_key(tenant_id: str, domain: str, selector: str) -> Call[None]:
    path = f"/tenant/{_segment(tenant_id)}/dkim/{_segment(domain)}/{_segment(selector)}"
    return Call("DELETE", path, types.OkAnswer, _nothing)


def _nothing(_: Any) -> None:
    return None


def one_sent(answer: types.AddMessagesAnswer, message_id: str) -> str:
    """The id of the one message a ``send`` queued; :class:`Rejected` when it was not."""
    if answer.rejected:
        raise Rejected(200, f"{message_id}: {answer.rejected[0].reason}", answer.rejected)
    return message_id


def message_id_of(message: Any) -> str:
    """The ``id`` of a message given as a mapping or a Struct."""
    found = plain(message).get("id") if message is not None else None
    if not isinstance(found, str):
        raise InvalidRequest(0, "the message needs an id (str)")
    return found
