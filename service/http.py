"""HTTP plumbing shared by the routes: JSON answers, the error shape, bounded body reads, auth."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import ConnectionLimits
from service.errors import StorageError

NOSNIFF = ("X-Content-Type-Options", "nosniff")


class JSONResponse(Response):
    """JSON, never sniffed as anything else (a browser must not run an echoed string as HTML or script).

    The header is set here as well as by `SecurityHeaders`: Starlette answers an unexpected error from
    outside every middleware."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.headers.setdefault(*NOSNIFF)

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class SecurityHeaders:
    """Pure ASGI middleware: `X-Content-Type-Options: nosniff` on every answer that does not say otherwise
    (the simulator's JSON, static files, images, the event stream)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault(*NOSNIFF)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ApiError(Exception):
    """An answer that refuses: `{"error": {"code", "message", …}}` with `status` (and `headers`, such as
    Retry-After)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, headers=self.headers, **self.extra)


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


async def read_body_asgi(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """`read_body` for a pure ASGI handler: the body from `receive`, BodyTooLarge past `limit` bytes
    (a declared Content-Length over it refuses before any is read), ClientDisconnect as Starlette's
    `Request.stream()` raises it."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_answer(status: int, body: bytes) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON answer, with the headers `JSONResponse` sends."""
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"x-content-type-options", b"nosniff"),
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


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
        try:
            signed_in = await sessions.valid(_cookie(headers.get(b"cookie", b""), "jobhook_session"))
        except StorageError:  # sessions are rows: out here, no exception handler would answer for it
            response = error_response(
                503, "storage_unavailable", "the database is unavailable; retry later", headers={"Retry-After": "5"}
            )
            await response(scope, receive, send)
            return
        if signed_in:
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


# -- the connection's bounds: its head's size and time, and how many connections at once ----------------

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; h11's own default is 16 KiB
KEEP_ALIVE_TIMEOUT = 5  # uvicorn's timeout_keep_alive: an idle kept-alive connection is closed after this
LINGER = 1.0  # seconds a refused connection keeps reading (and dropping) what the client still sends
MAX_LINGERING = 256  # past this many at once, a refused connection is closed at once
RETRY_AFTER = "1"


def refusal_bytes(status: int, reason: bytes, code: str, message: str, *, retry_after: str | None = None) -> bytes:
    """A whole HTTP/1.1 answer that refuses and closes, written by the protocol itself (no request, no app)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    extra = b"retry-after: %s\r\n" % retry_after.encode() if retry_after is not None else b""
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\n%s"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (status, reason, extra, len(body), body)
    )


def server_protocol(limits: ConnectionLimits | None = None) -> type[asyncio.Protocol]:
    """What `uvicorn.Config(http=…)` should get: httptools, with the bounds uvicorn does not have.

    Built anew for each server (the connections waiting for a head are counted per class). It pins the
    uvicorn versions it was tested with (pyproject.toml): it overrides HttpToolsProtocol's parser
    callbacks, `connection_made`/`connection_lost`, `on_response_complete`, `send_400_response` and
    `shutdown`, and reads its `transport`, `connections`, `cycle` and `pipeline`.

    - The head's size: uvicorn's httptools protocol buffers a head of any size (a 10 MiB header is read,
      kept and answered); its h11 protocol stops at a bound but is several times slower.
    - The head's time: uvicorn has no such bound. A connection must bring a whole request line and headers
      within `head_timeout` of opening, or of its previous answer; else it is closed (408 if part of a
      head came). uvicorn's `timeout_keep_alive` closes an idle kept-alive connection sooner.
    - How many connections: uvicorn's `limit_concurrency` is checked only once a head is complete, so
      connections that never finish one are not refused, and its 503 is plain text. Here, a connection
      past `max_connections` closes the oldest connection that is waiting for a head (a slow or idle
      one: it holds nothing being answered); when every connection is in the middle of a request, the
      new one gets a JSON 503 with Retry-After and is closed. Never queued.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    bounds = limits or ConnectionLimits()
    # Connections waiting for a request head, oldest first: the ones to close when a new one needs room.
    awaiting: dict[BoundedHttpToolsProtocol, None] = {}
    lingering: set[BoundedHttpToolsProtocol] = set()

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
            self._head_timer: asyncio.TimerHandle | None = None
            self._linger_timer: asyncio.TimerHandle | None = None

        # -- how many connections, and how long a head may take --------------------------------------

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > bounds.max_connections and not _make_room():
                self._refuse_connection()
                return
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_awaiting()
            lingering.discard(self)
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # a request already read is started: no head to wait for
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._await_head()

        def shutdown(self) -> None:
            self._stop_awaiting()
            super().shutdown()

        def _await_head(self) -> None:
            self._stop_awaiting()
            awaiting[self] = None
            self._head_timer = self.loop.call_later(bounds.head_timeout, self._head_timed_out)

        def _stop_awaiting(self) -> None:
            awaiting.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            awaiting.pop(self, None)
            if self.transport.is_closing():
                return
            if self._head_chunks:
                message = f"the request line and headers did not arrive within {bounds.head_timeout:g} s"
                self.transport.write(refusal_bytes(408, b"Request Timeout", "request_timeout", message))
            self.transport.close()

        def _close_for_room(self) -> None:
            """Closed for a newer connection: it was idle (silently, as a kept-alive connection is
            closed) or still sending a head (then told why)."""
            self._stop_awaiting()
            if self.transport.is_closing():
                return
            if self._head_chunks:
                self.transport.write(_too_many_connections())
            self.transport.close()

        def _refuse_connection(self) -> None:
            """503, then read and drop for a moment before closing: closing a socket with unread request
            bytes sends a reset, which can destroy the answer before the client reads it."""
            self.transport.write(_too_many_connections())
            if len(lingering) >= MAX_LINGERING or not self.transport.can_write_eof():
                self.transport.close()
                return
            lingering.add(self)
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER, self.transport.close)

        def data_received(self, data: bytes) -> None:
            if self._head_refused or self in lingering:
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

        # -- the head's size ---------------------------------------------------------------------------

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
            self._stop_awaiting()
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
                message = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
                self.transport.write(
                    refusal_bytes(431, b"Request Header Fields Too Large", "headers_too_large", message)
                )
            self.transport.close()

    def _make_room() -> bool:
        """Close the connection that has waited longest for a head; False if none is waiting."""
        oldest = next(iter(awaiting), None)
        if oldest is None:
            return False
        oldest._close_for_room()
        return True

    def _too_many_connections() -> bytes:
        message = f"jobhook has {bounds.max_connections} connections open, each in the middle of a request"
        return refusal_bytes(503, b"Service Unavailable", "too_many_connections", message, retry_after=RETRY_AFTER)

    return BoundedHttpToolsProtocol
