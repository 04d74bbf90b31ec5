"""A provider's answer listing more images than the job asked for (issue 14, item 2).

One 5.6 KB callback listing 150 URLs once made jobhook keep 150 images (293 MB mirrored) and record
a cost of 150 images. Now the job takes the images it asked for; the rest are ignored and said so in
one event; the cost is the request's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.providers.aivideoapi import PRICES_USD
from tests.conftest import ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.server import serve_asgi

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
OFFERED = 150


@contextlib.asynccontextmanager
async def image_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Any /img/{n}.png is an image; yields the base URL and the paths fetched."""
    fetched: list[str] = []

    async def image(request: Request) -> Response:
        fetched.append(request.url.path)
        return Response(PNG, media_type="image/png")

    async with serve_asgi(Starlette(routes=[Route("/img/{name}", image)])) as url:
        yield url, fetched


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.1, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


@pytest.mark.parametrize("by", ["callback", "poll"])
async def test_a_job_keeps_the_images_it_asked_for_and_costs_what_it_asked_for(
    jobhook: ServiceFactory, fake: FakeAivideoapi, by: str
) -> None:
    env = {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.0/8",  # the image server is on loopback
    }
    if by == "poll":  # no public URL: no callback URL is registered, only the poll answer lists them
        env["JOBHOOK_PUBLIC_URL"] = "<unset>"
    async with image_server() as (images_url, fetched), jobhook(**env) as svc:
        urls = [f"{images_url}/img/{n}.png" for n in range(OFFERED)]
        fake.next_scripts = [TaskScript(urls=urls)]
        job = await svc.submit(provider="aivideoapi", prompt="one poster", rendering_speed="TURBO")
        done = await svc.wait_finished(job["id"])
        assert (done["status"], done["resolved_by"]) == ("completed", by)
        assert [image["url"] for image in done["result"]["images"]] == urls[:1]  # num_images: 1 (unset)
        assert done["cost_usd"] == PRICES_USD["TURBO"]  # one image's price, not 150 times it

        async def mirrored() -> list[dict[str, Any]]:
            return [e for e in await svc.events(job["id"]) if e["type"] == "mirror"]

        [mirror] = await eventually(mirrored)
        assert (mirror["outcome"], mirror["detail"]["images"]) == ("done", [0])
        assert fetched == ["/img/0.png"]  # one download, not 150
        noted = [e for e in await svc.events(job["id"]) if e["type"] == "images"]
        assert [(e["outcome"], e["detail"]) for e in noted] == [
            ("ignored", {"offered": OFFERED, "kept": 1, "ignored": OFFERED - 1, "by": by})
        ]
        assert (await svc.client.get(f"/v1/jobs/{job['id']}/images/1")).status_code == 404
