"""Delivery decisions for the outbox: when to try again, and when to leave a destination alone.

Pure: the worker gives the attempts made, the schedule and what the destination said; these answer
with a time or "dead", and whether the destination may be tried now.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

JITTER = 0.1  # ±10 %: deliveries queued together do not retry together


def next_attempt_at(
    attempts_made: int, schedule: Sequence[float], now: float, rng: random.Random, retry_after: float | None = None
) -> float | None:
    """When the next attempt is due after `attempts_made` failed ones, or None: the schedule is spent.

    `schedule[i]` is the delay before attempt i + 1 (SPEC §6: `JOBHOOK_NOTIFY_RETRY_SCHEDULE`).
    A destination's `Retry-After` is honoured when it asks for longer.
    """
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + delay


@dataclasses.dataclass
class Breaker:
    """A circuit breaker per destination: after `threshold` failures in a row it opens, for a pause
    that doubles with each opening (to `max_pause`); then one trial delivery may go. A success closes it.

    While it is open, the destination's rows wait in the outbox and the other destinations go on.
    """

    threshold: int = 5
    base_pause: float = 30.0
    max_pause: float = 600.0
    failures: int = 0
    openings: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def capacity(self, now: float, concurrency: int) -> int:
        """How many deliveries may be in flight now: none while open, one on trial, else all."""
        if not self.allows(now):
            return 0
        return 1 if self.failures >= self.threshold else concurrency

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures = 0
            self.openings = 0
            self.open_until = 0.0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.openings += 1
            pause = min(self.max_pause, self.base_pause * 2 ** (self.openings - 1))
            self.open_until = now + pause

    @property
    def state(self) -> str:
        return "closed" if self.failures < self.threshold else "open"
