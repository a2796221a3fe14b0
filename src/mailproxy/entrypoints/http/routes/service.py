"""The routes of the service itself: liveness, queue counts, the instance's settings and
the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailproxy import __version__
from mailproxy.config import Settings
from mailproxy.domain.access import Caller, require_admin
from mailproxy.domain.errors import MailProxyError
from mailproxy.domain.model import Status
from mailproxy.entrypoints.http.auth import Gate
from mailproxy.entrypoints.http.metrics import HttpMetrics
from mailproxy.entrypoints.http.records import public_settings
from mailproxy.entrypoints.http.routing import route
from mailproxy.entrypoints.http.schemas import HealthAnswer, InstanceAnswer, StatusAnswer
from mailproxy.service import MailProxy

#: Prometheus' exposition type without its charset parameter, which Litestar adds to every
#: ``text/`` type itself (given twice, a strict parser refuses the header).
METRICS_MEDIA_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)


@route(
    get,
    "/health",
    "service",
    summary="Check liveness",
    public=True,
    responses={503: ResponseSpec(HealthAnswer, description="storage cannot be reached")},
)
async def health(proxy: NamedDependency[MailProxy]) -> Response[HealthAnswer]:
    """Liveness and storage reachability (503 when storage cannot be reached)."""
    try:
        await proxy.counts("")  # no tenant has the empty id: a cheap round trip
    except MailProxyError:
        return Response(HealthAnswer(ok=False, status="unavailable"), status_code=503)
    return Response(HealthAnswer(ok=True, status="ok", version=__version__))


@route(get, "/status", "service", summary="Queue counts", tenant=True)
async def status(
    proxy: NamedDependency[MailProxy], caller: NamedDependency[Caller]
) -> StatusAnswer:
    """Queue counts by status (the tenant's own for a tenant key)."""
    counts = await proxy.counts(caller.tenant_id)
    return StatusAnswer(
        active=True,
        version=__version__,
        queue={str(s): counts.get(s, 0) for s in Status},
    )


@route(get, "/instance", "service", summary="Instance settings")
async def instance(settings: NamedDependency[Settings]) -> InstanceAnswer:
    """The instance's settings, without secrets."""
    return InstanceAnswer(
        name=settings.instance_name, version=__version__, settings=public_settings(settings)
    )


@route(
    get,
    "/metrics",
    "service",
    summary="Prometheus metrics",
    public=True,
    media_type=METRICS_MEDIA_TYPE,
)
async def metrics(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    gate: NamedDependency[Gate],
    http_metrics: NamedDependency[HttpMetrics],
) -> Response[bytes]:
    """Prometheus text exposition."""
    if not settings.security.metrics_public:
        require_admin(await gate.authenticate(request))
    await http_metrics.queue.refresh()
    # No await between the refresh and the rendering: the exposition is that snapshot.
    return Response(generate_latest(http_metrics.registry), media_type=METRICS_MEDIA_TYPE)


SERVICE_ROUTES = [health, status, instance, metrics]
