"""How a route of the API is declared (:func:`route`): who may call it, its tag in the
schema and the error answers it documents; and the ``tenant_id`` query parameter that
the routes acting inside a tenant share (:data:`TenantQuery`), which two routes also take
in their body (:func:`tenant_named`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import QueryParameter

from mailproxy.domain.errors import InvalidInput
from mailproxy.entrypoints.http.schemas import ErrorAnswer, Problem

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


@dataclass
class OperationWithout400(Operation):
    """An operation whose route never answers 400. Litestar documents a 400 with its own
    error shape for every route that takes parameters, but this API answers an invalid
    request with a 422 problem (``problems.py``)."""

    def __post_init__(self) -> None:
        if self.responses is not None:
            self.responses.pop("400", None)


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
    error answers are documented (``responses`` adds or replaces some of them)."""
    if method is not get:
        options.setdefault("status_code", 200)
    responses = ERROR_RESPONSES | options.pop("responses", {})
    if 400 not in responses:
        options["operation_class"] = OperationWithout400
    return method(
        path,
        opt={"tenant": tenant, "public": public},
        responses=responses,
        tags=[tag],
        **options,
    )


TenantQuery = Annotated[
    str | None,
    QueryParameter(
        description="the tenant (the admin must name it; implied by a tenant key)",
        max_length=64,
    ),
]


def tenant_named(query: str | None, body: str | None) -> str | None:
    """The tenant a request names, in its ``tenant_id`` query parameter or body field
    (POST /account, add-messages); 422 when it names two."""
    if query is not None and body is not None and query != body:
        raise InvalidInput(
            "tenant_id", f"invalid tenant_id: query {query!r} and body {body!r} differ"
        )
    return body if body is not None else query
