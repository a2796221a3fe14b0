"""A typed client of mailproxy's HTTP API, on httpx and msgspec.

    from mailproxy.client import Client

    with Client("http://127.0.0.1:8000", token=API_KEY) as mail:
        mail.send({"id": "welcome-1", "from": "shop@example.com",
                   "to": ["ada@example.org"], "subject": "Welcome"})

:class:`Client` and :class:`AsyncClient` have one method per route; the bodies and
answers are the Structs of :mod:`mailproxy.client.types` (generated from the service's
OpenAPI document), and a mapping is accepted wherever a Struct is. Refusals are
:class:`ApiError` subclasses. Importing this package needs only httpx and msgspec.
"""

from __future__ import annotations

from mailproxy.client import types
from mailproxy.client.aio import AsyncClient
from mailproxy.client.calls import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Rejected,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from mailproxy.client.sync import Client, CreatedTenant

__all__ = [
    "ApiError", "AsyncClient", "Client", "Conflict", "CreatedTenant", "Forbidden",
    "InvalidRequest", "NotFound", "Rejected", "ServerError", "TooManyRequests",
    "Unauthorized", "types",
]  # fmt: skip
