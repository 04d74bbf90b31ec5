"""What the built-in simulator can be told to do with one task (SPEC §7): `provider_options.simulate`. Pure.

The simulator reads these overrides from its wire input (`input.simulate`) and jobhook checks them
before it sends anything to the simulator, with the same rule and the same words: a typo in a demo is
a 422 naming the field, not a job made and then failed by the provider. Strict on purpose: an unknown
key or a wrong value that did nothing would make a demo show something else than it says.

`refuse` makes the simulator refuse the creation the way aivideoapi refuses one (PROVIDERS.md §1): the
value is aivideoapi's own error code, answered with its HTTP status, `type` and message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# Caps on per-task overrides, so that one request cannot make the simulator flood or hang.
MAX_COPIES = 20
MAX_LATENCY = 3600.0
BOOLEAN_OVERRIDES = ("fail", "drop_callback", "stale_timestamp")
COUNT_OVERRIDES = ("duplicates", "concurrent_duplicates")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One of aivideoapi's error answers (PROVIDERS.md §1; the seed page's error reference)."""

    status: int
    code: str
    type: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "type": self.type}}


# Every refusal aivideoapi documents for a creation, by its code. `task_not_found` is left out: a
# creation names no task.
REFUSALS: Mapping[str, Refusal] = MappingProxyType(
    {
        refusal.code: refusal
        for refusal in (
            Refusal(400, "invalid_request", "invalid_request_error", "Missing or invalid parameters."),
            Refusal(401, "invalid_api_key", "authentication_error", "API key is invalid, disabled, or deleted."),
            Refusal(402, "insufficient_credits", "billing_error", "Your credit balance is too low. Please top up."),
            Refusal(403, "ip_not_allowed", "permission_error", "Request IP not in the key's allowlist."),
            Refusal(404, "model_not_found", "invalid_request_error", "Model does not exist or is inactive."),
            Refusal(429, "rate_limit_exceeded", "rate_limit_error", "Too many requests, please slow down."),
            Refusal(429, "spend_limit_exceeded", "billing_error", "Key spend limit reached (hourly/daily/total)."),
            Refusal(500, "internal_error", "api_error", "Unexpected server error."),
            Refusal(503, "upstream_error", "upstream_error", "Upstream AI provider returned an error."),
        )
    }
)
KEYS = (*BOOLEAN_OVERRIDES, *COUNT_OVERRIDES, "latency", "refuse")


class InvalidOverride(ValueError):
    """A `simulate` object the simulator cannot follow; `field` is the path at fault, under `where`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def overrides(raw: Any, where: str) -> dict[str, Any]:
    """The overrides `raw` asks for, checked key by key; `where` names the object in messages
    (`input.simulate` on the simulator's wire, `provider_options.simulate` in a jobhook request)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidOverride(where, f"{where} must be an object")
    for key, value in raw.items():
        field = f"{where}.{key}"
        if key not in KEYS:
            raise InvalidOverride(field, f"{field} is unknown; expected one of {', '.join(KEYS)}")
        if key in BOOLEAN_OVERRIDES and not isinstance(value, bool):
            raise InvalidOverride(field, f"{field} must be true or false")
        if key in COUNT_OVERRIDES and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COPIES
        ):
            raise InvalidOverride(field, f"{field} must be a whole number from 0 to {MAX_COPIES}")
        if key == "latency" and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= MAX_LATENCY
        ):
            raise InvalidOverride(field, f"{field} must be seconds from 0 to {MAX_LATENCY:g}")
        if key == "refuse" and (not isinstance(value, str) or value not in REFUSALS):  # a list is unhashable
            raise InvalidOverride(field, f"{field} must be one of aivideoapi's error codes: {', '.join(REFUSALS)}")
    return dict(raw)
