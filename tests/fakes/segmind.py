"""A fake `segmind` provider (PROVIDERS.md §3, seed 003) served over real HTTP on loopback.

Synchronous: `POST /v1/ideogram-4` waits `latency` and answers with the image bytes
(`image/jpeg` / `image/png`, deterministic per prompt) and `x-remaining-credits`; with `num_images` > 1
(**assumed**) `application/json {"images": ["<base64>", …]}`. Strict on what it receives (`x-api-key`,
the page's attribute schema), with the page's error codes 401/404/405/406/500 plus 400 for an invalid
body; error bodies are JSON `{"error": "<message>"}` or text (**assumed**), chosen per request.
Behaviour is scripted per request with `RequestScript`; answers can be forced with `ForcedResponse`,
"hang" or "disconnect". Every call is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image, ImageDraw
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, ForcedResponse, json_or_none, override_headers

ENDPOINT = "/v1/ideogram-4"
RENDERING_SPEEDS = ("TURBO", "BALANCED", "QUALITY")
IMAGE_SIZES = ("square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")
OUTPUT_FORMATS = ("jpeg", "png")
ENUMS = {"rendering_speed": RENDERING_SPEEDS, "image_size": IMAGE_SIZES, "output_format": OUTPUT_FORMATS}
BOOLEANS = ("enable_prompt_expansion", "enable_safety_checker")
INT_RANGES = {"num_images": (1, 8), "seed": (-1, 2147483647)}
FIELDS = frozenset({"prompt", *ENUMS, *BOOLEANS, *INT_RANGES})
DEFAULTS: dict[str, Any] = {
    "rendering_speed": "QUALITY",
    "image_size": "square_hd",
    "num_images": 1,
    "enable_prompt_expansion": True,
    "output_format": "jpeg",
    "seed": 123456,
    "enable_safety_checker": True,
}
CREDITS_HEADER = "x-remaining-credits"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_PIXELS = {
    "square_hd": (24, 24),
    "square": (16, 16),
    "portrait_4_3": (12, 16),
    "portrait_16_9": (9, 16),
    "landscape_4_3": (16, 12),
    "landscape_16_9": (16, 9),
}

ErrorFormat = Literal["json", "text"]
# "ok": 200 with the image(s) · "server_error": 500 after the latency · "no_credits": 406 at once
Outcome = Literal["ok", "server_error", "no_credits"]
Forced = ForcedResponse | Literal["hang", "disconnect"]


def segmind_image(prompt: str, image_size: str = "square_hd", output_format: str = "jpeg", index: int = 0) -> bytes:
    """The bytes the fake answers for this prompt (the `index`-th of a multi-image answer): a small
    real image whose colours derive from the prompt, identical across calls."""
    digest = hashlib.sha256(f"{prompt}\0{index}".encode()).digest()
    width, height = _PIXELS.get(image_size, (16, 16))
    img = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    ImageDraw.Draw(img).rectangle((0, 0, width // 2, height // 2), fill=(digest[3], digest[4], digest[5]))
    buf = io.BytesIO()
    img.save(buf, "PNG" if output_format == "png" else "JPEG")
    return buf.getvalue()


def format_credits(value: float) -> str:
    """How the fake writes a balance in `x-remaining-credits`: a plain decimal ("1000", "997.5")."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def forced_error(
    status: int, message: str, *, text: bool = False, headers: dict[str, str] | None = None
) -> ForcedResponse:
    """A forced answer in the fake's error format: JSON {"error": message}, or the message as text."""
    return ForcedResponse(status, message if text else {"error": message}, dict(headers or {}))


@dataclass
class RequestScript:
    outcome: Outcome = "ok"
    latency: float | None = None  # None: the fake's constructor value
    error_format: ErrorFormat | None = None  # None: the fake's constructor value (400/401/406/500 bodies)
    error_message: str | None = None  # the 500 / 406 message
    header_overrides: dict[str, str | None] = field(default_factory=dict)  # on a 200; None removes a header


@dataclass
class CallRecord:
    index: int  # position in `fake.calls` (the key of `fake.images`)
    time: float  # time.monotonic() the request arrived
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None if the body was not JSON
    status: int | None = None  # None: never answered ("hang", "disconnect") or not answered yet
    answered_at: float | None = None  # time.monotonic() the answer was made
    content_type: str | None = None
    remaining_credits: str | None = None  # the x-remaining-credits header sent, if any
    charged: float = 0.0  # credits taken by this call
    images: list[bytes] = field(default_factory=list)  # the images generated for it (also on "hang")


class FakeSegmind(FakeProvider[RequestScript]):
    """`async with FakeSegmind(...) as fake:` serves the provider at `fake.base_url`.

    Per-request behaviour on `POST /v1/ideogram-4`: `next_scripts` (popped per request, whatever its
    outcome), else `script_for(body)`, else `default_script`. Forced answers: `create_responses`
    (popped per POST to the endpoint; a ForcedResponse replaces everything, auth included, and charges
    nothing; "hang"/"disconnect" apply after auth, validation and the credit check: the credits ARE
    taken and the image made, the answer is lost). Credits: `fake.credits` starts at `credits` and drops
    by `price_per_image` (a number, or a mapping by rendering_speed) × num_images per answered image
    request; a request that would take it below 0 gets 406 and costs nothing.
    """

    def __init__(
        self,
        *,
        latency: float = 0.2,
        credits: float = 1000.0,
        price_per_image: float | Mapping[str, float] = 1.0,
        error_format: ErrorFormat = "json",
        reject_unknown_fields: bool = True,
    ) -> None:
        super().__init__(
            [
                Route("/files/{name}", self._file, methods=["GET"]),
                Route(ENDPOINT, self._endpoint, methods=METHODS),
                Route("/{path:path}", self._not_found, methods=METHODS),
            ],
            RequestScript(),
        )
        self.latency = latency
        self.credits = credits
        self.price_per_image = price_per_image
        self.error_format: ErrorFormat = error_format
        self.reject_unknown_fields = reject_unknown_fields
        self.create_responses: list[Forced] = []
        self.calls: list[CallRecord] = []
        self.images: dict[int, list[bytes]] = {}  # call index → the images made for it
        self.file_requests: list[str] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def creates(self) -> list[CallRecord]:
        """The calls to POST /v1/ideogram-4 (`calls` also holds 404/405 ones)."""
        return [c for c in self.calls if c.method == "POST" and c.path == ENDPOINT]

    # ---------------------------------------------------------------- HTTP

    def _error_answer(
        self, status: int, message: str, fmt: ErrorFormat, headers: dict[str, str] | None = None
    ) -> Response:
        if fmt == "text":
            return PlainTextResponse(message, status, headers=headers)
        return JSONResponse({"error": message}, status, headers=headers)

    async def _record(self, request: Request) -> CallRecord:
        body = json_or_none(await request.body())
        record = CallRecord(
            len(self.calls), time.monotonic(), request.method, request.url.path, dict(request.headers), body
        )
        self.calls.append(record)
        return record

    @staticmethod
    def _answered(record: CallRecord, response: Response) -> Response:
        record.status = response.status_code
        record.answered_at = time.monotonic()
        record.content_type = response.headers.get("content-type")
        record.remaining_credits = response.headers.get(CREDITS_HEADER)
        return response

    async def _not_found(self, request: Request) -> Response:
        record = await self._record(request)
        return self._answered(record, self._error_answer(404, "Not Found", self.error_format))

    def _validation_error(self, request: Request, body: Any) -> str | None:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return "Content-Type must be application/json"
        if not isinstance(body, dict):
            return "Request body must be a JSON object"
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return "prompt is required and must be a non-empty string"
        unknown = sorted(set(body) - FIELDS)
        if unknown and self.reject_unknown_fields:
            return f"Unknown field(s): {', '.join(unknown)}"
        for name, allowed in ENUMS.items():
            if name in body and body[name] not in allowed:
                return f"{name} must be one of: {', '.join(allowed)}"
        for name in BOOLEANS:
            if name in body and not isinstance(body[name], bool):
                return f"{name} must be a boolean"
        for name, (low, high) in INT_RANGES.items():
            if name in body:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    return f"{name} must be an integer from {low} to {high}"
        return None

    def price(self, rendering_speed: str) -> float:
        if isinstance(self.price_per_image, Mapping):
            return float(self.price_per_image[rendering_speed])
        return float(self.price_per_image)

    async def _endpoint(self, request: Request) -> Response:
        record = await self._record(request)
        if request.method != "POST":
            return self._answered(
                record, self._error_answer(405, "Method Not Allowed", self.error_format, headers={"Allow": "POST"})
            )
        forced = self.create_responses.pop(0) if self.create_responses else None
        script = self._pick_script(record.body)
        fmt: ErrorFormat = script.error_format or self.error_format
        if isinstance(forced, ForcedResponse):
            return self._answered(record, forced.to_response())
        if not request.headers.get("x-api-key", "").strip():
            return self._answered(record, self._error_answer(401, "Unauthorized", fmt))
        invalid = self._validation_error(request, record.body)
        if invalid is not None:
            return self._answered(record, self._error_answer(400, invalid, fmt))
        body = {**DEFAULTS, **record.body}
        cost = self.price(body["rendering_speed"]) * body["num_images"]
        if script.outcome == "no_credits" or self.credits - cost < 0:
            return self._answered(record, self._error_answer(406, script.error_message or "Not enough credits", fmt))
        if script.outcome == "ok":
            self.credits -= cost
            record.charged = cost
            record.images = [
                segmind_image(body["prompt"], body["image_size"], body["output_format"], i)
                for i in range(body["num_images"])
            ]
            self.images[record.index] = record.images
        if forced is not None:  # "hang" / "disconnect"
            return await self._no_answer(request, hang=forced == "hang")
        latency = self.latency if script.latency is None else script.latency
        self._busy += 1
        self._idle.clear()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), latency)
            if self._closing.is_set():
                return await self._no_answer(request, hang=False)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()
        if script.outcome == "server_error":
            return self._answered(record, self._error_answer(500, script.error_message or "Internal Server Error", fmt))
        headers = {CREDITS_HEADER: format_credits(self.credits)}
        override_headers(headers, script.header_overrides)
        if len(record.images) == 1:
            media_type = "image/png" if body["output_format"] == "png" else "image/jpeg"
            return self._answered(record, Response(record.images[0], media_type=media_type, headers=headers))
        images = [base64.b64encode(img).decode("ascii") for img in record.images]
        return self._answered(record, JSONResponse({"images": images}, headers=headers))

    async def _file(self, request: Request) -> Response:
        """Serves `/files/{call index}-{image index}.{jpg|png}`: an image a call produced."""
        name = request.path_params["name"]
        self.file_requests.append(name)
        stem, _, ext = name.rpartition(".")
        call, _, idx = stem.partition("-")
        images = self.images.get(int(call)) if call.isdigit() else None
        if not images or not idx.isdigit() or int(idx) >= len(images) or ext not in ("jpg", "png"):
            return PlainTextResponse("Not Found", 404)
        data = images[int(idx)]
        return Response(data, media_type="image/png" if data.startswith(b"\x89PNG") else "image/jpeg")

    # ---------------------------------------------------------------- waiting

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is waiting out its latency ("hang" ones do not count). Raises TimeoutError."""
        await asyncio.wait_for(self._idle.wait(), timeout)
