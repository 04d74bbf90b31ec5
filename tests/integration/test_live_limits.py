"""`?wait=` waiters and `/v1/stream` clients are capped (issue 14, item 3): past the cap, a JSON 503 with
Retry-After, at once; a slot is given back when its holder ends, however it ends."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import ServiceFactory, eventually


def assert_busy(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.headers["x-content-type-options"] == "nosniff"
    error = response.json()["error"]
    assert error["code"] == code and "retry" in error["message"], error


async def test_waiters_past_the_cap_are_refused_at_once(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_MAX_WAITERS="2") as svc:
        job = await svc.submit(provider="simulator", prompt="never sent", submit=False)
        held = [asyncio.create_task(svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30})) for _ in range(2)]
        await eventually(lambda: svc.runtime.waiters.held == 2)
        assert_busy(await svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}), "too_many_waiters")
        assert (await svc.client.get(f"/v1/jobs/{job['id']}")).status_code == 200  # no wait: not counted
        held[0].cancel()  # the client goes away: its slot comes back
        await asyncio.gather(*held[:1], return_exceptions=True)
        await eventually(lambda: svc.runtime.waiters.held == 1)
        answer = await svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 0.2})
        assert answer.status_code == 200
        held[1].cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await eventually(lambda: svc.runtime.waiters.held == 0)


async def test_streams_past_the_cap_are_refused_and_a_closed_one_frees_its_slot(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_MAX_STREAMS="1") as svc:
        async with svc.client.stream("GET", "/v1/stream") as first:
            assert first.status_code == 200
            assert first.headers["x-content-type-options"] == "nosniff"
            assert_busy(await svc.client.get("/v1/stream"), "too_many_streams")
        await eventually(lambda: svc.runtime.streams.held == 0)
        async with svc.client.stream("GET", "/v1/stream") as again:
            assert again.status_code == 200
