"""``install_web(app)``: serve the player (``/``), the console (``/console``) and their
assets (``/static/...``).

The pages hold no user data and need no key: the credential travels in the URL fragment,
which the browser never sends, and the pages' own API calls carry it. The player takes a
user token (``/#token=...``, bound to one user, renewed while the page is open); the
console, and a player for any user, an API key (``#key=...``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
# Everything from this origin only; no inline script or style (the pages set styles
# through the CSSOM, which CSP allows), images also as data: URLs.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'"
)
_COMMON = {
    "Cache-Control": "no-cache",  # revalidate: an edited file is picked up at once
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HTML_HEADERS = {**_COMMON, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}


class _Static(StaticFiles):
    """StaticFiles with the headers above on every asset."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_COMMON)
        if path.endswith(".html"):
            response.headers.update(HTML_HEADERS)
        return response


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=HTML_HEADERS)


def install_web(app: FastAPI) -> None:
    """Add ``GET /``, ``GET /console`` and ``/static`` to ``app`` (not in the OpenAPI)."""

    @app.get("/", include_in_schema=False)
    async def player() -> FileResponse:
        return _page("index.html")

    @app.get("/console", include_in_schema=False)
    async def console() -> FileResponse:
        return _page("console.html")

    app.mount("/static", _Static(directory=STATIC_DIR), name="static")
