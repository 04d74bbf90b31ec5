"""Each provider's measured latency and success rate over its last jobs (SPEC §8). Pure.

The store reads each provider's last WINDOW finished attempts (completed or failed, newest first);
`measure` turns them into the figures `/v1/providers`, `jobhook providers` and `latency` routing use.
Latency is submission to final of completed attempts only: a failure's time says nothing about how
fast an image comes back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

WINDOW = 100  # a provider's last jobs measured (SPEC §8)
COMPLETED = "completed"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Finished:
    """One finished attempt: its state (completed or failed) and seconds from submission to final."""

    state: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class Measured:
    latency_p50_s: float | None  # None: no completed job measured yet
    latency_p90_s: float | None
    success_rate: float | None  # completed / finished; None: none finished yet
    jobs_measured: int  # finished attempts in the window

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


UNMEASURED = Measured(None, None, None, 0)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (the smallest value with at least `fraction` of them at or below
    it): always one of the measured values, never an interpolation between two jobs."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def measure(finished: Sequence[Finished]) -> Measured:
    """The figures over `finished` (newest first); only the first WINDOW count."""
    window = list(finished[:WINDOW])
    if not window:
        return UNMEASURED
    done = [max(0.0, item.seconds) for item in window if item.state == COMPLETED]
    p50, p90 = percentile(done, 0.5), percentile(done, 0.9)
    return Measured(
        None if p50 is None else round(p50, 3),
        None if p90 is None else round(p90, 3),
        round(len(done) / len(window), 4),
        len(window),
    )
