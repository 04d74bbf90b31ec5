"""Dashboard sign-in: the token is asked for once, then a signed session cookie stands in for it.

The cookie holds a fingerprint of the token, never the token, signed and timestamped with itsdangerous;
it is valid while that token is still in JOBHOOK_API_TOKENS (removing a token ends its sessions).
It is HttpOnly and SameSite=Strict, and cookie-authenticated writes also need the `X-Jobhook-CSRF`
header, which a cross-site form cannot send. The token never appears in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Sequence
from urllib.parse import quote

import itsdangerous
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

COOKIE = "jobhook_session"
MAX_AGE = 7 * 86400
CSRF_HEADER = "x-jobhook-csrf"


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class Sessions:
    def __init__(self, keys: Sequence[str], tokens: Sequence[str]) -> None:
        self._serializer = itsdangerous.URLSafeTimedSerializer(
            list(reversed(list(keys))), salt="jobhook.session.v1", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._tokens = list(tokens)
        self._fingerprints = {fingerprint(token) for token in tokens}

    def token_matches(self, presented: str) -> bool:
        """Constant time against every token, without stopping at the first match."""
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented.encode(), token.encode())
        return matched

    def issue(self, token: str) -> str:
        return str(self._serializer.dumps(fingerprint(token)))

    def valid(self, cookie: str | None) -> bool:
        if not cookie or len(cookie) > 512:
            return False
        try:
            value = self._serializer.loads(cookie, max_age=MAX_AGE)
        except (itsdangerous.BadData, ValueError, UnicodeError):
            return False
        if not isinstance(value, str):
            return False
        # Constant time, like token_matches: the fingerprint stands for a token.
        matched = False
        for known in self._fingerprints:
            matched |= hmac.compare_digest(value.encode(), known.encode())
        return matched


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.runtime.sessions
    return sessions


def _next(request: Request) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    target = request.query_params.get("next", "/dashboard")
    return target if target.startswith("/dashboard") and "//" not in target and "\\" not in target else "/dashboard"


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobhook · sign in</title>
<style>
body{{font:16px/1.4 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;min-height:100vh;margin:0}}
form{{background:#1e293b;padding:2rem;border-radius:12px;width:min(22rem,90vw)}}
input{{width:100%;box-sizing:border-box;padding:.6rem;margin:.5rem 0 1rem;border-radius:6px;border:1px solid #475569;background:#0f172a;color:inherit}}
button{{padding:.6rem 1.2rem;border:0;border-radius:6px;background:#38bdf8;color:#0f172a;font-weight:600}}
.error{{color:#fca5a5}}
</style></head>
<body><form method="post" action="/dashboard/login?next={next}">
<h1>jobhook</h1>
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
{error}
<button type="submit">Sign in</button>
</form></body></html>"""


async def login_page(request: Request) -> Response:
    return HTMLResponse(LOGIN_PAGE.format(next=quote(_next(request)), error=""))


async def login(request: Request) -> Response:
    sessions = _sessions(request)
    form = await request.form()
    token = form.get("token")
    await form.close()
    if not isinstance(token, str) or not sessions.token_matches(token.strip()):
        error = '<p class="error" role="alert">That token is not valid.</p>'
        page = LOGIN_PAGE.format(next=quote(_next(request)), error=error)
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse(html.escape(_next(request)), status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.issue(token.strip()),
        max_age=MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


routes = [
    Route("/dashboard/login", login_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
]
