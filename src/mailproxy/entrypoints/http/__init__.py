"""The REST API (the HTTP contract of mailproxy) on Litestar.

``create_app(proxy, settings)`` builds the app; nothing is created at import. Every answer
is JSON with ``"ok"``; errors map from the library's error tree in one place. Where
things live:

- ``app.py``: :func:`create_app`, :func:`from_environment`, the dependencies handlers ask
  for by name (``proxy``, ``settings``, ``caller``, ``gate``, ``http_metrics``).
- ``routes/``: the route handlers, one module per resource (``messages``, ``tenants``,
  ``accounts``, ``service``); ``routing.py``: how a route is declared (who may call it).
- ``auth.py``: tokens, tenant keys, ``/ui`` sessions, the throttle of failed attempts, the
  guard of every route.
- ``problems.py``: the one map from exceptions to answers (RFC 9457 problem details for
  422).
- ``schemas.py``: request and answer bodies; ``records.py``: library values as answered.
- ``metrics.py``: ``GET /metrics``' registry and the queue gauges collector.
- ``api_docs.py``: the OpenAPI schema and Swagger UI at ``/schema``, the UI's files
  served by the app itself (no CDN).

The status page (``/ui``) is ``routes/status_page.py``.

Authentication: ``X-API-Token`` or ``Authorization: Bearer``; ``/health`` and ``/schema``
are public; ``/metrics`` needs the admin token unless ``security.metrics_public`` is true
(it names every tenant and account id).
"""

from __future__ import annotations

from mailproxy.domain.validation import MAX_CONNECTIONS, MAX_COUNT, MAX_TS
from mailproxy.entrypoints.http.app import create_app, from_environment
from mailproxy.entrypoints.http.schemas import (
    AccountBody,
    ApiKeyBody,
    CleanupBody,
    RateLimitsBody,
    TenantBody,
    TenantChanges,
)

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_COUNT",
    "MAX_TS",
    "AccountBody",
    "ApiKeyBody",
    "CleanupBody",
    "RateLimitsBody",
    "TenantBody",
    "TenantChanges",
    "create_app",
    "from_environment",
]
