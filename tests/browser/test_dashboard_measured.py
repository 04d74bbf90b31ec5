"""The dashboard's providers page shows each provider's measured latency and success rate (SPEC §8)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import DashboardFactory
from tests.browser.test_dashboard import finished
from tests.conftest import ServiceFactory

expect = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed").expect


async def test_providers_page_shows_latency_and_success_rate(
    jobhook: ServiceFactory, dashboard: DashboardFactory
) -> None:
    async with jobhook(JOBHOOK_SIMULATOR_LATENCY="0.2") as svc:
        for index in range(2):
            await finished(svc, prompt=f"measured {index}")
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard/providers")
            simulator = page.locator('[data-provider="simulator"]')
            await expect(simulator.locator(".latency")).to_have_text(re.compile(r"^\d+(\.\d+)?s / \d+(\.\d+)?s$"))
            await expect(simulator.locator(".success-rate")).to_have_text("100% of 2")
            await expect(page.locator('[data-provider="segmind"] .latency')).to_have_text("—")
            await expect(page.locator('[data-provider="segmind"] .success-rate')).to_have_text("—")
