"""The shape every provider adapter has: pure mapping between jobhook's vocabulary and the wire.

An adapter builds `WireRequest`s and parses `WireResponse`s and callback bodies into domain values;
it never sends anything itself (`service.providers.http` does) and never touches the database. The
helpers below are the tolerant readers the adapters share: status words, image URLs, error answers.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeGuard
from urllib.parse import quote

import orjson

from service.domain.pricing import PriceTable
from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import JobError, Observation, Status
from service.errors import JobhookError


class Tracking(enum.StrEnum):
    """How a provider tells jobhook that a job finished."""

    CALLBACK = "callback"  # callbacks with X-Task-Id / X-Timestamp / X-Event headers
    WEBHOOK_CONFIRM = "webhook + confirm"  # a bare webhook whose claim is confirmed by one poll
    SYNCHRONOUS = "synchronous"  # the submission's answer is the result
    POLLING = "polling"  # nothing comes: jobhook asks


class ProtocolError(JobhookError):
    """The provider answered something jobhook cannot read (not JSON, a field missing or mistyped)."""


@dataclasses.dataclass(frozen=True)
class WireRequest:
    method: str
    path: str
    json: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class WireResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class Answer(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # 400/401/402/403/404 (…): the provider will not do it
    RETRY = "retry"  # 429/5xx: briefly unable


@dataclasses.dataclass(frozen=True)
class ImageBytes:
    data: bytes
    content_type: str


@dataclasses.dataclass(frozen=True)
class SubmitAnswer:
    answer: Answer
    task_id: str | None = None
    observation: Observation | None = None  # an answer that already tells the outcome
    images: tuple[ImageBytes, ...] = ()  # a synchronous provider's images themselves
    credits_remaining: float | None = None
    error: JobError | None = None
    retry_after: str | None = None  # the raw Retry-After header


@dataclasses.dataclass(frozen=True)
class PollAnswer:
    answer: Answer
    observation: Observation | None = None
    error: JobError | None = None
    retry_after: str | None = None


class Adapter(Protocol):
    name: str
    capabilities: Capabilities
    tracking: Tracking
    prices: PriceTable  # USD per image by tier: PROVIDERS.md's, or JOBHOOK_<P>_PRICES

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest: ...

    def parse_submit(self, response: WireResponse) -> SubmitAnswer: ...

    def poll_request(self, task_id: str) -> WireRequest: ...

    def parse_poll(self, response: WireResponse) -> PollAnswer: ...

    def parse_callback(self, body: Mapping[str, Any]) -> Observation: ...

    def callback_task_id(self, body: Mapping[str, Any]) -> str | None: ...

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        """`pricing.price_usd` of this provider's table: the one rule, in service.domain.pricing."""
        ...


# -- tolerant readers shared by the adapters ---------------------------------------------------------


def sniff(data: bytes) -> str | None:
    """The image type of `data` from its magic bytes, or None when it is not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


STATUS_WORDS = {
    "pending": Status.SUBMITTED,
    "queued": Status.SUBMITTED,
    "waiting": Status.SUBMITTED,
    "submitted": Status.SUBMITTED,
    "created": Status.SUBMITTED,
    "processing": Status.PROCESSING,
    "running": Status.PROCESSING,
    "in_progress": Status.PROCESSING,
    "generating": Status.PROCESSING,
    "started": Status.PROCESSING,
    "completed": Status.COMPLETED,
    "complete": Status.COMPLETED,
    "succeeded": Status.COMPLETED,
    "success": Status.COMPLETED,
    "done": Status.COMPLETED,
    "failed": Status.FAILED,
    "failure": Status.FAILED,
    "error": Status.FAILED,
    "canceled": Status.FAILED,
    "cancelled": Status.FAILED,
}


def read_status(raw: Any) -> Status:
    """A provider's status word (any case) as a Status; ProtocolError when it is not one we know."""
    if isinstance(raw, str) and raw.strip().lower() in STATUS_WORDS:
        return STATUS_WORDS[raw.strip().lower()]
    raise ProtocolError(f"unknown task status {raw!r}")


def path_segment(value: str) -> str:
    """`value` as one URL path segment: a task id is the provider's word (or a callback's, or the
    backend's), and "../../account" or "x?y#z" must name a task, not another path on the provider."""
    segment = quote(value, safe="")
    # quote() leaves dots alone, and a client resolves a "." or ".." segment away: spell those out.
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def is_url(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) > len("https://")


# The shapes below nest two deep at most; a body nested deeper holds no URL of ours (and, followed
# all the way down, a thousand levels of {"urls": {"urls": …}} would exhaust Python's stack).
MAX_URL_NESTING = 4


def image_urls(value: Any, _depth: int = 0) -> tuple[str, ...]:
    """Image URLs from the shapes resellers use: a URL, a list of URLs or of {"url"}, or an object
    holding one of those under `urls`, `images`, `image_urls` or `url`."""
    if isinstance(value, dict):
        for key in ("urls", "images", "image_urls"):
            if key in value:
                return image_urls(value[key], _depth + 1) if _depth < MAX_URL_NESTING else ()
        return (value["url"],) if is_url(value.get("url")) else ()
    if is_url(value):
        return (value,)
    if isinstance(value, list):
        urls = []
        for item in value:
            url = item.get("url") if isinstance(item, dict) else item
            if is_url(url):
                urls.append(url)
        return tuple(urls)
    return ()


def task_error(raw: Any, default_message: str = "the provider failed the task") -> JobError:
    """A failed task's `error`, an object or a bare message, as the job's error."""
    if isinstance(raw, dict):
        code = raw.get("code")
        message = raw.get("message") if isinstance(raw.get("message"), str) and raw.get("message") else default_message
        return JobError("provider_failed", str(message), str(code) if isinstance(code, str | int) else None)
    if isinstance(raw, str) and raw:
        return JobError("provider_failed", raw)
    return JobError("provider_failed", default_message)


def observation_of(status: Status, body: Mapping[str, Any], images: tuple[str, ...]) -> Observation:
    """An observation for a task in `status`; a completed one must have images."""
    if status is Status.COMPLETED:
        if not images:
            raise ProtocolError("a completed task without image URLs")
        return Observation(status, images=images)
    if status is Status.FAILED:
        return Observation(status, error=task_error(body.get("error")))
    return Observation(status)


def unwrap(data: Any) -> Any:
    """`{"data": {…}}` → the inner object (some resellers wrap every answer); anything else as it is."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "status" not in data:
        return data["data"]
    return data


def classify_error(
    response: WireResponse, data: Any, *, codes: Mapping[int, str] | None = None
) -> tuple[Answer, JobError] | None:
    """An error answer (SPEC §3): refused for good, or briefly unable. None: a success.

    Some resellers answer HTTP 200 with an error code in the body; the body's `code` counts too.
    `codes` names the provider code of statuses whose body may carry none (segmind's 406).
    """
    status = response.status
    body_code = data.get("code") if isinstance(data, dict) else None
    if 200 <= status < 300 and isinstance(body_code, int) and not isinstance(body_code, bool) and body_code >= 400:
        status = body_code
    if 200 <= status < 300:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    provider_code = (codes or {}).get(status, f"http_{status}")
    message = f"HTTP {status}"
    if isinstance(error, dict):
        provider_code = str(error.get("code") or provider_code)
        message = str(error.get("message") or message)
    elif isinstance(error, str) and error:
        message = error
    elif isinstance(data, dict):
        message = str(data.get("msg") or data.get("message") or message)
    elif data is None and response.body.strip():
        message = f"HTTP {status}: {response.body[:300].decode('utf-8', 'replace').strip()}"
    if status == 429 or status >= 500 or status == 408:
        return Answer.RETRY, JobError("provider_unavailable", message, provider_code)
    return Answer.REJECTED, JobError("provider_rejected", message, provider_code)


def submit_payload(response: WireResponse) -> SubmitAnswer | dict[str, Any]:
    """A JSON answer to a submission: the refusal as a SubmitAnswer, or the (unwrapped) object."""
    data = response.json()
    refusal = classify_error(response, data)
    if refusal is not None:
        answer, error = refusal
        return SubmitAnswer(answer, error=error, retry_after=response.headers.get("retry-after"))
    payload = unwrap(data)
    if not isinstance(payload, dict):
        raise ProtocolError("the answer to a submission is not a JSON object")
    return payload


def poll_answer(response: WireResponse, parse: Callable[[Mapping[str, Any]], Observation]) -> PollAnswer:
    """A JSON answer to a poll: the refusal, or the (unwrapped) task object read by `parse`."""
    data = response.json()
    refusal = classify_error(response, data)
    if refusal is not None:
        answer, error = refusal
        return PollAnswer(answer, error=error, retry_after=response.headers.get("retry-after"))
    task = unwrap(data)
    if not isinstance(task, dict):
        raise ProtocolError("the task is not a JSON object")
    return PollAnswer(Answer.OK, observation=parse(task))
