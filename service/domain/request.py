"""SPEC §3's one request vocabulary: parsed from JSON and checked against a provider's capabilities.

Pure: a provider module declares its `Capabilities`; this module decides whether a request fits them
and, if not, which field is wrong and what the provider accepts (the 422 answer).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from service.domain import simulate
from service.errors import JobhookError

RENDERING_SPEEDS = ("TURBO", "BALANCED", "QUALITY")
GENERATION_FIELDS = (
    "prompt",
    "aspect_ratio",
    "rendering_speed",
    "output_format",
    "seed",
    "negative_prompt",
    "style_type",
    "magic_prompt",
    "num_images",
    "reference_image_url",
    "provider_options",
)
TOP_LEVEL_FIELDS = ("provider", "max_price_usd", "metadata", "submit", *GENERATION_FIELDS)
MAX_OBJECT_BYTES = 16 * 1024  # metadata and provider_options, each
# Names under which a provider may take a URL to call back: jobhook registers its own (signed) one,
# and a second would send the job's outcome elsewhere and leave jobhook polling.
CALLBACK_KEYS = ("callback_url", "callback", "webhook_url", "webhook", "notify_url", "hook_url")


class RequestError(JobhookError):
    """A submission that cannot be sent as it is: names the field and, where it helps, what is accepted."""

    def __init__(self, field: str, code: str, message: str, accepted: list[Any] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message
        self.accepted = accepted


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One generation in SPEC's vocabulary; None means "not set: the provider's default applies"."""

    prompt: str
    aspect_ratio: str | None = None
    rendering_speed: str | None = None
    output_format: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    style_type: str | None = None
    magic_prompt: bool | None = None
    num_images: int | None = None
    reference_image_url: str | None = None
    provider_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields that were set, as stored on the job's `request`."""
        out: dict[str, Any] = {}
        for field in GENERATION_FIELDS:
            value = getattr(self, field)
            if value is None or (field == "provider_options" and not value):
                continue
            out[field] = dict(value) if field == "provider_options" else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationRequest:
        known = {key: data[key] for key in GENERATION_FIELDS if key in data}
        known.setdefault("provider_options", {})
        return cls(**known)

    @property
    def image_count(self) -> int:
        return self.num_images or 1


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one provider honours. None for a field: the provider cannot honour it at all."""

    prompt_max_chars: int | None = None
    aspect_ratios: tuple[str, ...] | None = None
    rendering_speeds: tuple[str, ...] | None = RENDERING_SPEEDS
    output_formats: tuple[str, ...] | None = None
    seed_range: tuple[int, int] | None = None
    negative_prompt: bool = False
    style_types: tuple[str, ...] | None = None
    magic_prompt: bool = False
    num_images_range: tuple[int, int] = (1, 1)
    reference_image: bool = False
    # The keys of the object `provider_options` is merged into that the adapter sets itself (from
    # validated fields, or the model and callback URL): an option under one of these names would
    # override what was checked and priced, so it is refused (see `reserved_option`).
    wire_keys: tuple[str, ...] = ()
    # The built-in simulator: `provider_options.simulate` is its script (service.domain.simulate),
    # checked here so that a wrong one is refused before a job is made.
    simulate: bool = False


@dataclasses.dataclass(frozen=True)
class Submission:
    """A parsed `POST /v1/jobs` body."""

    # One provider's name, "auto", or the candidates in order of preference (SPEC §8).
    provider: str | tuple[str, ...]
    request: GenerationRequest
    metadata: Mapping[str, Any] | None
    submit: bool
    # SPEC §8: a candidate whose price for this request is higher, or unknown, is left out.
    max_price_usd: float | None = None


def parse_submission(body: Any) -> Submission:
    """Types and presence of every field of `POST /v1/jobs`; provider-specific checks come after."""
    if not isinstance(body, dict):
        raise RequestError("body", "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise RequestError(
            unknown[0],
            "unknown_field",
            f"unknown field {unknown[0]!r}; accepted fields are {', '.join(TOP_LEVEL_FIELDS)}",
            accepted=list(TOP_LEVEL_FIELDS),
        )
    provider = _provider(body)
    prompt = _required_string(body, "prompt")
    submit = body.get("submit", True)
    if not isinstance(submit, bool):
        raise _wrong_type("submit", "true or false")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _wrong_type("metadata", "a JSON object")
        _check_storable(metadata, "metadata")
    options = body.get("provider_options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise _wrong_type("provider_options", "a JSON object")
    _check_storable(options, "provider_options")
    request = GenerationRequest(
        prompt=prompt,
        aspect_ratio=_optional(body, "aspect_ratio", str, 'a string such as "16:9"'),
        rendering_speed=_optional(body, "rendering_speed", str, "TURBO, BALANCED or QUALITY"),
        output_format=_optional(body, "output_format", str, 'a string such as "png"'),
        seed=_optional(body, "seed", int, "an integer"),
        negative_prompt=_optional(body, "negative_prompt", str, "a string"),
        style_type=_optional(body, "style_type", str, "a string"),
        magic_prompt=_optional(body, "magic_prompt", bool, "true or false"),
        num_images=_optional(body, "num_images", int, "an integer"),
        reference_image_url=_optional(body, "reference_image_url", str, "an http(s) URL"),
        provider_options=options,
    )
    if request.reference_image_url is not None and not request.reference_image_url.startswith(("http://", "https://")):
        raise _wrong_type("reference_image_url", "an http(s) URL")
    return Submission(
        provider=provider, request=request, metadata=metadata, submit=submit, max_price_usd=_max_price(body)
    )


MAX_CANDIDATES = 16


def _provider(body: Mapping[str, Any]) -> str | tuple[str, ...]:
    """`provider`: a name, `"auto"`, or a non-empty list of distinct names (candidates, in order)."""
    value = body.get("provider")
    if not isinstance(value, list):
        return _required_string(body, "provider")
    expected = f'a provider name, "auto", or a list of 1 to {MAX_CANDIDATES} distinct provider names'
    if not value or len(value) > MAX_CANDIDATES or not all(isinstance(item, str) and item for item in value):
        raise _wrong_type("provider", expected)
    if len(set(value)) != len(value):
        raise _wrong_type("provider", expected)
    return tuple(value)


def _max_price(body: Mapping[str, Any]) -> float | None:
    """`max_price_usd`: a positive number of US dollars for the whole request (every image it asks)."""
    value = body.get("max_price_usd")
    if value is None:
        return None
    expected = "a positive number of US dollars, such as 0.10"
    # bool is an int in Python: `true` is no price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type("max_price_usd", expected)
    try:
        price = float(value)
    except OverflowError:  # an integer beyond any float
        price = math.inf
    if not math.isfinite(price) or price <= 0:
        raise _wrong_type("max_price_usd", expected)
    return price


def check(request: GenerationRequest, caps: Capabilities, provider: str) -> None:
    """Raise RequestError (422) for the first field `provider` cannot honour, naming what it accepts."""
    if caps.prompt_max_chars is not None and len(request.prompt) > caps.prompt_max_chars:
        raise RequestError(
            "prompt",
            "unsupported_value",
            f"prompt is {len(request.prompt)} characters; {provider} accepts at most {caps.prompt_max_chars}",
        )
    _check_choice(request.aspect_ratio, caps.aspect_ratios, "aspect_ratio", provider)
    _check_choice(request.rendering_speed, caps.rendering_speeds, "rendering_speed", provider)
    _check_choice(request.output_format, caps.output_formats, "output_format", provider)
    _check_choice(request.style_type, caps.style_types, "style_type", provider)
    if request.seed is not None:
        if caps.seed_range is None:
            raise _unsupported("seed", provider)
        low, high = caps.seed_range
        if not low <= request.seed <= high:
            raise RequestError(
                "seed", "unsupported_value", f"seed must be between {low} and {high} for {provider}", [low, high]
            )
    if request.negative_prompt is not None and not caps.negative_prompt:
        raise _unsupported("negative_prompt", provider)
    if request.magic_prompt is not None and not caps.magic_prompt:
        raise _unsupported("magic_prompt", provider)
    if request.reference_image_url is not None and not caps.reference_image:
        raise _unsupported("reference_image_url", provider)
    key = reserved_option(request.provider_options, caps.wire_keys)
    if key is not None:
        raise RequestError(
            f"provider_options.{key}",
            "reserved_option",
            f"provider_options may not set {key!r}: jobhook sets it for {provider} from the request's checked "
            "fields (or its own callback URL), and an override could change what is charged; use the request's "
            "fields instead",
        )
    if caps.simulate:
        try:
            simulate.overrides(request.provider_options.get("simulate"), "provider_options.simulate")
        except simulate.InvalidOverride as exc:
            raise RequestError(exc.field, "invalid_field", exc.message) from None
    if request.num_images is not None:
        low, high = caps.num_images_range
        if not low <= request.num_images <= high:
            accepted = f"only {low}" if low == high else f"{low} to {high}"
            raise RequestError(
                "num_images",
                "unsupported_value",
                f"num_images must be {accepted} for {provider}",
                list(range(low, high + 1)),
            )


def reserved_option(options: Mapping[str, Any], wire_keys: tuple[str, ...]) -> str | None:
    """The first `provider_options` key that would override what jobhook checked, priced or set, else None.

    Refused: a key the adapter sets on the wire (`wire_keys`), a field of the request vocabulary
    (`rendering_speed` must go through its check, whatever the provider calls it), and a callback URL.
    Keys are compared without case, `_` or `-`: `callbackUrl` or `Rendering-Speed` would reach a
    lenient provider just the same.
    """
    reserved = {_loose(key) for key in (*wire_keys, *GENERATION_FIELDS, *CALLBACK_KEYS)}
    for key in options:
        if _loose(key) in reserved:
            return key
    return None


def _loose(key: str) -> str:
    return re.sub(r"[-_\s]", "", key).lower()


def _check_choice(value: str | None, accepted: tuple[str, ...] | None, field: str, provider: str) -> None:
    if value is None:
        return
    if accepted is None:
        raise _unsupported(field, provider)
    if value not in accepted:
        raise RequestError(
            field,
            "unsupported_value",
            f"{field} {value!r} is not accepted by {provider}; accepted: {', '.join(accepted)}",
            list(accepted),
        )


def _check_storable(value: dict[str, Any], field: str) -> None:
    """A JSON object jobhook can keep: at most MAX_OBJECT_BYTES, and not nested too deeply to store."""
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise RequestError(field, "invalid_field", f"{field} is nested too deeply") from None
    if size > MAX_OBJECT_BYTES:
        raise RequestError(field, "invalid_field", f"{field} must be at most {MAX_OBJECT_BYTES} bytes of JSON")


def _unsupported(field: str, provider: str) -> RequestError:
    return RequestError(field, "unsupported_field", f"{provider} cannot honour {field}; leave it out")


def _wrong_type(field: str, expected: str) -> RequestError:
    return RequestError(field, "invalid_field", f"{field} must be {expected}")


def _required_string(body: Mapping[str, Any], field: str) -> str:
    if field not in body or body[field] is None:
        raise RequestError(field, "missing_field", f"{field} is required")
    value = body[field]
    if not isinstance(value, str):
        raise _wrong_type(field, "a string")
    if not value.strip():
        raise RequestError(field, "invalid_field", f"{field} must not be empty")
    return value


def _optional(body: Mapping[str, Any], field: str, kind: type, expected: str) -> Any:
    value = body.get(field)
    if value is None:
        return None
    # bool is an int in Python; a seed of `true` is a type error, not 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _wrong_type(field, expected)
    return value
