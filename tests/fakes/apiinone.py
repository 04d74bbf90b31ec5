"""A fake `apiinone` provider (PROVIDERS.md §4, seed 004) served over real HTTP on loopback.

Async task tracked by polling alone (no callbacks at all). Strict on what it receives (`Authorization:
Bearer aio_…`, the page's parameters, no `callback_url`) and on what it sends; the shapes the page
leaves open are picked per task by `TaskScript`: the create answer plain or wrapped in `{"data": …}`,
or "direct" (already holding the image URLs as `urls`, `images`, `output.urls` or `data[].url`), the
task object plain or wrapped, and the status words (`completed`/`succeeded`/`success`,
`failed`/`error`/`canceled`). Errors are `{"error": {"code", "message"}}` (**assumed**). Answers can
be forced with `ForcedResponse`, "hang" or "disconnect". Everything it does is recorded.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, ForcedResponse, json_or_none

MODEL = "ideogram-v4"
SIZES = ("1:1", "16:9", "9:16", "3:4", "4:3", "3:2", "2:3", "9:21", "21:9")
RENDERING_SPEEDS = ("TURBO", "BALANCED", "QUALITY")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
ENUMS = {"size": SIZES, "rendering_speed": RENDERING_SPEEDS, "output_format": OUTPUT_FORMATS}
FIELDS = frozenset({"model", "prompt", *ENUMS})
DEFAULT_ERROR = {"code": "upstream_error", "message": "Image generation failed"}
_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
_PIXELS = {
    "1:1": (16, 16),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "3:4": (12, 16),
    "4:3": (16, 12),
    "3:2": (15, 10),
    "2:3": (10, 15),
    "9:21": (9, 21),
    "21:9": (21, 9),
}

Outcome = Literal["completed", "failed", "never"]
CompletedWord = Literal["completed", "succeeded", "success"]
FailedWord = Literal["failed", "error", "canceled"]
# where a "direct" create answer holds the URLs:
# "urls": {"task_id", "status", "urls": [...]} · "images": {…, "images": [...]} ·
# "output.urls": {…, "output": {"urls": [...]}} · "data[].url": {"created", "data": [{"url"}, …]}
Direct = Literal["urls", "images", "output.urls", "data[].url"]
Forced = ForcedResponse | Literal["hang", "disconnect"]


def error_body(code: str, message: str | None = None) -> dict[str, Any]:
    """The (assumed) error envelope: {"error": {"code", "message"}}."""
    return {"error": {"code": code, "message": message or code}}


def forced_error(
    status: int, code: str, message: str | None = None, headers: dict[str, str] | None = None
) -> ForcedResponse:
    """A forced answer in this provider's error envelope, e.g. forced_error(429, "rate_limit_exceeded",
    headers={"Retry-After": "7"})."""
    return ForcedResponse(status, error_body(code, message), dict(headers or {}))


@dataclass
class TaskScript:
    outcome: Outcome = "completed"
    complete_after: float | None = None  # None: the fake's constructor value; processing after half of it
    urls: list[str] | None = None  # None: [f"{base_url}/files/{task_id}.{png|jpg|webp}"]
    wrapped: bool = False  # the create answer as {"data": {...}} (and the task object, unless wrap_query)
    wrap_query: bool | None = None  # None: same as `wrapped`
    direct: Direct | None = None  # the create answer already holds the URLs; the task is completed at once
    direct_task_id: bool = True  # a direct answer ("urls"/"images"/"output.urls") carries task_id and status
    completed_word: CompletedWord = "completed"
    failed_word: FailedWord = "failed"


@dataclass
class FakeTask:
    id: str
    body: dict[str, Any]  # the create request body
    script: TaskScript
    created_mono: float
    status: str = "pending"  # canonical: pending | processing | completed | failed
    urls: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    driver: asyncio.Task[None] | None = field(default=None, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def final(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def status_word(self) -> str:
        """The status as the provider says it (the script's synonyms for completed / failed)."""
        if self.status == "completed":
            return self.script.completed_word
        if self.status == "failed":
            return self.script.failed_word
        return self.status

    def to_dict(self) -> dict[str, Any]:
        """The task object as GET /api/v1/tasks/{task_id} carries it (before any {"data": …} wrapping)."""
        obj: dict[str, Any] = {"task_id": self.id, "status": self.status_word}
        if self.status == "completed":
            obj["output"] = {"urls": list(self.urls)}
        elif self.status == "failed":
            obj["error"] = dict(self.error or DEFAULT_ERROR)
        return obj

    def create_answer(self) -> dict[str, Any]:
        """The create answer the script asks for."""
        script = self.script
        if script.direct == "data[].url":
            return {"created": int(time.time()), "data": [{"url": u} for u in self.urls]}
        obj: dict[str, Any] = {"task_id": self.id, "status": self.status_word}
        if script.direct is not None and not script.direct_task_id:
            obj = {}
        if script.direct == "urls":
            obj["urls"] = list(self.urls)
        elif script.direct == "images":
            obj["images"] = list(self.urls)
        elif script.direct == "output.urls":
            obj["output"] = {"urls": list(self.urls)}
        return {"data": obj} if script.wrapped else obj


@dataclass
class CreateRecord:
    time: float  # time.monotonic()
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None if the body was not JSON
    task_id: str | None = None
    status: int | None = None  # None: never answered ("hang", "disconnect")
    answer: Any = None  # the JSON answered


@dataclass
class QueryRecord:
    time: float
    task_id: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    answer: Any = None


def _image_bytes(size: str, ext: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", _PIXELS.get(size, (16, 16)), (90, 160, 60)).save(buf, _PIL_FORMATS[ext])
    return buf.getvalue()


class FakeApiinone(FakeProvider[TaskScript]):
    """`async with FakeApiinone(...) as fake:` serves the provider at `fake.base_url`.

    Per-task behaviour: `next_scripts` (popped per new task), else `script_for(body)`, else
    `default_script`. Forced answers: `create_responses` / `query_responses` (popped per call; a
    ForcedResponse replaces everything, auth included; "hang"/"disconnect" apply after auth and
    validation, and on create the task IS created).
    """

    def __init__(
        self,
        *,
        complete_after: float = 0.2,
        api_key_prefix: str = "aio_",
        reject_unknown_fields: bool = True,
    ) -> None:
        super().__init__(
            [
                Route("/api/v1/images/generations", self._create, methods=["POST"]),
                Route("/api/v1/tasks/{task_id}", self._query, methods=["GET"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ],
            TaskScript(),
        )
        self.complete_after = complete_after
        self.api_key_prefix = api_key_prefix
        self.reject_unknown_fields = reject_unknown_fields
        self.create_responses: list[Forced] = []
        self.query_responses: list[Forced] = []
        self.creates: list[CreateRecord] = []
        self.queries: list[QueryRecord] = []
        self.file_requests: list[str] = []
        self.tasks: dict[str, FakeTask] = {}

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
        if not isinstance(body["model"], str):
            return self._invalid("'model' must be a string.")
        if body["model"] != MODEL:
            return self._error(404, "model_not_found", f"Model {body['model']!r} does not exist.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return self._invalid("'prompt' is required and must be a non-empty string.")
        unknown = sorted(set(body) - FIELDS)
        if unknown and self.reject_unknown_fields:
            return self._invalid(f"Unknown field(s): {', '.join(unknown)}.")
        for name, allowed in ENUMS.items():
            if name in body and body[name] not in allowed:
                return self._invalid(f"'{name}' must be one of: {', '.join(allowed)}.")
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
        if forced is not None:
            return await self._no_answer(request, hang=forced == "hang")
        record.status = 200
        record.answer = task.create_answer()
        return JSONResponse(record.answer)

    async def _query(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        forced = self.query_responses.pop(0) if self.query_responses else None
        record = QueryRecord(time.monotonic(), task_id, headers=dict(request.headers))
        self.queries.append(record)
        refused = self._refused(request, record, forced)
        if refused is not None:
            return refused
        if forced is not None:
            return await self._no_answer(request, hang=forced == "hang")
        task = self.tasks.get(task_id)
        if task is None:
            record.status = 404
            return self._error(404, "task_not_found", f"Task {task_id!r} does not exist.")
        wrap = task.script.wrapped if task.script.wrap_query is None else task.script.wrap_query
        record.status = 200
        record.answer = {"data": task.to_dict()} if wrap else task.to_dict()
        return JSONResponse(record.answer)

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.file_requests.append(name)
        stem, _, ext = name.rpartition(".")
        task = self.tasks.get(stem)
        if task is None or ext not in _PIL_FORMATS:
            return PlainTextResponse("Not Found", 404)
        return Response(_image_bytes(task.body.get("size", "1:1"), ext), media_type=_MEDIA_TYPES[ext])

    # ---------------------------------------------------------------- task life

    def _new_task(self, body: dict[str, Any]) -> FakeTask:
        task = FakeTask(id=str(uuid.uuid4()), body=body, script=self._pick_script(body), created_mono=time.monotonic())
        self.tasks[task.id] = task
        if task.script.direct is not None:
            self._finalize(task, "completed")
        else:
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
        return [f"{self.base_url}/files/{task.id}.{_EXT[task.body.get('output_format', 'png')]}"]

    def _finalize(
        self, task: FakeTask, outcome: str, urls: list[str] | None = None, error: dict[str, Any] | None = None
    ) -> None:
        if task.final:
            raise RuntimeError(f"task {task.id} is already {task.status}")
        if task.driver is not None and task.driver is not asyncio.current_task():
            task.driver.cancel()
        if outcome == "completed":
            task.urls = list(urls or task.script.urls or self._default_urls(task))
        else:
            task.error = dict(error or DEFAULT_ERROR)
        task.status = outcome
        task.finished.set()

    def complete(self, task_id: str, urls: list[str] | None = None) -> FakeTask:
        """Force the task to completed now."""
        task = self.tasks[task_id]
        self._finalize(task, "completed", urls=urls)
        return task

    def fail(self, task_id: str, error: dict[str, Any] | None = None) -> FakeTask:
        """Force the task to failed now (error defaults to upstream_error)."""
        task = self.tasks[task_id]
        self._finalize(task, "failed", error=error)
        return task

    # ---------------------------------------------------------------- waiting

    async def wait_final(self, task_id: str, timeout: float = 5.0) -> FakeTask:
        """Wait until the task is completed or failed. Raises TimeoutError."""
        task = self.tasks[task_id]
        await asyncio.wait_for(task.finished.wait(), timeout)
        return task
