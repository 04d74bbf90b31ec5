"""The job record and its JSON shape (SPEC §2): frozen, built from a stored row, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from service.domain.status import FINISHED, JobError, Status


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds → `2026-11-22T09:11:31.123Z` (UTC, milliseconds)."""
    if ts is None:
        return None
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
    submit_state: str | None = None  # None, "sending", "done", "uncertain"
    submit_attempts: int = 0
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self, *, callback_url: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "provider": self.provider,
            "provider_task_id": self.provider_task_id,
            "status": str(self.status),
            "request": dict(self.request),
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "result": {"images": [{"url": url} for url in self.images]} if self.images else None,
            "error": self.error.to_json() if self.error else None,
            "resolved_by": self.resolved_by,
            "callback_url_registered": self.callback_url_registered,
            "created_at": rfc3339(self.created_at),
            "submitted_at": rfc3339(self.submitted_at),
            "updated_at": rfc3339(self.updated_at),
            "finished_at": rfc3339(self.finished_at),
            "cost_usd": self.cost_usd,
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
