"""`POST /v1/jobs/{id}/reroute` (SPEC §8): the backend's explicit decision to try the job's next candidate
now, even though its current attempt may still deliver and charge. Pure, no I/O.

The attempt left is not cancelled (no reseller can be told to stop): if it was accepted or is uncertain
it stays alive, its callbacks are taken and it is polled, and the first attempt to complete completes
the job (service.domain.report). Only an attempt never sent (queued, waiting out a retry or an open
circuit) simply ends `not_sent`.

A reroute names the attempt it leaves (`from_attempt`, the attempt's `seq`; by default the job's
current attempt when the request was read). When that attempt is no longer the current one, an
earlier reroute (or a failover) already left it: nothing changes. So two requests for the same
reroute (a retry, a double click) move the job once; moving it twice takes two reroutes that each
name the attempt they leave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from service.domain.job import AttemptRecord, Job
from service.domain.report import LatePolls
from service.domain.status import FINAL
from service.domain.work import SubmitState

REASON = "reroute"


@dataclasses.dataclass(frozen=True)
class Refused:
    """The reroute cannot be made: answered with this status and code, and nothing changes."""

    status: int
    code: str
    message: str
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class AlreadyLeft:
    """The attempt named is no longer the job's current one: nothing to do (answered 200 with the job)."""


@dataclasses.dataclass(frozen=True)
class Reroute:
    """Move the job to its next candidate, `to`. `left`: the attempt left (None for a job made before
    attempts were recorded); `alive`: it may still deliver and charge, so it is followed on; otherwise it
    was never sent and ends `not_sent`."""

    left: AttemptRecord | None
    to: str
    alive: bool

    @property
    def late_polls(self) -> LatePolls | None:
        """The attempt left is followed by late polls when it may deliver and has a task id to ask about."""
        left = self.left
        if self.alive and left is not None and left.provider_task_id:
            return LatePolls(left.provider)
        return None

    @property
    def ends_left(self) -> bool:
        return self.left is not None and not self.alive and self.left.state in (None, "not_sent")

    def detail(self, provider: str) -> Mapping[str, Any]:
        """What the job's `failover` event says beside from, to and reason: whether both may charge."""
        left = self.left
        seq = left.seq if left is not None else None
        state = (left.state if left is not None else None) or "not_sent"
        if self.alive:
            message = (
                f"rerouted by the backend: the attempt at {provider} ({state}) is not cancelled and may still "
                f"deliver and charge, and {self.to} may charge too: both may charge; the first attempt to "
                "complete completes the job"
            )
        else:
            message = f"rerouted by the backend: nothing was sent to {provider}, so only {self.to} may charge"
        return {"attempt": seq, "left": state, "both_may_charge": self.alive, "message": message}


Verdict = Reroute | AlreadyLeft | Refused


def decide(job: Job, from_attempt: int | None) -> Verdict:
    """May the job be rerouted now, leaving attempt `from_attempt` (None: whichever is current)?"""
    if job.submitted_by_backend:
        return Refused(
            409,
            "backend_submitted",
            "the backend submitted this job itself: jobhook cannot send it to another provider",
        )
    current = job.current_attempt()
    if from_attempt is not None:
        if job.attempt(from_attempt) is None:
            return Refused(
                422,
                "invalid_field",
                f"the job has no attempt {from_attempt} (it has {len(job.attempts)})",
                field="from_attempt",
            )
        if current is not None and current.seq != from_attempt:
            return AlreadyLeft()
    if job.status in FINAL:
        return Refused(409, "job_final", f"the job is {job.status}: there is nothing to reroute")
    if not job.candidates:
        tried = ", ".join(item.provider for item in job.attempts) or job.provider
        return Refused(409, "no_candidate", f"no candidate provider is left to try (tried: {tried})")
    if job.submit_state is SubmitState.SENDING:
        return Refused(
            409,
            "submission_in_flight",
            f"the submission to {job.provider} has not answered yet: reroute once it has",
        )
    # Sent and not finished: accepted, uncertain, or a call whose answer was never written (a deadline
    # or a crash cut it: the job's submission is then marked uncertain).
    sent = job.submit_state in (SubmitState.DONE, SubmitState.UNCERTAIN)
    alive = current.alive or (current.state is None and sent) if current is not None else sent
    return Reroute(current, job.candidates[0].provider, alive)
