"""Every provider jobhook speaks to, and how each is described to operators (CLI, API, dashboard)."""

from __future__ import annotations

import dataclasses
from typing import Any

from service.config import Settings, shown_url
from service.domain.pricing import PriceTable
from service.providers import aivideoapi, apiframe, apiinone, segmind
from service.providers.aivideoapi import AivideoapiAdapter
from service.providers.apiframe import ApiframeAdapter
from service.providers.apiinone import ApiinoneAdapter
from service.providers.base import Adapter, Tracking
from service.providers.segmind import SegmindAdapter

# The built-in simulator charges nothing, whatever the tier: routing by price may pick it at no cost.
SIMULATOR_PRICES = PriceTable.flat(0.0)
# aivideoapi's, and its `provider_options.simulate` checked by jobhook (a 422 rather than its 400).
SIMULATOR_CAPABILITIES = dataclasses.replace(aivideoapi.CAPABILITIES, simulate=True)


def adapters(settings: Settings | None = None) -> dict[str, Adapter]:
    """Every provider jobhook can speak to, configured or not, priced as PROVIDERS.md says or, where
    `settings` has JOBHOOK_<P>_PRICES, as the operator says."""

    def prices(name: str, table: PriceTable) -> PriceTable:
        provider = settings.providers.get(name) if settings is not None else None
        return table.with_override(provider.prices if provider is not None else None)

    return {
        "aivideoapi": AivideoapiAdapter(prices=prices("aivideoapi", aivideoapi.PRICES)),
        "apiframe": ApiframeAdapter(prices("apiframe", apiframe.PRICES)),
        "segmind": SegmindAdapter(prices("segmind", segmind.PRICES)),
        "apiinone": ApiinoneAdapter(prices("apiinone", apiinone.PRICES)),
    }


def simulator_adapter(settings: Settings | None = None) -> Adapter:
    """The built-in simulator speaks aivideoapi's protocol under its own name, for free (unless
    JOBHOOK_SIMULATOR_PRICES says what its jobs are to cost, to try budgets without an account)."""
    return AivideoapiAdapter(name="simulator", prices=simulator_prices(settings), capabilities=SIMULATOR_CAPABILITIES)


def simulator_prices(settings: Settings | None = None) -> PriceTable:
    return SIMULATOR_PRICES.with_override(settings.simulator.prices if settings is not None else None)


def price_tables(settings: Settings) -> dict[str, PriceTable]:
    """Every provider's price table, the simulator's too: what an attempt reserves of a budget (SPEC §9)."""
    tables = {name: adapter.prices for name, adapter in adapters(settings).items()}
    tables["simulator"] = simulator_prices(settings)
    return tables


def describe(settings: Settings) -> list[dict[str, Any]]:
    """Each provider: configured or not (keys are never shown), base URL, how it is tracked, prices.

    `prices_usd` is USD per image by tier (empty: none published, so a cost is never guessed);
    `prices_overridden` says they come from JOBHOOK_<P>_PRICES rather than PROVIDERS.md.
    """
    rows = []
    for name, adapter in adapters(settings).items():
        provider = settings.providers[name]
        tracking = str(adapter.tracking)
        if adapter.tracking in (Tracking.CALLBACK, Tracking.WEBHOOK_CONFIRM) and settings.public_url is None:
            tracking = "polling (no JOBHOOK_PUBLIC_URL)"
        rows.append(
            {
                "provider": name,
                "configured": provider.configured,
                "api_key": "set" if provider.configured else f"unset: JOBHOOK_{name.upper()}_API_KEY",
                "base_url": shown_url(provider.base_url),  # user info or a query may hold a credential
                "tracking": tracking,
                **_prices(adapter.prices),
            }
        )
    # None is JOBHOOK_SIMULATOR=auto, which `serve` settles by the address it listens on.
    simulator = {None: "built in (auto: on for loopback)", True: "built in", False: "off: JOBHOOK_SIMULATOR=false"}
    rows.append(
        {
            "provider": "simulator",
            "configured": settings.simulator.enabled is not False,
            "api_key": simulator[settings.simulator.enabled],
            "base_url": "<this jobhook>/simulator",
            "tracking": "callback" if settings.public_url else "polling (no JOBHOOK_PUBLIC_URL)",
            **_prices(simulator_prices(settings)),
        }
    )
    return rows


def _prices(table: PriceTable) -> dict[str, Any]:
    return {"prices_usd": table.to_json(), "prices_overridden": table.overridden, "default_tier": table.default_tier}
