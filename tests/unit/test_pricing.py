"""What a request costs at a provider (service.domain.pricing) and where the prices come from (SPEC §8)."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from service.domain import pricing
from service.domain.pricing import PriceSyntaxError, PriceTable, parse_prices
from service.providers.registry import SIMULATOR_PRICES, adapters, describe, simulator_adapter

TIERED = PriceTable.of({"TURBO": 0.03, "BALANCED": 0.06, "QUALITY": 0.10}, "BALANCED")
QUALITY_DEFAULT = PriceTable.of({"TURBO": 0.05, "QUALITY": 0.2}, "QUALITY")


@pytest.mark.parametrize(
    ("table", "request_", "images", "price"),
    [
        (TIERED, {}, None, 0.06),  # no tier: the provider's default tier
        (TIERED, {"rendering_speed": "TURBO"}, None, 0.03),
        (TIERED, {"rendering_speed": "QUALITY"}, None, 0.10),
        (TIERED, {"rendering_speed": "QUALITY", "num_images": 3}, None, 0.30),  # × the images asked
        (TIERED, {"rendering_speed": "TURBO", "num_images": 3}, None, 0.09),  # rounded, not 0.09000000000000001
        (TIERED, {"num_images": 4}, 2, 0.12),  # `images` given: what is paid for, whatever the request says
        (TIERED, {"num_images": True}, None, 0.06),  # not a count: one image
        (TIERED, {"num_images": 0}, None, 0.06),
        (TIERED, {"rendering_speed": "LUDICROUS"}, None, None),  # a tier the table does not price
        (QUALITY_DEFAULT, {}, None, 0.2),  # segmind's default is QUALITY
        (QUALITY_DEFAULT, {"rendering_speed": "BALANCED"}, None, None),  # partly priced: that tier is unknown
        (PriceTable(default_tier="QUALITY"), {}, None, None),  # nothing published
        (PriceTable(default_tier="QUALITY"), {"rendering_speed": "TURBO", "num_images": 8}, None, None),
        (PriceTable.flat(0.12), {"rendering_speed": "QUALITY", "num_images": 2}, None, 0.24),
        (SIMULATOR_PRICES, {"rendering_speed": "TURBO", "num_images": 4}, None, 0.0),  # free, known
    ],
)
def test_price_of_a_request(
    table: PriceTable, request_: dict[str, Any], images: int | None, price: float | None
) -> None:
    assert pricing.price_usd(table, request_, images) == price


@pytest.mark.parametrize(
    ("text", "prices"),
    [
        ("TURBO=0.03,BALANCED=0.06,QUALITY=0.10", {"TURBO": 0.03, "BALANCED": 0.06, "QUALITY": 0.10}),
        (" turbo = 0.03 , Quality=0.1 ", {"TURBO": 0.03, "QUALITY": 0.1}),  # any case, spaces, some tiers
        ("0.12", {"TURBO": 0.12, "BALANCED": 0.12, "QUALITY": 0.12}),  # one price for every tier
        ("0", {"TURBO": 0.0, "BALANCED": 0.0, "QUALITY": 0.0}),
        ("BALANCED=100", {"BALANCED": 100.0}),
    ],
)
def test_prices_setting_is_read(text: str, prices: dict[str, float]) -> None:
    assert parse_prices(text) == prices


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "cheap",
            "expected TIER=USD pairs such as TURBO=0.03,BALANCED=0.06,QUALITY=0.10 (tiers: TURBO, BALANCED, QUALITY), or one price for every tier such as 0.12, got 'cheap'",
        ),
        ("-0.1", "must be from 0 to 100 US dollars per image, got '-0.1'"),
        ("nan", "must be from 0 to 100"),
        ("inf", "must be from 0 to 100"),
        ("150", "must be from 0 to 100"),  # cents for dollars
        (
            "TURBO=0.03,FAST=0.01",
            "QUALITY), or one price for every tier such as 0.12, got 'FAST=0.01'",
        ),
        ("TURBO=0.03;BALANCED=0.06", "TURBO must be a number"),
        ("0.1,0.2", "or one price for every tier such as 0.12, got '0.1,0.2'"),
        ("TURBO=0.03,,QUALITY=0.1", "got ''"),
        ("TURBO=0.03,turbo=0.04", "TURBO is priced twice"),
        ("QUALITY=", "QUALITY must be a number of US dollars per image such as 0.06, got ''"),
        ("=0.1", "expected TIER=USD pairs"),
    ],
)
def test_a_wrong_prices_setting_says_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(PriceSyntaxError) as caught:
        parse_prices(text)
    assert message in str(caught.value)


def test_an_override_replaces_the_tiers_it_names_and_says_so() -> None:
    table = TIERED.with_override({"QUALITY": 0.08})
    assert table.to_json() == {"TURBO": 0.03, "BALANCED": 0.06, "QUALITY": 0.08}
    assert table.overridden and not TIERED.overridden
    assert table.default_tier == "BALANCED"
    assert TIERED.with_override(None) is TIERED


def env(**values: str) -> Settings:
    return Settings.from_environ(values)


def test_the_adapters_charge_the_published_prices_by_default() -> None:
    """PROVIDERS.md's prices; segmind none; the simulator nothing."""
    table = {name: adapter.price_usd({"rendering_speed": "TURBO"}, 1) for name, adapter in adapters(env()).items()}
    assert table == {"aivideoapi": 0.08, "apiframe": 0.03, "segmind": None, "apiinone": 0.12}
    default_tier = {name: adapter.price_usd({}, 2) for name, adapter in adapters().items()}
    assert default_tier == {"aivideoapi": 0.28, "apiframe": 0.12, "segmind": None, "apiinone": 0.24}
    assert simulator_adapter().price_usd({"rendering_speed": "QUALITY"}, 3) == 0.0


def test_the_adapters_charge_the_configured_prices() -> None:
    settings = env(JOBHOOK_APIFRAME_PRICES="TURBO=0.02", JOBHOOK_SEGMIND_PRICES="0.05", JOBHOOK_APIINONE_PRICES="0.1")
    found = adapters(settings)
    assert found["apiframe"].price_usd({"rendering_speed": "TURBO"}, 2) == 0.04
    assert found["apiframe"].price_usd({"rendering_speed": "QUALITY"}, 1) == 0.10  # not named: published
    assert found["segmind"].price_usd({"num_images": 3}, 3) == 0.15
    assert found["apiinone"].price_usd({}, 1) == 0.1
    assert found["aivideoapi"].price_usd({}, 1) == 0.14  # not set: PROVIDERS.md's


def test_describe_shows_each_tier_and_whether_it_was_set() -> None:
    rows = {row["provider"]: row for row in describe(env(JOBHOOK_SEGMIND_PRICES="QUALITY=0.2"))}
    assert rows["apiframe"]["prices_usd"] == {"TURBO": 0.03, "BALANCED": 0.06, "QUALITY": 0.10}
    assert rows["apiframe"]["prices_overridden"] is False
    assert rows["apiinone"]["prices_usd"] == {"TURBO": 0.12, "BALANCED": 0.12, "QUALITY": 0.12}
    assert rows["segmind"]["prices_usd"] == {"QUALITY": 0.2}
    assert rows["segmind"]["prices_overridden"] is True
    assert rows["segmind"]["default_tier"] == "QUALITY"
    assert rows["simulator"]["prices_usd"] == {"TURBO": 0.0, "BALANCED": 0.0, "QUALITY": 0.0}
    unset = {row["provider"]: row for row in describe(env())}
    assert unset["segmind"]["prices_usd"] == {} and unset["segmind"]["prices_overridden"] is False
