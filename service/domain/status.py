"""The job status machine of SPEC §2: pure, no I/O.

A status never moves backwards; the first final state stands and a disagreeing one is reported as a
conflict; `timed_out` is jobhook's own verdict, so a later genuine observation may still finish it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class Status(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


# A job keeps at most the images its request asked for (`num_images`, 1 when unset), and never more
# than this: a provider's answer listing more (150 URLs in one callback) cannot grow a job without bound.
MAX_IMAGES = 8

FINAL = frozenset({Status.COMPLETED, Status.FAILED})
# Statuses nobody needs to wait for any more (`?wait=N` returns, notifications go out).
FINISHED = FINAL | {Status.TIMED_OUT}
# What a provider can tell us; QUEUED and TIMED_OUT are jobhook's own words.
OBSERVABLE = frozenset({Status.SUBMITTED, Status.PROCESSING, Status.COMPLETED, Status.FAILED})

_RANK = {
    Status.QUEUED: 0,
    Status.SUBMITTED: 1,
    Status.PROCESSING: 2,
    Status.TIMED_OUT: 3,
    Status.COMPLETED: 4,
    Status.FAILED: 4,
}


class Source(enum.StrEnum):
    """Who told us: becomes the job's `resolved_by` when it finishes the job."""

    CALLBACK = "callback"
    POLL = "poll"
    SUBMIT = "submit"


@dataclasses.dataclass(frozen=True)
class JobError:
    code: str
    message: str
    provider_code: str | None = None  # the provider's own code, when the provider refused or failed it

    def to_json(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.provider_code is not None:
            out["provider_code"] = self.provider_code
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> JobError | None:
        if not data:
            return None
        provider_code = data.get("provider_code")
        return cls(
            code=str(data.get("code", "")),
            message=str(data.get("message", "")),
            provider_code=str(provider_code) if provider_code is not None else None,
        )


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a provider says about one task, parsed from a callback, a poll or a submission answer."""

    status: Status
    images: tuple[str, ...] = ()
    error: JobError | None = None

    def __post_init__(self) -> None:
        if self.status not in OBSERVABLE:
            raise ValueError(f"a provider cannot report {self.status}")


class Outcome(enum.StrEnum):
    APPLIED = "applied"  # the job moved forward
    UNCHANGED = "unchanged"  # nothing new (same status, or an older one)
    CONFLICT = "conflict"  # a final state disagreeing with the final state the job already has


@dataclasses.dataclass(frozen=True)
class Decision:
    outcome: Outcome
    status: Status
    reason: str
    images: tuple[str, ...] = ()  # the images the job takes from the observation, when applied
    ignored: int = 0  # how many more the observation listed than the job asked for

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.APPLIED

    @property
    def finishes(self) -> bool:
        return self.applied and self.status in FINAL


def images_asked(request: Mapping[str, Any]) -> int:
    """How many images a job with this (stored) request keeps: its `num_images`, 1 to MAX_IMAGES."""
    asked = request.get("num_images")
    if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
        return 1
    return min(asked, MAX_IMAGES)


def keep_images(images: tuple[T, ...], asked: int) -> tuple[tuple[T, ...], int]:
    """The images a job keeps of those a provider offered (the first `asked`), and how many it ignores."""
    kept = images[: max(0, asked)]
    return kept, len(images) - len(kept)


def apply(current: Status, observation: Observation, *, asked: int = 1) -> Decision:
    """Decide what an observation does to a job whose status is `current`.

    `asked`: how many images the job asked for (`images_asked`); an applied decision takes at most
    that many of the observation's images and says how many it ignored.
    """
    decision = _status(current, observation)
    if not decision.applied or not observation.images:
        return decision
    kept, ignored = keep_images(observation.images, asked)
    return dataclasses.replace(decision, images=kept, ignored=ignored)


def _status(current: Status, observation: Observation) -> Decision:
    seen = observation.status
    if current in FINAL:
        if seen == current:
            return Decision(Outcome.UNCHANGED, current, f"already {current}")
        if seen in FINAL:
            return Decision(Outcome.CONFLICT, current, f"{seen} reported after {current}; the first final state stands")
        return Decision(Outcome.UNCHANGED, current, f"{seen} after {current} ignored: a status never moves backwards")
    if _RANK[seen] > _RANK[current]:
        return Decision(Outcome.APPLIED, seen, f"{current} → {seen}")
    if seen == current:
        return Decision(Outcome.UNCHANGED, current, f"still {current}")
    return Decision(Outcome.UNCHANGED, current, f"{seen} after {current} ignored: a status never moves backwards")


def on_deadline(
    current: Status, *, has_task_id: bool, sending: bool, alive_elsewhere: bool = False
) -> tuple[Status, JobError] | None:
    """What `JOBHOOK_JOB_TIMEOUT` does to a job: None when it is already finished.

    A job whose submission was sent without a known outcome ends `failed` with `submission_uncertain`:
    one submitted without a task id (nothing can ever be polled), and one still "sending" (`sending`:
    its call was in flight, or cut by a crash, when the deadline came — the provider may have it and
    may charge for it). A job never sent, or refused, ends `submission_failed`; any other unfinished
    job becomes `timed_out`. So does any unfinished job with an earlier attempt still alive
    (`alive_elsewhere`: the backend rerouted away from an attempt that may still deliver, SPEC §8):
    failing it would be premature, and a late result from that attempt may still complete it.
    """
    if current in FINISHED:
        return None
    if alive_elsewhere:
        return Status.TIMED_OUT, JobError(
            "timed_out",
            "no final status within JOBHOOK_JOB_TIMEOUT; an earlier attempt may still deliver",
        )
    if current is Status.SUBMITTED and not has_task_id:
        return Status.FAILED, JobError(
            "submission_uncertain",
            "the provider never confirmed the submission and no callback bound it; it was not re-sent "
            "to avoid a double charge",
        )
    if current is Status.QUEUED and sending:
        return Status.FAILED, JobError(
            "submission_uncertain",
            "the submission was sent but its outcome was still unknown at the deadline (the call had not "
            "answered, or jobhook stopped during it); the provider may have it, and it was not re-sent to "
            "avoid a double charge",
        )
    if current is Status.QUEUED:
        return Status.FAILED, JobError("submission_failed", "the provider never accepted the submission in time")
    return Status.TIMED_OUT, JobError("timed_out", "no final status from the provider within JOBHOOK_JOB_TIMEOUT")
