"""What operators see: /metrics, /v1/providers, /v1/outbox, the live stream, dashboard sign-in."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.sinks import HTTPSink


async def scrape(svc: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await svc.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_what_happened(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS="secret-token-1") as svc:
        svc.client.headers["Authorization"] = "Bearer secret-token-1"
        job = await svc.submit(provider="simulator", prompt="counted", provider_options={"simulate": {"duplicates": 2}})
        await svc.wait_finished(job["id"])
        forged = await svc.client.post("/callbacks/not-a-token", json={})
        assert forged.status_code == 404
        samples = await eventually(
            lambda: _when(
                scrape(svc),
                lambda s: (
                    value(s, "jobhook_callback_deliveries_total", provider="simulator", outcome="duplicate", reason="")
                    == 2
                ),
            )
        )
        assert (
            value(samples, "jobhook_callback_deliveries_total", provider="simulator", outcome="accepted", reason="")
            == 1
        )
        assert (
            value(
                samples,
                "jobhook_callback_deliveries_total",
                provider="unknown",
                outcome="refused",
                reason="invalid_token",
            )
            == 1
        )
        assert value(samples, "jobhook_jobs", provider="simulator", status="completed") == 1
        assert value(samples, "jobhook_jobs", provider="simulator", status="queued") == 0
        assert value(samples, "jobhook_submissions_total", provider="simulator", outcome="accepted") == 1
        assert value(samples, "jobhook_submit_seconds_count", provider="simulator") == 1
        assert value(samples, "jobhook_callback_seconds_count", provider="simulator") == 3
        assert value(samples, "jobhook_provider_callbacks_degraded", provider="simulator") == 0
        assert 0 <= value(samples, "jobhook_loop_heartbeat_age_seconds", loop="poller") < 60
        # Every write so far was committed, some perhaps several to one commit (group commit).
        commits, writes = value(samples, "jobhook_store_commits_total"), value(samples, "jobhook_store_writes_total")
        assert 0 < commits <= writes
        # …and the time they took is counted where it was spent: statements in the loop, COMMITs in the thread.
        assert value(samples, "jobhook_store_write_seconds_total") > 0
        assert value(samples, "jobhook_store_commit_seconds_total") > 0
        text = (await svc.client.get("/metrics")).text
        assert "secret-token-1" not in text
        assert "/callbacks/" not in text


async def _when(coro: Any, predicate: Any) -> Any:
    result = await coro
    return result if predicate(result) else None


async def test_providers_route_shows_health_and_today(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:
        job = await svc.submit(provider="simulator", prompt="today")
        await svc.wait_finished(job["id"])
        response = await svc.client.get("/v1/providers")
        assert response.status_code == 200
        rows = {row["provider"]: row for row in response.json()["providers"]}
        assert set(rows) == {"aivideoapi", "apiframe", "segmind", "apiinone", "simulator"}
        assert rows["simulator"]["callbacks"] == "ok"
        assert rows["simulator"]["today"]["jobs"] == 1
        assert rows["aivideoapi"]["configured"] is False
        assert "API_KEY" in rows["aivideoapi"]["api_key"]


async def test_providers_route_masks_a_base_urls_credentials(jobhook: ServiceFactory) -> None:
    """Issue 14, item 7: user info and query values of a base URL may be credentials."""
    env = {
        "JOBHOOK_APIFRAME_BASE_URL": "https://ops:s3cret-pass@proxy.example:8443/apiframe?token=s3cret-token",
        "JOBHOOK_SIMULATOR": "false",
    }
    async with jobhook(**env) as svc:
        response = await svc.client.get("/v1/providers")
        assert response.status_code == 200
        assert "s3cret" not in response.text
        rows = {row["provider"]: row for row in response.json()["providers"]}
        assert rows["apiframe"]["base_url"] == "https://***@proxy.example:8443/apiframe?token=***"
        # Issue 14, item 16: a simulator turned off is not "built in" and ready.
        assert rows["simulator"]["configured"] is False
        assert rows["simulator"]["api_key"] == "off: JOBHOOK_SIMULATOR=false"


async def test_outbox_routes_list_and_resend(jobhook: ServiceFactory) -> None:
    async with HTTPSink(verify=True) as backend:
        backend.always = 500
        env = {
            "JOBHOOK_FORWARD_URL": backend.url,
            "JOBHOOK_FORWARD_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0,0.05",
        }
        async with jobhook(**env) as svc:
            job = await svc.submit(provider="simulator", prompt="undeliverable")
            await svc.wait_finished(job["id"])
            listing = await eventually(lambda: _dead(svc))
            [row] = listing["deliveries"]
            assert row["destination"] == "webhook" and row["attempts"] == 2
            assert listing["counts"] == {"webhook": {"pending": 0, "dead": 1}}
            assert (await svc.client.get("/v1/outbox", params={"status": "lost"})).status_code == 400
            assert (await svc.client.post("/v1/outbox/resend", json={"ids": "all"})).status_code == 422
            backend.always = None
            response = await svc.client.post("/v1/outbox/resend", json={"dead": True})
            assert response.json() == {"resent": [row["id"]]}
            await eventually(lambda: backend.delivered())


async def _dead(svc: Service) -> dict[str, Any] | None:
    listing = (await svc.client.get("/v1/outbox", params={"status": "dead"})).json()
    return listing if listing["deliveries"] else None


async def test_stream_sends_each_change_as_it_is_committed(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:
        seen: list[dict[str, Any]] = []

        async def read() -> None:
            async with svc.client.stream("GET", "/v1/stream") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "job":
                        seen.append(json.loads(line.removeprefix("data: ")))
                        if seen[-1]["status"] == "completed":
                            return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        job = await svc.submit(provider="simulator", prompt="watched live")
        await asyncio.wait_for(reader, 15)
        statuses = [update["status"] for update in seen if update["id"] == job["id"]]
        assert statuses[-1] == "completed"
        assert "submitted" in statuses or "queued" in statuses


async def test_dashboard_sign_in_keeps_a_session_and_never_a_token_in_a_url(jobhook: ServiceFactory) -> None:
    async with (
        jobhook(JOBHOOK_API_TOKENS="old-token,new-token") as svc,
        httpx.AsyncClient(base_url=svc.url, follow_redirects=False) as browser,
    ):
        page = await browser.get("/dashboard")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/dashboard/login")
        refused = await browser.post("/dashboard/login", data={"token": "wrong"})
        assert refused.status_code == 401
        assert "not valid" in refused.text
        assert "jobhook_session" not in refused.headers.get("set-cookie", "")
        signed_in = await browser.post("/dashboard/login?next=//evil.example/x", data={"token": "new-token"})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/dashboard"  # never another site
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "new-token" not in cookie
        assert (await browser.get("/v1/jobs")).status_code == 200
        unsafe = await browser.post("/v1/outbox/resend", json={"dead": True})
        assert (unsafe.status_code, unsafe.json()["error"]["code"]) == (403, "csrf_required")
        with_header = await browser.post("/v1/outbox/resend", json={"dead": True}, headers={"X-Jobhook-CSRF": "1"})
        assert with_header.status_code == 200
        await browser.post("/dashboard/logout", headers={"X-Jobhook-CSRF": "1"})
        browser.cookies.clear()
        assert (await browser.get("/v1/jobs")).status_code == 401
        browser.cookies.set("jobhook_session", "eyJhIjoxfQ.forged.sig")
        assert (await browser.get("/v1/jobs")).status_code == 401


async def test_readyz_fails_when_a_background_loop_has_stopped(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:
        assert (await svc.client.get("/readyz")).status_code == 200
        task = svc.runtime.tasks["outbox"]
        task.cancel()  # as if the loop had died
        await asyncio.gather(task, return_exceptions=True)
        response = await svc.client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["outbox"] == "stopped"
        assert response.json()["checks"]["poller"] == "ok"
        assert (await svc.client.get("/healthz")).status_code == 200  # liveness is not readiness
