"""What a provider's report on one attempt does to it and to the job (service.domain.report), as tables:
(job, attempts, which attempt, observation) → the attempt's end, the job's step, the conflict, the cost."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from service.domain import report
from service.domain.job import AttemptRecord, Candidate, Job
from service.domain.status import JobError, Observation, Outcome, Source, Status
from service.domain.work import SubmitState

NOW = 1_000.0
URL = "https://cdn.example/1.png"
DONE = Observation(Status.COMPLETED, (URL,))
BROKEN = Observation(Status.FAILED, error=JobError("provider_failed", "nsfw"))
BUSY = Observation(Status.PROCESSING)
NEXT = (Candidate("apiinone"),)


def attempt(seq: int, provider: str, state: str | None, task: str | None = None, **more: Any) -> AttemptRecord:
    return AttemptRecord(seq, provider, NOW - 100 + seq, task, state, **more)


# The job's attempts, the job's provider (the attempt it follows) and status.
ONE = (attempt(1, "aivideoapi", "accepted", "t1"),)
REROUTED = (attempt(1, "aivideoapi", "accepted", "t1"), attempt(2, "apiframe", "accepted", "t2"))
REROUTED_UNCERTAIN = (attempt(1, "aivideoapi", "uncertain"), attempt(2, "apiframe", "accepted", "t2"))
FIRST_DONE = (
    attempt(1, "aivideoapi", "accepted", "t1"),
    attempt(2, "apiframe", "completed", "t2", cost_usd=0.06),
)
FIRST_DONE_LATE = (
    attempt(1, "aivideoapi", "completed", "t1", cost_usd=0.14),
    attempt(2, "apiframe", "accepted", "t2"),
)


def job(
    attempts: tuple[AttemptRecord, ...],
    status: Status = Status.PROCESSING,
    *,
    provider: str | None = None,
    candidates: tuple[Candidate, ...] = (),
    **more: Any,
) -> Job:
    return Job(
        id="job_1",
        provider=provider or attempts[-1].provider,
        status=status,
        request={"prompt": "a cat"},
        created_at=NOW - 100,
        updated_at=NOW - 100,
        provider_task_id=next(
            (a.provider_task_id for a in attempts if a.provider == (provider or attempts[-1].provider)), None
        ),
        candidates=candidates,
        attempts=attempts,
        submit_state=SubmitState.DONE,
        **more,
    )


def seen(observation: Observation, seq: int | None = None, cost: float | None = None) -> report.Report:
    return report.Report(observation, Source.CALLBACK, seq, cost)


# name, job, report → the step's type, the attempt's end (seq, state) or None, the effect, the job's cost
# (or "same": unchanged), whether a conflict is recorded
TABLE: list[tuple[str, Job, report.Report, type, tuple[int, str] | None, str, Any, bool]] = [
    # -- the attempt the job follows: the status machine, as always
    (
        "progress moves the job forward",
        job(ONE, Status.SUBMITTED),
        seen(BUSY),
        report.Advance,
        None,
        "applied",
        "same",
        False,
    ),
    (
        "older news changes nothing",
        job(ONE),
        seen(Observation(Status.SUBMITTED)),
        report.Nothing,
        None,
        "unchanged",
        "same",
        False,
    ),
    (
        "a completion completes it",
        job(ONE),
        seen(DONE, cost=0.14),
        report.Complete,
        (1, "completed"),
        "applied",
        0.14,
        False,
    ),
    ("a failure fails it", job(ONE), seen(BROKEN), report.Fail, (1, "failed"), "applied", "same", False),
    (
        "a failure with a candidate left fails over",
        job(ONE, candidates=NEXT),
        seen(BROKEN),
        report.NextCandidate,
        (1, "failed"),
        "applied",
        "same",
        False,
    ),
    (
        "a timed-out job's failure never fails over",
        job(ONE, Status.TIMED_OUT, candidates=NEXT),
        seen(BROKEN),
        report.Fail,
        (1, "failed"),
        "applied",
        "same",
        False,
    ),
    (
        "a timed-out job still completes",
        job(ONE, Status.TIMED_OUT),
        seen(DONE, cost=0.14),
        report.Complete,
        (1, "completed"),
        "applied",
        0.14,
        False,
    ),
    (
        "a completed job's failure is a conflict",
        job((attempt(1, "aivideoapi", "completed", "t1"),), Status.COMPLETED),
        seen(BROKEN),
        report.Nothing,
        None,
        "conflict",
        "same",
        True,
    ),
    (
        "a completed job's completion again is nothing",
        job((attempt(1, "aivideoapi", "completed", "t1"),), Status.COMPLETED),
        seen(DONE),
        report.Nothing,
        None,
        "unchanged",
        "same",
        False,
    ),
    # -- the last candidate fails while an earlier attempt may still deliver: the job follows it again
    (
        "the later attempt fails: back to the earlier",
        job(REROUTED),
        seen(BROKEN),
        report.FallBack,
        (2, "failed"),
        "fallback",
        "same",
        False,
    ),
    (
        "back to an uncertain earlier one",
        job(REROUTED_UNCERTAIN),
        seen(BROKEN),
        report.FallBack,
        (2, "failed"),
        "fallback",
        "same",
        False,
    ),
    (
        "a candidate left still comes first",
        job(REROUTED, candidates=NEXT),
        seen(BROKEN),
        report.NextCandidate,
        (2, "failed"),
        "applied",
        "same",
        False,
    ),
    # -- an earlier attempt, left alive by a reroute
    (
        "its progress tells nothing of the job",
        job(REROUTED),
        seen(BUSY, 1),
        report.Nothing,
        None,
        "unchanged",
        "same",
        False,
    ),
    (
        "its completion completes the job",
        job(REROUTED),
        seen(DONE, 1, 0.14),
        report.Complete,
        (1, "completed"),
        "applied",
        0.14,
        False,
    ),
    (
        "its failure ends it alone",
        job(REROUTED),
        seen(BROKEN, 1),
        report.Nothing,
        (1, "failed"),
        "attempt_ended",
        "same",
        False,
    ),
    (
        "its completion after the job completed: a conflict, its cost counted",
        job(FIRST_DONE, Status.COMPLETED),
        seen(DONE, 1, 0.14),
        report.Nothing,
        (1, "completed"),
        "conflict",
        0.2,
        True,
    ),
    (
        "its failure after the job completed ends it alone",
        job(FIRST_DONE, Status.COMPLETED),
        seen(BROKEN, 1),
        report.Nothing,
        (1, "failed"),
        "attempt_ended",
        "same",
        False,
    ),
    (
        "a later attempt completing after an earlier completed the job",
        job(FIRST_DONE_LATE, Status.COMPLETED, provider="aivideoapi"),
        seen(DONE, 2, 0.06),
        report.Nothing,
        (2, "completed"),
        "conflict",
        0.2,
        True,
    ),
    (
        "an ended attempt keeps its first final state",
        job(FIRST_DONE_LATE, Status.COMPLETED, provider="aivideoapi"),
        seen(BROKEN, 1),
        report.Nothing,
        None,
        "conflict",
        "same",
        True,
    ),
    (
        "its completion after the job failed: kept on it, a conflict",
        job(REROUTED, Status.FAILED),
        seen(DONE, 1, 0.14),
        report.Nothing,
        (1, "completed"),
        "conflict",
        0.14,
        True,
    ),
]


@pytest.mark.parametrize(
    ("the_job", "the_report", "step", "end", "effect", "cost", "conflict"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_what_a_report_does(
    the_job: Job,
    the_report: report.Report,
    step: type,
    end: tuple[int, str] | None,
    effect: str,
    cost: Any,
    conflict: bool,
) -> None:
    decision = report.decide(the_job, the_report)
    assert isinstance(decision.step, step), decision
    assert ((decision.attempt.seq, decision.attempt.state) if decision.attempt else None) == end
    assert decision.effect == effect
    if cost == "same":
        assert not decision.cost_changed
    else:
        assert decision.cost_changed and decision.cost_usd == pytest.approx(cost)
    assert (decision.conflict is not None) is conflict


def test_the_first_completion_follows_the_attempt_that_delivered() -> None:
    decision = report.decide(job(REROUTED), seen(DONE, 1, 0.14))
    assert decision.step == report.Complete((URL,), follow=REROUTED[0])
    assert decision.machine.applied and decision.machine.images == (URL,)
    # The attempt the job followed until then (accepted: it may deliver) is followed by late polls now,
    # by the row that followed the earlier one: nothing to start or stop.
    assert decision.late_polls is None and decision.abandon is None


def test_a_completion_while_the_next_attempt_waits_unsent_abandons_it() -> None:
    waiting = (attempt(1, "aivideoapi", "accepted", "t1"), attempt(2, "apiframe", None))
    queued = dataclasses.replace(job(waiting, Status.QUEUED), submit_state=None)
    decision = report.decide(queued, seen(DONE, 1, 0.14))
    assert isinstance(decision.step, report.Complete) and decision.abandon == 2
    sending = dataclasses.replace(queued, submit_state=SubmitState.SENDING)
    assert report.decide(sending, seen(DONE, 1, 0.14)).abandon is None  # in flight: its answer is kept later


def test_a_second_completion_names_both_attempts() -> None:
    decision = report.decide(job(FIRST_DONE, Status.COMPLETED), seen(DONE, 1, 0.14))
    assert decision.conflict is not None
    assert decision.conflict["first"] == {"seq": 2, "provider": "apiframe", "provider_task_id": "t2"}
    assert decision.conflict["second"] == {"seq": 1, "provider": "aivideoapi", "provider_task_id": "t1"}
    assert "both may charge" in decision.conflict["message"]
    assert decision.machine.outcome is Outcome.CONFLICT and not decision.machine.applied


def test_a_conflict_on_the_followed_attempt_reads_as_before() -> None:
    done = job((attempt(1, "aivideoapi", "completed", "t1"),), Status.COMPLETED)
    decision = report.decide(done, report.Report(BROKEN, Source.POLL))
    assert decision.conflict == {"kept": "completed", "reported": "failed", "by": "poll"}


def test_falling_back_says_where_and_how() -> None:
    queued = job(REROUTED, Status.QUEUED)
    step = report.decide(queued, seen(BROKEN)).step
    assert step == report.FallBack(REROUTED[0], Status.SUBMITTED, report.LatePolls(None))
    # A job that was processing stays so; one timed out stays timed out.
    assert report.decide(job(REROUTED), seen(BROKEN)).step == report.FallBack(REROUTED[0], None, report.LatePolls(None))


@pytest.mark.parametrize(
    ("attempts", "status", "provider", "targets"),
    [
        (ONE, Status.PROCESSING, None, []),
        (REROUTED, Status.PROCESSING, None, [1]),
        (REROUTED_UNCERTAIN, Status.PROCESSING, None, []),  # no task id to ask about
        (FIRST_DONE, Status.COMPLETED, None, [1]),
        (FIRST_DONE_LATE, Status.COMPLETED, "aivideoapi", [2]),
        (
            (attempt(1, "aivideoapi", "failed", "t1"), attempt(2, "apiframe", "accepted", "t2")),
            Status.PROCESSING,
            None,
            [],
        ),
    ],
    ids=[
        "one attempt",
        "rerouted",
        "rerouted from uncertain",
        "completed by the later",
        "completed by the earlier",
        "failed over",
    ],
)
def test_which_attempts_late_polls_follow(
    attempts: tuple[AttemptRecord, ...], status: Status, provider: str | None, targets: list[int]
) -> None:
    assert [item.seq for item in report.late_targets(job(attempts, status, provider=provider))] == targets


def test_late_polls_go_round_and_give_up_on_old_attempts() -> None:
    three = (
        attempt(1, "aivideoapi", "accepted", "t1"),
        attempt(2, "apiframe", "accepted", "t2"),
        attempt(3, "apiinone", "accepted", "t3"),
    )
    rerouted_twice = job(three)
    assert [report.next_late_target(rerouted_twice, after).seq for after in (None, 1, 2)] == [1, 2, 1]  # type: ignore[union-attr]
    assert report.next_late_target(rerouted_twice, 1, since=NOW - 97.5) is None  # both started before


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("apiframe", report.Target(2, "apiframe", "t2", True)),
        ("aivideoapi", report.Target(1, "aivideoapi", "t1", False)),
        ("apiinone", None),
    ],
)
def test_which_attempt_a_callback_is_about(provider: str, expected: report.Target | None) -> None:
    assert report.callback_target(job(REROUTED), provider) == expected


def test_a_callback_for_an_attempt_never_sent_is_no_ones() -> None:
    refused = (attempt(1, "aivideoapi", "rejected"), attempt(2, "apiframe", "accepted", "t2"))
    assert report.callback_target(job(refused), "aivideoapi") is None


@pytest.mark.parametrize(("seq", "key"), [(None, "task.completed"), (1, "task.completed"), (2, "task.completed#2")])
def test_each_attempt_dedupes_its_own_events(seq: int | None, key: str) -> None:
    assert report.event_key("task.completed", seq) == key


def test_the_jobs_cost_is_the_sum_of_its_attempts() -> None:
    assert report.total_cost(FIRST_DONE) == 0.06
    assert report.total_cost(FIRST_DONE, report.AttemptEnd(1, "completed", cost_usd=0.14)) == pytest.approx(0.2)
    assert report.total_cost(REROUTED) is None


def test_an_answer_for_an_attempt_the_job_stopped_following_is_kept_on_it() -> None:
    in_flight = (attempt(1, "aivideoapi", "completed", "t1", cost_usd=0.14), attempt(2, "apiframe", None))
    completed = job(in_flight, Status.COMPLETED, provider="aivideoapi")
    kept = report.unfollowed_answer(completed, "accepted", task_id="t2", cost_usd=None)
    assert kept is not None and (kept.end.state, kept.ended, kept.task_id) == ("accepted", False, "t2")
    assert kept.late_polls == report.LatePolls("apiframe")
    # The job still follows its latest attempt (a deadline settled it): nothing is written there.
    assert (
        report.unfollowed_answer(
            job((attempt(1, "aivideoapi", None),), Status.FAILED), "accepted", task_id="t", cost_usd=None
        )
        is None
    )
