"""The dashboard's providers page shows each provider's circuit (SPEC §8)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import DashboardFactory
from tests.conftest import ServiceFactory
from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.sinks import HTTPSink
from tests.integration.test_circuits import backend, env_for, fake, refuse

expect = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed").expect

__all__ = ["backend", "fake"]  # the fixtures, used by name


async def test_providers_page_shows_an_open_circuit(
    jobhook: ServiceFactory, dashboard: DashboardFactory, fake: FakeAivideoapi, backend: HTTPSink
) -> None:
    async with jobhook(**env_for(fake, backend)) as svc:
        await refuse(svc, fake, 401, "invalid_api_key", 3)
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard/providers")
            shown = page.locator('[data-provider="aivideoapi"] .circuit')
            await expect(shown).to_have_attribute("data-state", "open")
            await expect(shown).to_contain_text("until ")
            await expect(shown).to_contain_text("3 failed in a row (http_401)")
            await expect(page.locator('[data-provider="apiframe"] .circuit')).to_have_attribute("data-state", "closed")
