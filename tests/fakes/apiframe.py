"""A fake `apiframe` provider (PROVIDERS.md §2, seeds 000/001) served over real HTTP on loopback.

Strict on what it sends (the job object, a plain JSON webhook without signature or special headers)
and strict on what it receives (`X-API-Key: afk_…`, the documented body and `ideogramParams` schema,
the tier/`rendering_speed` pairing). What the pages leave open (the `result` shape, the failed job's
`error`, webhook retries) is chosen per job by `JobScript`. Answers can be forced with
`ForcedResponse`, "hang" or "disconnect". Everything it does is recorded for assertions.
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

from tests.fakes.aivideoapi import ForcedResponse, error_body
from tests.fakes.base import FakeProvider, json_or_none, override_headers

# model id → the ideogramParams.rendering_speed that goes with it (ideogram-v4-quality is **assumed**)
MODELS = {"ideogram-v4-turbo": "turbo", "ideogram-v4-balanced": "default", "ideogram-v4-quality": "quality"}
STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN")
MAGIC_PROMPT_OPTIONS = ("Auto", "On", "Off")
RENDERING_SPEEDS = ("default", "turbo", "quality")
ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")  # **assumed** field ideogramParams.aspect_ratio
PARAM_ENUMS = {
    "style_type": STYLE_TYPES,
    "magic_prompt_option": MAGIC_PROMPT_OPTIONS,
    "rendering_speed": RENDERING_SPEEDS,
    "aspect_ratio": ASPECT_RATIOS,
}
TOP_LEVEL_FIELDS = frozenset({"prompt", "model", "webhook_url", "ideogramParams"})
PARAM_FIELDS = frozenset(
    {"style_type", "magic_prompt_option", "image", "negative_prompt", "rendering_speed", "seed", "aspect_ratio"}
)
FINAL = ("COMPLETED", "FAILED")
DEFAULT_ERROR = {"code": "upstream_error", "message": "Image generation failed"}
_PIXELS = {"1:1": (16, 16), "3:4": (12, 16), "9:16": (9, 16), "4:3": (16, 12), "16:9": (16, 9)}

Outcome = Literal["completed", "failed", "never"]
# "urls": {"urls": [...]} (documented example) · "list": [...] · "string": "url" (the first URL) ·
# "images": {"images": ["url", …]} · "images_objects": {"images": [{"url": …}, …]}
ResultShape = Literal["urls", "list", "string", "images", "images_objects"]
# "object": "error": {"code", "message"} · "string": "error": "message"
ErrorShape = Literal["object", "string"]
Forced = ForcedResponse | Literal["hang", "disconnect"]


def forced_error(
    status: int, code: str, message: str | None = None, headers: dict[str, str] | None = None
) -> ForcedResponse:
    """A forced answer in the provider's (assumed: provider 1's) error envelope."""
    return ForcedResponse.error(status, code, message, headers)


@dataclass
class JobScript:
    outcome: Outcome = "completed"
    complete_after: float | None = None  # None: the fake's constructor value; PROCESSING after half of it
    urls: list[str] | None = None  # None: [f"{base_url}/files/{job_id}.png"]
    result_shape: ResultShape = "urls"
    error_shape: ErrorShape = "object"
    drop_webhook: bool = False
    retry_on_failure: bool = False  # retry a non-2xx / unanswered webhook per `webhook_retry_delays`
    duplicates: int = 0  # extra sequential deliveries after the first 2xx
    concurrent_duplicates: int = 0  # >1: that many delivery chains started at once
    header_overrides: dict[str, str | None] = field(default_factory=dict)  # None removes the header
    body_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. another jobId, a contradicting status


@dataclass
class FakeJob:
    id: str
    body: dict[str, Any]  # the create request body, as received
    script: JobScript
    created_mono: float
    status: str = "QUEUED"
    urls: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    driver: asyncio.Task[None] | None = field(default=None, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def model(self) -> str:
        model: str = self.body["model"]
        return model

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.body.get("ideogramParams") or {}
        return params

    @property
    def webhook_url(self) -> str | None:
        return self.body.get("webhook_url")

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def result(self) -> Any:
        shape = self.script.result_shape
        if shape == "list":
            return list(self.urls)
        if shape == "string":
            return self.urls[0]
        if shape == "images":
            return {"images": list(self.urls)}
        if shape == "images_objects":
            return {"images": [{"url": u} for u in self.urls]}
        return {"urls": list(self.urls)}

    def to_dict(self) -> dict[str, Any]:
        """The job object, exactly as GET /v2/jobs/{id} and the webhook body carry it."""
        obj: dict[str, Any] = {"jobId": self.id, "status": self.status}
        if self.status == "COMPLETED":
            obj["result"] = self.result()
        elif self.status == "FAILED":
            error = dict(self.error or DEFAULT_ERROR)
            obj["error"] = error if self.script.error_shape == "object" else str(error.get("message", ""))
        return obj


@dataclass
class CreateRecord:
    time: float  # time.monotonic()
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None if the body was not JSON
    job_id: str | None = None
    status: int | None = None  # None: never answered ("hang", "disconnect")


@dataclass
class QueryRecord:
    time: float
    job_id: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class DeliveryRecord:
    time: float  # monotonic time the attempt was sent
    job_id: str
    attempt: int  # "scheduled": 1..n within its chain; "duplicate": 1..n; "manual": 1
    headers: dict[str, str]  # the headers the fake set (httpx adds Host, Content-Length, …)
    body: Any
    status: int | None  # None: no answer (connection error / timeout) or not answered yet
    answer: Any  # parsed JSON answer, or None
    kind: str = "scheduled"  # "scheduled" | "duplicate" | "manual"
    chain: int = 0  # which concurrent chain (concurrent_duplicates)
    url: str = ""
    error: str | None = None
    done: bool = False  # recorded when sent; done once answered or given up


def _image_bytes(aspect_ratio: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", _PIXELS.get(aspect_ratio, (16, 16)), (40, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


class FakeApiframe(FakeProvider[JobScript]):
    """`async with FakeApiframe(...) as fake:` serves the provider at `fake.base_url`.

    Per-job behaviour: `next_scripts` (popped per new job), else `script_for(body)`, else
    `default_script`. Forced answers: `create_responses` / `query_responses` (popped per call; a
    ForcedResponse, "hang" or "disconnect"; a ForcedResponse replaces everything, auth included; the
    last two apply after auth and validation, and on create the job IS created). Webhooks: one POST
    when the job is final; with `retry_on_failure`, attempt i+1 waits `webhook_retry_delays[i]` after
    attempt i.
    """

    def __init__(
        self,
        *,
        complete_after: float = 0.2,
        webhook_retry_delays: tuple[float, ...] | list[float] = (0.0, 1.0, 3.0),
        webhook_timeout: float = 5.0,
        api_key_prefix: str = "afk_",
        reject_unknown_fields: bool = True,
    ) -> None:
        super().__init__(
            [
                Route("/v2/images/generate", self._create, methods=["POST"]),
                Route("/v2/jobs/{job_id}", self._query, methods=["GET"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ],
            JobScript(),
        )
        self.complete_after = complete_after
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        self.webhook_timeout = webhook_timeout
        self.api_key_prefix = api_key_prefix
        self.reject_unknown_fields = reject_unknown_fields
        self.create_responses: list[Forced] = []
        self.query_responses: list[Forced] = []
        self.creates: list[CreateRecord] = []
        self.queries: list[QueryRecord] = []
        self.deliveries: list[DeliveryRecord] = []
        self.file_requests: list[str] = []
        self.jobs: dict[str, FakeJob] = {}

    def _client_timeout(self) -> float:
        return self.webhook_timeout

    def _error_body(self, code: str, message: str) -> dict[str, Any]:
        return error_body(code, message)

    # ---------------------------------------------------------------- HTTP endpoints

    def _api_key(self, request: Request) -> str:
        return request.headers.get("x-api-key", "")

    def _validate(self, request: Request, body: Any) -> Response | None:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._invalid("Content-Type must be application/json.")
        if not isinstance(body, dict):
            return self._invalid("Request body must be a JSON object.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return self._invalid("'prompt' is required and must be a non-empty string.")
        if "model" not in body:
            return self._invalid("'model' is required.")
        model = body["model"]
        if not isinstance(model, str):
            return self._invalid("'model' must be a string.")
        if model not in MODELS:
            return self._error(404, "model_not_found", f"Model {model!r} does not exist.")
        unknown = sorted(set(body) - TOP_LEVEL_FIELDS)
        if unknown and self.reject_unknown_fields:
            return self._invalid(f"Unknown field(s): {', '.join(unknown)}.")
        if "webhook_url" in body:
            hook = body["webhook_url"]
            if not isinstance(hook, str) or not hook.startswith(("http://", "https://")):
                return self._invalid("'webhook_url' must be an http(s) URL.")
        if "ideogramParams" not in body:
            return None
        params = body["ideogramParams"]
        if not isinstance(params, dict):
            return self._invalid("'ideogramParams' must be an object.")
        unknown = sorted(set(params) - PARAM_FIELDS)
        if unknown and self.reject_unknown_fields:
            return self._invalid(f"Unknown field(s): {', '.join(f'ideogramParams.{u}' for u in unknown)}.")
        for name, allowed in PARAM_ENUMS.items():
            if name in params and params[name] not in allowed:
                return self._invalid(f"'ideogramParams.{name}' must be one of: {', '.join(allowed)}.")
        if "image" in params:
            image = params["image"]
            if not isinstance(image, str) or not image.startswith(("http://", "https://")):
                return self._invalid("'ideogramParams.image' must be an http(s) URL.")
        if "negative_prompt" in params and not isinstance(params["negative_prompt"], str):
            return self._invalid("'ideogramParams.negative_prompt' must be a string.")
        if "seed" in params and (isinstance(params["seed"], bool) or not isinstance(params["seed"], int)):
            return self._invalid("'ideogramParams.seed' must be an integer.")
        speed = params.get("rendering_speed")
        if speed is not None and speed != MODELS[model]:
            return self._invalid(
                f"'ideogramParams.rendering_speed' {speed!r} does not match model {model!r} (expects {MODELS[model]!r})."
            )
        return None

    async def _create(self, request: Request) -> Response:
        forced = self.create_responses.pop(0) if self.create_responses else None
        record = CreateRecord(time.monotonic(), dict(request.headers), json_or_none(await request.body()))
        self.creates.append(record)
        refused = self._refused(request, record, forced, validate=True)
        if refused is not None:
            return refused
        job = self._new_job(record.body)
        record.job_id = job.id
        if forced is not None:  # "hang" / "disconnect": the provider accepted it, the answer is lost
            return await self._no_answer(request, hang=forced == "hang")
        record.status = 202
        return JSONResponse({"jobId": job.id, "status": "QUEUED"}, 202)

    async def _query(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        forced = self.query_responses.pop(0) if self.query_responses else None
        record = QueryRecord(time.monotonic(), job_id, headers=dict(request.headers))
        self.queries.append(record)
        refused = self._refused(request, record, forced)
        if refused is not None:
            return refused
        if forced is not None:
            return await self._no_answer(request, hang=forced == "hang")
        job = self.jobs.get(job_id)
        if job is None:
            record.status = 404
            return self._error(404, "job_not_found", f"Job {job_id!r} does not exist.")
        record.status = 200
        return JSONResponse(job.to_dict())

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.file_requests.append(name)
        stem, _, ext = name.rpartition(".")
        job = self.jobs.get(stem)
        if job is None or ext != "png":
            return PlainTextResponse("Not Found", 404)
        return Response(_image_bytes(job.params.get("aspect_ratio", "1:1")), media_type="image/png")

    # ---------------------------------------------------------------- job life

    def _new_job(self, body: dict[str, Any]) -> FakeJob:
        job = FakeJob(id=str(uuid.uuid4()), body=body, script=self._pick_script(body), created_mono=time.monotonic())
        self.jobs[job.id] = job
        job.driver = self._spawn(self._drive(job))
        return job

    async def _drive(self, job: FakeJob) -> None:
        total = self.complete_after if job.script.complete_after is None else job.script.complete_after
        await asyncio.sleep(total / 2)
        job.status = "PROCESSING"
        if job.script.outcome == "never":
            return
        await asyncio.sleep(total / 2)
        self._finalize(job, job.script.outcome)

    def _finalize(
        self, job: FakeJob, outcome: str, urls: list[str] | None = None, error: dict[str, Any] | str | None = None
    ) -> None:
        if job.final:
            raise RuntimeError(f"job {job.id} is already {job.status}")
        if job.driver is not None and job.driver is not asyncio.current_task():
            job.driver.cancel()
        if outcome == "completed":
            job.urls = list(urls or job.script.urls or [f"{self.base_url}/files/{job.id}.png"])
            job.status = "COMPLETED"
        else:
            if isinstance(error, str):
                error = {"code": DEFAULT_ERROR["code"], "message": error}
            job.error = dict(error or DEFAULT_ERROR)
            job.status = "FAILED"
        job.finished.set()
        if job.webhook_url and not job.script.drop_webhook:
            self._spawn(self._deliver_event(job))

    def complete(self, job_id: str, urls: list[str] | None = None) -> FakeJob:
        """Force the job to COMPLETED now; its webhook follows the job's script."""
        job = self.jobs[job_id]
        self._finalize(job, "completed", urls=urls)
        return job

    def fail(self, job_id: str, error: dict[str, Any] | str | None = None) -> FakeJob:
        """Force the job to FAILED now (error: {"code", "message"} or a message; default upstream_error).
        The script's `error_shape` picks how the job object carries it."""
        job = self.jobs[job_id]
        self._finalize(job, "failed", error=error)
        return job

    # ---------------------------------------------------------------- webhooks

    async def _deliver_event(self, job: FakeJob) -> None:
        chains = max(1, job.script.concurrent_duplicates)
        results = await asyncio.gather(*(self._deliver_chain(job, chain) for chain in range(chains)))
        if any(results):
            for n in range(job.script.duplicates):
                await self._send(job, kind="duplicate", attempt=n + 1)

    async def _deliver_chain(self, job: FakeJob, chain: int) -> bool:
        delays = self.webhook_retry_delays if job.script.retry_on_failure else (0.0,)
        for i, delay in enumerate(delays):
            if delay > 0:
                await asyncio.sleep(delay)
            record = await self._send(job, kind="scheduled", attempt=i + 1, chain=chain)
            if record.status is not None and 200 <= record.status < 300:
                return True
        return False

    async def _send(
        self,
        job: FakeJob,
        *,
        kind: str,
        attempt: int,
        chain: int = 0,
        url: str | None = None,
        header_overrides: dict[str, str | None] | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> DeliveryRecord:
        assert self._client is not None, "FakeApiframe is not running"
        script = job.script
        target = url or job.webhook_url
        if not target:
            raise ValueError(f"job {job.id} has no webhook_url and no url was given")
        body = job.to_dict()
        body.update(script.body_overrides if body_overrides is None else body_overrides)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        override_headers(headers, script.header_overrides if header_overrides is None else header_overrides)
        record = DeliveryRecord(time.monotonic(), job.id, attempt, headers, body, None, None, kind, chain, target)
        self.deliveries.append(record)
        try:
            resp = await self._client.post(target, content=json.dumps(body).encode(), headers=headers)
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            record.status = resp.status_code
            with contextlib.suppress(ValueError):
                record.answer = resp.json()
        record.done = True
        return record

    async def deliver(
        self,
        job_id: str,
        *,
        url: str | None = None,
        header_overrides: dict[str, str | None] | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> tuple[int | None, Any]:
        """Send one extra webhook for the job now (its current state; overrides default to the
        script's). Returns (HTTP status or None if no answer, parsed JSON answer or None)."""
        record = await self._send(
            self.jobs[job_id],
            kind="manual",
            attempt=1,
            url=url,
            header_overrides=header_overrides,
            body_overrides=body_overrides,
        )
        return record.status, record.answer

    # ---------------------------------------------------------------- waiting / queries on records

    async def wait_final(self, job_id: str, timeout: float = 5.0) -> FakeJob:
        """Wait until the job is COMPLETED or FAILED. Raises TimeoutError."""
        job = self.jobs[job_id]
        await asyncio.wait_for(job.finished.wait(), timeout)
        return job

    def deliveries_for(self, job_id: str) -> list[DeliveryRecord]:
        return [d for d in self.deliveries if d.job_id == job_id]
