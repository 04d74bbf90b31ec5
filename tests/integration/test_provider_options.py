"""`provider_options` cannot override what jobhook checked and priced (issue 14, item 8): refused with
422 naming the key, and nothing reaches the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ServiceFactory
from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.segmind import FakeSegmind


@pytest.fixture
async def aivideoapi() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.3) as provider:
        yield provider


@pytest.fixture
async def segmind() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(latency=0.1, credits=1000.0, price_per_image=1.0) as provider:
        yield provider


@pytest.mark.parametrize(
    "options",
    [
        {"rendering_speed": "QUALITY"},  # TURBO recorded at $0.08, QUALITY charged at $0.22
        {"callback_url": "https://elsewhere.example/hook"},
        {"model": "ideogram-v4-quality"},
    ],
)
async def test_an_override_is_refused_and_nothing_is_sent(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, options: dict[str, Any]
) -> None:
    env = {"JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test", "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url}
    async with jobhook(**env) as svc:
        [key] = options
        answer = await svc.submit(
            expect=422, provider="aivideoapi", prompt="a cat", rendering_speed="TURBO", provider_options=options
        )
        assert answer["error"]["code"] == "reserved_option"
        assert answer["error"]["field"] == f"provider_options.{key}"
        assert repr(key) in answer["error"]["message"]
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []
        # An option jobhook does not set still goes through, merged as before.
        job = await svc.submit(provider="aivideoapi", prompt="a cat", provider_options={"style": "vivid"})
        assert job["status"] == "submitted"
    [create] = aivideoapi.creates
    assert create.body["input"]["style"] == "vivid"


async def test_a_synchronous_provider_cannot_be_asked_for_more_images(
    jobhook: ServiceFactory, segmind: FakeSegmind
) -> None:
    env = {"JOBHOOK_SEGMIND_API_KEY": "sg-test", "JOBHOOK_SEGMIND_BASE_URL": segmind.base_url}
    async with jobhook(**env) as svc:
        answer = await svc.submit(expect=422, provider="segmind", prompt="a cat", provider_options={"num_images": 8})
        assert answer["error"]["field"] == "provider_options.num_images"
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []
    assert segmind.creates == []
