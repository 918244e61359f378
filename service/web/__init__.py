"""The pages kefu serves itself: the shoppers' chat page (``/``), the embeddable widget
(``/widget.js``), the API docs (``/docs``, ``/redoc``) and the operators' console (``/console``).

Every asset comes from this server: the chat page is plain HTML/CSS/JS in ``static/`` (no build
step), and Swagger UI and ReDoc are the files the ``fastapi-offline`` package ships. The HTML pages
carry a strict Content-Security-Policy: scripts only from files of this origin, no inline script.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from kb.settings import Settings

WEB = Path(__file__).resolve().parent
PAGES = WEB / "pages"  # HTML, served only through the routes below (so always with their CSP)
STATIC = WEB / "static"
VENDOR = Path(fastapi_offline.__file__).resolve().parent / "static"  # swagger-ui-bundle.js, redoc.standalone.js …

# Paths the request metrics name (the rest are counted as "other"); the console's admin calls too.
WEB_PATHS = {"/", "/widget.js", "/docs", "/redoc", "/console", "/admin/gaps", "/admin/stats", "/admin/decisions"}


def chat_csp(frame_ancestors: list[str]) -> str:
    """The chat page's policy: everything from this origin, no inline script or style; framed only
    by the sites listed in KEFU_FRAME_ANCESTORS (the widget's iframe)."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {' '.join(frame_ancestors)}"
    )


# The operators' console (service/console.py serves its data): the chat page's policy, and never in a
# frame, since its buttons change the KB (no clickjacking).
CONSOLE_CSP = chat_csp(["'none'"])


# Swagger UI and ReDoc style their components at run time (React, styled-components), so their pages
# allow inline styles; scripts still come only from files of this origin. ReDoc searches in a worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


# ReDoc's sidebar shows Redocly's logo from their CDN whatever its options say; the bundle is served
# with that address pointing at a file of ours (relative to /redoc).
REDOC_LOGO = (b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"static/favicon.svg")


def redoc_bundle() -> bytes:
    return (VENDOR / "redoc.standalone.js").read_bytes().replace(*REDOC_LOGO)


class Assets(StaticFiles):
    """Static files that a browser revalidates (ETag) instead of keeping a stale copy after an upgrade."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _page(body: bytes, csp: str) -> Response:
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": csp, "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"},
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Add the chat page, the widget, the docs pages and their assets to ``app``."""
    chat = (PAGES / "chat.html").read_bytes()
    docs = (PAGES / "docs.html").read_bytes()
    redoc = (PAGES / "redoc.html").read_bytes()
    console = (PAGES / "console.html").read_bytes()
    widget = (STATIC / "widget.js").read_bytes()
    csp = chat_csp(settings.frame_ancestors)
    redoc_js = redoc_bundle()
    redoc_etag = '"' + hashlib.sha256(redoc_js).hexdigest()[:32] + '"'

    # Before the mounts, which would serve the file as the package ships it.
    @app.get("/static/vendor/redoc.standalone.js", include_in_schema=False)
    async def redoc_script(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "ETag": redoc_etag}
        if request.headers.get("if-none-match") == redoc_etag:
            return Response(status_code=304, headers=headers)
        return Response(redoc_js, media_type="text/javascript; charset=utf-8", headers=headers)

    # The vendor mount first: Starlette matches mounts in order, and /static would swallow it.
    app.mount("/static/vendor", Assets(directory=VENDOR), name="vendor")
    app.mount("/static", Assets(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> Response:
        return _page(chat, csp)

    @app.get("/docs", include_in_schema=False)
    async def swagger_page() -> Response:
        return _page(docs, DOCS_CSP)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> Response:
        return _page(redoc, DOCS_CSP)

    @app.get("/console", include_in_schema=False)
    async def console_page() -> Response:
        return _page(console, CONSOLE_CSP)

    @app.get("/widget.js", include_in_schema=False)
    async def widget_js() -> Response:
        # Loaded by <script src> from other sites: a classic script needs no CORS, but a site that
        # isolates itself (Cross-Origin-Embedder-Policy) only loads it when we say it may.
        return Response(
            widget,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300", "Cross-Origin-Resource-Policy": "cross-origin"},
        )
