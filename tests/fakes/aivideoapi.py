"""A fake `aivideoapi` provider (PROVIDERS.md §1, seed 002) served over real HTTP on loopback.

Strict on what it sends (exactly the documented task object, callback headers and retry schedule) and
strict on what it receives (auth, model, input fields validated like the real provider). Behaviour is
scripted per task with `TaskScript`; answers can be forced with `ForcedResponse`, "hang" or
"disconnect". Everything it does is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from tests.fakes import base
from tests.fakes.base import FakeProvider, json_or_none, override_headers

MODEL = "ideogram-v4"
METADATA_MODEL = "ideogram-ai/ideogram-v4"
MAX_PROMPT = 5000
SIZES = ("1:1", "3:4", "9:16", "4:3", "16:9")
RENDERING_SPEEDS = ("TURBO", "BALANCED", "QUALITY")
OUTPUT_FORMATS = ("jpeg", "png")
INPUT_ENUMS = {"size": SIZES, "rendering_speed": RENDERING_SPEEDS, "output_format": OUTPUT_FORMATS}
TOP_LEVEL_FIELDS = frozenset({"model", "callback_url", "input"})
FINAL = ("completed", "failed")
DEFAULT_ERROR = {"code": "upstream_error", "message": "Image generation failed"}
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "invalid_api_key": "authentication_error",
    "insufficient_credits": "billing_error",
    "ip_not_allowed": "permission_error",
    "model_not_found": "invalid_request_error",
    "task_not_found": "invalid_request_error",
    "rate_limit_exceeded": "rate_limit_error",
    "spend_limit_exceeded": "billing_error",
    "internal_error": "api_error",
    "upstream_error": "upstream_error",
}
_PIXELS = {"1:1": (16, 16), "3:4": (12, 16), "9:16": (9, 16), "4:3": (16, 12), "16:9": (16, 9)}

Outcome = Literal["completed", "failed", "never"]


def error_body(code: str, message: str | None = None) -> dict[str, Any]:
    """The provider's error envelope: {"error": {"code", "message", "type"}}."""
    return {"error": {"code": code, "message": message or code, "type": ERROR_TYPES.get(code, "api_error")}}


class ForcedResponse(base.ForcedResponse):
    """An answer to give instead of the normal behaviour (body: dict → JSON, str → text/plain); every
    fake takes it. `ForcedResponse.error(...)` builds one in this provider's error envelope."""

    @classmethod
    def error(
        cls, status: int, code: str, message: str | None = None, headers: dict[str, str] | None = None
    ) -> ForcedResponse:
        return cls(status, error_body(code, message), dict(headers or {}))


Forced = ForcedResponse | Literal["hang", "disconnect", "trickle"]


@dataclass
class TaskScript:
    outcome: Outcome = "completed"
    complete_after: float | None = None  # None: the fake's constructor value
    urls: list[str] | None = None  # None: [f"{base_url}/files/{task_id}.png|.jpg"]
    drop_callback: bool = False
    duplicates: int = 0  # extra sequential deliveries after the first 2xx
    concurrent_duplicates: int = 0  # >1: that many delivery chains started at once
    timestamp_offset: float = 0.0
    header_overrides: dict[str, str | None] = field(default_factory=dict)  # None removes the header
    body_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeTask:
    id: str
    body: dict[str, Any]  # the create request body, unknown input keys included
    script: TaskScript
    created_at: int
    created_mono: float
    status: str = "pending"
    completed_at: int | None = None
    urls: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    driver: asyncio.Task[None] | None = field(default=None, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def input(self) -> dict[str, Any]:
        inp: dict[str, Any] = self.body["input"]
        return inp

    @property
    def callback_url(self) -> str | None:
        return self.body.get("callback_url")

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, Any]:
        """The task object, exactly as GET /v1/tasks/{id} and the callback body carry it."""
        obj: dict[str, Any] = {"id": self.id, "status": self.status, "model": MODEL, "created_at": self.created_at}
        if self.status == "completed":
            obj["completed_at"] = self.completed_at
            obj["output"] = {"urls": list(self.urls), "metadata": {"model": METADATA_MODEL}}
        elif self.status == "failed":
            obj["error"] = dict(self.error or DEFAULT_ERROR)
        return obj


@dataclass
class CreateRecord:
    time: float  # time.monotonic()
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None if the body was not JSON
    task_id: str | None = None
    status: int | None = None  # None: never answered ("hang", "disconnect")


@dataclass
class QueryRecord:
    time: float
    task_id: str
    status: int | None = None


@dataclass
class DeliveryRecord:
    time: float  # monotonic time the attempt was sent
    task_id: str
    attempt: int  # "scheduled": 1..len(delays) within its chain; "duplicate": 1..n; "manual": 1
    headers: dict[str, str]  # the headers the fake set (httpx adds Host, Content-Length, …)
    body: Any
    status: int | None  # None: no answer (connection error / timeout) or not answered yet
    answer: Any  # parsed JSON answer, or None
    kind: str = "scheduled"  # "scheduled" | "duplicate" | "manual"
    chain: int = 0  # which concurrent chain (concurrent_duplicates)
    url: str = ""
    error: str | None = None
    done: bool = False  # recorded when sent; done once answered or given up
    answer_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    answered_at: float | None = None  # monotonic time the answer (or the error) came


def _image_bytes(size: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", _PIXELS.get(size, (16, 16)), (200, 80, 40)).save(buf, "PNG" if fmt == "png" else "JPEG")
    return buf.getvalue()


class FakeAivideoapi(FakeProvider[TaskScript]):
    """`async with FakeAivideoapi(...) as fake:` serves the provider at `fake.base_url`.

    Per-task behaviour: `next_scripts` (popped per new task), else `script_for(body)`, else
    `default_script`. Forced answers: `create_responses` / `query_responses` (popped per call; a
    ForcedResponse, "hang", "disconnect" or "trickle" (a 200 whose body never ends, one byte at a
    time); the last three apply after auth and validation, and on create the task IS created). Every
    request's method and raw target is kept in `requests`, as it arrived. Callback attempt i+1 waits `callback_retry_delays[i]` after attempt i.
    """

    def __init__(
        self,
        *,
        complete_after: float = 0.2,
        callback_retry_delays: tuple[float, ...] | list[float] = (0.0, 180.0, 600.0),
        callback_timeout: float = 5.0,
        create_delay: float = 0.0,
        api_key_prefix: str = "sk-",
        reject_unknown_fields: bool = True,
    ) -> None:
        super().__init__(
            [
                Route("/v1/images/generations", self._create, methods=["POST"]),
                Route("/v1/tasks/{task_id}", self._query, methods=["GET"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ],
            TaskScript(),
        )
        self.complete_after = complete_after
        self.callback_retry_delays = tuple(callback_retry_delays)
        self.callback_timeout = callback_timeout
        self.create_delay = create_delay  # between creating a task and answering: an answer a crash can lose
        # When set, a creation's answer waits for it (after the task is made): a submission held in flight.
        self.create_gate: asyncio.Event | None = None
        # Set: each task query's answer is read from the task after the gate opens (held in flight).
        self.query_gate: asyncio.Event | None = None
        self.api_key_prefix = api_key_prefix
        self.reject_unknown_fields = reject_unknown_fields
        self.create_responses: list[Forced] = []
        self.query_responses: list[Forced] = []
        self.creates: list[CreateRecord] = []
        self.queries: list[QueryRecord] = []
        self.deliveries: list[DeliveryRecord] = []
        self.file_requests: list[str] = []
        self.requests: list[tuple[str, bytes]] = []  # (method, raw path and query) as they arrived
        self.tasks: dict[str, FakeTask] = {}

    def _client_timeout(self) -> float:
        return self.callback_timeout

    def _arrived(self, scope: Scope) -> None:
        query = scope.get("query_string", b"")
        self.requests.append((scope["method"], scope["raw_path"] + (b"?" + query if query else b"")))

    def _error_body(self, code: str, message: str) -> dict[str, Any]:
        return error_body(code, message)

    # ---------------------------------------------------------------- HTTP endpoints

    def _validate(self, request: Request, body: Any) -> Response | None:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._invalid("Content-Type must be application/json.")
        if not isinstance(body, dict):
            return self._invalid("Request body must be a JSON object.")
        if "model" not in body:
            return self._invalid("'model' is required.")
        if body["model"] != MODEL:
            return self._error(404, "model_not_found", f"Model {body['model']!r} does not exist.")
        unknown = sorted(set(body) - TOP_LEVEL_FIELDS)
        if unknown and self.reject_unknown_fields:
            return self._invalid(f"Unknown field(s): {', '.join(unknown)}.")
        if "callback_url" in body:
            cb = body["callback_url"]
            if not isinstance(cb, str) or not cb.startswith(("http://", "https://")):
                return self._invalid("'callback_url' must be an http(s) URL.")
        inp = body.get("input")
        if not isinstance(inp, dict):
            return self._invalid("'input' is required and must be an object.")
        prompt = inp.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return self._invalid("'input.prompt' is required.")
        if len(prompt) > MAX_PROMPT:
            return self._invalid(f"'input.prompt' must be at most {MAX_PROMPT} characters.")
        for name, allowed in INPUT_ENUMS.items():
            if name in inp and inp[name] not in allowed:
                return self._invalid(f"'input.{name}' must be one of: {', '.join(allowed)}.")
        return None

    async def _create(self, request: Request) -> Response:
        forced = self.create_responses.pop(0) if self.create_responses else None
        record = CreateRecord(time.monotonic(), dict(request.headers), json_or_none(await request.body()))
        self.creates.append(record)
        refused = self._refused(request, record, forced, validate=True)
        if refused is not None:
            return refused
        task = self._new_task(record.body)
        record.task_id = task.id
        if forced == "trickle":
            return self._trickle()
        if forced is not None:  # "hang" / "disconnect": the provider accepted it, the answer is lost
            return await self._no_answer(request, hang=forced == "hang")
        if self.create_delay > 0:
            await asyncio.sleep(self.create_delay)
        if self.create_gate is not None:
            await self.create_gate.wait()
        record.status = 200
        return JSONResponse({"code": 200, "msg": "success", "data": {"taskId": task.id}})

    async def _query(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        forced = self.query_responses.pop(0) if self.query_responses else None
        record = QueryRecord(time.monotonic(), task_id)
        self.queries.append(record)
        refused = self._refused(request, record, forced)
        if refused is not None:
            return refused
        if forced == "trickle":
            return self._trickle()
        if forced is not None:
            return await self._no_answer(request, hang=forced == "hang")
        if self.query_gate is not None:
            await self.query_gate.wait()
        task = self.tasks.get(task_id)
        if task is None:
            record.status = 404
            return self._error(404, "task_not_found", f"Task {task_id!r} does not exist.")
        record.status = 200
        return JSONResponse(task.to_dict())

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.file_requests.append(name)
        stem, _, ext = name.rpartition(".")
        task = self.tasks.get(stem)
        if task is None or ext not in ("png", "jpg", "jpeg"):
            return PlainTextResponse("Not Found", 404)
        fmt = "png" if ext == "png" else "jpeg"
        return Response(_image_bytes(task.input.get("size", "1:1"), fmt), media_type=f"image/{fmt}")

    # ---------------------------------------------------------------- task life

    def _new_task(self, body: dict[str, Any]) -> FakeTask:
        task = FakeTask(
            id=str(uuid.uuid4()),
            body=body,
            script=self._pick_script(body),
            created_at=int(time.time()),
            created_mono=time.monotonic(),
        )
        self.tasks[task.id] = task
        task.driver = self._spawn(self._drive(task))
        return task

    async def _drive(self, task: FakeTask) -> None:
        total = self.complete_after if task.script.complete_after is None else task.script.complete_after
        await asyncio.sleep(total / 2)
        task.status = "processing"
        if task.script.outcome == "never":
            return
        await asyncio.sleep(total / 2)
        self._finalize(task, task.script.outcome)

    def _default_urls(self, task: FakeTask) -> list[str]:
        ext = "png" if task.input.get("output_format") == "png" else "jpg"
        return [f"{self.base_url}/files/{task.id}.{ext}"]

    def _finalize(
        self, task: FakeTask, outcome: str, urls: list[str] | None = None, error: dict[str, Any] | None = None
    ) -> None:
        if task.final:
            raise RuntimeError(f"task {task.id} is already {task.status}")
        if task.driver is not None and task.driver is not asyncio.current_task():
            task.driver.cancel()
        if outcome == "completed":
            task.urls = list(urls or task.script.urls or self._default_urls(task))
            task.completed_at = int(time.time())
        else:
            task.error = dict(error or DEFAULT_ERROR)
        task.status = outcome
        task.finished.set()
        if task.callback_url and not task.script.drop_callback:
            self._spawn(self._deliver_event(task))

    def complete(self, task_id: str, urls: list[str] | None = None) -> FakeTask:
        """Force the task to `completed` now; its callback follows the task's script."""
        task = self.tasks[task_id]
        self._finalize(task, "completed", urls=urls)
        return task

    def fail(self, task_id: str, error: dict[str, Any] | None = None) -> FakeTask:
        """Force the task to `failed` now (error defaults to upstream_error)."""
        task = self.tasks[task_id]
        self._finalize(task, "failed", error=error)
        return task

    # ---------------------------------------------------------------- callbacks

    async def _deliver_event(self, task: FakeTask) -> None:
        chains = max(1, task.script.concurrent_duplicates)
        results = await asyncio.gather(*(self._deliver_with_retries(task, chain) for chain in range(chains)))
        if any(results):
            for n in range(task.script.duplicates):
                await self._send(task, kind="duplicate", attempt=n + 1)

    async def _deliver_with_retries(self, task: FakeTask, chain: int) -> bool:
        for i, delay in enumerate(self.callback_retry_delays):
            if delay > 0:
                await asyncio.sleep(delay)
            record = await self._send(task, kind="scheduled", attempt=i + 1, chain=chain)
            if record.status is not None and 200 <= record.status < 300:
                return True
        return False

    async def _send(
        self,
        task: FakeTask,
        *,
        kind: str,
        attempt: int,
        chain: int = 0,
        url: str | None = None,
        timestamp_offset: float | None = None,
        header_overrides: dict[str, str | None] | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> DeliveryRecord:
        assert self._client is not None, "FakeAivideoapi is not running"
        script = task.script
        target = url or task.callback_url
        if not target:
            raise ValueError(f"task {task.id} has no callback_url and no url was given")
        body = task.to_dict()
        body.update(script.body_overrides if body_overrides is None else body_overrides)
        offset = script.timestamp_offset if timestamp_offset is None else timestamp_offset
        headers: dict[str, str] = {
            "Content-Type": "application/json",
            "X-Event": f"task.{task.status}",
            "X-Task-Id": task.id,
            "X-Timestamp": str(int(time.time() + offset)),
        }
        override_headers(headers, script.header_overrides if header_overrides is None else header_overrides)
        record = DeliveryRecord(time.monotonic(), task.id, attempt, headers, body, None, None, kind, chain, target)
        self.deliveries.append(record)
        try:
            resp = await self._client.post(target, content=json.dumps(body).encode(), headers=headers)
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            record.status = resp.status_code
            record.answer_headers = {key.lower(): value for key, value in resp.headers.items()}
            with contextlib.suppress(ValueError):
                record.answer = resp.json()
        record.answered_at = time.monotonic()
        record.done = True
        return record

    async def deliver(
        self,
        task_id: str,
        *,
        url: str | None = None,
        timestamp_offset: float | None = None,
        header_overrides: dict[str, str | None] | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> tuple[int | None, Any]:
        """Send one extra callback for the task now (its current state; overrides default to the
        script's). Returns (HTTP status or None if no answer, parsed JSON answer or None)."""
        record = await self._send(
            self.tasks[task_id],
            kind="manual",
            attempt=1,
            url=url,
            timestamp_offset=timestamp_offset,
            header_overrides=header_overrides,
            body_overrides=body_overrides,
        )
        return record.status, record.answer

    # ---------------------------------------------------------------- waiting / queries on records

    async def wait_final(self, task_id: str, timeout: float = 5.0) -> FakeTask:
        """Wait until the task is completed or failed. Raises TimeoutError."""
        task = self.tasks[task_id]
        await asyncio.wait_for(task.finished.wait(), timeout)
        return task

    def deliveries_for(self, task_id: str) -> list[DeliveryRecord]:
        return [d for d in self.deliveries if d.task_id == task_id]
