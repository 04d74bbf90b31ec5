"""What the fake providers share: the server's life, background tasks, per-request scripts and forced answers.

A fake subclasses `FakeProvider` and keeps only its provider's wire format: routes, request validation,
the task model and its callbacks. The base serves the routes on loopback (`async with fake:` →
`fake.base_url`), tracks background work (`_spawn`, `wait_idle`, `background_errors`), picks a script
per request (`next_scripts`, else `script_for(body)`, else `default_script`) and gives the answers a
test can force: a `ForcedResponse`, or none at all ("hang", "disconnect") or one that never ends
("trickle").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from tests.fakes.server import serve_asgi

ScriptT = TypeVar("ScriptT")

_CYCLE_KEY = "fake_provider.cycle"


@dataclass
class ForcedResponse:
    """An answer to give instead of the normal behaviour (body: dict → JSON, str → text/plain)."""

    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds between the request's arrival (when it is recorded) and this answer
    # Answered only once the test sets it: the test holds the answer while it arranges something else
    # (the request is recorded on arrival, so the test can wait for that first).
    gate: asyncio.Event | None = None

    def to_response(self) -> Response:
        if isinstance(self.body, str):
            response: Response = PlainTextResponse(self.body, self.status, headers=self.headers)
        else:
            response = JSONResponse(self.body, self.status, headers=self.headers)
        return _Late(response, self.delay, self.gate) if self.delay or self.gate else response


class _Late(Response):
    """`inner`, sent once `gate` is set (if any), then `delay` seconds late: a slow or held answer."""

    def __init__(self, inner: Response, delay: float, gate: asyncio.Event | None = None) -> None:
        super().__init__(inner.body, inner.status_code)
        self.raw_headers = inner.raw_headers
        self.delay = delay
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        await super().__call__(scope, receive, send)


def json_or_none(raw: bytes) -> Any:
    """The request body parsed as JSON, or None if it is not JSON (or empty)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def override_headers(headers: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    """Apply a script's header overrides in place (names case-insensitive; None removes the header)."""
    for name, value in overrides.items():
        for existing in [h for h in headers if h.lower() == name.lower()]:
            del headers[existing]
        if value is not None:
            headers[name] = value
    return headers


class FakeProvider(Generic[ScriptT]):
    """`async with Fake(...) as fake:` serves `routes` at `fake.base_url` until the block ends.

    On leaving, requests still hanging drop their connections, background tasks are cancelled, and the
    first error a background task raised is raised (unless the block itself raised).
    """

    api_key_prefix = ""

    def __init__(self, routes: Sequence[BaseRoute], default_script: ScriptT) -> None:
        self.base_url = ""
        self.next_scripts: list[ScriptT] = []
        self.default_script = default_script
        self.script_for: Callable[[Any], ScriptT | None] | None = None
        self.background_errors: list[BaseException] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._client: httpx.AsyncClient | None = None  # for callbacks, when `_client_timeout()` is set
        self._stack = contextlib.AsyncExitStack()
        self._app = Starlette(routes=list(routes))

    # ---------------------------------------------------------------- hooks

    def _client_timeout(self) -> float | None:
        """The timeout of the HTTP client the fake sends callbacks with; None: the fake sends none."""
        return None

    def _arrived(self, scope: Scope) -> None:
        """Called for each HTTP request as it arrives, before routing."""

    def _error_body(self, code: str, message: str) -> dict[str, Any]:
        """The provider's error envelope (for `_error`, `_invalid` and `_auth_error`)."""
        raise NotImplementedError

    def _validate(self, request: Request, body: Any) -> Response | None:
        """The error answer for an invalid create request, or None."""
        return None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._closing = asyncio.Event()
        timeout = self._client_timeout()
        if timeout is not None:
            self._client = httpx.AsyncClient(timeout=timeout)
        try:
            self.base_url = await self._stack.enter_async_context(serve_asgi(self._asgi_app()))
        except BaseException:
            if self._client is not None:
                await self._client.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # hanging requests drop their connections
        for task in list(self._bg):
            task.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        await self._stack.aclose()
        if self.background_errors and exc_info[0] is None:
            raise RuntimeError(f"{type(self).__name__} background task failed") from self.background_errors[0]

    def _asgi_app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        # A plain coroutine function (uvicorn detects ASGI3 by it). uvicorn's `send` is a bound method of
        # its request cycle, which owns the transport: kept so that "hang"/"disconnect" can close the
        # connection without answering.
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_CYCLE_KEY] = getattr(send, "__self__", None)
            if scope["type"] == "http":
                self._arrived(scope)
            await self._app(scope, receive, send)

        return app

    # ---------------------------------------------------------------- background tasks

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.background_errors.append(task.exception())  # type: ignore[arg-type]

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the fake has nothing left to do on its own: no pending status transition and no
        pending callback delivery. Raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._bg:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{type(self).__name__} still busy after {timeout}s: {len(self._bg)} task(s)")
            await asyncio.wait(set(self._bg), timeout=remaining)

    # ---------------------------------------------------------------- scripts

    def _pick_script(self, body: Any) -> ScriptT:
        if self.next_scripts:
            return self.next_scripts.pop(0)
        if self.script_for is not None:
            script = self.script_for(body)
            if script is not None:
                return script
        return self.default_script

    # ---------------------------------------------------------------- errors and refusals

    def _error(self, status: int, code: str, message: str) -> Response:
        return JSONResponse(self._error_body(code, message), status)

    def _invalid(self, message: str) -> Response:
        return self._error(400, "invalid_request", message)

    def _api_key(self, request: Request) -> str:
        """The key the request carries: `Authorization: Bearer <key>` ("" for another scheme)."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return key if scheme.lower() == "bearer" else ""

    def _auth_error(self, request: Request) -> Response | None:
        key = self._api_key(request)
        if not key.startswith(self.api_key_prefix) or len(key) <= len(self.api_key_prefix):
            return self._error(401, "invalid_api_key", "Invalid API key.")
        return None

    def _refused(self, request: Request, record: Any, forced: object, *, validate: bool = False) -> Response | None:
        """The answer that stops a request before the fake acts on it, or None: a ForcedResponse (it
        replaces everything, auth included), else the auth error, else (with `validate`) the
        `_validate(request, record.body)` error. Sets `record.status` to the answer's status."""
        if isinstance(forced, ForcedResponse):
            record.status = forced.status
            return forced.to_response()
        error = self._auth_error(request)
        if error is None and validate:
            error = self._validate(request, record.body)
        if error is not None:
            record.status = error.status_code
        return error

    # ---------------------------------------------------------------- answers that never come

    def _trickle(self) -> Response:
        """200 at once, then a body that never ends: a space every 50 ms, until the client leaves."""

        async def spaces() -> AsyncIterator[bytes]:
            while not self._closing.is_set():
                await asyncio.sleep(0.05)
                yield b" "

        return StreamingResponse(spaces(), media_type="application/json")

    async def _no_answer(self, request: Request, *, hang: bool) -> Response:
        """Never answer: on "hang" wait until the client gives up (or the fake closes), then drop the
        connection; otherwise drop it at once. The returned response is discarded by uvicorn."""
        if hang:
            gone = asyncio.ensure_future(self._wait_disconnect(request))
            closing = asyncio.ensure_future(self._closing.wait())
            await asyncio.wait({gone, closing}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (gone, closing):
                fut.cancel()
            await asyncio.gather(gone, closing, return_exceptions=True)
        transport = getattr(request.scope.get(_CYCLE_KEY), "transport", None)
        if transport is None:
            raise RuntimeError("cannot reach the connection's transport to drop it")
        transport.close()
        await self._wait_disconnect(request)
        return Response(status_code=500)

    @staticmethod
    async def _wait_disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
