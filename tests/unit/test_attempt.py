"""What a submission's outcome does to a job (service.domain.attempt): the decision, as tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from service.domain import attempt
from service.domain.attempt import AttemptState, SubmitKind, SubmitResult
from service.domain.job import AttemptRecord, Candidate, Job
from service.domain.status import JobError, Observation, Status
from service.domain.work import TRACKING_KINDS, SubmitState, WorkKind

NOW = 1_000.0
REFUSED = JobError("provider_rejected", "no credits", "insufficient_credits")


def job(status: Status = Status.QUEUED, *, error: JobError | None = None) -> Job:
    return Job(
        id="job_1",
        provider="aivideoapi",
        status=status,
        request={"prompt": "a cat"},
        created_at=NOW - 10,
        updated_at=NOW - 10,
        error=error,
        submit_state=SubmitState.SENDING if status is Status.QUEUED else None,
        submit_attempts=1,
    )


DONE = Observation(Status.COMPLETED, ("https://cdn.example/1.png",))
BROKEN = Observation(Status.FAILED, error=JobError("provider_failed", "nsfw"))

# outcome → attempt state, the step's type, the job's new status, submit_state, unscheduled, notified
DECISIONS: list[tuple[str, SubmitResult, AttemptState, type, Status | None, SubmitState | None, tuple[Any, ...]]] = [
    (
        "accepted with a task id: polled at the first poll time",
        attempt.accepted({}, task_id="t1", first_poll_at=NOW + 5),
        AttemptState.ACCEPTED,
        attempt.Poll,
        Status.SUBMITTED,
        SubmitState.DONE,
        (WorkKind.SUBMIT,),
    ),
    (
        "accepted without a task id: a callback binds it",
        attempt.accepted({}, task_id=None, first_poll_at=NOW + 5),
        AttemptState.ACCEPTED,
        attempt.Wait,
        Status.SUBMITTED,
        SubmitState.DONE,
        (WorkKind.SUBMIT,),
    ),
    (
        "accepted with the images (a synchronous answer)",
        attempt.accepted({}, task_id=None, observation=DONE),
        AttemptState.COMPLETED,
        attempt.Wait,
        Status.SUBMITTED,
        SubmitState.DONE,
        (WorkKind.SUBMIT,),
    ),
    (
        "accepted and failed in the same answer",
        attempt.accepted({}, task_id="t1", observation=BROKEN, first_poll_at=NOW + 5),
        AttemptState.FAILED,
        attempt.Poll,
        Status.SUBMITTED,
        SubmitState.DONE,
        (WorkKind.SUBMIT,),
    ),
    (
        "rejected: final",
        attempt.rejected({}, REFUSED, http_status=402),
        AttemptState.REJECTED,
        attempt.Final,
        Status.FAILED,
        SubmitState.DONE,
        TRACKING_KINDS,
    ),
    (
        "retry (429/5xx): sent again later, nothing changes",
        attempt.retry({"http_status": 503}, now=NOW, backoff=5.0),
        AttemptState.NOT_SENT,
        attempt.Retry,
        None,
        None,
        (),
    ),
    (
        "not sent (no connection): retried",
        attempt.not_sent("connection refused", now=NOW, backoff=5.0),
        AttemptState.NOT_SENT,
        attempt.Retry,
        None,
        None,
        (),
    ),
    (
        "no answer: uncertain, never re-sent",
        attempt.uncertain({"reason": "no_answer"}, synchronous=False),
        AttemptState.UNCERTAIN,
        attempt.Wait,
        Status.SUBMITTED,
        SubmitState.UNCERTAIN,
        (WorkKind.SUBMIT,),
    ),
    (
        "an unreadable 2xx: uncertain, never re-sent",
        attempt.unreadable({"http_status": 200}, "not JSON", synchronous=False),
        AttemptState.UNCERTAIN,
        attempt.Wait,
        Status.SUBMITTED,
        SubmitState.UNCERTAIN,
        (WorkKind.SUBMIT,),
    ),
    (
        "a synchronous call without answer: uncertain, and the job fails now",
        attempt.uncertain({"reason": "no_answer"}, synchronous=True),
        AttemptState.UNCERTAIN,
        attempt.Final,
        Status.FAILED,
        SubmitState.DONE,
        TRACKING_KINDS,
    ),
    (
        "a synchronous answer we cannot read: the same",
        attempt.unreadable({"http_status": 200}, "not JSON", synchronous=True),
        AttemptState.UNCERTAIN,
        attempt.Final,
        Status.FAILED,
        SubmitState.DONE,
        TRACKING_KINDS,
    ),
]


@pytest.mark.parametrize(
    ("outcome", "state", "step", "status", "submit_state", "unschedule"),
    [row[1:] for row in DECISIONS],
    ids=[row[0] for row in DECISIONS],
)
def test_a_queued_jobs_attempt(
    outcome: SubmitResult,
    state: AttemptState,
    step: type,
    status: Status | None,
    submit_state: SubmitState | None,
    unschedule: tuple[WorkKind, ...],
) -> None:
    decision = attempt.decide(job(), outcome, now=NOW)
    assert (decision.state, type(decision.step), decision.status) == (state, step, status)
    assert (decision.submit_state, decision.unschedule) == (submit_state, unschedule)
    assert decision.refused is (state is AttemptState.REJECTED)
    assert decision.notify == (("job.failed",) if status is Status.FAILED else ())
    assert decision.event == ("submit", str(outcome.kind), outcome.detail)
    if status is not None:
        assert decision.status_detail["from"] == "queued" and decision.status_detail["by"] == "submit"


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.QUEUED])
@pytest.mark.parametrize(
    "outcome",
    [row[1] for row in DECISIONS],
    ids=[row[0] for row in DECISIONS],
)
def test_a_job_decided_already_keeps_the_record_only(status: Status, outcome: SubmitResult) -> None:
    """A deadline or a callback got there first: the answer is recorded, the job is not changed."""
    decision = attempt.decide(job(status), outcome, now=NOW)
    assert (decision.state, decision.step, decision.status, decision.unschedule) == (None, attempt.Settled(), None, ())
    assert decision.event[1] == str(outcome.kind) and not decision.refused


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (attempt.rejected({}, REFUSED, http_status=402), REFUSED),
        (SubmitResult(SubmitKind.REJECTED, {}), JobError("provider_rejected", "the provider refused the job")),
        (attempt.uncertain({}, synchronous=True), attempt.UNCERTAIN_SYNC),
    ],
    ids=["the provider's own error", "a refusal without one", "an uncertain synchronous call"],
)
def test_a_final_step_carries_the_jobs_error(outcome: SubmitResult, error: JobError) -> None:
    step = attempt.decide(job(), outcome, now=NOW).step
    assert step == attempt.Final(error)


@pytest.mark.parametrize(
    ("backoff", "asked", "retry_in"),
    [(5.0, None, 5.0), (5.0, 30.0, 30.0), (60.0, 30.0, 60.0), (2.5, 0.0, 2.5)],
)
def test_a_retry_waits_the_longer_of_the_backoff_and_what_the_provider_asked(
    backoff: float, asked: float | None, retry_in: float
) -> None:
    outcome = attempt.retry({"http_status": 429}, now=NOW, backoff=backoff, asked=asked)
    assert (outcome.retry_at, outcome.detail["retry_in"]) == (NOW + retry_in, retry_in)
    assert attempt.decide(job(), outcome, now=NOW).step == attempt.Retry(NOW + retry_in)


def test_a_retry_without_a_time_is_due_now() -> None:
    assert attempt.decide(job(), SubmitResult(SubmitKind.RETRY, {}), now=NOW).step == attempt.Retry(NOW)


@pytest.mark.parametrize(
    ("http_status", "provider_code", "exhausted"),
    [
        (402, "http_402", True),
        (400, "insufficient_credits", True),
        (406, "insufficient_credits", True),
        (400, "bad", False),
    ],
)
def test_a_refusal_for_want_of_credits_says_so(http_status: int, provider_code: str, exhausted: bool) -> None:
    error = JobError("provider_rejected", "no", provider_code)
    decision = attempt.decide(
        job(), attempt.rejected({}, error, http_status=http_status, credits_remaining=3.0), now=NOW
    )
    assert decision.credits == attempt.Credits(3.0, exhausted)


def test_credits_are_recorded_even_when_the_job_was_decided_already() -> None:
    outcome = attempt.accepted({}, task_id="t1", credits_remaining=12.5)
    assert attempt.decide(job(Status.TIMED_OUT), outcome, now=NOW).credits == attempt.Credits(12.5, False)


def test_an_accepted_answer_names_its_task_and_binds_it() -> None:
    outcome = attempt.accepted({"http_status": 200}, task_id="t1", first_poll_at=NOW + 5)
    assert outcome.detail == {"http_status": 200, "provider_task_id": "t1"}
    assert attempt.decide(job(), outcome, now=NOW).task_id == "t1"
    # Without a task id nothing is polled, whatever time was given.
    assert attempt.accepted({}, task_id=None, first_poll_at=NOW + 5).first_poll_at is None


@pytest.mark.parametrize(
    ("status", "error", "refused"),
    [
        (Status.FAILED, REFUSED, True),
        (Status.FAILED, attempt.UNCERTAIN_SYNC, False),
        (Status.FAILED, JobError("provider_failed", "nsfw"), False),
        (Status.FAILED, None, False),
        (Status.COMPLETED, None, False),
        (Status.QUEUED, None, False),
    ],
)
def test_only_a_definite_refusal_is_answered_as_one(status: Status, error: JobError | None, refused: bool) -> None:
    assert (attempt.refusal(job(status, error=error)) is not None) is refused


# -- failover (SPEC §8): only from an attempt that cannot have been charged --------------------------

NEXT = (Candidate("apiframe", callbacks=True),)
FAILOVER: list[tuple[str, SubmitResult, AttemptState | None, type]] = [
    (
        "a definite refusal moves to the next candidate",
        attempt.rejected({}, REFUSED, http_status=402),
        AttemptState.REJECTED,
        attempt.NextCandidate,
    ),
    (
        "a call that never reached the provider moves to the next candidate",
        attempt.not_sent("connection refused", now=NOW, backoff=2.0),
        AttemptState.NOT_SENT,
        attempt.NextCandidate,
    ),
    (
        "a 429/5xx is retried at the same provider (it may have been received)",
        attempt.retry({"http_status": 503}, now=NOW, backoff=2.0),
        AttemptState.NOT_SENT,
        attempt.Retry,
    ),
    (
        "an accepted submission stays",
        attempt.accepted({}, task_id="t1", first_poll_at=NOW + 5),
        AttemptState.ACCEPTED,
        attempt.Poll,
    ),
    (
        "an uncertain submission is never sent elsewhere",
        attempt.uncertain({"reason": "no_answer"}, synchronous=False),
        AttemptState.UNCERTAIN,
        attempt.Wait,
    ),
    (
        "an uncertain synchronous call fails the job, never sent elsewhere",
        attempt.uncertain({"reason": "no_answer"}, synchronous=True),
        AttemptState.UNCERTAIN,
        attempt.Final,
    ),
]


@pytest.mark.parametrize(("name", "outcome", "state", "step"), FAILOVER, ids=[row[0] for row in FAILOVER])
def test_with_a_candidate_left(name: str, outcome: SubmitResult, state: AttemptState, step: type) -> None:
    decision = attempt.decide(dataclasses.replace(job(), candidates=NEXT), outcome, now=NOW)
    assert decision.state is state
    assert isinstance(decision.step, step)
    if step is attempt.NextCandidate:
        assert decision.status is None and not decision.notify


@pytest.mark.parametrize(
    "outcome",
    [attempt.rejected({}, REFUSED, http_status=402), attempt.not_sent("refused", now=NOW, backoff=2.0)],
    ids=["rejected", "not_sent"],
)
def test_without_a_candidate_left_the_job_behaves_as_before(outcome: SubmitResult) -> None:
    decision = attempt.decide(job(), outcome, now=NOW)
    assert not isinstance(decision.step, attempt.NextCandidate)


@pytest.mark.parametrize("status", [Status.SUBMITTED, Status.TIMED_OUT, Status.FAILED])
def test_a_job_decided_already_never_fails_over(status: Status) -> None:
    decided = dataclasses.replace(job(status), candidates=NEXT)
    decision = attempt.decide(decided, attempt.rejected({}, REFUSED, http_status=402), now=NOW)
    assert isinstance(decision.step, attempt.Settled)


# -- 429/5xx past the retries (SPEC §8): a job with a candidate left moves on after its tries ----------


def at_try(tries: int, *, candidates: tuple[Candidate, ...] = NEXT) -> Job:
    """A queued job whose current attempt (at aivideoapi) has been sent `tries` times."""
    return dataclasses.replace(
        job(), candidates=candidates, attempts=(AttemptRecord(1, "aivideoapi", NOW - 10, tries=tries),)
    )


BUSY = attempt.retry(
    {"http_status": 429, "provider_code": "rate_limited", "message": "slow down"}, now=NOW, backoff=2.0, asked=30.0
)
DOWN = attempt.retry({"http_status": 503, "provider_code": "http_503", "message": "HTTP 503"}, now=NOW, backoff=2.0)
RETRIES: list[tuple[str, Job, SubmitResult, AttemptState, type]] = [
    (
        "429 at the first try: retried there, after its Retry-After",
        at_try(1),
        BUSY,
        AttemptState.NOT_SENT,
        attempt.Retry,
    ),
    ("503 at the first try: retried there", at_try(1), DOWN, AttemptState.NOT_SENT, attempt.Retry),
    (
        "429 at the try before the last: retried there",
        at_try(attempt.TRIES_PER_CANDIDATE - 1),
        BUSY,
        AttemptState.NOT_SENT,
        attempt.Retry,
    ),
    (
        "429 at the last try: rejected, the next candidate",
        at_try(attempt.TRIES_PER_CANDIDATE),
        BUSY,
        AttemptState.REJECTED,
        attempt.NextCandidate,
    ),
    (
        "503 at the last try: rejected, the next candidate",
        at_try(attempt.TRIES_PER_CANDIDATE),
        DOWN,
        AttemptState.REJECTED,
        attempt.NextCandidate,
    ),
    (
        "past the last (a try counted twice by a crash): the same",
        at_try(9),
        DOWN,
        AttemptState.REJECTED,
        attempt.NextCandidate,
    ),
    (
        "no candidate left: retried until the deadline",
        at_try(9, candidates=()),
        BUSY,
        AttemptState.NOT_SENT,
        attempt.Retry,
    ),
    ("no candidate left, a 503: the same", at_try(50, candidates=()), DOWN, AttemptState.NOT_SENT, attempt.Retry),
    (
        "no connection at the first try: moves on at once (nothing was sent)",
        at_try(1),
        attempt.not_sent("connection refused", now=NOW, backoff=2.0),
        AttemptState.NOT_SENT,
        attempt.NextCandidate,
    ),
]


@pytest.mark.parametrize(
    ("at", "outcome", "state", "step"), [row[1:] for row in RETRIES], ids=[row[0] for row in RETRIES]
)
def test_429_and_5xx_past_the_retries(at: Job, outcome: SubmitResult, state: AttemptState, step: type) -> None:
    decision = attempt.decide(at, outcome, now=NOW)
    assert (decision.state, type(decision.step)) == (state, step)
    past = state is AttemptState.REJECTED
    assert decision.past_the_retries is past
    # Nothing changes the job itself: it is queued still (at this provider, or at the next).
    assert (decision.status, decision.submit_state, decision.notify) == (None, None, ())
    if step is attempt.Retry:
        assert decision.step == attempt.Retry(outcome.retry_at or NOW)
    if past:
        assert decision.attempt_error == JobError(
            "retries_exhausted",
            f"aivideoapi could not take the job {attempt.tries(at)} times in a row (the last: "
            f"{outcome.detail['message']}); the next candidate is tried",
            outcome.detail["provider_code"],
        )


def test_a_retry_respects_retry_after_until_the_last_try() -> None:
    """Retry-After is waited out between tries at the same provider; the next candidate is another."""
    decision = attempt.decide(at_try(1), BUSY, now=NOW)
    assert decision.step == attempt.Retry(NOW + 30.0)


def test_the_tries_are_the_current_attempts() -> None:
    """After a failover the tries count again from the new provider's first."""
    moved = dataclasses.replace(
        at_try(attempt.TRIES_PER_CANDIDATE),
        attempts=(
            AttemptRecord(1, "aivideoapi", NOW - 10, state="rejected", tries=attempt.TRIES_PER_CANDIDATE),
            AttemptRecord(2, "apiframe", NOW - 5, tries=1),
        ),
    )
    assert attempt.tries(moved) == 1
    assert isinstance(attempt.decide(moved, DOWN, now=NOW).step, attempt.Retry)
    # A job made before attempts were recorded: its submissions are its tries.
    assert attempt.tries(dataclasses.replace(job(), submit_attempts=4)) == 4
