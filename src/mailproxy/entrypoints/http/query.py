"""Unknown query parameters are refused as unknown body fields are: a misspelt filter
(``GET /messages?stauts=error``) would otherwise be ignored and answer with everything.
:func:`query_parameters_of` reads, once the app is built, the query parameters each
route takes (its handler's and its dependencies'); :func:`refuse_unknown_query` is the
guard that compares a request's with them."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute

from mailproxy.domain.errors import InvalidInput

#: The app-state key of the map from a route's function to the query parameters it takes
#: (keyed by the function: the app registers copies of the handlers it is given).
STATE_KEY = "query_parameters"


def query_parameters_of(app: Litestar) -> dict[Any, frozenset[str]]:
    """The names of the query parameters each HTTP route handler of ``app`` takes, as
    Litestar parses them for the route (aliases included)."""
    taken: dict[Any, frozenset[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler, kwargs_model in route.route_handler_map.values():
                names = {p.field_alias for p in kwargs_model.expected_query_params}
                taken[handler.fn] = frozenset(names)
    return taken


async def refuse_unknown_query(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard of every route: 422 ``unknown query parameter: NAME`` for a query parameter
    the route does not take (the first, in the order given)."""
    taken: dict[Any, frozenset[str]] = connection.app.state.get(STATE_KEY, {})
    known = taken.get(handler.fn)
    if known is None:  # not an HTTP route of the app (none is: nothing to compare)
        return
    for name in connection.query_params:
        if name not in known:
            raise InvalidInput("query", f"unknown query parameter: {name}")
