"""aivideoapi (PROVIDERS.md §1): async task, callbacks with X-Event / X-Task-Id / X-Timestamp.

The built-in `simulator` speaks the same wire, so one adapter class serves both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import JobError, Observation, Status
from service.providers.base import (
    Answer,
    PollAnswer,
    ProtocolError,
    SubmitAnswer,
    Tracking,
    WireRequest,
    WireResponse,
)

CAPABILITIES = Capabilities(
    prompt_max_chars=5000,
    aspect_ratios=("1:1", "3:4", "9:16", "4:3", "16:9"),
    output_formats=("jpeg", "png"),
)
PRICES_USD = {"TURBO": 0.08, "BALANCED": 0.14, "QUALITY": 0.22}
DEFAULT_SPEED = "BALANCED"

# Tolerant on input: the documented statuses, and the usual synonyms resellers drift to.
_STATUSES = {
    "pending": Status.SUBMITTED,
    "queued": Status.SUBMITTED,
    "waiting": Status.SUBMITTED,
    "processing": Status.PROCESSING,
    "running": Status.PROCESSING,
    "in_progress": Status.PROCESSING,
    "completed": Status.COMPLETED,
    "succeeded": Status.COMPLETED,
    "success": Status.COMPLETED,
    "failed": Status.FAILED,
    "error": Status.FAILED,
    "canceled": Status.FAILED,
    "cancelled": Status.FAILED,
}


class AivideoapiAdapter:
    capabilities = CAPABILITIES
    tracking = Tracking.CALLBACK

    def __init__(self, name: str = "aivideoapi", prices: Mapping[str, float] = PRICES_USD) -> None:
        self.name = name
        self._prices = prices

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest:
        wire_input: dict[str, Any] = {"prompt": request.prompt}
        if request.aspect_ratio is not None:
            wire_input["size"] = request.aspect_ratio
        if request.rendering_speed is not None:
            wire_input["rendering_speed"] = request.rendering_speed
        if request.output_format is not None:
            wire_input["output_format"] = request.output_format
        wire_input.update(request.provider_options)
        body: dict[str, Any] = {"model": "ideogram-v4"}
        if callback_url is not None:
            body["callback_url"] = callback_url
        body["input"] = wire_input
        return WireRequest("POST", "/v1/images/generations", body)

    def parse_submit(self, response: WireResponse) -> SubmitAnswer:
        data = response.json()
        refusal = _refusal(response, data)
        if refusal is not None:
            answer, error = refusal
            return SubmitAnswer(answer, error=error, retry_after=response.headers.get("retry-after"))
        if not isinstance(data, dict):
            raise ProtocolError("the answer to a submission is not a JSON object")
        inner = data.get("data")
        payload: dict[str, Any] = inner if isinstance(inner, dict) else data
        task_id = payload.get("taskId") or payload.get("task_id") or payload.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProtocolError("the answer to a submission has no data.taskId")
        return SubmitAnswer(Answer.OK, task_id=task_id)

    def poll_request(self, task_id: str) -> WireRequest:
        return WireRequest("GET", f"/v1/tasks/{task_id}")

    def parse_poll(self, response: WireResponse) -> PollAnswer:
        data = response.json()
        refusal = _refusal(response, data)
        if refusal is not None:
            answer, error = refusal
            return PollAnswer(answer, error=error, retry_after=response.headers.get("retry-after"))
        if not isinstance(data, dict):
            raise ProtocolError("the task is not a JSON object")
        task = data["data"] if isinstance(data.get("data"), dict) and "status" not in data else data
        return PollAnswer(Answer.OK, observation=self.parse_callback(task))

    def parse_callback(self, body: Mapping[str, Any]) -> Observation:
        """The task object (a poll's answer or a callback's body) as an observation."""
        raw_status = body.get("status")
        if not isinstance(raw_status, str) or raw_status.lower() not in _STATUSES:
            raise ProtocolError(f"unknown task status {raw_status!r}")
        status = _STATUSES[raw_status.lower()]
        if status is Status.COMPLETED:
            images = _image_urls(body.get("output"))
            if not images:
                raise ProtocolError("a completed task without output.urls")
            return Observation(status, images=images)
        if status is Status.FAILED:
            return Observation(status, error=_task_error(body.get("error")))
        return Observation(status)

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        price = self._prices.get(str(request.get("rendering_speed") or DEFAULT_SPEED))
        return None if price is None else round(price * images, 4)


def _image_urls(output: Any) -> tuple[str, ...]:
    if isinstance(output, dict):
        for key in ("urls", "images", "image_urls"):
            if key in output:
                return _url_list(output[key])
        url = output.get("url")
        return (url,) if _is_url(url) else ()
    return _url_list(output)


def _url_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if _is_url(value) else ()
    if isinstance(value, list):
        urls = []
        for item in value:
            url = item.get("url") if isinstance(item, dict) else item
            if _is_url(url):
                urls.append(url)
        return tuple(urls)
    return ()


def _is_url(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) > len("https://")


def _task_error(raw: Any) -> JobError:
    if isinstance(raw, dict):
        code = str(raw.get("code") or "upstream_error")
        return JobError("provider_failed", str(raw.get("message") or "the provider failed the task"), code)
    if isinstance(raw, str) and raw:
        return JobError("provider_failed", raw)
    return JobError("provider_failed", "the provider failed the task")


def _refusal(response: WireResponse, data: Any) -> tuple[Answer, JobError] | None:
    """Classify an error answer (SPEC §3): refused for good, or briefly unable. None: a success.

    Some resellers answer HTTP 200 with an error code in the body; the body's `code` counts too.
    """
    status = response.status
    body_code = data.get("code") if isinstance(data, dict) else None
    if 200 <= status < 300 and isinstance(body_code, int) and not isinstance(body_code, bool) and body_code >= 400:
        status = body_code
    if 200 <= status < 300:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        provider_code = str(error.get("code") or f"http_{status}")
        message = str(error.get("message") or f"HTTP {status}")
    else:
        provider_code = f"http_{status}"
        message = (
            str(data.get("msg") or data.get("message") or f"HTTP {status}")
            if isinstance(data, dict)
            else f"HTTP {status}"
        )
    if status == 429 or status >= 500 or status == 408:
        return Answer.RETRY, JobError("provider_unavailable", message, provider_code)
    return Answer.REJECTED, JobError("provider_rejected", message, provider_code)
