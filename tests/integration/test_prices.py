"""Prices and max_price_usd through the real app, on fake providers over real HTTP (SPEC §8).

A provider over `max_price_usd`, or whose price for the request is unknown, is left out: with one
provider that is `422 no_provider` naming it and why; nothing is sent and no job is made. Within it,
the job goes as before, and its `cost_usd` is the configured price.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory
from tests.fakes.apiframe import FakeApiframe
from tests.fakes.segmind import FakeSegmind

PROMPT = "A lighthouse at dusk"


@pytest.fixture
async def af() -> AsyncIterator[FakeApiframe]:
    async with FakeApiframe(complete_after=0.2) as provider:
        yield provider


@pytest.fixture
async def sg() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(latency=0.1, credits=1000.0, price_per_image=1.0) as provider:
        yield provider


def apiframe_env(fake: FakeApiframe, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_IMAGES": "false",
        **extra,
    }


def segmind_env(fake: FakeSegmind, **extra: str) -> dict[str, str]:
    return {"JOBHOOK_SEGMIND_API_KEY": "sg-test", "JOBHOOK_SEGMIND_BASE_URL": fake.base_url, **extra}


async def no_provider(svc: Service, **body: Any) -> list[dict[str, Any]]:
    """POST /v1/jobs answered 422 no_provider; its candidates. Asserts that no job was made."""
    response = await svc.client.post("/v1/jobs", json={"prompt": PROMPT, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "no_provider"
    assert error["message"].startswith("no provider can take this job: ")
    assert "job_id" not in error
    listing = await svc.client.get("/v1/jobs")
    assert listing.json()["jobs"] == []
    return error["candidates"]  # type: ignore[no-any-return]


async def test_over_max_price_nothing_is_sent(jobhook: ServiceFactory, af: FakeApiframe) -> None:
    async with jobhook(**apiframe_env(af)) as svc:
        # No tier: apiframe's default, BALANCED at $0.06.
        [candidate] = await no_provider(svc, provider="apiframe", max_price_usd=0.05)
        assert candidate == {
            "provider": "apiframe",
            "reason": "over_max_price",
            "message": "apiframe charges $0.06 for this request, over max_price_usd 0.05",
        }
        [candidate] = await no_provider(svc, provider="apiframe", rendering_speed="QUALITY", max_price_usd=0.09)
        assert candidate["reason"] == "over_max_price"
        assert af.creates == []


async def test_within_max_price_the_job_goes_and_costs_the_price(jobhook: ServiceFactory, af: FakeApiframe) -> None:
    async with jobhook(**apiframe_env(af)) as svc:
        job = await svc.submit(provider="apiframe", prompt=PROMPT, rendering_speed="TURBO", max_price_usd=0.03)
        assert job["status"] == "submitted"
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] == 0.03
        assert len(af.creates) == 1


async def test_configured_prices_override_the_published_ones(jobhook: ServiceFactory, af: FakeApiframe) -> None:
    env = apiframe_env(af, JOBHOOK_APIFRAME_PRICES="TURBO=0.02,QUALITY=0.5")
    async with jobhook(**env) as svc:
        # QUALITY at the configured $0.50 is over $0.20, though PROVIDERS.md says $0.10.
        [candidate] = await no_provider(svc, provider="apiframe", rendering_speed="QUALITY", max_price_usd=0.2)
        assert candidate["message"] == "apiframe charges $0.5 for this request, over max_price_usd 0.2"
        assert af.creates == []
        turbo = await svc.submit(provider="apiframe", prompt=PROMPT, rendering_speed="TURBO", max_price_usd=0.02)
        balanced = await svc.submit(provider="apiframe", prompt=PROMPT)  # a tier not set: the published price
        assert (await svc.wait_finished(turbo["id"]))["cost_usd"] == 0.02
        assert (await svc.wait_finished(balanced["id"]))["cost_usd"] == 0.06
        listed = (await svc.client.get("/v1/providers")).json()["providers"]
        row = next(row for row in listed if row["provider"] == "apiframe")
        assert row["prices_usd"] == {"TURBO": 0.02, "BALANCED": 0.06, "QUALITY": 0.5}
        assert row["prices_overridden"] is True


async def test_segmind_without_prices_is_left_out_under_a_cap(jobhook: ServiceFactory, sg: FakeSegmind) -> None:
    async with jobhook(**segmind_env(sg)) as svc:
        [candidate] = await no_provider(svc, provider="segmind", max_price_usd=10)
        assert candidate["provider"] == "segmind"
        assert candidate["reason"] == "unknown_price"
        assert "JOBHOOK_SEGMIND_PRICES" in candidate["message"]
        assert sg.creates == []
        # Without a cap it goes as before, its cost unknown.
        job = await svc.submit(provider="segmind", prompt=PROMPT)
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] is None
        listed = (await svc.client.get("/v1/providers")).json()["providers"]
        row = next(row for row in listed if row["provider"] == "segmind")
        assert row["prices_usd"] == {} and row["prices_overridden"] is False


async def test_segmind_with_prices_is_priced(jobhook: ServiceFactory, sg: FakeSegmind) -> None:
    async with jobhook(**segmind_env(sg, JOBHOOK_SEGMIND_PRICES="TURBO=0.04,QUALITY=0.09")) as svc:
        # segmind's default tier is QUALITY; two images are twice the price.
        [candidate] = await no_provider(svc, provider="segmind", num_images=2, max_price_usd=0.1)
        assert candidate["reason"] == "over_max_price"
        [candidate] = await no_provider(svc, provider="segmind", rendering_speed="BALANCED", max_price_usd=1)
        assert candidate["reason"] == "unknown_price"  # a tier the setting does not price
        assert sg.creates == []
        job = await svc.submit(provider="segmind", prompt=PROMPT, max_price_usd=0.09)
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] == 0.09
        assert len(sg.creates) == 1


async def test_the_simulator_is_free(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:
        job = await svc.submit(provider="simulator", prompt=PROMPT, rendering_speed="QUALITY", max_price_usd=0.0001)
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] == 0.0
        listed = (await svc.client.get("/v1/providers")).json()["providers"]
        row = next(row for row in listed if row["provider"] == "simulator")
        assert row["prices_usd"] == {"TURBO": 0.0, "BALANCED": 0.0, "QUALITY": 0.0}


async def test_single_provider_refusals_keep_their_codes(jobhook: ServiceFactory, sg: FakeSegmind) -> None:
    """Only price reasons answer no_provider in this version; the rest answer as they did."""
    async with jobhook(**segmind_env(sg)) as svc:
        for body, code, field in [
            ({"provider": "nope"}, "unknown_provider", "provider"),
            ({"provider": "apiframe"}, "provider_not_configured", "provider"),
            ({"provider": "segmind", "negative_prompt": "blur"}, "unsupported_field", "negative_prompt"),
            ({"provider": "segmind", "aspect_ratio": "2:1"}, "unsupported_value", "aspect_ratio"),
            ({"provider": "segmind", "max_price_usd": 0}, "invalid_field", "max_price_usd"),
            ({"provider": "segmind", "max_price_usd": "0.1"}, "invalid_field", "max_price_usd"),
        ]:
            response = await svc.client.post("/v1/jobs", json={"prompt": PROMPT, "max_price_usd": 1, **body})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert (error["code"], error["field"]) == (code, field), body
        assert sg.creates == []


async def test_max_price_is_part_of_the_idempotency_fingerprint(jobhook: ServiceFactory, af: FakeApiframe) -> None:
    async with jobhook(**apiframe_env(af)) as svc:
        body = {"provider": "apiframe", "prompt": PROMPT, "max_price_usd": 0.1}
        first = await svc.submit(headers={"Idempotency-Key": "k-1"}, **body)
        replay = await svc.client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first["id"]
        for other in ({**body, "max_price_usd": 0.2}, {"provider": "apiframe", "prompt": PROMPT}):
            changed = await svc.client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k-1"})
            assert changed.status_code == 422, changed.text
            assert changed.json()["error"]["code"] == "idempotency_key_reused"
        assert len(af.creates) == 1
