"""The dashboard in a real browser: live jobs, filters, a job's timeline, providers, the outbox and its
resend button, sign-in and sign-out with a token that never reaches a URL, and a phone-sized screen."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.browser.conftest import DashboardFactory, Tab
from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.server import free_socket, serve_asgi

expect = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed").expect

TOKEN = "dashboard-token-7c1f9e2a"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def row(tab: Tab, job_id: str) -> Any:
    return tab.page.locator(f'#jobs [data-job-id="{job_id}"]')


async def finished(svc: Service, **body: Any) -> dict[str, Any]:
    job = await svc.submit(provider="simulator", **body)
    done = await svc.wait_finished(job["id"])
    assert done["status"] in ("completed", "failed"), done
    return done


async def loaded(image: Any) -> None:
    """The image really arrived and decoded (same origin: the session cookie went with it)."""
    await eventually(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), timeout=5)


async def no_sideways_scroll(tab: Tab) -> None:
    width = await tab.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{tab.page.url} is {width} px wide"


async def test_jobs_appear_and_change_live_without_reload(
    jobhook: ServiceFactory, dashboard: DashboardFactory, tmp_path: Path
) -> None:
    async with jobhook() as svc:
        old = await finished(svc, prompt="A lighthouse at dusk, poster style", rendering_speed="TURBO")
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard")
            await expect(row(tab, old["id"])).to_have_attribute("data-status", "completed")
            first = row(tab, old["id"])
            await expect(first.locator(".tier")).to_have_text("TURBO")
            await expect(first.locator(".provider")).to_have_text("simulator")
            thumb = first.locator("img.thumb")
            await expect(thumb).to_have_attribute("src", f"/v1/jobs/{old['id']}/images/0")  # jobhook's copy
            await loaded(thumb)
            await expect(page.locator("#live")).to_have_attribute("data-state", "live")
            await expect(page.locator("#signout")).to_be_hidden()  # no tokens: nothing to sign out of
            await page.evaluate("window.stillTheSamePage = true")

            new = await svc.submit(
                provider="simulator",
                prompt='A sign reading "OPEN <b>late</b>"',
                provider_options={"simulate": {"latency": 1.5}},
            )
            fresh = row(tab, new["id"])
            await expect(page.locator("#jobs > .job").first).to_have_attribute("data-job-id", new["id"])
            assert await fresh.get_attribute("data-status") in ("queued", "submitted", "processing")
            await expect(fresh.locator(".job-prompt")).to_have_text('A sign reading "OPEN <b>late</b>"')  # as text
            await expect(fresh.locator(".tier")).to_have_text("default")
            await expect(fresh).to_have_attribute("data-status", "completed", timeout=10_000)
            await expect(fresh.locator("img.thumb")).to_be_visible()
            assert await page.evaluate("window.stillTheSamePage") is True  # never reloaded
            assert await page.locator("#jobs > .job").count() == 2
            await page.screenshot(path=str(tmp_path / "jobs.png"))

            await fresh.click()  # the job page, without leaving the app
            await expect(page).to_have_url(f"{svc.url}/dashboard/jobs/{new['id']}")
            await expect(page.locator("#job-status")).to_have_attribute("data-status", "completed")
            assert await page.evaluate("window.stillTheSamePage") is True


async def test_status_and_provider_filters(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    async with jobhook() as svc:
        done = await finished(svc, prompt="will complete")
        failed = await finished(svc, prompt="will fail", provider_options={"simulate": {"fail": True}})
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard")
            await expect(page.locator("#jobs > .job")).to_have_count(2)
            await page.select_option("#filter-status", "failed")
            await expect(page.locator("#jobs > .job")).to_have_count(1)
            await expect(row(tab, failed["id"])).to_be_visible()
            await expect(page).to_have_url(f"{svc.url}/dashboard?status=failed")
            await page.select_option("#filter-status", "completed")
            await expect(page.locator("#jobs > .job")).to_have_count(1)
            await expect(row(tab, done["id"])).to_be_visible()
            await page.select_option("#filter-status", "")
            await page.select_option("#filter-provider", "apiinone")
            await expect(page.locator("#jobs > .job")).to_have_count(0)
            await expect(page.get_by_text("No jobs match these filters.")).to_be_visible()
            await page.select_option("#filter-provider", "simulator")
            await expect(page.locator("#jobs > .job")).to_have_count(2)

            # A filtered list is live too: a job enters it when it reaches the status shown.
            await page.goto("/dashboard?status=completed")
            await expect(page.locator("#jobs > .job")).to_have_count(1)
            later = await svc.submit(
                provider="simulator", prompt="joins the filter", provider_options={"simulate": {"latency": 0.8}}
            )
            await expect(row(tab, later["id"])).to_have_attribute("data-status", "completed")
            await expect(page.locator("#jobs > .job")).to_have_count(2)


async def test_job_page_shows_the_timeline_and_images(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    async with jobhook() as svc:
        twice = await finished(svc, prompt="delivered twice", provider_options={"simulate": {"duplicates": 1}})
        await eventually(
            lambda: _has_event(svc, twice["id"], "callback", "duplicate"), timeout=5
        )  # the copy lands just after the original
        stale = await finished(svc, prompt="stale callbacks", provider_options={"simulate": {"stale_timestamp": True}})
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto(f"/dashboard/jobs/{twice['id']}")
            await expect(page.locator("#job-status")).to_have_attribute("data-status", "completed")
            timeline = page.locator("#timeline")
            await expect(timeline.locator('[data-type="submit"]')).to_have_count(1)
            await expect(timeline.locator('[data-type="callback"][data-outcome="accepted"]')).to_have_count(1)
            await expect(timeline.locator('[data-type="callback"][data-outcome="duplicate"]')).to_have_count(1)
            await expect(timeline.locator('[data-type="status"][data-outcome="completed"]')).to_contain_text(
                "by callback"
            )
            image = page.locator(".gallery img").first
            await expect(image).to_have_attribute("src", f"/v1/jobs/{twice['id']}/images/0")
            await loaded(image)
            # UTC, 24-hour, the zone said, whatever the browser's locale (issue 14, item 16).
            created = twice["created_at"]  # e.g. 2026-12-04T14:03:07.123456Z
            await expect(page.locator(".fact", has_text="Created").locator("dd")).to_have_text(
                f"{created[:10]} {created[11:19]} UTC"
            )
            event_time = timeline.locator(".event-time").first
            await expect(event_time).to_have_text(re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3}$"))
            await expect(event_time).to_have_attribute(
                "title", re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")
            )
            await expect(page.locator("section", has=timeline)).to_contain_text("times in UTC")
            # Ids in the facts' narrow columns are never broken mid-word (issue 14, item 16).
            for name in ("Job", "Task id"):
                code = page.locator(".fact").filter(has=page.get_by_text(name, exact=True)).locator("code")
                assert await code.evaluate(ONE_LINE), name

            await page.goto(f"/dashboard/jobs/{stale['id']}")
            refused = timeline.locator('[data-type="callback"][data-outcome="refused"]').first
            await expect(refused).to_contain_text("stale_timestamp")  # why it was refused
            await expect(timeline.locator('[data-type="poll"]').first).to_be_visible()  # finished by polling

            # Open while the job is under way: its callback joins the timeline without a reload.
            slow = await svc.submit(
                provider="simulator", prompt="watched", provider_options={"simulate": {"latency": 1}}
            )
            await page.goto(f"/dashboard/jobs/{slow['id']}")
            await expect(page.locator("#job-status")).not_to_have_attribute("data-status", "completed")
            await page.evaluate("window.stillTheSamePage = true")
            await expect(timeline.locator('[data-type="callback"][data-outcome="accepted"]')).to_have_count(1)
            await expect(page.locator("#job-status")).to_have_attribute("data-status", "completed")
            await loaded(page.locator(".gallery img").first)
            assert await page.evaluate("window.stillTheSamePage") is True

            tab.expected.append("404 /v1/jobs/job_01J0000000000000000000NONE")
            await page.goto("/dashboard/jobs/job_01J0000000000000000000NONE")
            await expect(page.locator("h1")).to_have_text("Job not found")


async def _has_event(svc: Service, job_id: str, kind: str, outcome: str) -> bool:
    return any(e["type"] == kind and e["outcome"] == outcome for e in await svc.events(job_id))


async def test_providers_show_callback_health_and_today(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    async with jobhook(JOBHOOK_DEGRADED_AFTER="1") as svc:
        await finished(svc, prompt="no callback comes", provider_options={"simulate": {"drop_callback": True}})
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard/providers")
            card = page.locator('[data-provider="simulator"]')
            await expect(card.locator(".callbacks")).to_have_attribute("data-health", "degraded")
            await expect(card.locator(".today-jobs")).to_have_text("1")
            await expect(card.locator(".credits")).to_have_text("—")  # the simulator reports no balance
            # What the CLI says: the simulator is free, segmind publishes no price (issue 14, item 16).
            await expect(card.locator(".price")).to_have_text("free")
            await expect(page.locator('[data-provider="segmind"] .price')).to_have_text("not published")
            await expect(page.locator('[data-provider="apiinone"] .price')).to_have_text("any tier $0.12")
            await expect(page.locator('[data-provider="aivideoapi"] .callbacks')).to_have_attribute("data-health", "ok")


async def test_providers_show_the_prices_set_for_them(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    """SPEC §8: each tier's price per image, and which prices JOBHOOK_<P>_PRICES set."""
    env = {"JOBHOOK_APIFRAME_PRICES": "TURBO=0.02", "JOBHOOK_SEGMIND_PRICES": "0.05"}
    async with jobhook(**env) as svc, dashboard(svc) as tab:
        page = tab.page
        await page.goto("/dashboard/providers")
        apiframe = page.locator('[data-provider="apiframe"] .price')
        await expect(apiframe).to_have_text("TURBO $0.02 · BALANCED $0.06 · QUALITY $0.10 (set)")
        await expect(apiframe).to_have_attribute("title", "set by JOBHOOK_APIFRAME_PRICES")
        await expect(page.locator('[data-provider="segmind"] .price')).to_have_text("any tier $0.05 (set)")
        aivideoapi = page.locator('[data-provider="aivideoapi"] .price')
        await expect(aivideoapi).to_have_text("TURBO $0.08 · BALANCED $0.14 · QUALITY $0.22")
        await expect(aivideoapi).to_have_attribute("title", "as published")


async def test_providers_show_todays_budget(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    """SPEC §9: the cap, what is spent and left, when the total refused work, and when it resets."""
    env = {"JOBHOOK_BUDGET_USD_PER_DAY": "0.50", "JOBHOOK_SIMULATOR_PRICES": "0.25"}
    async with jobhook(**env) as svc:
        for n in range(2):
            await finished(svc, prompt=f"paid {n}")
        await svc.submit(expect=429, provider="simulator", prompt="one too many")
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard/providers")
            total = page.locator('#budget [data-scope="total"]')
            await expect(total).to_have_attribute("data-state", "exhausted")
            await expect(total.locator(".budget-spent")).to_have_text("$0.50 spent · $0.00 reserved")
            await expect(total.locator(".budget-left")).to_have_text("of $0.50 · $0.00 left")
            await expect(total).to_contain_text("refused work since")
            simulator = page.locator('#budget [data-scope="simulator"]')
            await expect(simulator).to_have_attribute("data-state", "no cap")
            await expect(simulator.locator(".budget-spent")).to_have_text("$0.50 spent · $0.00 reserved")
            await expect(page.locator('#budget [data-scope="aivideoapi"]')).to_have_count(0)  # nothing to show
            await expect(page.locator("#budget-reset")).to_contain_text("resets ")
            await expect(page.locator("#budget")).not_to_contain_text("null")
            await expect(page.locator("#budget")).not_to_contain_text("No cap is set")
            await expect(page.locator('[data-provider="simulator"] .price')).to_have_text("any tier $0.25 (set)")


async def test_outbox_shows_a_dead_delivery_and_resends_it(
    jobhook: ServiceFactory, dashboard: DashboardFactory
) -> None:
    received: list[dict[str, str]] = []

    async def hook(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        Webhook(WEBHOOK_SECRET).verify(body, headers)  # a genuine Standard Webhooks delivery
        received.append({"id": headers["webhook-id"], "type": json.loads(body)["type"]})
        return Response(status_code=204)

    backend = free_socket()  # bound, not listening: connections are refused until it serves
    env = {
        "JOBHOOK_FORWARD_URL": f"http://127.0.0.1:{backend.getsockname()[1]}/hook",
        "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
        "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0",
    }
    with backend:
        async with jobhook(**env) as svc:
            job = await finished(svc, prompt="nobody listens")
            [dead] = (await eventually(lambda: _deliveries(svc, "dead")))["deliveries"]
            async with dashboard(svc) as tab:
                page = tab.page
                await page.goto("/dashboard/outbox")
                card = page.locator(f'#deliveries [data-delivery-id="{dead["id"]}"]')
                await expect(card).to_have_attribute("data-status", "dead")
                await expect(card).to_contain_text("job.completed")
                await expect(card).to_contain_text("ConnectError")
                await expect(card.locator(f'a[href="/dashboard/jobs/{job["id"]}"]')).to_be_visible()
                await expect(page.locator('#outbox-summary [data-destination="webhook"]')).to_contain_text("1 dead")

                async with serve_asgi(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), sock=backend):
                    await card.get_by_role("button", name=f"Resend #{dead['id']}").click()
                    await expect(page.locator("#toast")).to_contain_text(f"#{dead['id']} sent again")
                    delivered = await eventually(lambda: _deliveries(svc, "delivered"))
                    assert [d["id"] for d in delivered["deliveries"]] == [dead["id"]]
                    assert received == [{"id": dead["notification_id"], "type": "job.completed"}]
                    assert (await svc.client.get("/v1/outbox", params={"status": "dead"})).json()["deliveries"] == []
                    await expect(page.locator("#deliveries")).to_contain_text("No dead deliveries.")


async def _deliveries(svc: Service, status: str) -> dict[str, Any] | None:
    listing: dict[str, Any] = (await svc.client.get("/v1/outbox", params={"status": status})).json()
    return listing if listing["deliveries"] else None


async def test_sign_in_once_never_a_token_in_a_url_and_sign_out(
    jobhook: ServiceFactory, dashboard: DashboardFactory
) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        job = await svc.submit(
            provider="simulator", prompt="behind a token", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert (await svc.client.get("/dashboard/static/app.js")).status_code == 200  # open: the sign-in page
        assert (await svc.client.get("/dashboard/outbox")).status_code == 303  # the shell is not
        async with dashboard(svc) as tab:
            page = tab.page
            await page.goto("/dashboard/providers")
            await expect(page).to_have_url(f"{svc.url}/dashboard/login?next=/dashboard/providers")
            tab.expected.append("401 /dashboard/login")
            await page.fill("#token", "not-the-token")
            await page.click("button[type=submit]")
            await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
            assert not [c for c in await page.context.cookies() if c["name"] == "jobhook_session"]

            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{svc.url}/dashboard/providers")
            await expect(page.locator('[data-provider="simulator"] .today-jobs')).to_have_text("1")
            await page.get_by_role("link", name="Jobs", exact=True).click()
            await expect(row(tab, job["id"])).to_be_visible()
            await expect(page.locator("#live")).to_have_attribute("data-state", "live")  # the stream, by cookie
            [cookie] = [c for c in await page.context.cookies() if c["name"] == "jobhook_session"]
            assert cookie["httpOnly"] and TOKEN not in cookie["value"]

            await page.get_by_role("button", name="Sign out").click()
            await expect(page).to_have_url(f"{svc.url}/dashboard/login")
            assert not [c for c in await page.context.cookies() if c["name"] == "jobhook_session"]
            await page.goto("/dashboard")
            await expect(page).to_have_url(f"{svc.url}/dashboard/login?next=/dashboard")

            assert any("/v1/jobs" in url for url in tab.urls)
            assert not [url for url in tab.urls if TOKEN in url], tab.urls


# The element is laid out as one line box: one rectangle, no taller than a line.
ONE_LINE = """el => el.getClientRects().length === 1
    && el.getBoundingClientRect().height < 1.5 * parseFloat(getComputedStyle(el).lineHeight)"""


async def test_the_dashboard_has_its_own_icon(jobhook: ServiceFactory, dashboard: DashboardFactory) -> None:
    async with jobhook() as svc, dashboard(svc) as tab:
        await tab.page.goto("/dashboard")
        href = await tab.page.locator('link[rel="icon"]').get_attribute("href")
        assert href == "/dashboard/static/favicon.svg"
        icon = await tab.page.request.get(href)
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        assert (await icon.body()).startswith(b"<svg")


async def test_a_phone_never_scrolls_sideways(
    jobhook: ServiceFactory, dashboard: DashboardFactory, tmp_path: Path
) -> None:
    env = {"JOBHOOK_FORWARD_URL": "http://127.0.0.1:9/hook", "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET}
    async with jobhook(JOBHOOK_NOTIFY_RETRY_SCHEDULE="0", **env) as svc:
        long = "Aposterwithoneverylongwordthatneverbreaks" * 8
        job = await finished(svc, prompt=long, rendering_speed="QUALITY", metadata={"order": "x" * 200})
        await finished(svc, prompt="a short one", provider_options={"simulate": {"fail": True}})
        async with dashboard(svc, width=390, height=844) as tab:
            page = tab.page
            await page.goto("/dashboard")
            await expect(page.locator("#jobs > .job")).to_have_count(2)
            await no_sideways_scroll(tab)
            await page.screenshot(path=str(tmp_path / "jobs-phone.png"), full_page=True)
            await page.goto(f"/dashboard/jobs/{job['id']}")
            await expect(page.locator('#timeline [data-type="notification"][data-outcome="dead"]')).to_contain_text(
                "job.completed → webhook"
            )
            # Ids are never broken mid-word: each stays on one line (issue 14, item 16).
            job_id = page.locator(".fact").filter(has=page.get_by_text("Job", exact=True)).locator("code")
            await expect(job_id).to_have_text(job["id"])
            assert await job_id.evaluate(ONE_LINE)
            assert (
                await page.locator(".fact")
                .filter(has=page.get_by_text("Task id", exact=True))
                .locator("code")
                .evaluate(ONE_LINE)
            )
            await page.locator("#timeline details").first.evaluate("d => d.open = true")
            await no_sideways_scroll(tab)
            await page.goto("/dashboard/providers")
            await expect(page.locator('[data-provider="simulator"]')).to_be_visible()
            await no_sideways_scroll(tab)
            await page.goto("/dashboard/outbox")
            await expect(page.locator("#deliveries .delivery").first).to_be_visible()
            await no_sideways_scroll(tab)
            assert await page.locator("#deliveries .delivery a code").first.evaluate(ONE_LINE)
