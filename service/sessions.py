"""Dashboard sign-in: the token is asked for once, then a signed session cookie stands in for it.

The cookie holds a random session id, signed and timestamped with itsdangerous, and nothing else. The
session is a row in the database (service/store/session_queries.py): signing out deletes it, so the old
cookie is refused from then on, on every replica and after a restart. The row keeps an HMAC of the token
it was opened with (never the token): removing a token from JOBHOOK_API_TOKENS ends its sessions.
The cookie is HttpOnly and SameSite=Strict, and cookie-authenticated writes also need the
`X-Jobhook-CSRF` header, which a cross-site form cannot send. The token never appears in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote

import itsdangerous
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from service.http import BodyTooLarge, error_response, read_body
from service.store.session_queries import SessionQueries

COOKIE = "jobhook_session"
MAX_AGE = 7 * 86400
CSRF_HEADER = "x-jobhook-csrf"
MAX_COOKIE = 512
MAX_LOGIN_BODY = 8 * 1024  # a token in a small form or JSON object; nothing is spooled to disk
DRAINED_BODY = 64 * 1024  # a refused body up to this size is read and dropped, a larger one is not read
LOGIN_TYPES = ("application/x-www-form-urlencoded", "application/json")


class Sessions:
    """Opens, checks and ends dashboard sessions. `keys`: the signing keys, the database's own last."""

    def __init__(
        self,
        keys: Sequence[str],
        tokens: Sequence[str],
        store: SessionQueries,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._serializer = itsdangerous.URLSafeTimedSerializer(
            list(reversed(list(keys))), salt="jobhook.session.v2", signer_kwargs={"digest_method": hashlib.sha256}
        )
        # The database's key: the same on every replica, and it outlives a rotation of JOBHOOK_SECRET.
        self._digest_key = keys[-1].encode()
        self._tokens = list(tokens)
        self._digests = [self._digest(token) for token in tokens]
        self._store = store
        self._clock = clock

    def _digest(self, token: str) -> str:
        return hmac.new(self._digest_key, token.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, presented: str) -> bool:
        """Constant time against every token, without stopping at the first match."""
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented.encode(), token.encode())
        return matched

    async def open(self, token: str) -> str:
        """A new session for `token` (already checked with token_matches): the cookie's value."""
        session_id = secrets.token_urlsafe(32)
        await self._store.open_session(session_id, self._digest(token), self._clock() + MAX_AGE)
        return str(self._serializer.dumps(session_id))

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        try:
            value = self._serializer.loads(cookie, max_age=MAX_AGE)
        except (itsdangerous.BadData, ValueError, UnicodeError):
            return None
        return value if isinstance(value, str) and 0 < len(value) <= 64 else None

    async def valid(self, cookie: str | None) -> bool:
        session_id = self._session_id(cookie)
        if session_id is None:
            return False
        stored = await self._store.session_digest(session_id, self._clock())
        if stored is None:
            return False
        # Constant time, like token_matches: the digest stands for a token.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(stored.encode(), known.encode())
        return matched

    async def end(self, cookie: str | None) -> None:
        session_id = self._session_id(cookie)
        if session_id is not None:
            await self._store.end_session(session_id)


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.runtime.sessions
    return sessions


def _next(request: Request) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    target = request.query_params.get("next", "/dashboard")
    return target if target.startswith("/dashboard") and "//" not in target and "\\" not in target else "/dashboard"


LOGIN_STYLE = """
body{font:16px/1.4 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;min-height:100vh;margin:0}
form{background:#1e293b;padding:2rem;border-radius:12px;width:min(22rem,90vw)}
input{width:100%;box-sizing:border-box;padding:.6rem;margin:.5rem 0 1rem;border-radius:6px;border:1px solid #475569;background:#0f172a;color:inherit}
button{padding:.6rem 1.2rem;border:0;border-radius:6px;background:#38bdf8;color:#0f172a;font-weight:600}
.error{color:#fca5a5}
"""

LOGIN_PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobhook · sign in</title>
<style>"""
    + LOGIN_STYLE.replace("{", "{{").replace("}", "}}")
    + """</style></head>
<body><form method="post" action="/dashboard/login?next={next}">
<h1>jobhook</h1>
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
{error}
<button type="submit">Sign in</button>
</form></body></html>"""
)

_STYLE_HASH = base64.b64encode(hashlib.sha256(LOGIN_STYLE.encode()).digest()).decode()
# Like the dashboard's pages (service.dashboard.SHELL_HEADERS): no frame may hold the page (a token typed
# into a framed sign-in form is clickjacking's prize), no script at all, only its own inline style.
LOGIN_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _page(request: Request, *, error: str = "", status: int = 200) -> HTMLResponse:
    page = LOGIN_PAGE.format(next=quote(_next(request)), error=error)
    return HTMLResponse(page, status_code=status, headers=LOGIN_HEADERS)


async def login_page(request: Request) -> Response:
    return _page(request)


def _refuse(request: Request, status: int, code: str, message: str) -> Response:
    """A refusal before the body is read. A large or unsized body closes the connection, so that the rest
    is never read; a small one is let through and dropped (uvicorn discards a body after the answer), as
    closing on unread bytes resets the connection, and the client may lose the answer with it."""
    declared = request.headers.get("content-length", "")
    small = declared.isascii() and declared.isdigit() and int(declared) <= DRAINED_BODY
    return error_response(status, code, message, headers=None if small else {"Connection": "close"})


async def _presented_token(request: Request) -> str | Response:
    """The token of a small form or JSON body; anything else is refused before its body is read (a
    multipart upload would otherwise be spooled to a temporary file, however large)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind not in LOGIN_TYPES:
        return _refuse(
            request,
            415,
            "unsupported_media_type",
            'sign in with a form (application/x-www-form-urlencoded) or a JSON object {"token": "…"}',
        )
    try:
        raw = await read_body(request, MAX_LOGIN_BODY)
    except BodyTooLarge:
        return _refuse(request, 413, "payload_too_large", f"the sign-in body exceeds {MAX_LOGIN_BODY} bytes")
    token: Any = None
    try:
        if kind == "application/json":
            body = orjson.loads(raw)
            token = body.get("token") if isinstance(body, dict) else None
        else:
            token = parse_qs(raw.decode("utf-8"), max_num_fields=16).get("token", [None])[0]
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError):
        return error_response(400, "invalid_body", 'the sign-in body cannot be read: send token=… or {"token": …}')
    return token if isinstance(token, str) else ""


async def login(request: Request) -> Response:
    sessions = _sessions(request)
    token = await _presented_token(request)
    if isinstance(token, Response):
        return token
    if not sessions.token_matches(token.strip()):
        return _page(request, error='<p class="error" role="alert">That token is not valid.</p>', status=401)
    response = RedirectResponse(html.escape(_next(request)), status_code=303)
    response.set_cookie(
        COOKIE,
        await sessions.open(token.strip()),
        max_age=MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    """Ends the session in the database (the cookie alone no longer opens anything), then clears it."""
    await _sessions(request).end(request.cookies.get(COOKIE))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


routes = [
    Route("/dashboard/login", login_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
]
