"""Measured latency and success rate per provider (SPEC §8), as a table."""

from __future__ import annotations

import pytest

from service.domain.measure import UNMEASURED, WINDOW, Finished, Measured, measure, percentile

C, F = "completed", "failed"


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.5, 3.0),
        ([3.0], 0.9, 3.0),
        ([1.0, 2.0], 0.5, 1.0),
        ([2.0, 1.0, 3.0], 0.5, 2.0),
        ([float(n) for n in range(1, 11)], 0.9, 9.0),
        ([float(n) for n in range(1, 11)], 0.5, 5.0),
        ([float(n) for n in range(10, 0, -1)], 0.9, 9.0),  # order given does not matter
        ([float(n) for n in range(1, 101)], 0.9, 90.0),
    ],
)
def test_percentile(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        ([], UNMEASURED),
        ([Finished(F, 4.0)], Measured(None, None, 0.0, 1)),  # failed only: no latency, rate 0
        ([Finished(C, 2.0)], Measured(2.0, 2.0, 1.0, 1)),
        ([Finished(C, 1.0), Finished(F, 60.0), Finished(C, 3.0), Finished(C, 2.0)], Measured(2.0, 3.0, 0.75, 4)),
        ([Finished(C, -0.5)], Measured(0.0, 0.0, 1.0, 1)),  # a clock step back is not negative time
        ([Finished(C, 1.23456)], Measured(1.235, 1.235, 1.0, 1)),
        # only the newest WINDOW count: the older failures fall out of the window
        ([Finished(C, 1.0)] * WINDOW + [Finished(F, 9.0)] * 5, Measured(1.0, 1.0, 1.0, WINDOW)),
        ([Finished(C, 1.0), Finished(F, 1.0), Finished(F, 1.0)], Measured(1.0, 1.0, 0.3333, 3)),
    ],
)
def test_measure(finished: list[Finished], expected: Measured) -> None:
    assert measure(finished) == expected


def test_to_json_names_the_fields() -> None:
    assert Measured(1.0, 2.0, 0.5, 2).to_json() == {
        "latency_p50_s": 1.0,
        "latency_p90_s": 2.0,
        "success_rate": 0.5,
        "jobs_measured": 2,
    }
