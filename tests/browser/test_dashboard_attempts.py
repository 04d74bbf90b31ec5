"""The dashboard's job page lists the attempts of a job that failed over (SPEC §8)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import DashboardFactory
from tests.conftest import ServiceFactory
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse
from tests.fakes.apiframe import FakeApiframe
from tests.integration.conftest import aivideoapi, apiframe
from tests.integration.test_failover import BOTH, env_for, finished

expect = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed").expect

__all__ = ["aivideoapi", "apiframe"]  # the fixtures, used by name


async def test_job_page_lists_each_provider_tried(
    jobhook: ServiceFactory, dashboard: DashboardFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="a cat, twice tried")
        await finished(svc, job["id"])
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto(f"/dashboard/jobs/{job['id']}")
            tried = page.locator("#attempts li")
            await expect(tried).to_have_count(2)
            await expect(tried.nth(0)).to_have_attribute("data-state", "rejected")
            await expect(tried.nth(0)).to_contain_text("aivideoapi")
            await expect(tried.nth(0)).to_contain_text("insufficient_credits")
            await expect(tried.nth(1)).to_have_attribute("data-state", "completed")
            await expect(tried.nth(1)).to_contain_text("apiframe")
