"""The job record and its JSON shape (SPEC §2): frozen, built from a stored row, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from service.domain.status import FINISHED, JobError, Status
from service.domain.work import SubmitState


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds → `2026-11-22T09:11:31.123Z` (UTC, milliseconds)."""
    if ts is None:
        return None
    # isoformat is several times faster than strftime (a list page formats hundreds of these).
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


# Attempts that were sent and have not finished: the provider may still deliver, and charge (SPEC §8).
ALIVE_STATES = frozenset({"accepted", "uncertain"})


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One provider tried for a job (SPEC §8); `state` None: in flight, or not made yet."""

    seq: int
    provider: str
    started_at: float
    provider_task_id: str | None = None
    state: str | None = None
    error: JobError | None = None
    cost_usd: float | None = None
    ended_at: float | None = None
    tries: int = 0  # how many times it was sent to the provider (429/5xx are retried there: SPEC §8)

    @property
    def alive(self) -> bool:
        """Sent and not finished: the provider may still deliver it, and charge for it."""
        return self.state in ALIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "provider": self.provider,
            "provider_task_id": self.provider_task_id,
            "state": self.state,
            "error": self.error.to_json() if self.error else None,
            "cost_usd": self.cost_usd,
            "started_at": rfc3339(self.started_at),
            "ended_at": rfc3339(self.ended_at),
        }


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A provider a job may still move to (SPEC §8): its name, and whether it calls back (so the job
    registers a callback URL with it)."""

    provider: str
    callbacks: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "callbacks": self.callbacks}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Candidate:
        return cls(str(value["provider"]), bool(value.get("callbacks", False)))


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    provider: str
    status: Status
    request: Mapping[str, Any]
    created_at: float
    updated_at: float
    provider_task_id: str | None = None
    metadata: Mapping[str, Any] | None = None
    images: tuple[str, ...] = ()
    error: JobError | None = None
    resolved_by: str | None = None
    callback_url_registered: bool = False
    submitted_by_backend: bool = False
    submitted_at: float | None = None
    finished_at: float | None = None
    cost_usd: float | None = None
    submit_state: SubmitState | None = None  # None: no submission in flight
    submit_attempts: int = 0
    # Per image index, the file jobhook holds ({"file", "content_type", …}) or None.
    media: tuple[Mapping[str, Any] | None, ...] = ()
    idempotency_key: str | None = None
    request_hash: str | None = None
    # SPEC §8: the providers still to try, in order, should the current attempt end not_sent,
    # rejected or failed; the request's price cap; and the attempts made, oldest first.
    candidates: tuple[Candidate, ...] = ()
    max_price_usd: float | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    # Which version of the stored job this is, when the store can tell (PostgreSQL's row version):
    # a write planned from this record may be checked against it. Opaque; not part of the job.
    version: int | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def current_attempt(self) -> AttemptRecord | None:
        """The attempt the job follows: the one at its `provider` (a job tries each provider once).
        None for a job made before attempts were recorded."""
        for item in reversed(self.attempts):
            if item.provider == self.provider:
                return item
        return None

    def attempt(self, seq: int) -> AttemptRecord | None:
        return next((item for item in self.attempts if item.seq == seq), None)

    def image_count(self) -> int:
        return max(len(self.images), len(self.media))

    def held(self, index: int) -> Mapping[str, Any] | None:
        """The file jobhook holds for image `index`, if any."""
        return self.media[index] if 0 <= index < len(self.media) else None

    def result_images(self, base_url: str) -> list[dict[str, Any]]:
        """Each image: the provider's URL (or jobhook's, when only jobhook has it) and jobhook's copy."""
        images = []
        for index in range(self.image_count()):
            own = f"{base_url}/v1/jobs/{self.id}/images/{index}"
            provider_url = self.images[index] if index < len(self.images) else None
            entry: dict[str, Any] = {"url": provider_url or own}
            if provider_url and self.held(index) is not None:
                entry["mirror_url"] = own
            held = self.held(index)
            if held is not None:
                entry["content_type"] = held.get("content_type")
            images.append(entry)
        return images

    def to_json(self, *, base_url: str = "", callback_url: str | None = None) -> dict[str, Any]:
        """The job as the API shows it; `base_url` is where the reader reaches jobhook's own images."""
        out: dict[str, Any] = {
            "id": self.id,
            "provider": self.provider,
            "provider_task_id": self.provider_task_id,
            "status": str(self.status),
            "request": dict(self.request),
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "result": {"images": self.result_images(base_url.rstrip("/"))} if self.image_count() else None,
            "error": self.error.to_json() if self.error else None,
            "resolved_by": self.resolved_by,
            "callback_url_registered": self.callback_url_registered,
            "created_at": rfc3339(self.created_at),
            "submitted_at": rfc3339(self.submitted_at),
            "updated_at": rfc3339(self.updated_at),
            "finished_at": rfc3339(self.finished_at),
            "cost_usd": self.cost_usd,
            "attempts": [item.to_json() for item in self.attempts],
        }
        if callback_url is not None:
            out["callback_url"] = callback_url
        return out


@dataclasses.dataclass(frozen=True)
class Event:
    """One line of a job's history: what happened, its outcome, and the details that explain it."""

    id: int
    job_id: str
    at: float
    type: str
    outcome: str | None
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": rfc3339(self.at),
            "type": self.type,
            "outcome": self.outcome,
            "detail": dict(self.detail),
        }
