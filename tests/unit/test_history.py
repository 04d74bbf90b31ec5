"""A job's refused and duplicate deliveries past the bound: counted on one summary (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain import history
from service.domain.history import NOISE_EVENTS_PER_JOB, SUMMARY_CODES, keeps_own_event, summarise

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("nth", "own"),
    [(1, True), (NOISE_EVENTS_PER_JOB - 1, True), (NOISE_EVENTS_PER_JOB, True), (NOISE_EVENTS_PER_JOB + 1, False)],
)
def test_only_the_first_deliveries_up_to_the_bound_keep_an_event_each(nth: int, own: bool) -> None:
    assert keeps_own_event(nth) is own


def test_the_summary_counts_by_outcome_and_code_with_first_and_last_times() -> None:
    steps = [
        ("refused", "stale_timestamp", T0),
        ("refused", "stale_timestamp", T0 + 1),
        ("duplicate", "task.completed", T0 + 2),
        ("refused", "task_id_conflict", T0 + 3.5),
    ]
    detail: dict[str, Any] | None = None
    for outcome, code, at in steps:
        detail = summarise(detail, outcome, code, at)
    assert detail is not None
    assert detail["count"] == 4
    assert detail["bound"] == NOISE_EVENTS_PER_JOB
    assert detail["counts"] == {
        "refused": {"stale_timestamp": 2, "task_id_conflict": 1},
        "duplicate": {"task.completed": 1},
    }
    assert (detail["first_at"], detail["last_at"]) == ("2023-11-14T22:13:20.000Z", "2023-11-14T22:13:23.500Z")
    assert str(NOISE_EVENTS_PER_JOB) in detail["message"]


def test_the_summary_itself_stays_bounded_however_many_codes_come() -> None:
    detail: dict[str, Any] | None = None
    for n in range(SUMMARY_CODES * 3):
        detail = summarise(detail, "duplicate", f"event.{n}", T0 + n)
    assert detail is not None
    names = [code for codes in detail["counts"].values() for code in codes]
    assert len(names) == SUMMARY_CODES + 1  # the first ones, then "other"
    assert detail["counts"]["duplicate"][history.OTHER] == SUMMARY_CODES * 2
    assert detail["count"] == SUMMARY_CODES * 3


def test_a_summary_read_back_from_json_is_not_changed_in_place() -> None:
    before = summarise(None, "refused", "stale_timestamp", T0)
    snapshot = {"counts": {"refused": dict(before["counts"]["refused"])}}
    after = summarise(before, "refused", "stale_timestamp", T0 + 1)
    assert before["counts"] == snapshot["counts"]
    assert after["counts"]["refused"]["stale_timestamp"] == 2
