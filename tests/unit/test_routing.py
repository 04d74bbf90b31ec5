"""Which candidates a job may go to, in which order, and why the others are left out (SPEC §8)."""

from __future__ import annotations

import pytest

from service.domain import budget, routing
from service.domain.pricing import PriceTable
from service.domain.request import GenerationRequest, RequestError
from service.domain.routing import Facts, LeftOut, Order, OrderBy, Reason
from service.providers import apiframe, segmind

UNSUPPORTED = RequestError("seed", "unsupported_field", "aivideoapi cannot honour seed; leave it out")
NOON = 1_780_574_400.0  # 2026-06-04T12:00:00Z
SPENT = budget.check(budget.Caps.of(providers={"broke": 100}), {}, "broke", 10_000, NOON)
UNPRICED = budget.check(budget.Caps.of(total=1_000_000), {}, "unpriced", None, NOON)

FACTS = {
    item.provider: item
    for item in (
        Facts("aivideoapi", True, price_usd=0.14, latency_p50=9.0),
        Facts("apiframe", True, price_usd=0.06, latency_p50=22.0),
        Facts("segmind", True, price_usd=None, latency_p50=4.0),
        Facts("apiinone", True, price_usd=0.12, latency_p50=None),
        Facts("simulator", True, price_usd=0.0, latency_p50=0.3),
        Facts("off", False, price_usd=0.01),
        Facts("noseed", True, unsupported=UNSUPPORTED, price_usd=0.01),
        Facts("open", True, price_usd=0.01, circuit_open=True),
        Facts("broke", True, price_usd=0.01, over_budget=SPENT),
        Facts("unpriced", True, price_usd=None, over_budget=UNPRICED),
        Facts("twin", True, price_usd=0.06, latency_p50=22.0),  # ties apiframe on both
    )
}
REAL = ("aivideoapi", "apiframe", "segmind", "apiinone")


@pytest.mark.parametrize(
    ("candidates", "max_price", "order", "chosen", "left_out"),
    [
        # One provider, as today: kept without a cap, whatever its price.
        (["segmind"], None, Order(), ["segmind"], []),
        (["apiframe"], 0.06, Order(), ["apiframe"], []),  # a price equal to the cap is within it
        (["apiframe"], 0.05, Order(), [], [("apiframe", Reason.OVER_MAX_PRICE)]),
        (["segmind"], 1.0, Order(), [], [("segmind", Reason.UNKNOWN_PRICE)]),  # unknown: never assumed cheap
        (["simulator"], 0.001, Order(), ["simulator"], []),  # free is a price
        # The first reason that applies, in Reason's order.
        (["off"], 0.001, Order(), [], [("off", Reason.NOT_CONFIGURED)]),
        (["noseed"], 0.001, Order(), [], [("noseed", Reason.UNSUPPORTED)]),
        (["open"], None, Order(), [], [("open", Reason.CIRCUIT_OPEN)]),
        (["broke"], None, Order(), [], [("broke", Reason.OVER_BUDGET)]),
        # Under a daily cap, a price jobhook cannot tell is left out for that (SPEC §9).
        (["unpriced"], None, Order(), [], [("unpriced", Reason.UNKNOWN_PRICE)]),
        (
            ["broke", "open", "apiframe"],
            None,
            Order(),
            ["apiframe"],
            [("broke", Reason.OVER_BUDGET), ("open", Reason.CIRCUIT_OPEN)],
        ),
        # A list, in the order given; those left out keep the given order too.
        (
            ["apiinone", "segmind", "apiframe", "aivideoapi"],
            0.12,
            Order(),
            ["apiinone", "apiframe"],
            [("segmind", Reason.UNKNOWN_PRICE), ("aivideoapi", Reason.OVER_MAX_PRICE)],
        ),
        (
            ["off", "apiframe", "noseed"],
            None,
            Order(),
            ["apiframe"],
            [("off", Reason.NOT_CONFIGURED), ("noseed", Reason.UNSUPPORTED)],
        ),
        # auto by price: cheapest first, unknown last (kept without a cap), ties as given.
        (REAL, None, Order(OrderBy.PRICE), ["apiframe", "apiinone", "aivideoapi", "segmind"], []),
        (["twin", "apiframe", "segmind"], None, Order(OrderBy.PRICE), ["twin", "apiframe", "segmind"], []),
        (["apiframe", "twin"], None, Order(OrderBy.PRICE), ["apiframe", "twin"], []),
        (
            REAL,
            0.13,
            Order(OrderBy.PRICE),
            ["apiframe", "apiinone"],
            [("aivideoapi", Reason.OVER_MAX_PRICE), ("segmind", Reason.UNKNOWN_PRICE)],
        ),
        # auto by latency: fastest p50 first, unmeasured last, ties as given.
        (REAL, None, Order(OrderBy.LATENCY), ["segmind", "aivideoapi", "apiframe", "apiinone"], []),
        (["twin", "apiinone", "apiframe"], None, Order(OrderBy.LATENCY), ["twin", "apiframe", "apiinone"], []),
        # auto by a fixed list: as listed; providers it does not name after, as given.
        (
            REAL,
            None,
            Order(OrderBy.FIXED, ("apiinone", "segmind")),
            ["apiinone", "segmind", "aivideoapi", "apiframe"],
            [],
        ),
        (
            REAL,
            0.1,
            Order(OrderBy.FIXED, ("apiinone", "segmind", "apiframe")),
            ["apiframe"],
            [
                ("aivideoapi", Reason.OVER_MAX_PRICE),
                ("segmind", Reason.UNKNOWN_PRICE),
                ("apiinone", Reason.OVER_MAX_PRICE),
            ],
        ),
        ([], None, Order(OrderBy.PRICE), [], []),
    ],
)
def test_choose(
    candidates: list[str],
    max_price: float | None,
    order: Order,
    chosen: list[str],
    left_out: list[tuple[str, Reason]],
) -> None:
    route = routing.choose(candidates, FACTS, max_price_usd=max_price, order=order)
    assert list(route.candidates) == chosen
    assert [(item.provider, item.reason) for item in route.left_out] == left_out
    assert all(item.message for item in route.left_out)


def test_each_reason_says_why_and_what_to_do() -> None:
    route = routing.choose(["off", "noseed", "apiframe", "segmind"], FACTS, max_price_usd=0.05)
    off, noseed, over, unknown = (item.to_json() for item in route.left_out)
    assert off == {
        "provider": "off",
        "reason": "not_configured",
        "message": "off has no API key: set JOBHOOK_OFF_API_KEY",
    }
    # The 422 that request.check would answer for a single provider: its field and message.
    assert noseed == {
        "provider": "noseed",
        "reason": "unsupported",
        "message": "aivideoapi cannot honour seed; leave it out",
        "field": "seed",
    }
    assert over["message"] == "apiframe charges $0.06 for this request, over max_price_usd 0.05"
    assert unknown["reason"] == "unknown_price"
    assert "JOBHOOK_SEGMIND_PRICES" in unknown["message"]
    assert (
        routing.choose(["simulator"], {"simulator": Facts("simulator", False)}).left_out[0].message
        == "simulator is off"
    )


def test_no_provider_names_each_candidate() -> None:
    route = routing.choose(["apiframe", "segmind"], FACTS, max_price_usd=0.01)
    error = routing.NoProvider(route.left_out)
    assert error.message == "no provider can take this job: apiframe (over_max_price), segmind (unknown_price)"
    assert error.left_out == route.left_out


@pytest.mark.parametrize(
    ("configured", "candidates"),
    [
        ({"aivideoapi", "segmind", "simulator"}, ("aivideoapi", "segmind")),  # the simulator only when alone
        ({"simulator"}, ("simulator",)),
        ({"apiinone"}, ("apiinone",)),
        (set(), ()),
    ],
)
def test_auto_is_every_configured_provider(configured: set[str], candidates: tuple[str, ...]) -> None:
    known = [Facts(name, name in configured) for name in (*REAL, "simulator")]
    assert routing.auto_candidates(known) == candidates


def test_facts_of_a_provider_for_a_request() -> None:
    """request.check's refusal and pricing's price, gathered for one candidate."""
    cheap = GenerationRequest(prompt="a cat", rendering_speed="TURBO", num_images=2)
    facts = routing.facts(
        "segmind", configured=True, capabilities=segmind.CAPABILITIES, prices=segmind.PRICES, generation=cheap
    )
    assert facts == Facts("segmind", True, None, None)
    priced = routing.facts(
        "segmind",
        configured=True,
        capabilities=segmind.CAPABILITIES,
        prices=segmind.PRICES.with_override({"TURBO": 0.04}),
        generation=cheap,
    )
    assert priced.price_usd == 0.08
    two = routing.facts(
        "apiframe", configured=False, capabilities=apiframe.CAPABILITIES, prices=apiframe.PRICES, generation=cheap
    )
    assert two.configured is False
    assert two.unsupported is not None and two.unsupported.field == "num_images"
    assert two.price_usd == 0.06


@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("price", Order(OrderBy.PRICE)),
        (" Latency ", Order(OrderBy.LATENCY)),
        ("apiinone, segmind", Order(OrderBy.FIXED, ("apiinone", "segmind"))),
        ("apiframe", Order(OrderBy.FIXED, ("apiframe",))),
    ],
)
def test_route_order_setting(text: str, order: Order) -> None:
    assert Order.parse(text, REAL) == order


@pytest.mark.parametrize("text", ["", "cheapest", "apiframe,apiframe", "apiframe,,segmind", "apiframe,nope"])
def test_a_wrong_route_order_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="expected price, latency, or a comma-separated list of distinct providers"):
        Order.parse(text, REAL)


def test_left_out_without_a_field_has_none_in_json() -> None:
    assert LeftOut("a", Reason.CIRCUIT_OPEN, "m").to_json() == {
        "provider": "a",
        "reason": "circuit_open",
        "message": "m",
    }


def test_prices_in_facts_come_from_the_table() -> None:
    """The simulator's free table gives 0, which the price order puts first."""
    table = PriceTable.flat(0.0)
    free = routing.facts(
        "simulator",
        configured=True,
        capabilities=apiframe.CAPABILITIES,
        prices=table,
        generation=GenerationRequest(prompt="x"),
    )
    assert free.price_usd == 0.0
