"""The dashboard: one HTML shell for every page, and its static files (no build step, vanilla JS).

`/dashboard`, `/dashboard/jobs/{id}`, `/dashboard/providers` and `/dashboard/outbox` all answer the same
`index.html`; the script in `/dashboard/static/` routes by path and reads the JSON API (`/v1/*`) with the
session cookie, live through `/v1/stream`. Sign-in and sign-out are `service.sessions`; the auth
middleware (`service.http.BearerAuth`) guards these routes like the API, and leaves the static files open.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static" / "dashboard"
AUTH_MARK = "__JOBHOOK_AUTH__"
VERSION_MARK = "__JOBHOOK_ASSETS__"

# The shell only loads its own script and style; images may also come from the providers' hosts.
SHELL_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@functools.cache
def _shell_template() -> str:
    """index.html, its asset links stamped with a digest of the assets so that a new version is fetched."""
    digest = hashlib.sha256()
    for asset in sorted(STATIC_DIR.iterdir()):
        if asset.is_file() and asset.suffix in (".js", ".css"):
            digest.update(asset.name.encode() + b"\0" + asset.read_bytes())
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return page.replace(VERSION_MARK, digest.hexdigest()[:12])


async def shell(request: Request) -> HTMLResponse:
    """The page: the script learns from `data-auth` whether there is a session to sign out of."""
    signed = bool(request.app.state.runtime.settings.api_tokens)
    page = _shell_template().replace(AUTH_MARK, "on" if signed else "off")
    return HTMLResponse(page, headers=SHELL_HEADERS)


routes: list[BaseRoute] = [
    Route("/dashboard", shell, methods=["GET"]),
    Route("/dashboard/jobs/{job_id}", shell, methods=["GET"]),
    Route("/dashboard/providers", shell, methods=["GET"]),
    Route("/dashboard/outbox", shell, methods=["GET"]),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC_DIR), name="dashboard_static"),
]
