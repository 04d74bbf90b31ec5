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


# -- the request head's bound -------------------------------------------------------------------------

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; h11's own default is 16 KiB


def server_protocol() -> Any:
    """What `uvicorn.run(http=…)` should get: httptools with a bound on the request head.

    uvicorn's httptools protocol buffers a head of any size (a 10 MiB header is read, kept and
    answered); its h11 protocol stops at a bound but is several times slower. Without httptools
    installed, h11 it is (its bound is `h11_max_incomplete_event_size`, 16 KiB by default).
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "h11"

    class _HeadTooLarge(Exception):
        pass

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """Refuses a request head over MAX_HEAD_BYTES with 431 and closes the connection.

        Two counts, each at most the true size of the head, so neither can refuse a head within the
        bound: the bytes of the chunks that arrived while the head was still incomplete (this bounds
        what httptools buffers of a header still being received), and the URL and header bytes the
        parser has handed over (this catches a whole large head arriving in one chunk).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_head = True
            self._heads_done = 0
            self._head_chunks = 0
            self._head_parsed = 0
            self._head_refused = False

        def data_received(self, data: bytes) -> None:
            if self._head_refused:
                return
            reading_head, heads_done = self._reading_head, self._heads_done
            super().data_received(data)
            # All of this chunk was head only if a head was being read before it and no head was
            # completed within it (a chunk may hold a whole request, body included, and the next).
            within_one_head = reading_head and self._reading_head and self._heads_done == heads_done
            if within_one_head and not self._head_refused and not self.transport.is_closing():
                self._head_chunks += len(data)
                if self._head_chunks > MAX_HEAD_BYTES:
                    self._refuse_head()

        def on_message_begin(self) -> None:
            self._reading_head = True
            self._head_chunks = self._head_parsed = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 3)  # at least "name:value\r\n"
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._heads_done += 1
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._reading_head = True
            self._head_chunks = self._head_parsed = 0
            super().on_message_complete()

        def _count(self, size: int) -> None:
            self._head_parsed += size
            if self._head_parsed > MAX_HEAD_BYTES:
                self._head_refused = True
                raise _HeadTooLarge  # the parser stops; uvicorn answers through send_400_response

        def send_400_response(self, msg: str) -> None:
            if self._head_refused:
                self._refuse_head()
            else:
                super().send_400_response(msg)

        def _refuse_head(self) -> None:
            self._head_refused = True
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                # Not in the middle of another response on this connection: say why before closing.
                body = orjson.dumps(
                    {
                        "error": {
                            "code": "headers_too_large",
                            "message": f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
                        }
                    }
                )
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
            self.transport.close()

    return BoundedHttpToolsProtocol
