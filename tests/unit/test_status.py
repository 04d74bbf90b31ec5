"""The job status machine (SPEC §2): every (current × observed) pair, deadlines, errors."""

from __future__ import annotations

import json

import pytest

from service.domain.status import (
    FINAL,
    FINISHED,
    OBSERVABLE,
    Decision,
    JobError,
    Observation,
    Outcome,
    Status,
    apply,
    on_deadline,
)

Q, S, P, C, F, T = (
    Status.QUEUED,
    Status.SUBMITTED,
    Status.PROCESSING,
    Status.COMPLETED,
    Status.FAILED,
    Status.TIMED_OUT,
)
APPLIED, UNCHANGED, CONFLICT = Outcome.APPLIED, Outcome.UNCHANGED, Outcome.CONFLICT

# (current, observed) → (outcome, resulting status). Written out by hand from SPEC §2, all 24 pairs.
TABLE: dict[tuple[Status, Status], tuple[Outcome, Status]] = {
    (Q, S): (APPLIED, S),
    (Q, P): (APPLIED, P),
    (Q, C): (APPLIED, C),
    (Q, F): (APPLIED, F),
    (S, S): (UNCHANGED, S),
    (S, P): (APPLIED, P),
    (S, C): (APPLIED, C),
    (S, F): (APPLIED, F),
    (P, S): (UNCHANGED, P),  # never backwards
    (P, P): (UNCHANGED, P),
    (P, C): (APPLIED, C),
    (P, F): (APPLIED, F),
    # timed_out is jobhook's own verdict: a later genuine final state still finishes the job ...
    (T, C): (APPLIED, C),
    (T, F): (APPLIED, F),
    # ... but a non-final one does not revive it.
    (T, S): (UNCHANGED, T),
    (T, P): (UNCHANGED, T),
    # the first final state stands
    (C, S): (UNCHANGED, C),
    (C, P): (UNCHANGED, C),
    (C, C): (UNCHANGED, C),
    (C, F): (CONFLICT, C),
    (F, S): (UNCHANGED, F),
    (F, P): (UNCHANGED, F),
    (F, F): (UNCHANGED, F),
    (F, C): (CONFLICT, F),
}


def _observation(status: Status) -> Observation:
    if status is Status.COMPLETED:
        return Observation(status, images=("https://files.example/a.png",))
    if status is Status.FAILED:
        return Observation(status, error=JobError("provider_failed", "boom", "upstream_error"))
    return Observation(status)


def test_table_covers_every_pair() -> None:
    assert set(TABLE) == {(current, seen) for current in Status for seen in OBSERVABLE}


@pytest.mark.parametrize(("current", "seen"), sorted(TABLE), ids=lambda s: str(s))
def test_apply(current: Status, seen: Status) -> None:
    outcome, resulting = TABLE[(current, seen)]
    decision = apply(current, _observation(seen))
    assert isinstance(decision, Decision)
    assert decision.outcome is outcome
    assert decision.status is resulting
    assert decision.applied is (outcome is Outcome.APPLIED)
    assert decision.finishes is (outcome is Outcome.APPLIED and resulting in FINAL)
    assert decision.reason  # the events explain every decision


@pytest.mark.parametrize(("first", "second"), [(C, F), (F, C)])
def test_conflict_reason_names_both_states(first: Status, second: Status) -> None:
    decision = apply(first, _observation(second))
    assert decision.outcome is Outcome.CONFLICT
    assert str(first) in decision.reason and str(second) in decision.reason


RANK = {Q: 0, S: 1, P: 2, T: 3, C: 4, F: 4}


@pytest.mark.parametrize(
    "sequence",
    [[S, P, C, P, S], [P, S, F, C, P], [C, F, S], [S, S, P, P, F], [F, F, C], [P, C, F, C]],
)
@pytest.mark.parametrize("start", [Q, S, P, T])
def test_folding_observations_never_moves_backwards(start: Status, sequence: list[Status]) -> None:
    """Along any sequence, the status never drops in rank and the first final state stands."""
    status = start
    first_final: Status | None = None
    for seen in sequence:
        after = apply(status, _observation(seen)).status
        assert RANK[after] >= RANK[status]
        if first_final is not None:
            assert after is first_final
        elif after in FINAL:
            first_final = after
        status = after
    assert first_final is next(s for s in sequence if s in FINAL)


def test_status_sets() -> None:
    assert {C, F} == FINAL
    assert {C, F, T} == FINISHED
    assert {S, P, C, F} == OBSERVABLE
    assert [str(s) for s in Status] == ["queued", "submitted", "processing", "completed", "failed", "timed_out"]


# -- deadline ---------------------------------------------------------------------------------------

# (current, has a task id, submission "sending") → (status at the deadline, error code).
DEADLINES: list[tuple[Status, bool, bool, Status | None, str | None]] = [
    (Q, False, False, F, "submission_failed"),  # never sent, or refused: the provider has nothing
    (Q, True, False, F, "submission_failed"),
    # Sent, no answer yet (in flight, or cut by a crash whose lease comes after the deadline): the
    # provider may have it and charge for it.
    (Q, False, True, F, "submission_uncertain"),
    (Q, True, True, F, "submission_uncertain"),
    (S, False, False, F, "submission_uncertain"),
    (S, False, True, F, "submission_uncertain"),
    (S, True, False, T, "timed_out"),
    (S, True, True, T, "timed_out"),
    (P, False, False, T, "timed_out"),
    (P, False, True, T, "timed_out"),
    (P, True, False, T, "timed_out"),
    (P, True, True, T, "timed_out"),
]
DEADLINES += [(s, has, sending, None, None) for s in (T, C, F) for has in (False, True) for sending in (False, True)]


def test_deadline_table_covers_every_case() -> None:
    cases = {(status, has, sending) for status, has, sending, _, _ in DEADLINES}
    assert len(cases) == len(DEADLINES)
    assert cases == {(s, h, x) for s in Status for h in (False, True) for x in (False, True)}


@pytest.mark.parametrize(("current", "has_task_id", "sending", "expected", "code"), DEADLINES)
def test_on_deadline(
    current: Status, has_task_id: bool, sending: bool, expected: Status | None, code: str | None
) -> None:
    verdict = on_deadline(current, has_task_id=has_task_id, sending=sending)
    if expected is None:
        assert verdict is None
        return
    assert verdict is not None
    status, error = verdict
    assert status is expected
    assert error.code == code
    assert error.message
    assert error.provider_code is None


# -- observations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Q, T])
def test_observation_refuses_jobhooks_own_words(status: Status) -> None:
    with pytest.raises(ValueError, match=str(status)):
        Observation(status)


@pytest.mark.parametrize("status", sorted(OBSERVABLE))
def test_observation_accepts_provider_words(status: Status) -> None:
    assert Observation(status).status is status


# -- JobError ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        JobError("provider_rejected", "balance too low", "insufficient_credits"),
        JobError("timed_out", "no final status"),
        JobError("x", "", ""),
        JobError("ünïcode", 'message with "quotes" and\nnewline', "code/with/slashes"),
    ],
)
def test_job_error_json_round_trip(error: JobError) -> None:
    encoded = error.to_json()
    assert JobError.from_json(json.loads(json.dumps(encoded))) == error


def test_job_error_to_json_shape() -> None:
    assert JobError("a", "b").to_json() == {"code": "a", "message": "b"}
    assert JobError("a", "b", "c").to_json() == {"code": "a", "message": "b", "provider_code": "c"}


@pytest.mark.parametrize("data", [None, {}])
def test_job_error_from_nothing(data: dict[str, str] | None) -> None:
    assert JobError.from_json(data) is None


def test_job_error_from_json_tolerates_missing_and_typed_fields() -> None:
    assert JobError.from_json({"code": "a"}) == JobError("a", "")
    assert JobError.from_json({"code": "a", "message": "m", "provider_code": 402}) == JobError("a", "m", "402")
    assert JobError.from_json({"code": "a", "message": "m", "provider_code": None}) == JobError("a", "m")
