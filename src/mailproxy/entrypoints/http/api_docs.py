"""The API's documentation at ``/schema``: the OpenAPI schema (``/schema/openapi.json``)
and Swagger UI, served whole by this process so that the page renders on a host without
internet.

Litestar's Swagger page loads the UI's script and style from a CDN; here they come from
``/schema/assets/``, the ``dist`` files of swagger-ui 5 that the swagger-ui-py package
ships (only its files are read: the package itself is never imported). swagger-ui-bundle
still ships swagger-ui 4, which cannot render the OpenAPI 3.1 schema Litestar writes, and
flask-swagger-ui would install Flask for nothing.

Every answer under ``/schema`` carries a Content-Security-Policy that admits this origin
only (the page's one inline script sets the UI up with the schema), so a page that would
reach elsewhere fails here as it would on an air-gapped host.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from mailproxy import __version__

SCHEMA_PATH = "/schema"
ASSETS = f"{SCHEMA_PATH}/assets"
#: This origin only; inline script and style for the page Litestar writes around the UI,
#: ``data:`` images for the icons in swagger-ui's stylesheet.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def swagger_ui_files() -> Path:
    """The folder of swagger-ui's ``dist`` files inside the installed swagger-ui-py
    (found without importing the package, which would import its web-framework glue)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency of mailproxy)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_router() -> Router:
    """The router of ``/schema``: the UI's files under ``assets/``, and the security
    headers of every answer (Litestar adds the schema and the page to it)."""
    assets = create_static_files_router(
        path="/assets", directories=[swagger_ui_files()], name="swagger-ui-files"
    )
    return Router(
        SCHEMA_PATH,
        route_handlers=[assets],
        include_in_schema=False,
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ],
    )


def openapi_config() -> OpenAPIConfig:
    """The schema at ``/schema`` (Swagger UI there too), with both ways to send a token."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title="mailproxy",
        version=__version__,
        description=(
            "Durable, rate-limited email delivery: queue messages, send them over "
            "SMTP, report every outcome."
        ),
        render_plugins=[swagger],
        # The handlers' docstrings are the operations' descriptions (off by default).
        use_handler_docstrings=True,
        openapi_router=docs_router(),
        components=Components(
            security_schemes={
                "token": SecurityScheme(
                    type="apiKey", name="X-API-Token", security_scheme_in="header"
                ),
                "bearer": SecurityScheme(type="http", scheme="bearer"),
            }
        ),
        security=[{"token": []}, {"bearer": []}],
    )
