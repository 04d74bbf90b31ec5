"""The simulator's per-task script (`service.domain.simulate`): what it accepts, and what it refuses naming
the field, under the name the caller knows it by (the simulator's `input.simulate`, jobhook's
`provider_options.simulate`)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain import simulate
from service.domain.request import GenerationRequest, RequestError, check
from service.providers.registry import adapters, simulator_adapter


@pytest.mark.parametrize(
    "script",
    [
        None,
        {},
        {"fail": True, "drop_callback": False, "stale_timestamp": True},
        {"duplicates": 0, "concurrent_duplicates": simulate.MAX_COPIES},
        {"latency": 0},
        {"latency": 2.5},
        *({"refuse": code} for code in simulate.REFUSALS),
    ],
)
def test_scripts_the_simulator_can_follow(script: Any) -> None:
    assert simulate.overrides(script, "input.simulate") == (script or {})


@pytest.mark.parametrize(
    ("script", "field"),
    [
        ([], "s"),
        ({"refuse": "task_not_found"}, "s.refuse"),  # a creation names no task
        ({"refuse": "INSUFFICIENT_CREDITS"}, "s.refuse"),
        ({"refuse": {"code": "insufficient_credits"}}, "s.refuse"),
        ({"refuse": ""}, "s.refuse"),
        ({"fail": 1}, "s.fail"),
        ({"duplicates": simulate.MAX_COPIES + 1}, "s.duplicates"),
        ({"latency": float("nan")}, "s.latency"),
        ({"latency": True}, "s.latency"),
        ({"refuse_rate": 0.5}, "s.refuse_rate"),
    ],
)
def test_scripts_it_cannot_are_refused_naming_the_field(script: Any, field: str) -> None:
    with pytest.raises(simulate.InvalidOverride) as caught:
        simulate.overrides(script, "s")
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


def test_every_refusal_is_an_error_answer_in_aivideoapis_shape() -> None:
    for code, refusal in simulate.REFUSALS.items():
        assert refusal.code == code and 400 <= refusal.status < 600
        assert refusal.body() == {"error": {"code": code, "message": refusal.message, "type": refusal.type}}


def test_jobhook_checks_the_script_for_the_simulator_only() -> None:
    """A real aivideoapi ignores an input key it does not know: `simulate` goes to it untouched."""
    request = GenerationRequest(prompt="a cat", provider_options={"simulate": {"refuse": "nope"}})
    check(request, adapters()["aivideoapi"].capabilities, "aivideoapi")
    with pytest.raises(RequestError) as caught:
        check(request, simulator_adapter().capabilities, "simulator")
    assert (caught.value.code, caught.value.field) == ("invalid_field", "provider_options.simulate.refuse")
