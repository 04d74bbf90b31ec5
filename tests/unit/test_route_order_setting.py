"""JOBHOOK_ROUTE_ORDER (SPEC §8): price by default, latency, or a fixed list of providers; anything
else stops the service with one line naming the variable."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings
from service.domain.routing import Order, OrderBy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Order(OrderBy.PRICE)),
        ("", Order(OrderBy.PRICE)),
        ("price", Order(OrderBy.PRICE)),
        (" Latency ", Order(OrderBy.LATENCY)),
        ("apiframe,aivideoapi", Order(OrderBy.FIXED, ("apiframe", "aivideoapi"))),
        ("segmind, APIINONE, simulator", Order(OrderBy.FIXED, ("segmind", "apiinone", "simulator"))),
        ("apiframe", Order(OrderBy.FIXED, ("apiframe",))),
    ],
)
def test_route_order(value: str | None, expected: Order) -> None:
    env = {} if value is None else {"JOBHOOK_ROUTE_ORDER": value}
    assert Settings.from_environ(env).route_order == expected


@pytest.mark.parametrize(
    "value",
    ["fastest", "cheapest", "apiframe,nobody", "apiframe,,segmind", "apiframe,apiframe", "price,latency", ","],
)
def test_an_unknown_word_or_provider_names_the_variable_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"JOBHOOK_ROUTE_ORDER": value})
    message = str(caught.value)
    assert message.startswith("JOBHOOK_ROUTE_ORDER: ") and "\n" not in message, message
    assert "price, latency" in message and repr(value) in message
