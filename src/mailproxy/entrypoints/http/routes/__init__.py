"""The route handlers of the API, one module per resource: ``messages``, ``tenants``,
``accounts``, ``dkim``, ``suppressions`` and ``service`` (health, status, instance, metrics). Each
is a module-level Litestar handler declared with
:func:`~mailproxy.entrypoints.http.routing.route`; what it
needs comes in by dependency injection (``proxy``, ``caller``, ``settings``, ``gate``,
``http_metrics``: see :mod:`mailproxy.entrypoints.http.app`)."""

from __future__ import annotations

from mailproxy.entrypoints.http.routes.accounts import ACCOUNT_ROUTES
from mailproxy.entrypoints.http.routes.dkim import DKIM_ROUTES
from mailproxy.entrypoints.http.routes.messages import MESSAGE_ROUTES
from mailproxy.entrypoints.http.routes.service import SERVICE_ROUTES
from mailproxy.entrypoints.http.routes.suppressions import SUPPRESSION_ROUTES
from mailproxy.entrypoints.http.routes.tenants import TENANT_ROUTES

API_ROUTES = [
    *MESSAGE_ROUTES, *ACCOUNT_ROUTES, *TENANT_ROUTES, *DKIM_ROUTES, *SUPPRESSION_ROUTES,
    *SERVICE_ROUTES,
]  # fmt: skip
