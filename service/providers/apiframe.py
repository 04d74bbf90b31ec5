"""apiframe (PROVIDERS.md §2): async job, tiers as model ids, a bare `webhook_url` confirmed by a poll."""

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

# SPEC tier → (model id, ideogramParams.rendering_speed); the model id is required, balanced by default.
TIERS = {
    "TURBO": ("ideogram-v4-turbo", "turbo"),
    "BALANCED": ("ideogram-v4-balanced", "default"),
    "QUALITY": ("ideogram-v4-quality", "quality"),
}
DEFAULT_TIER = "BALANCED"
PRICES_USD = {"TURBO": 0.03, "BALANCED": 0.06, "QUALITY": 0.10}
PRICES = PriceTable.of(PRICES_USD, DEFAULT_TIER)

CAPABILITIES = Capabilities(
    aspect_ratios=("1:1", "3:4", "4:3", "9:16", "16:9"),
    seed_range=(-(2**63), 2**63 - 1),
    negative_prompt=True,
    style_types=("AUTO", "GENERAL", "REALISTIC", "DESIGN"),
    magic_prompt=True,
    reference_image=True,
    # ideogramParams carries the checked fields (and the tier's rendering_speed): replacing it whole
    # would drop them.
    wire_keys=("prompt", "model", "webhook_url", "ideogramParams"),
)


class ApiframeAdapter:
    name = "apiframe"
    capabilities = CAPABILITIES
    tracking = Tracking.WEBHOOK_CONFIRM

    def __init__(self, prices: PriceTable = PRICES) -> None:
        self.prices = prices

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"X-API-Key": api_key}

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest:
        model, speed = TIERS[request.rendering_speed or DEFAULT_TIER]
        params: dict[str, Any] = {}
        if request.style_type is not None:
            params["style_type"] = request.style_type
        if request.magic_prompt is not None:
            params["magic_prompt_option"] = "On" if request.magic_prompt else "Off"
        if request.reference_image_url is not None:
            params["image"] = request.reference_image_url
        if request.negative_prompt is not None:
            params["negative_prompt"] = request.negative_prompt
        if request.rendering_speed is not None:
            params["rendering_speed"] = speed
        if request.seed is not None:
            params["seed"] = request.seed
        if request.aspect_ratio is not None:
            params["aspect_ratio"] = request.aspect_ratio
        body: dict[str, Any] = {"prompt": request.prompt, "model": model}
        if callback_url is not None:
            body["webhook_url"] = callback_url
        if params:
            body["ideogramParams"] = params
        body.update(request.provider_options)
        return WireRequest("POST", "/v2/images/generate", body)

    def parse_submit(self, response: WireResponse) -> SubmitAnswer:
        payload = submit_payload(response)
        if isinstance(payload, SubmitAnswer):
            return payload
        job_id = self.callback_task_id(payload)
        if job_id is None:
            raise ProtocolError("the answer to a submission has no jobId")
        return SubmitAnswer(Answer.OK, task_id=job_id)

    def poll_request(self, task_id: str) -> WireRequest:
        return WireRequest("GET", f"/v2/jobs/{path_segment(task_id)}")

    def parse_poll(self, response: WireResponse) -> PollAnswer:
        return poll_answer(response, self.parse_callback)

    def parse_callback(self, body: Mapping[str, Any]) -> Observation:
        """The job object (a poll's answer or the webhook's body) as an observation."""
        status = read_status(body.get("status"))
        return observation_of(status, body, image_urls(body.get("result")))

    def callback_task_id(self, body: Mapping[str, Any]) -> str | None:
        for key in ("jobId", "job_id", "id"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        return pricing.price_usd(self.prices, request, images)
