"""A job's page shows its whole history, page after page of /events, with the summary of the refused and
duplicate deliveries past the bound (issue 14, item 5)."""

from __future__ import annotations

import pytest

from service.domain.history import NOISE_EVENTS_PER_JOB
from tests.browser.conftest import DashboardFactory
from tests.conftest import ServiceFactory
from tests.integration.hostile import callback_path, delivery_body, delivery_headers

expect = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed").expect


@pytest.mark.timeout(180)
async def test_the_timeline_follows_every_page_and_shows_the_summary(
    jobhook: ServiceFactory, dashboard: DashboardFactory
) -> None:
    async with jobhook(JOBHOOK_CALLBACK_GRACE="600") as svc:
        job = await svc.submit(provider="simulator", prompt="a noisy job", submit=False)
        stale = delivery_headers("task-noisy", timestamp=0)
        for _ in range(NOISE_EVENTS_PER_JOB + 10):
            response = await svc.client.post(callback_path(job), content=delivery_body("task-noisy"), headers=stale)
            assert response.status_code == 400
        events = await svc.events(job["id"])
        assert len(events) == NOISE_EVENTS_PER_JOB + 2  # more than one default page (100)
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto(f"/dashboard/jobs/{job['id']}")
            timeline = page.locator("#timeline")
            await expect(timeline.locator("li.event")).to_have_count(len(events))
            await expect(timeline.locator('[data-outcome="refused"]')).to_have_count(NOISE_EVENTS_PER_JOB)
            summary = timeline.locator('[data-type="callback"][data-outcome="summary"]')
            await expect(summary).to_contain_text("10 more refused or duplicate deliveries, counted here")
            await expect(summary).to_contain_text("stale_timestamp ×10")
            await expect(page.locator("#timeline-more")).to_have_count(0)
