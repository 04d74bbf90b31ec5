"""The built-in `simulator` provider (SPEC §7): a fake aivideoapi that jobhook mounts under /simulator.

It speaks aivideoapi's wire format exactly (PROVIDERS.md §1), so that jobhook's aivideoapi adapter serves
both and every path of the callback and polling machinery can be exercised without a paid account:
failures, dropped callbacks, retried and duplicated deliveries, stale timestamps, and refusals in
aivideoapi's own error answers. Rates come from `SimulatorSettings`; a task can override them with
`input.simulate` (a user's `provider_options`, checked by `service.domain.simulate`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import io
import json
import logging
import random
import re
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont
from starlette.applications import Starlette
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import SimulatorSettings
from service.domain import simulate

logger = logging.getLogger("jobhook.simulator")

MODEL = "ideogram-v4"
OUTPUT_MODEL = "ideogram-ai/ideogram-v4"
MAX_PROMPT = 5000
MAX_BODY = 256 * 1024  # a 5,000-character prompt is at most 20 kB of UTF-8
# Long side 768: big enough to look like a picture, small enough to render in a few milliseconds.
SIZES = {"1:1": (768, 768), "3:4": (576, 768), "9:16": (432, 768), "4:3": (768, 576), "16:9": (768, 432)}
SPEEDS = ("TURBO", "BALANCED", "QUALITY")
FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
CALLBACK_TIMEOUT = 10.0
STALE_BY = 3600


class _Refusal(Exception):
    """An answer in aivideoapi's error shape, raised from deep in validation and turned into JSON once."""

    def __init__(self, status: int, code: str, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind

    @classmethod
    def of(cls, refusal: simulate.Refusal) -> _Refusal:
        return cls(refusal.status, refusal.code, refusal.message, refusal.type)


@dataclasses.dataclass
class _Task:
    """One generation: its inputs, the decisions drawn at creation, and where it has got to."""

    id: str
    prompt: str
    size: str
    output_format: str
    image_url: str
    callback_url: str | None
    created_at: int
    started: float  # monotonic: phases follow real elapsed time even when `clock` is a fake
    latency: float
    fail: bool
    drop_callback: bool
    duplicates: int
    concurrent_duplicates: int
    stale_timestamp: bool
    status: str | None = None  # set once final: "completed" or "failed"
    completed_at: int | None = None
    image: bytes | None = None
    runner: asyncio.Task[None] | None = None

    def phase(self) -> str:
        """aivideoapi's status flow: pending for the first third of the latency, then processing."""
        if self.status is not None:
            return self.status
        return "pending" if time.monotonic() - self.started < self.latency / 3 else "processing"

    def as_wire(self) -> dict[str, Any]:
        """The task object, identical in a poll answer and a callback body."""
        body: dict[str, Any] = {"id": self.id, "status": self.phase(), "model": MODEL, "created_at": self.created_at}
        if self.completed_at is not None:
            body["completed_at"] = self.completed_at
        if self.status == "completed":
            body["output"] = {"urls": [self.image_url], "metadata": {"model": OUTPUT_MODEL}}
        elif self.status == "failed":
            body["error"] = {"code": "upstream_error", "message": "Image generation failed"}
        return body


class Simulator:
    """A fake aivideoapi. `app` is mounted by jobhook, which calls `start`/`aclose` from its lifespan.

    `stats` counts what happened, for tests and the demo: `refused` creations answered with an error
    because they were told to be (`refuse`), `callbacks_sent` deliveries answered 2xx,
    `callback_attempts_failed` deliveries answered otherwise or not at all (each concurrent copy counts).
    """

    max_tasks = 500  # older tasks are forgotten entirely: the simulator must not grow without bound

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        clock: Callable[[], float] = time.time,
        callback_prefix: str | None = None,
    ) -> None:
        """`callback_prefix`: when set, only callback URLs under it are accepted. Mounted on jobhook's
        public port, the simulator must not be a way to make jobhook POST to arbitrary addresses."""
        self.settings = settings
        self.callback_prefix = callback_prefix
        self.clock = clock
        self.random = random.Random(settings.seed)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "created",
                "refused",
                "completed",
                "failed",
                "callbacks_sent",
                "callbacks_dropped",
                "callback_attempts_failed",
            ),
            0,
        )
        self._account_refusal: simulate.Refusal | None = None
        self._tasks: collections.OrderedDict[str, _Task] = collections.OrderedDict()
        self._client: httpx.AsyncClient | None = None
        self._runners: set[asyncio.Task[None]] = set()  # evicted tasks' runners too, so aclose awaits all
        self.app = Starlette(
            routes=[
                Route("/v1/images/generations", self._create, methods=["POST"], name="simulator_create"),
                Route("/v1/tasks/{task_id}", self._get_task, methods=["GET"], name="simulator_task"),
                Route("/files/{task_id}.{ext}", self._get_file, methods=["GET"], name="simulator_file"),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    async def start(self) -> None:
        """Open the client that delivers callbacks; a mounted app's own lifespan never runs."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT)

    def refuse(self, code: str | None) -> None:
        """From now on refuse every creation with aivideoapi's error `code` (PROVIDERS.md §1), as the real
        provider does once an account's credits run out or its key is revoked; None takes them again.

        The account's state, not a task's: `input.simulate.refuse` cannot play it, since jobhook sends a
        job's `provider_options` to every provider it tries. Set in process (the demo's second simulator);
        never over HTTP, where anyone reaching jobhook's port could switch it.
        """
        if code is not None and code not in simulate.REFUSALS:
            raise ValueError(f"expected one of {', '.join(simulate.REFUSALS)}, got {code!r}")
        self._account_refusal = simulate.REFUSALS[code] if code is not None else None

    async def aclose(self) -> None:
        """Cancel renders and deliveries still under way (retries can be minutes apart), then close."""
        runners = list(self._runners)
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- routes -----------------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        try:
            _authenticate(request)
            try:
                body = json.loads(await _read_capped(request))
            except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
                raise _Refusal(400, "invalid_request", "body must be a JSON object") from None
            fields = _validate(body)
            prefix, callback_url = self.callback_prefix, fields["callback_url"]
            if prefix is not None and callback_url is not None and not callback_url_allowed(callback_url, prefix):
                raise _Refusal(400, "invalid_request", f"callback_url must be {prefix} followed by a callback token")
            # A valid request, refused as told: by the account's state, else by the task's own script.
            told = self._account_refusal or simulate.REFUSALS.get(fields["simulate"].get("refuse", ""))
            if told is not None:
                self.stats["refused"] += 1
                raise _Refusal.of(told)
        except _Refusal as refusal:
            return _error(refusal)
        if self._client is None:
            return _error(_Refusal(500, "internal_error", "simulator is not started", "api_error"))
        task = self._new_task(request, fields)
        self._remember(task)
        task.runner = asyncio.create_task(self._run(task), name=f"simulator-{task.id}")
        self._runners.add(task.runner)
        task.runner.add_done_callback(self._runners.discard)
        self.stats["created"] += 1
        return JSONResponse({"code": 200, "msg": "success", "data": {"taskId": task.id}})

    async def _get_task(self, request: Request) -> Response:
        try:
            _authenticate(request)
        except _Refusal as refusal:
            return _error(refusal)
        task = self._tasks.get(request.path_params["task_id"])
        if task is None:
            return _error(_Refusal(404, "task_not_found", "Task not found"))
        return JSONResponse(task.as_wire())

    async def _get_file(self, request: Request) -> Response:
        # Like a CDN link, the image needs no key: jobhook downloads it with a plain GET.
        task = self._tasks.get(request.path_params["task_id"])
        ext = {"jpg": "jpeg"}.get(request.path_params["ext"], request.path_params["ext"])
        if task is None or task.image is None or ext != task.output_format:
            return _error(_Refusal(404, "file_not_found", "File not found"))
        return Response(task.image, media_type=FORMATS[task.output_format])

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and wrong methods answer in the provider's error shape too."""
        assert isinstance(exc, HTTPException)  # the only type this handler is registered for
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        response = _error(_Refusal(exc.status_code, code, exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    # --- tasks ------------------------------------------------------------------------------------

    def _new_task(self, request: Request, fields: dict[str, Any]) -> _Task:
        """Draw every random decision now, always all three in the same order, so a seed replays."""
        rolled_fail = self.random.random() < self.settings.failure_rate
        rolled_drop = self.random.random() < self.settings.drop_rate
        rolled_dup = self.random.random() < self.settings.duplicate_rate
        simulate: dict[str, Any] = fields["simulate"]
        task_id = str(uuid.uuid4())
        return _Task(
            id=task_id,
            prompt=fields["prompt"],
            size=fields["size"],
            output_format=fields["output_format"],
            image_url=self._file_url(request, task_id, fields["output_format"]),
            callback_url=fields["callback_url"],
            created_at=int(self.clock()),
            started=time.monotonic(),
            latency=float(simulate.get("latency", self.settings.latency)),
            fail=simulate.get("fail", rolled_fail),
            drop_callback=simulate.get("drop_callback", rolled_drop),
            duplicates=simulate.get("duplicates", 1 if rolled_dup else 0),
            concurrent_duplicates=simulate.get("concurrent_duplicates", 0),
            stale_timestamp=simulate.get("stale_timestamp", False),
        )

    def _file_url(self, request: Request, task_id: str, ext: str) -> str:
        """The image's absolute URL, through whatever mount (named or not) and root_path lead here.

        `request.url_for` resolves names from the outermost router, which fails when jobhook names its
        mount; our own router plus the prefix the mount added to root_path gives the same URL either way.
        """
        root_path = request.scope.get("root_path", "")
        mount_prefix = root_path[len(request.scope.get("app_root_path", root_path)) :]
        path = self.app.router.url_path_for("simulator_file", task_id=task_id, ext=ext)
        return str(URLPath(mount_prefix + str(path)).make_absolute_url(base_url=request.base_url))

    def _remember(self, task: _Task) -> None:
        self._tasks[task.id] = task
        while len(self._tasks) > self.max_tasks:
            _, old = self._tasks.popitem(last=False)
            if old.runner is not None:
                old.runner.cancel()

    async def _run(self, task: _Task) -> None:
        """Render, wait out the latency, become final, then call back — as the real provider would."""
        try:
            if not task.fail:
                task.image = await asyncio.to_thread(render, task.prompt, task.size, task.output_format)
            await asyncio.sleep(max(0.0, task.latency - (time.monotonic() - task.started)))
            task.completed_at = int(self.clock())
            task.status = "failed" if task.fail else "completed"
            self.stats[task.status] += 1
            await self._deliver(task)
        except Exception:  # not CancelledError: aclose and eviction must stop the runner
            logger.exception("simulator task %s broke", task.id)

    # --- callbacks --------------------------------------------------------------------------------

    async def _deliver(self, task: _Task) -> None:
        """Up to len(retry_delays) attempts until one gets a 2xx; then any duplicates, one after another."""
        if task.callback_url is None:
            return
        if task.drop_callback:
            self.stats["callbacks_dropped"] += 1
            return
        body = json.dumps(task.as_wire(), separators=(",", ":")).encode()
        copies = max(1, task.concurrent_duplicates)
        for delay in self.settings.retry_delays:
            if delay > 0:
                await asyncio.sleep(delay)
            results = await asyncio.gather(*(self._post(task, body) for _ in range(copies)))
            if any(results):
                break
        else:
            return  # every attempt failed: only polling can tell now
        for _ in range(task.duplicates):
            await self._post(task, body)

    async def _post(self, task: _Task, body: bytes) -> bool:
        """One delivery attempt; True if it was answered 2xx within the timeout."""
        assert self._client is not None and task.callback_url is not None
        timestamp = int(self.clock()) - (STALE_BY if task.stale_timestamp else 0)
        headers = {
            "Content-Type": "application/json",
            "X-Event": f"task.{task.status}",
            "X-Task-Id": task.id,
            "X-Timestamp": str(timestamp),
        }
        try:
            response = await self._client.post(task.callback_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.info("simulator callback for %s failed: %s", task.id, exc.__class__.__name__)
            self.stats["callback_attempts_failed"] += 1
            return False
        if response.is_success:
            self.stats["callbacks_sent"] += 1
            return True
        logger.info("simulator callback for %s answered %d", task.id, response.status_code)
        self.stats["callback_attempts_failed"] += 1
        return False


# --- validation and rendering (pure) --------------------------------------------------------------


def _error(refusal: _Refusal) -> JSONResponse:
    error = {"code": refusal.code, "message": refusal.message, "type": refusal.kind}
    return JSONResponse({"error": error}, status_code=refusal.status)


async def _read_capped(request: Request) -> bytes:
    """The body, refused past MAX_BODY: the simulator sits on jobhook's public port."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _Refusal(400, "invalid_request", f"body must be at most {MAX_BODY} bytes")
    return bytes(body)


# What follows the prefix in one of jobhook's callback URLs: one token (itsdangerous' URL-safe alphabet).
CALLBACK_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
DEFAULT_PORTS = {"http": 80, "https": 443}


def callback_url_allowed(url: str, prefix: str) -> bool:
    """Is `url` the prefix (jobhook's `…/callbacks/`) followed by one token, and nothing else?

    A string prefix test is not enough: the HTTP client resolves `prefix + "../v1/jobs"` to another
    route, and `%2e%2e`, a `user@` part, another port spelling or a `\\` can do the same. So the URL is
    split, its scheme, host and port compared exactly, and what follows the prefix's path must be one
    plain token: no `/`, no `%`, no `.` or `..` segment, no query or fragment.
    """
    try:
        wanted, given = urllib.parse.urlsplit(prefix), urllib.parse.urlsplit(url)
        ports = (wanted.port, given.port)
    except ValueError:  # an unparseable host or port
        return False
    scheme = given.scheme.lower()
    if scheme != wanted.scheme.lower() or scheme not in DEFAULT_PORTS:
        return False
    if given.username is not None or given.password is not None or "@" in given.netloc:
        return False
    if given.hostname is None or given.hostname != wanted.hostname:
        return False
    if (ports[1] or DEFAULT_PORTS[scheme]) != (ports[0] or DEFAULT_PORTS[scheme]):
        return False
    if given.query or given.fragment or "?" in url or "#" in url:
        return False
    if not given.path.startswith(wanted.path):
        return False
    rest = given.path[len(wanted.path) :]
    return CALLBACK_TOKEN.fullmatch(rest) is not None and rest not in (".", "..")


def _authenticate(request: Request) -> None:
    """Any `sk-` key is accepted: the simulator has no accounts, only the real provider's key format."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip().startswith("sk-"):
        raise _Refusal(401, "invalid_api_key", "Invalid API key", "authentication_error")


def _validate(body: Any) -> dict[str, Any]:
    """The create body, checked field by field like aivideoapi; each refusal names its field."""
    if not isinstance(body, dict):
        raise _Refusal(400, "invalid_request", "body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal(400, "invalid_request", "model is required")
    if model != MODEL:
        raise _Refusal(404, "model_not_found", f"model {model!r} not found")
    callback_url = body.get("callback_url")
    if callback_url is not None and (
        not isinstance(callback_url, str) or not callback_url.startswith(("http://", "https://"))
    ):
        raise _Refusal(400, "invalid_request", "callback_url must be an http(s) URL")
    data = body.get("input")
    if not isinstance(data, dict):
        raise _Refusal(400, "invalid_request", "input must be an object")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Refusal(400, "invalid_request", "input.prompt is required")
    if len(prompt) > MAX_PROMPT:
        raise _Refusal(400, "invalid_request", f"input.prompt must be at most {MAX_PROMPT} characters")
    return {
        "prompt": prompt,
        "callback_url": callback_url,
        "size": _choice(data, "size", "1:1", tuple(SIZES)),
        "rendering_speed": _choice(data, "rendering_speed", "BALANCED", SPEEDS),
        "output_format": _choice(data, "output_format", "jpeg", tuple(FORMATS)),
        "simulate": _simulate(data.get("simulate")),
    }


def _choice(data: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = data.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise _Refusal(400, "invalid_request", f"input.{name} must be one of {', '.join(allowed)}")
    return str(value)


def _simulate(raw: Any) -> dict[str, Any]:
    """Per-task overrides, in the provider's 400 when they are wrong (jobhook checks them first: 422)."""
    try:
        return simulate.overrides(raw, "input.simulate")
    except simulate.InvalidOverride as exc:
        raise _Refusal(400, "invalid_request", exc.message) from None


def render(prompt: str, size: str, output_format: str) -> bytes:
    """A real image of the prompt: a colour that is the prompt's own, the text wrapped and centred."""
    width, height = SIZES[size]
    digest = hashlib.sha256(prompt.encode()).digest()
    background = (digest[0], digest[1], digest[2])
    luminance = 0.299 * digest[0] + 0.587 * digest[1] + 0.114 * digest[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    font_size = max(16, width // 24)
    font = ImageFont.load_default(size=font_size)
    margin = width // 12
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    # Wrap by characters from the average width, narrower until every line fits ("WWW…" is wide).
    average = max(1.0, draw.textlength("abcdefghijklmnopqrstuvwxyz ", font=font) / 27)
    columns = max(8, int((width - 2 * margin) / average))
    lines = textwrap.wrap(" ".join(prompt.split()), width=columns)
    while columns > 8 and max(draw.textlength(line, font=font) for line in lines) > width - margin:
        columns -= 2
        lines = textwrap.wrap(" ".join(prompt.split()), width=columns)
    max_lines = max(1, (height - 2 * margin) // int(font_size * 1.3))
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1].rstrip(" .") + "…"]
    draw.multiline_text((width / 2, height / 2), "\n".join(lines), font=font, fill=ink, anchor="mm", align="center")
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
