"""segmind (PROVIDERS.md §3): one synchronous call that answers with the image bytes themselves.

There is no task id, no callback and nothing to poll; the account's balance comes back in the
`x-remaining-credits` header. The price is not published, so no cost is ever guessed: it is
unknown unless the operator gives one (JOBHOOK_SEGMIND_PRICES).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from service.domain import pricing
from service.domain.pricing import PriceTable
from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import Observation
from service.providers.base import (
    Answer,
    ImageBytes,
    PollAnswer,
    ProtocolError,
    SubmitAnswer,
    Tracking,
    WireRequest,
    WireResponse,
    classify_error,
    sniff,
)

IMAGE_SIZES = {
    "1:1": "square_hd",
    "3:4": "portrait_4_3",
    "9:16": "portrait_16_9",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
}
CAPABILITIES = Capabilities(
    aspect_ratios=tuple(IMAGE_SIZES),
    output_formats=("jpeg", "png"),
    seed_range=(-1, 2147483647),
    magic_prompt=True,
    num_images_range=(1, 8),
    wire_keys=(
        "prompt",
        "rendering_speed",
        "image_size",
        "num_images",
        "enable_prompt_expansion",
        "output_format",
        "seed",
    ),
)
# Statuses whose body may name no code: 406 is how segmind says the balance is too low.
ERROR_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 406: "insufficient_credits"}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
# No published price (PROVIDERS.md §3): unknown unless JOBHOOK_SEGMIND_PRICES gives one. QUALITY is
# what segmind renders when the request names no tier.
PRICES = PriceTable(default_tier="QUALITY")


class SegmindAdapter:
    name = "segmind"
    capabilities = CAPABILITIES
    tracking = Tracking.SYNCHRONOUS

    def __init__(self, prices: PriceTable = PRICES) -> None:
        self.prices = prices

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest:
        body: dict[str, Any] = {"prompt": request.prompt}
        if request.rendering_speed is not None:
            body["rendering_speed"] = request.rendering_speed
        if request.aspect_ratio is not None:
            body["image_size"] = IMAGE_SIZES[request.aspect_ratio]
        if request.num_images is not None:
            body["num_images"] = request.num_images
        if request.magic_prompt is not None:
            body["enable_prompt_expansion"] = request.magic_prompt
        if request.output_format is not None:
            body["output_format"] = request.output_format
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(request.provider_options)
        return WireRequest("POST", "/v1/ideogram-4", body)

    def parse_submit(self, response: WireResponse) -> SubmitAnswer:
        credits = _credits(response.headers.get("x-remaining-credits"))
        data = response.json() if response.content_type != "application/octet-stream" else None
        refusal = classify_error(response, data, codes=ERROR_CODES)
        if refusal is not None:
            answer, error = refusal
            return SubmitAnswer(
                answer, error=error, retry_after=response.headers.get("retry-after"), credits_remaining=credits
            )
        images = _images(response, data)
        return SubmitAnswer(Answer.OK, images=images, credits_remaining=credits)

    def poll_request(self, task_id: str) -> WireRequest:
        raise ProtocolError("segmind has nothing to poll")

    def parse_poll(self, response: WireResponse) -> PollAnswer:
        raise ProtocolError("segmind has nothing to poll")

    def parse_callback(self, body: Mapping[str, Any]) -> Observation:
        raise ProtocolError("segmind sends no callbacks")

    def callback_task_id(self, body: Mapping[str, Any]) -> str | None:
        return None

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None:
        return pricing.price_usd(self.prices, request, images)


def _credits(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and value == value and abs(value) != float("inf") else None


def _images(response: WireResponse, data: Any) -> tuple[ImageBytes, ...]:
    """The bytes of a 200: the body itself, or (num_images > 1) JSON `{"images": [base64, …]}`."""
    if isinstance(data, dict):
        encoded = data.get("images")
        if not isinstance(encoded, list) or not encoded:
            raise ProtocolError("a JSON answer without images")
        images = []
        for item in encoded:
            if not isinstance(item, str):
                raise ProtocolError("an image that is not base64 text")
            if item.startswith("data:"):
                item = item.partition(",")[2]
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("an image that is not valid base64") from None
            kind = sniff(raw)
            if kind is None:
                raise ProtocolError("a base64 image that is not PNG, JPEG or WebP")
            images.append(ImageBytes(raw, kind))
        return tuple(images)
    kind = sniff(response.body)
    if kind is None:
        declared = response.content_type
        raise ProtocolError(f"the answer is not an image (content type {declared or 'missing'})")
    return (ImageBytes(response.body, kind),)
