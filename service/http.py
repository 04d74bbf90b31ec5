"""HTTP plumbing shared by the routes: JSON answers, the error shape, bounded body reads, auth."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An answer that refuses: `{"error": {"code", "message", …}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, **self.extra)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (BodyTooLarge) as soon as it passes `limit` bytes.

    Content-Length is checked first, but not trusted: a lying or absent one is caught while reading.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        return None
    prefix, _, job_id = text.partition(":")
    return job_id if prefix == "v1" and job_id else None


class BearerAuth:
    """Pure ASGI middleware: with JOBHOOK_API_TOKENS set, `/v1/*` and the dashboard need a bearer token
    or a dashboard session cookie (see service.sessions); the sign-in page and its assets do not."""

    PROTECTED = ("/v1/", "/v1", "/dashboard")
    OPEN = ("/dashboard/login", "/dashboard/static/")

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.enabled = bool(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.enabled
            or not path.startswith(self.PROTECTED)
            or path.startswith(self.OPEN)
        ):
            await self.app(scope, receive, send)
            return
        sessions = scope["app"].state.runtime.sessions
        headers = dict(scope["headers"])
        scheme, _, presented = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and presented.strip():
            if sessions.token_matches(presented.strip().decode("latin-1")):
                await self.app(scope, receive, send)
                return
            response: Response = error_response(
                401, "unauthorized", "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        if sessions.valid(_cookie(headers.get(b"cookie", b""), "jobhook_session")):
            unsafe = scope["method"] not in ("GET", "HEAD", "OPTIONS")
            if unsafe and b"x-jobhook-csrf" not in headers:
                response = error_response(403, "csrf_required", "send the X-Jobhook-CSRF header with this request")
            else:
                await self.app(scope, receive, send)
                return
        elif path.startswith("/dashboard") and scope["method"] in ("GET", "HEAD"):
            response = RedirectResponse(f"/dashboard/login?next={quote(path)}", status_code=303)
        else:
            response = error_response(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (one of JOBHOOK_API_TOKENS)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        await response(scope, receive, send)


def _cookie(header: bytes, name: str) -> str | None:
    for part in header.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
