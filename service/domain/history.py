"""A job's history under load from outside (SPEC §3, §4): what is kept one row each, what is counted.

A refused or duplicate delivery changes nothing about the job, yet whoever holds its callback URL can
send them at will. Past `NOISE_EVENTS_PER_JOB` of them, a job's history stops taking one row each:
they are counted on one summary event per job instead, by outcome and code, with the first and last
time one came. Pure: the store keeps the counter and writes the summary this module computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.domain.job import rfc3339

# Refused or duplicate deliveries a job's history keeps one event each; the rest are counted on one.
NOISE_EVENTS_PER_JOB = 100
# The outcomes so counted (an `accepted` delivery always keeps its own event).
NOISE_OUTCOMES = ("refused", "duplicate")
# Distinct codes (refusal codes, duplicated event keys) a summary names; the rest are counted as "other".
SUMMARY_CODES = 20
SUMMARY_OUTCOME = "summary"
OTHER = "other"


def summarise(previous: Mapping[str, Any] | None, outcome: str, code: str, at: float) -> dict[str, Any]:
    """The summary event's detail after one more refused or duplicate delivery (`previous`: before it,
    or None for the first one past the bound). `code` is a refusal's code, or a duplicate's event key."""
    counts: dict[str, dict[str, int]] = {}
    first_at = rfc3339(at)
    total = 0
    if previous is not None:
        counts = {name: dict(by_code) for name, by_code in (previous.get("counts") or {}).items()}
        first_at = previous.get("first_at") or first_at
        total = int(previous.get("count") or 0)
    by_code = counts.setdefault(outcome, {})
    names = sum(len(codes) for codes in counts.values())
    if code not in by_code and names >= SUMMARY_CODES:
        code = OTHER
    by_code[code] = by_code.get(code, 0) + 1
    return {
        "message": (
            f"refused and duplicate deliveries past the first {NOISE_EVENTS_PER_JOB} of this job, counted here"
            " rather than recorded one by one"
        ),
        "bound": NOISE_EVENTS_PER_JOB,
        "count": total + 1,
        "counts": counts,
        "first_at": first_at,
        "last_at": rfc3339(at),
    }


def keeps_own_event(nth: int) -> bool:
    """Does the job's `nth` refused or duplicate delivery (counting from 1) get an event of its own?"""
    return nth <= NOISE_EVENTS_PER_JOB
