"""The interactive API reference at ``/schema``: Swagger UI served from the ``openapi-ui-bundles``
package, so the page works offline and loads nothing from a CDN (Litestar's defaults load Scalar,
Redoc, fonts and a favicon from CDNs: a blank page without internet access).

``/schema/openapi.json`` stays Litestar's own; ``/schema`` and ``/schema/swagger`` render Swagger UI.
"""

from __future__ import annotations

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from openapi_ui_bundles import swagger_ui

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI with its script, style sheet and icon from :func:`assets_router`."""
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        )
    ]


def assets_router() -> Router:
    """Swagger UI's static files, from the installed package (cached for a day: they change only with it)."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui.static_path],
        include_in_schema=False,
        cache_control=CacheControlHeader(max_age=86_400),
        name="schema-assets",
    )
