"""apiinone (PROVIDERS.md §4): async task tracked by polling alone; an answer may already hold the images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.domain import pricing
from service.domain.pricing import PriceTable
from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import Observation, Status
from service.providers.base import (
    Answer,
    PollAnswer,
    ProtocolError,
    SubmitAnswer,
    Tracking,
    WireRequest,
    WireResponse,
    image_urls,
    observation_of,
    path_segment,
    poll_answer,
    read_status,
    submit_payload,
)

CAPABILITIES = Capabilities(
    aspect_ratios=("1:1", "16:9", "9:16", "3:4", "4:3", "3:2", "2:3", "9:21", "21:9"),
    output_formats=("png", "jpeg", "webp"),
    wire_keys=("model", "prompt", "size", "rendering_speed", "output_format"),
)
PRICE_PER_IMAGE_USD = 0.12  # 12 credits, whatever the tier
PRICES = PriceTable.flat(PRICE_PER_IMAGE_USD)


def _urls(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Image URLs under `urls`, `images`, `output.urls` or `data[].url` (PROVIDERS.md §4)."""
    for key in ("urls", "images", "output", "data"):
        if key in payload:
            found = image_urls(payload[key])
            if found:
                return found
    return ()


class ApiinoneAdapter:
    name = "apiinone"
    capabilities = CAPABILITIES
    tracking = Tracking.POLLING

    def __init__(self, prices: PriceTable = PRICES) -> None:
        self.prices = prices

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest:
        body: dict[str, Any] = {"model": "ideogram-v4", "prompt": request.prompt}
        if request.aspect_ratio is not None:
            body["size"] = request.aspect_ratio
        if request.rendering_speed is not None:
            body["rendering_speed"] = request.rendering_speed
        if request.output_format is not None:
            body["output_format"] = request.output_format
        body.update(request.provider_options)
        return WireRequest("POST", "/api/v1/images/generations", body)

    def parse_submit(self, response: WireResponse) -> SubmitAnswer:
        payload = submit_payload(response)
        if isinstance(payload, SubmitAnswer):
            return payload
        task_id = self.callback_task_id(payload)
        urls = _urls(payload)
        if urls:  # "returns directly": the job is complete at once
            return SubmitAnswer(Answer.OK, task_id=task_id, observation=Observation(Status.COMPLETED, images=urls))
        if task_id is None:
            raise ProtocolError("the answer to a submission has neither a task_id nor images")
        observation = None
        if "status" in payload:
            status = read_status(payload["status"])
            if status is Status.FAILED:
                observation = observation_of(status, payload, ())
        return SubmitAnswer(Answer.OK, task_id=task_id, observation=observation)

    def poll_request(self, task_id: str) -> WireRequest:
        return WireRequest("GET", f"/api/v1/tasks/{path_segment(task_id)}")

    def parse_poll(self, response: WireResponse) -> PollAnswer:
        return poll_answer(response, self.parse_callback)

    def parse_callback(self, body: Mapping[str, Any]) -> Observation:
        status = read_status(body.get("status"))
        return observation_of(status, body, _urls(body))

    def callback_task_id(self, body: Mapping[str, Any]) -> str | None:
        for key in ("task_id", "taskId", "id"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        return pricing.price_usd(self.prices, request, images)
