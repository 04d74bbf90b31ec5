"""The shape every provider adapter has: pure mapping between jobhook's vocabulary and the wire.

An adapter builds `WireRequest`s and parses `WireResponse`s and callback bodies into domain values;
it never sends anything itself (`service.providers.http` does) and never touches the database.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from service.domain.request import Capabilities, GenerationRequest
from service.domain.status import JobError, Observation
from service.errors import JobhookError


class Tracking(enum.StrEnum):
    """How a provider tells jobhook that a job finished."""

    CALLBACK = "callback"  # signed-less callback with X-Task-Id / X-Timestamp / X-Event headers
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


class Answer(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # 400/401/402/403/404: the provider will not do it
    RETRY = "retry"  # 429/5xx: briefly unable


@dataclasses.dataclass(frozen=True)
class SubmitAnswer:
    answer: Answer
    task_id: str | None = None
    observation: Observation | None = None
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

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def submit_request(self, request: GenerationRequest, callback_url: str | None) -> WireRequest: ...

    def parse_submit(self, response: WireResponse) -> SubmitAnswer: ...

    def poll_request(self, task_id: str) -> WireRequest: ...

    def parse_poll(self, response: WireResponse) -> PollAnswer: ...

    def parse_callback(self, body: Mapping[str, Any]) -> Observation: ...

    def price_usd(self, request: Mapping[str, Any], images: int) -> float | None: ...
