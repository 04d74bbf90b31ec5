"""A submission attempt: what a provider's answer to it means for the job (SPEC §3, §8). Pure, no I/O.

The engine reads the wire and builds an outcome (`SubmitResult`, through the constructors below);
`decide` says, for the job as the store holds it, what that outcome makes of the attempt and of
the job: the attempt's new state, the job's next step and the effects to write. The store writes
the decision as given, in one transaction; the route maps it to HTTP (`refusal`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Protocol

from service.domain import report
from service.domain.job import Job
from service.domain.status import JobError, Observation, Status
from service.domain.work import TRACKING_KINDS, SubmitState, WorkKind

# The job error of a definite refusal: the route answers it 502 (SPEC §3).
REJECTED_CODE = "provider_rejected"
# SPEC §8: a job with a candidate left sends a submission that its provider answers 429 or 5xx this many
# times in all (the first try and its retries, Retry-After respected between them) before the attempt
# ends `rejected` and the job moves on. Enough to ride out a blip (a deploy, a burst over the rate
# limit), few enough that a provider in trouble costs the job seconds, not its deadline. A job without
# a candidate left has nowhere else to go: it retries until its deadline, as a single provider always did.
TRIES_PER_CANDIDATE = 3
RETRIES_SPENT_CODE = "retries_exhausted"
UNCERTAIN_SYNC = JobError(
    "submission_uncertain",
    "the synchronous call was cut before it answered; it was not re-sent to avoid a double charge",
)


class AttemptState(enum.StrEnum):
    """Where one attempt at one provider stands (SPEC §8's vocabulary)."""

    NOT_SENT = "not_sent"  # the provider has not taken it (no connection, circuit open, or 429/5xx: retried later)
    REJECTED = "rejected"  # a definite refusal, or 429/5xx past the retries: nothing is charged
    ACCEPTED = "accepted"  # the provider has it (a task id, or the images already)
    UNCERTAIN = "uncertain"  # sent, outcome unknown: never re-sent, the provider may charge
    COMPLETED = "completed"
    FAILED = "failed"


class SubmitKind(enum.StrEnum):
    """The outcome of one call, as the job's `submit` event names it."""

    ACCEPTED = "accepted"  # the provider took it (a task id, or already the images)
    REJECTED = "rejected"  # the provider refused it for good: the job fails
    RETRY = "retry"  # the provider could not take it now, or was not reached: retried at `retry_at`
    UNCERTAIN = "uncertain"  # sent, no answer: never re-sent; a callback may still bind it
    FAILED = "failed"  # the attempt ends the job (an uncertain synchronous call: nothing can bind it)


class HeldImage(Protocol):
    """An image jobhook keeps itself (service.media.MediaFile)."""

    def to_json(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """One call's outcome: what the provider answered, read (the constructors below build them)."""

    kind: SubmitKind
    detail: Mapping[str, Any]  # the `submit` event's detail
    task_id: str | None = None
    observation: Observation | None = None  # for answers that already tell the outcome
    error: JobError | None = None  # for REJECTED and FAILED
    retry_at: float | None = None  # for RETRY
    first_poll_at: float | None = None  # for ACCEPTED with a task id
    cost_usd: float | None = None
    media: tuple[HeldImage, ...] = ()  # images jobhook now holds (a synchronous provider's answer)
    credits_remaining: float | None = None  # the balance the provider reported
    credits_exhausted: bool = False  # the provider refused for want of credits (402, segmind's 406)
    unreached: bool = False  # RETRY: the call never reached the provider (nothing was sent)


# -- outcomes ----------------------------------------------------------------------------------------


def accepted(
    detail: Mapping[str, Any],
    *,
    task_id: str | None,
    observation: Observation | None = None,
    media: tuple[HeldImage, ...] = (),
    first_poll_at: float | None = None,
    cost_usd: float | None = None,
    credits_remaining: float | None = None,
) -> SubmitResult:
    """The provider took the job: a task id to follow, or already its outcome (a synchronous answer)."""
    if task_id:
        detail = {**detail, "provider_task_id": task_id}
    return SubmitResult(
        SubmitKind.ACCEPTED,
        detail,
        task_id=task_id,
        observation=observation,
        first_poll_at=first_poll_at if task_id else None,
        cost_usd=cost_usd,
        media=media,
        credits_remaining=credits_remaining,
    )


def rejected(
    detail: Mapping[str, Any], error: JobError, *, http_status: int, credits_remaining: float | None = None
) -> SubmitResult:
    """A definite refusal; one for want of credits (402, or the provider's `insufficient_credits`)
    is said so, for the provider's credits state."""
    return SubmitResult(
        SubmitKind.REJECTED,
        {**detail, "provider_code": error.provider_code, "message": error.message},
        error=error,
        credits_remaining=credits_remaining,
        credits_exhausted=http_status == 402 or error.provider_code == "insufficient_credits",
    )


def retry(detail: Mapping[str, Any], *, now: float, backoff: float, asked: float | None = None) -> SubmitResult:
    """Not taken now (429/5xx, or no connection): sent again after the backoff, or after what the
    provider asked (`Retry-After`, seconds from now) when that is longer."""
    wait = backoff if asked is None else max(backoff, asked)
    return SubmitResult(SubmitKind.RETRY, {**detail, "retry_in": round(wait, 3)}, retry_at=now + wait)


def not_sent(message: str, *, now: float, backoff: float) -> SubmitResult:
    """The call never reached the provider (refused connection, …): nothing was created; retried."""
    result = retry({"reason": "not_sent", "message": message}, now=now, backoff=backoff)
    return dataclasses.replace(result, unreached=True)


def uncertain(detail: Mapping[str, Any], *, synchronous: bool) -> SubmitResult:
    """Sent without a known outcome (no answer, an answer we cannot read, a call cut by a crash):
    never re-sent. A synchronous provider's job cannot be bound later by anything: it fails now."""
    if synchronous:
        return SubmitResult(SubmitKind.FAILED, detail, error=UNCERTAIN_SYNC)
    return SubmitResult(SubmitKind.UNCERTAIN, detail)


def unreadable(detail: Mapping[str, Any], message: str, *, synchronous: bool) -> SubmitResult:
    """A 2xx we cannot read: the provider may well have created the task. Never re-sent."""
    return uncertain({**detail, "reason": "unreadable_answer", "message": message}, synchronous=synchronous)


# -- the decision ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Retry:
    """Send the submission again at `at` (the same provider)."""

    at: float


@dataclasses.dataclass(frozen=True)
class Poll:
    """Poll the task first at `at`, unless the answer already finished the job."""

    at: float


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing to schedule: a callback, a bind or the deadline settles the job."""


@dataclasses.dataclass(frozen=True)
class Final:
    """The job ends `failed` with `error`."""

    error: JobError


@dataclasses.dataclass(frozen=True)
class NextCandidate:
    """Try the job's next provider (SPEC §8): the attempt ended with nothing the provider may charge
    for (never sent, or refused), and the job has a candidate left."""


@dataclasses.dataclass(frozen=True)
class Settled:
    """The job was decided before this answer came (a deadline, a callback that bound it): the answer
    is only recorded."""


Step = Retry | Poll | Wait | Final | NextCandidate | report.FallBack | Settled


@dataclasses.dataclass(frozen=True)
class Credits:
    """What the answer tells of the provider's balance."""

    remaining: float | None
    exhausted: bool


@dataclasses.dataclass(frozen=True)
class SubmitDecision:
    """What one submission outcome does: the store writes exactly this."""

    outcome: SubmitResult
    state: AttemptState | None  # None: the job was settled already (Settled)
    step: Step
    status: Status | None = None  # the job's new status (None: unchanged)
    submit_state: SubmitState | None = None  # written unless Settled (None: the next may be sent)
    task_id: str | None = None  # the task the job is now bound to
    unschedule: tuple[WorkKind, ...] = ()  # due work that no longer applies
    status_detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the `status` event's
    notify: tuple[str, ...] = ()  # notifications to queue with the job, after the change
    credits: Credits = Credits(None, False)
    error: JobError | None = None  # the attempt's error when the outcome carries none (past the retries)

    @property
    def event(self) -> tuple[str, str, Mapping[str, Any]]:
        """The job's `submit` event: every answer is recorded, even one that changes nothing."""
        return "submit", str(self.outcome.kind), self.outcome.detail

    @property
    def refused(self) -> bool:
        """A definite refusal: the request that made the job is answered 502 (SPEC §3)."""
        return self.state is AttemptState.REJECTED

    @property
    def attempt_error(self) -> JobError | None:
        """What the attempt's record says went wrong (None: nothing did, or nothing is known yet)."""
        return self.error or self.outcome.error

    @property
    def past_the_retries(self) -> bool:
        """A 429/5xx that ended the attempt: its tries at this provider are spent (SPEC §8)."""
        return self.state is AttemptState.REJECTED and self.outcome.kind is SubmitKind.RETRY


def tries(job: Job) -> int:
    """How many times the job's current attempt has been sent to its provider (this one included)."""
    return job.attempts[-1].tries if job.attempts else job.submit_attempts


def decide(job: Job, outcome: SubmitResult, *, now: float) -> SubmitDecision:
    """What `outcome` does to `job`, as the store holds it when the answer is written (SPEC §3).

    Only a `queued` job is changed: one already submitted, finished or timed out was decided by
    something else first (a deadline; a callback that bound it), and keeps its record only.
    """
    credits = Credits(outcome.credits_remaining, outcome.credits_exhausted)
    if job.status is not Status.QUEUED:
        return SubmitDecision(outcome, None, Settled(), credits=credits)
    by = {"from": str(Status.QUEUED), "by": "submit"}
    kind = outcome.kind
    if kind is SubmitKind.ACCEPTED:
        state = AttemptState.ACCEPTED
        if outcome.observation is not None and outcome.observation.status is Status.COMPLETED:
            state = AttemptState.COMPLETED
        elif outcome.observation is not None and outcome.observation.status is Status.FAILED:
            state = AttemptState.FAILED
        step: Step = Wait()
        if outcome.first_poll_at is not None and outcome.task_id:
            step = Poll(outcome.first_poll_at)
        return SubmitDecision(
            outcome,
            state,
            step,
            status=Status.SUBMITTED,
            submit_state=SubmitState.DONE,
            task_id=outcome.task_id,
            unschedule=(WorkKind.SUBMIT,),
            status_detail=by,
            credits=credits,
        )
    if job.candidates and (kind is SubmitKind.REJECTED or (kind is SubmitKind.RETRY and outcome.unreached)):
        # Failover only from an attempt that cannot have been charged: refused for good, or never
        # sent. 429/5xx (a RETRY that reached the provider) are retried at the same provider…
        state = AttemptState.REJECTED if kind is SubmitKind.REJECTED else AttemptState.NOT_SENT
        return SubmitDecision(outcome, state, NextCandidate(), credits=credits)
    if job.candidates and kind is SubmitKind.RETRY and tries(job) >= TRIES_PER_CANDIDATE:
        # …until its tries there are spent: a 429/5xx creates nothing, so the next may be tried.
        return SubmitDecision(
            outcome, AttemptState.REJECTED, NextCandidate(), credits=credits, error=retries_spent(job, outcome)
        )
    if kind in (SubmitKind.REJECTED, SubmitKind.FAILED):
        state = AttemptState.REJECTED if kind is SubmitKind.REJECTED else AttemptState.UNCERTAIN
        current = job.current_attempt()
        back = report.fall_back(job, report.AttemptEnd(current.seq, str(state)) if current else None)
        if back is not None:
            # Nothing left to try, but an earlier attempt the backend rerouted away from may still
            # deliver (SPEC §8): the job follows it again rather than fail.
            return SubmitDecision(outcome, state, back, submit_state=SubmitState.DONE, credits=credits)
        error = outcome.error or JobError(REJECTED_CODE, "the provider refused the job")
        return SubmitDecision(
            outcome,
            state,
            Final(error),
            status=Status.FAILED,
            submit_state=SubmitState.DONE,
            unschedule=TRACKING_KINDS,
            status_detail=by,
            notify=("job.failed",),
            credits=credits,
        )
    if kind is SubmitKind.RETRY:
        at = outcome.retry_at if outcome.retry_at is not None else now
        return SubmitDecision(outcome, AttemptState.NOT_SENT, Retry(at), credits=credits)
    # UNCERTAIN: never sent again; a callback may still bind it, the deadline ends it.
    return SubmitDecision(
        outcome,
        AttemptState.UNCERTAIN,
        Wait(),
        status=Status.SUBMITTED,
        submit_state=SubmitState.UNCERTAIN,
        unschedule=(WorkKind.SUBMIT,),
        status_detail={**by, "uncertain": True},
        credits=credits,
    )


def retries_spent(job: Job, outcome: SubmitResult) -> JobError:
    """The error of an attempt ended by a 429/5xx past the retries: the last answer's code and message."""
    code = outcome.detail.get("provider_code")
    last = outcome.detail.get("message") or (f"HTTP {outcome.detail.get('http_status')}")
    return JobError(
        RETRIES_SPENT_CODE,
        f"{job.provider} could not take the job {tries(job)} times in a row (the last: {last}); "
        "the next candidate is tried",
        str(code) if code is not None else None,
    )


def refusal(job: Job) -> JobError | None:
    """The provider's definite refusal of the job's submission, if that is how the job ended: what
    the request that made it (or replays it) is answered 502 with: the error `decide` gave the job
    when its last candidate refused it."""
    if job.status is Status.FAILED and job.error is not None and job.error.code == REJECTED_CODE:
        return job.error
    return None


def attempt_state(outcome: SubmitResult) -> AttemptState:
    """What a submission's outcome makes of its attempt, whatever the job's status."""
    if outcome.kind is SubmitKind.ACCEPTED:
        seen = outcome.observation.status if outcome.observation is not None else None
        if seen is Status.COMPLETED:
            return AttemptState.COMPLETED
        return AttemptState.FAILED if seen is Status.FAILED else AttemptState.ACCEPTED
    if outcome.kind is SubmitKind.REJECTED:
        return AttemptState.REJECTED
    if outcome.kind is SubmitKind.RETRY:
        return AttemptState.NOT_SENT
    return AttemptState.UNCERTAIN
