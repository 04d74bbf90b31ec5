"""May a job be rerouted, and what does the reroute leave behind (service.domain.reroute), as tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from service.domain import attempt as submission
from service.domain import report, reroute
from service.domain import status as status_machine
from service.domain.job import AttemptRecord, Candidate, Job
from service.domain.status import JobError, Status
from service.domain.work import SubmitState

NOW = 1_000.0
NEXT = (Candidate("apiframe", callbacks=True),)


def job(
    status: Status,
    state: str | None,
    *,
    submit_state: SubmitState | None = SubmitState.DONE,
    candidates: tuple[Candidate, ...] = NEXT,
    **more: Any,
) -> Job:
    task = "t1" if state in ("accepted", "completed", "failed") else None
    return Job(
        id="job_1",
        provider="aivideoapi",
        status=status,
        request={"prompt": "a cat"},
        created_at=NOW,
        updated_at=NOW,
        provider_task_id=task,
        submit_state=submit_state,
        candidates=candidates,
        attempts=(AttemptRecord(1, "aivideoapi", NOW, task, state),),
        **more,
    )


# name, job, from_attempt → the verdict's type, (status, code) of a refusal or (alive, ends the attempt)
TABLE: list[tuple[str, Job, int | None, type, tuple[Any, Any]]] = [
    ("accepted: both may charge", job(Status.PROCESSING, "accepted"), None, reroute.Reroute, (True, False)),
    (
        "uncertain: both may charge",
        job(Status.SUBMITTED, "uncertain", submit_state=SubmitState.UNCERTAIN),
        None,
        reroute.Reroute,
        (True, False),
    ),
    ("timed out: both may charge", job(Status.TIMED_OUT, "accepted"), None, reroute.Reroute, (True, False)),
    (
        "waiting out a retry: never sent",
        job(Status.QUEUED, "not_sent", submit_state=None),
        None,
        reroute.Reroute,
        (False, True),
    ),
    ("waiting for its first send", job(Status.QUEUED, None, submit_state=None), None, reroute.Reroute, (False, True)),
    ("naming the current attempt", job(Status.PROCESSING, "accepted"), 1, reroute.Reroute, (True, False)),
    ("completed", job(Status.COMPLETED, "completed"), None, reroute.Refused, (409, "job_final")),
    ("failed", job(Status.FAILED, "failed"), None, reroute.Refused, (409, "job_final")),
    (
        "no candidate left",
        job(Status.PROCESSING, "accepted", candidates=()),
        None,
        reroute.Refused,
        (409, "no_candidate"),
    ),
    (
        "submitted by the backend",
        job(Status.SUBMITTED, "accepted", submitted_by_backend=True),
        None,
        reroute.Refused,
        (409, "backend_submitted"),
    ),
    (
        "its submission in flight",
        job(Status.QUEUED, None, submit_state=SubmitState.SENDING),
        None,
        reroute.Refused,
        (409, "submission_in_flight"),
    ),
    ("no such attempt", job(Status.PROCESSING, "accepted"), 3, reroute.Refused, (422, "invalid_field")),
]


@pytest.mark.parametrize(
    ("the_job", "from_attempt", "verdict", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_may_it_be_rerouted(the_job: Job, from_attempt: int | None, verdict: type, expected: tuple[Any, Any]) -> None:
    decided = reroute.decide(the_job, from_attempt)
    assert isinstance(decided, verdict), decided
    if isinstance(decided, reroute.Refused):
        assert (decided.status, decided.code) == expected and decided.message
    elif isinstance(decided, reroute.Reroute):
        assert (decided.alive, decided.ends_left) == expected
        assert decided.to == "apiframe"


def test_an_attempt_left_already_changes_nothing() -> None:
    """Two reroutes naming the same attempt: the second finds the job moved on, and is a no-op."""
    moved = dataclasses.replace(
        job(Status.QUEUED, None, submit_state=None, candidates=()),
        provider="apiframe",
        attempts=(AttemptRecord(1, "aivideoapi", NOW, "t1", "accepted"), AttemptRecord(2, "apiframe", NOW)),
    )
    assert isinstance(reroute.decide(moved, 1), reroute.AlreadyLeft)
    # A completed job that was rerouted from attempt 1 answers the retry the same way.
    assert isinstance(reroute.decide(dataclasses.replace(moved, status=Status.COMPLETED), 1), reroute.AlreadyLeft)


def test_the_failover_event_says_whether_both_may_charge() -> None:
    alive = reroute.decide(job(Status.PROCESSING, "accepted"), None)
    assert isinstance(alive, reroute.Reroute)
    detail = alive.detail("aivideoapi")
    assert (detail["attempt"], detail["left"], detail["both_may_charge"]) == (1, "accepted", True)
    assert "both may charge" in detail["message"]
    assert alive.late_polls == report.LatePolls("aivideoapi")
    unsent = reroute.decide(job(Status.QUEUED, "not_sent", submit_state=None), None)
    assert isinstance(unsent, reroute.Reroute)
    assert unsent.detail("aivideoapi")["both_may_charge"] is False and unsent.late_polls is None


@pytest.mark.parametrize(
    ("status", "has_task_id", "sending", "expected"),
    [
        (Status.SUBMITTED, False, False, "timed_out"),  # would be submission_uncertain
        (Status.QUEUED, False, True, "timed_out"),  # would be submission_uncertain
        (Status.QUEUED, False, False, "timed_out"),  # would be submission_failed
        (Status.PROCESSING, True, False, "timed_out"),
        (Status.COMPLETED, True, False, None),
    ],
)
def test_a_deadline_never_fails_a_job_an_earlier_attempt_may_still_complete(
    status: Status, has_task_id: bool, sending: bool, expected: str | None
) -> None:
    verdict = status_machine.on_deadline(status, has_task_id=has_task_id, sending=sending, alive_elsewhere=True)
    assert (str(verdict[0]) if verdict else None) == expected


def test_the_last_candidate_refusing_falls_back_to_an_earlier_attempt_that_may_deliver() -> None:
    queued = dataclasses.replace(
        job(Status.QUEUED, None, submit_state=SubmitState.SENDING, candidates=()),
        provider="apiframe",
        attempts=(AttemptRecord(1, "aivideoapi", NOW, "t1", "accepted"), AttemptRecord(2, "apiframe", NOW)),
    )
    refused = submission.rejected({}, JobError("provider_rejected", "no credits"), http_status=402)
    decision = submission.decide(queued, refused, now=NOW)
    assert decision.state is submission.AttemptState.REJECTED and not decision.notify
    assert decision.step == report.FallBack(queued.attempts[0], Status.SUBMITTED, report.LatePolls(None))
    assert not decision.refused or submission.refusal(queued) is None


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (submission.accepted({}, task_id="t"), "accepted"),
        (submission.rejected({}, JobError("provider_rejected", "no"), http_status=401), "rejected"),
        (submission.not_sent("refused", now=NOW, backoff=1), "not_sent"),
        (submission.uncertain({}, synchronous=False), "uncertain"),
    ],
)
def test_what_an_answer_makes_of_its_attempt_whatever_the_job(outcome: submission.SubmitResult, state: str) -> None:
    assert str(submission.attempt_state(outcome)) == state
