"""aivideoapi (PROVIDERS.md §1): async task, callbacks with X-Event / X-Task-Id / X-Timestamp.

The built-in `simulator` speaks the same wire, so one adapter class serves both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.domain import pricing
from service.domain.pricing import PriceTable
from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import Observation
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
    prompt_max_chars=5000,
    aspect_ratios=("1:1", "3:4", "9:16", "4:3", "16:9"),
    output_formats=("jpeg", "png"),
    # `input` (where provider_options go) and the top level: what submit_request sets.
    wire_keys=("prompt", "size", "rendering_speed", "output_format", "model", "callback_url"),
)
PRICES_USD = {"TURBO": 0.08, "BALANCED": 0.14, "QUALITY": 0.22}
DEFAULT_SPEED = "BALANCED"
PRICES = PriceTable.of(PRICES_USD, DEFAULT_SPEED)


class AivideoapiAdapter:
    tracking = Tracking.CALLBACK

    def __init__(
        self, name: str = "aivideoapi", prices: PriceTable = PRICES, capabilities: Capabilities = CAPABILITIES
    ) -> None:
        self.name = name
        self.prices = prices
        self.capabilities = capabilities

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
        payload = submit_payload(response)
        if isinstance(payload, SubmitAnswer):
            return payload
        task_id = payload.get("taskId") or payload.get("task_id") or payload.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProtocolError("the answer to a submission has no data.taskId")
        return SubmitAnswer(Answer.OK, task_id=task_id)

    def poll_request(self, task_id: str) -> WireRequest:
        return WireRequest("GET", f"/v1/tasks/{path_segment(task_id)}")

    def parse_poll(self, response: WireResponse) -> PollAnswer:
        return poll_answer(response, self.parse_callback)

    def parse_callback(self, body: Mapping[str, Any]) -> Observation:
        """The task object (a poll's answer or a callback's body) as an observation."""
        status = read_status(body.get("status"))
        return observation_of(status, body, image_urls(body.get("output")))

    def callback_task_id(self, body: Mapping[str, Any]) -> str | None:
        task_id = body.get("id")
        return task_id if isinstance(task_id, str) and task_id else None

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        return pricing.price_usd(self.prices, request, images)
