"""Every provider jobhook speaks to, and how each is described to operators (CLI, API, dashboard)."""

from __future__ import annotations

from typing import Any

from service.config import Settings, shown_url
from service.providers.aivideoapi import AivideoapiAdapter
from service.providers.apiframe import ApiframeAdapter
from service.providers.apiinone import ApiinoneAdapter
from service.providers.base import Adapter, Tracking
from service.providers.segmind import SegmindAdapter


def adapters() -> dict[str, Adapter]:
    """Every provider jobhook can speak to, configured or not."""
    return {
        "aivideoapi": AivideoapiAdapter(),
        "apiframe": ApiframeAdapter(),
        "segmind": SegmindAdapter(),
        "apiinone": ApiinoneAdapter(),
    }


def describe(settings: Settings) -> list[dict[str, Any]]:
    """Each provider: configured or not (keys are never shown), base URL, how it is tracked, prices."""
    rows = []
    for name, adapter in adapters().items():
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
                "prices_usd": dict(adapter.price_list),
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
            "prices_usd": {},
        }
    )
    return rows
