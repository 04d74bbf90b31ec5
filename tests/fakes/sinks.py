"""Real receivers for jobhook's notifications: a Slack-like webhook, a backend verifying Standard
Webhooks, and an SMTP server (aiosmtpd). Each records what arrived and can be scripted to fail."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.message
import email.policy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.server import free_socket, serve_asgi

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclasses.dataclass
class Received:
    time: float
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


class HTTPSink:
    """`answers`: statuses to give, in order, before answering 200 (e.g. [500, 500] or [410]).
    `retry_after` goes with a 429. `verify`: check Standard Webhooks signatures (backend sink)."""

    def __init__(self, *, verify: bool = False) -> None:
        self.verify = verify
        self.answers: list[int] = []
        self.always: int | None = None  # answer this every time (e.g. 500), when set
        self.hang = False  # record each request, then never answer it (until the sink closes)
        self._closing = asyncio.Event()
        self.retry_after = "1"
        self.delay = 0.0  # seconds between recording a request and answering it
        self.received: list[Received] = []
        self.rejected_signatures = 0
        self.url = ""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> HTTPSink:
        self._closing = asyncio.Event()
        app = Starlette(routes=[Route("/hook{rest:path}", self._hook, methods=["POST"])])
        self.url = await self._stack.enter_async_context(serve_asgi(app)) + "/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        await self._stack.aclose()

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        if self.verify:
            try:
                Webhook(WEBHOOK_SECRET).verify(body, headers)
            except WebhookVerificationError:
                self.rejected_signatures += 1
                return PlainTextResponse("bad signature", status_code=400)
        if self.hang:
            self.received.append(Received(time.monotonic(), headers, body, 0))
            await self._closing.wait()
            return PlainTextResponse("too late", status_code=503)
        status = self.always if self.always is not None else (self.answers.pop(0) if self.answers else 200)
        self.received.append(Received(time.monotonic(), headers, body, status))
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        extra = {"Retry-After": self.retry_after} if status == 429 else {}
        if status == 200:
            return PlainTextResponse("ok")
        return JSONResponse({"error": f"scripted {status}"}, status_code=status, headers=extra)

    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.answered == 200]


class SMTPSink:
    """A real SMTP server on loopback; `reply` scripts a failure for the next messages (e.g. "451 …")."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.received_at: list[float] = []  # monotonic time of each message in `messages`
        self.delay = 0.0  # seconds between recording a message and answering 250
        self.replies: list[str] = []
        self.port = 0
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        self.received_at.append(time.monotonic())
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return "250 OK"

    async def __aenter__(self) -> SMTPSink:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        await asyncio.to_thread(self._controller.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def sinks() -> AsyncIterator[tuple[HTTPSink, HTTPSink, SMTPSink]]:
    async with HTTPSink() as slack, HTTPSink(verify=True) as backend, SMTPSink() as smtp:
        yield slack, backend, smtp


def notify_env(slack: HTTPSink, backend: HTTPSink, smtp: SMTPSink, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_SLACK_WEBHOOK_URL": slack.url,
        "JOBHOOK_FORWARD_URL": backend.url,
        "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
        "JOBHOOK_SMTP_URL": smtp.url,
        "JOBHOOK_EMAIL_FROM": "jobhook@example.com",
        "JOBHOOK_EMAIL_TO": "ops@example.com,art@example.com",
        "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0,0.2,0.2,0.2",
        **extra,
    }
