"""The one place that maps errors to answers (:func:`problem_from`, the app's exception
handler): ``InvalidInput`` and request bodies that do not fit → 422 RFC 9457 problem
details naming the field, ``Unauthorized`` → 401, ``Forbidden`` → 403, ``NotFound`` → 404,
``Conflict`` → 409, ``TooManyAttempts`` → 429 with ``Retry-After``, ``StorageError`` → 503,
Litestar's own HTTP errors with their status, and anything unexpected → 500 with a request
id (logged with its traceback, never sent)."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import uuid
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)

from mailproxy.domain.decoding import explained
from mailproxy.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, StorageError
from mailproxy.entrypoints.http.auth import TooManyAttempts, Unauthorized
from mailproxy.entrypoints.http.schemas import ErrorAnswer, FieldError, Problem

log = logging.getLogger("mailproxy.http")

#: The status of each error that is answered with its message alone.
STATUS_OF: dict[type[Exception], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    StorageError: 503,
}


def problem_from(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The answer to ``exc`` raised while serving ``request`` (see the module docstring)."""
    if isinstance(exc, InvalidInput):
        return problem(
            422, "Unprocessable Content", exc.reason, [FieldError(exc.field, exc.reason)]
        )
    if isinstance(exc, ValidationException):
        if any(missing_body(e) for e in (exc.extra if isinstance(exc.extra, list) else [])):
            detail = "missing body: a JSON object is expected"
            return problem(422, "Unprocessable Content", detail, [FieldError("body", detail)])
        described = [
            field_error(request, e)
            for e in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(e, dict)
        ]
        detail = "; ".join(text for _, text in described) or exc.detail
        errors = [error for error, _ in described]
        return problem(422, "Unprocessable Content", f"invalid request: {detail}", errors)
    if isinstance(exc, RecursionError | UnicodeDecodeError) or (
        isinstance(exc, ClientException) and exc.status_code == 400
    ):
        if isinstance(exc, RecursionError):
            detail = "malformed JSON: nested too deeply"
        elif isinstance(exc, UnicodeDecodeError):  # msgspec's error for bytes that are not UTF-8
            detail = f"malformed JSON: not UTF-8 at byte {exc.start}"
        else:
            detail = f"malformed body: {exc.detail}"
        return problem(422, "Unprocessable Content", detail, [FieldError("body", detail)])
    status = STATUS_OF.get(type(exc))
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
            ErrorAnswer(error=http_error_text(request, exc)),
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


def http_error_text(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    """Litestar's own errors say what they are about: the route that does not exist, the
    methods a route takes, the body limit."""
    where = f"{request.method} {request.url.path}"
    if isinstance(exc, NotFoundException) and exc.detail == "Not Found":
        return f"no such route: {where} (the routes are listed at /schema)"
    if isinstance(exc, MethodNotAllowedException):
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        return f"method not allowed: {where} (allowed: {allowed})"
    if exc.status_code == 413:
        limit = request.app.request_max_body_size
        return f"body too large: more than {limit} bytes (server.max_body_bytes)"
    return exc.detail


#: msgspec's words for a body of another JSON type than the object a route takes.
NOT_AN_OBJECT = re.compile(r"Expected `object`, got `\w+`")
#: Where a message posted alone, without its wrapper, belongs.
MESSAGES_HINT = '(the messages go in "messages": [...])'


def missing_body(error: object) -> bool:
    """Litestar's error for a request without a body: the body parameter's name as a
    ``KeyError`` renders it."""
    return (
        isinstance(error, dict)
        and error.get("source") == "body"
        and (error.get("message") == repr(error.get("key")))
    )


def field_error(request: Request[Any, Any, Any], error: dict[str, Any]) -> tuple[FieldError, str]:
    """One error of Litestar's validation of a request, and its text in the detail: an
    unknown or missing field and a value outside an enumeration say it as the library
    does (:func:`~mailproxy.domain.decoding.explained`, with the allowed values), the
    others keep msgspec's words after the field's name."""
    key, message = str(error.get("key", "")), str(error.get("message", ""))
    parameters = request.route_handler.parsed_fn_signature.parameters
    if error.get("source") == "body":
        parameter, path, name = parameters.get("data"), "" if key == "data" else key, ""
        if not path and NOT_AN_OBJECT.fullmatch(message):
            # "data" is the handler's name for the body, not a word of the API
            reason = "the body must be a JSON object"
            return FieldError("body", reason), reason
    else:
        parameter, path, name = parameters.get(key), "", key
    named = None
    if parameter is not None:
        with contextlib.suppress(TypeError):  # a type msgspec cannot describe: no values
            named = explained(message, parameter.annotation, path, name)
    if named is not None:
        reason = named.reason
        bare_message = error.get("source") == "body" and not path and takes_messages(parameter)
        if bare_message and reason.startswith("unknown field: "):  # posted without its wrapper
            reason = f"{reason} {MESSAGES_HINT}"
        return FieldError(named.field, reason), reason
    return FieldError(key, message), f"{key}: {message}"


def problem(status: int, title: str, detail: str, errors: list[FieldError]) -> Response[Problem]:
    return Response(
        Problem(title=title, status=status, detail=detail, errors=errors, error=detail),
        status_code=status,
        media_type="application/problem+json",
    )


def takes_messages(parameter: Any) -> bool:
    """Whether the body a route takes is a list of messages under ``messages``."""
    fields = getattr(getattr(parameter, "annotation", None), "__struct_fields__", ())
    return "messages" in fields
