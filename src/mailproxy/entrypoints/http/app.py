"""The Litestar app: :func:`create_app` wires the route handlers (``routes/`` and the
status page) to one proxy through the app state and dependency injection, and
:func:`from_environment` builds one from ``GMP_*`` settings for ASGI servers.

What a handler may ask for by parameter name (app-level dependencies, read from
``app.state``): ``proxy`` (the :class:`MailProxy`), ``settings``, ``caller`` (who the
guard authenticated), ``gate`` (the credentials and the throttle) and ``http_metrics``
(the app's Prometheus registry).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import structlog
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide

from mailproxy.bootstrap import build_proxy
from mailproxy.config import Settings, load_settings
from mailproxy.entrypoints.http.api_docs import openapi_config
from mailproxy.entrypoints.http.auth import (
    admin_token_of,
    authorize,
    build_gate,
    provide_caller,
)
from mailproxy.entrypoints.http.metrics import HttpMetrics
from mailproxy.entrypoints.http.problems import problem_from
from mailproxy.entrypoints.http.query import STATE_KEY as QUERY_STATE_KEY
from mailproxy.entrypoints.http.query import query_parameters_of, refuse_unknown_query
from mailproxy.entrypoints.http.routes import API_ROUTES
from mailproxy.entrypoints.http.routes.status_page import STATUS_PAGE_ROUTES
from mailproxy.service import MailProxy


def from_state(name: str) -> Provide:
    """The dependency that hands handlers ``app.state[name]``."""

    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def dependencies() -> dict[str, Provide]:
    """What a handler may ask for by parameter name (``NamedDependency[...]``)."""
    state = {name: from_state(name) for name in ("proxy", "settings", "gate", "http_metrics")}
    return state | {"caller": Provide(provide_caller, sync_to_thread=False)}


def create_app(
    proxy: MailProxy,
    settings: Settings,
    *,
    insecure: bool = False,
    own_proxy: bool = True,
    services: Sequence[Callable[[MailProxy], contextlib.AbstractAsyncContextManager[object]]] = (),
) -> Litestar:
    """The Litestar app serving ``proxy``; unless ``own_proxy`` is false (the caller opens
    and closes it), the app opens the proxy at startup and shuts it down (finishing
    in-flight sends) at shutdown. ``services`` run beside the app while the proxy is open
    (started after it opens, stopped before it closes), e.g. SMTP submission. Raises
    :class:`InvalidInput` when there is no admin token and ``insecure`` is false (see the
    CLI's ``serve --insecure``)."""
    admin_token = admin_token_of(settings, insecure=insecure)
    http_metrics = HttpMetrics(proxy)
    gate = build_gate(proxy, settings, admin_token, http_metrics.count_auth_failure)
    app = Litestar(
        route_handlers=[*API_ROUTES, *STATUS_PAGE_ROUTES],
        state=State(
            {"proxy": proxy, "settings": settings, "gate": gate, "http_metrics": http_metrics}
        ),
        dependencies=dependencies(),
        lifespan=[
            *([proxy_running] if own_proxy else []),
            *(beside_the_app(service) for service in services),
        ],
        before_request=bind_request_id,
        after_request=unbind_request_id,
        guards=[authorize, refuse_unknown_query],
        exception_handlers={Exception: problem_from},
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=openapi_config(),
        debug=False,
        logging_config=None,
    )
    app.state[QUERY_STATE_KEY] = query_parameters_of(app)
    return app


@contextlib.asynccontextmanager
async def proxy_running(app: Litestar) -> AsyncIterator[None]:
    """The lifespan of an app that owns its proxy: opened at startup, shut down (in-flight
    sends finished) at shutdown."""
    proxy: MailProxy = app.state.proxy
    async with proxy:
        yield


def beside_the_app(
    service: Callable[[MailProxy], contextlib.AbstractAsyncContextManager[object]],
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[object]]:
    """A lifespan entry that runs ``service`` on the app's proxy."""

    def lifespan(app: Litestar) -> contextlib.AbstractAsyncContextManager[object]:
        return service(app.state.proxy)

    return lifespan


async def bind_request_id(request: Request[Any, Any, Any]) -> None:
    """Every log line of a request carries its ``request_id``."""
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex)


async def unbind_request_id(response: Response[Any]) -> Response[Any]:
    structlog.contextvars.unbind_contextvars("request_id")
    return response


def from_environment() -> Litestar:
    """An app built from ``GMP_*`` settings (and ``GMP_CONFIG``, a config.ini path), for
    ASGI servers that import a factory, e.g. ``uvicorn --factory
    mailproxy.entrypoints.http:from_environment``. The admin token is required here."""
    environ = dict(os.environ)
    config_file = environ.pop("GMP_CONFIG", None)
    settings = load_settings(config_file, environ)
    return create_app(build_proxy(settings), settings)
