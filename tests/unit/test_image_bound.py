"""A job keeps at most the images it asked for (issue 14, item 2): the pure decision, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.status import MAX_IMAGES, Observation, Outcome, Status, apply, images_asked, keep_images

# the stored request → how many images the job keeps
ASKED: list[tuple[dict[str, Any], int]] = [
    ({}, 1),  # num_images unset: one image
    ({"num_images": 1}, 1),
    ({"num_images": 3}, 3),
    ({"num_images": 8}, 8),
    ({"num_images": 9}, MAX_IMAGES),  # refused at submission; a stored one is still bounded
    ({"num_images": 10_000}, MAX_IMAGES),
    ({"num_images": 0}, 1),
    ({"num_images": -4}, 1),
    ({"num_images": True}, 1),  # a boolean is not a count
    ({"num_images": "8"}, 1),
    ({"num_images": None}, 1),
]


@pytest.mark.parametrize(("request_json", "expected"), ASKED)
def test_images_asked(request_json: dict[str, Any], expected: int) -> None:
    assert images_asked(request_json) == expected


URLS = tuple(f"https://cdn.example.com/{n}.png" for n in range(150))

# (offered, asked) → (kept, ignored)
KEEP: list[tuple[int, int, int, int]] = [
    (0, 1, 0, 0),
    (1, 1, 1, 0),
    (2, 1, 1, 1),
    (150, 1, 1, 149),
    (150, 8, 8, 142),
    (3, 4, 3, 0),  # fewer than asked: all kept, nothing ignored
    (8, 8, 8, 0),
]


@pytest.mark.parametrize(("offered", "asked", "kept", "ignored"), KEEP)
def test_keep_images(offered: int, asked: int, kept: int, ignored: int) -> None:
    assert keep_images(URLS[:offered], asked) == (URLS[:kept], ignored)


# (current, observed, offered, asked) → (outcome, images kept, ignored)
APPLY: list[tuple[Status, Status, int, int, Outcome, int, int]] = [
    (Status.PROCESSING, Status.COMPLETED, 150, 1, Outcome.APPLIED, 1, 149),
    (Status.SUBMITTED, Status.COMPLETED, 150, 4, Outcome.APPLIED, 4, 146),
    (Status.TIMED_OUT, Status.COMPLETED, 9, 8, Outcome.APPLIED, 8, 1),
    (Status.PROCESSING, Status.COMPLETED, 2, 2, Outcome.APPLIED, 2, 0),
    (Status.PROCESSING, Status.COMPLETED, 0, 1, Outcome.APPLIED, 0, 0),
    # not applied: no images taken, nothing to note
    (Status.COMPLETED, Status.COMPLETED, 150, 1, Outcome.UNCHANGED, 0, 0),
    (Status.FAILED, Status.COMPLETED, 150, 1, Outcome.CONFLICT, 0, 0),
]


@pytest.mark.parametrize(("current", "seen", "offered", "asked", "outcome", "kept", "ignored"), APPLY)
def test_an_applied_observation_takes_at_most_the_images_asked_for(
    current: Status, seen: Status, offered: int, asked: int, outcome: Outcome, kept: int, ignored: int
) -> None:
    decision = apply(current, Observation(seen, images=URLS[:offered]), asked=asked)
    assert (decision.outcome, decision.images, decision.ignored) == (outcome, URLS[:kept], ignored)
