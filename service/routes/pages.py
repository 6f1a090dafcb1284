"""What a browser opens: the trace-view page at ``/`` and the API docs at ``/docs``.

Everything is served from the installed packages, nothing from a CDN (these machines are
often offline): the page from ``service/ui/``, Swagger UI from the assets that the
``fastapi-offline`` package ships. (No ReDoc: its bundle loads its logo from a CDN.)
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
UI_URL, DOCS_ASSETS_URL = "/ui", "/docs-assets"


def install(app: FastAPI) -> None:
    """Add the page, its static files and the offline docs to ``app`` (created with
    ``docs_url=None, redoc_url=None``)."""
    app.mount(UI_URL, StaticFiles(directory=UI_DIR), name="ui")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )
