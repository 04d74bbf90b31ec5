"""Backoff decisions for polls and retried submissions: pure functions of data."""

from __future__ import annotations

import datetime
import email.utils
import random

MAX_RETRY_AFTER = 3600.0


def delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential from `base`, capped.

    The jitter only shortens a step by up to a quarter, so that jobs submitted together spread out
    while the first poll is never earlier than three quarters of `base` and no delay exceeds `cap`.
    """
    step = min(cap, base * (2 ** min(attempt, 40)))
    return step * rng.uniform(0.75, 1.0)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or an HTTP date), or None.

    Bounded to an hour so that a provider's typo cannot park a job for days.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # asctime-style HTTP dates carry no zone and mean GMT (RFC 9110 §5.6.7)
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))
