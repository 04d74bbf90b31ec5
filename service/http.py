"""HTTP plumbing shared by the routes: JSON answers, the error shape, bounded body reads, auth."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
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
    """Pure ASGI middleware: `/v1/*` needs `Authorization: Bearer <token>` when tokens are set."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str], prefixes: Sequence[str] = ("/v1/", "/v1")) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.tokens and scope["path"].startswith(self.prefixes):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, presented = header.partition(b" ")
            if scheme.lower() != b"bearer" or not presented.strip():
                response = error_response(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <token> (one of JOBHOOK_API_TOKENS)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
            if not self.valid(presented.strip()):
                response = error_response(
                    401, "unauthorized", "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def valid(self, presented: bytes) -> bool:
        # Compare against every token, in constant time each, without stopping at the first match.
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched
