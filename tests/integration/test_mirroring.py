"""Completed images are copied into JOBHOOK_MEDIA_DIR (providers' URLs expire) and served by jobhook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import mirror
from service.domain.work import Lane
from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


# The fake provider serves its images on loopback, which jobhook refuses to mirror from unless allowed.
LOOPBACK = "127.0.0.0/8"


def env(fake: FakeAivideoapi, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": LOOPBACK,
        **extra,
    }


async def mirror_events(svc: Service, job_id: str) -> list[dict[str, Any]]:
    return [e for e in await svc.events(job_id) if e["type"] == "mirror"]


async def test_completed_images_are_mirrored_and_served_byte_for_byte(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    async with jobhook(**env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="keep a copy", output_format="png")
        done = await svc.wait_finished(job["id"])
        provider_url = done["result"]["images"][0]["url"]
        assert provider_url.startswith(fake.base_url)
        await eventually(lambda: mirror_events(svc, job["id"]))
        job_now = await svc.job(job["id"])
        image = job_now["result"]["images"][0]
        assert image["url"] == provider_url  # the provider's URL stays
        assert image["mirror_url"] == f"{svc.url}/v1/jobs/{job['id']}/images/0"
        assert image["content_type"] == "image/png"
        async with httpx.AsyncClient() as client:
            original = (await client.get(provider_url)).content
        served = await svc.client.get(image["mirror_url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert served.content == original
        [event] = await mirror_events(svc, job["id"])
        assert event["outcome"] == "done"


async def test_mirroring_can_be_turned_off(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    async with jobhook(**env(fake, JOBHOOK_MIRROR_IMAGES="false")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="no copy")
        done = await svc.wait_finished(job["id"])
        assert "mirror_url" not in done["result"]["images"][0]
        response = await svc.client.get(f"/v1/jobs/{job['id']}/images/0")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "image_not_held"
        assert await mirror_events(svc, job["id"]) == []


@pytest.mark.parametrize("path", ["/missing.png", "/v1/tasks/nope"])
async def test_an_image_that_cannot_be_fetched_is_retried_and_the_job_stays_completed(
    jobhook: ServiceFactory, fake: FakeAivideoapi, path: str
) -> None:
    # The first: a 404. The second: an answer that is not an image (the fake's JSON error).
    fake.next_scripts = [TaskScript(urls=[f"{fake.base_url}{path}"])]
    async with jobhook(**env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="gone already")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        events = await eventually(lambda: mirror_events(svc, job["id"]))
        assert events[0]["outcome"] == "retry"
        assert events[0]["detail"]["errors"]["0"]
        assert "mirror_url" not in (await svc.job(job["id"]))["result"]["images"][0]


@pytest.mark.parametrize("index", ["1", "-1", "99999", "%2e%2e", "0abc", "٠"])
async def test_images_route_refuses_what_is_not_there(
    jobhook: ServiceFactory, fake: FakeAivideoapi, index: str
) -> None:
    async with jobhook(**env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="one image")
        await svc.wait_finished(job["id"])
        await eventually(lambda: mirror_events(svc, job["id"]))
        response = await svc.client.get(f"/v1/jobs/{job['id']}/images/{index}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] in ("image_not_found", "not_found")
        unknown = await svc.client.get("/v1/jobs/job_00000000000000000000000000/images/0")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "job_not_found"


async def test_a_media_directory_that_cannot_be_written_is_one_line_and_a_retry(
    jobhook: ServiceFactory, fake: FakeAivideoapi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A full or read-only disk under JOBHOOK_MEDIA_DIR is an OSError while the image is kept; here
    # the "directory" is a file, which root cannot write into either.
    not_a_directory = tmp_path / "media-is-a-file"
    not_a_directory.write_bytes(b"")
    async with jobhook(**env(fake, JOBHOOK_MEDIA_DIR=str(not_a_directory))) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="nowhere to keep it")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        [event] = await eventually(lambda: mirror_events(svc, job["id"]))
        assert event["outcome"] == "retry"
        assert event["detail"]["errors"]["0"].startswith("cannot keep the image:")
        assert "mirror_url" not in (await svc.job(job["id"]))["result"]["images"][0]
    mirror_lines = [r for r in caplog.records if "mirror" in r.getMessage()]
    assert mirror_lines and all(r.exc_info is None for r in mirror_lines)  # said in a line, no traceback


async def test_a_mirroring_run_ends_before_its_lease_so_no_second_claim_downloads_the_same_images(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    """A run over a job's images is bounded as a whole; the row it works on stays leased past that bound
    (a lease shorter than a download let a second claim fetch the same images while the first ran)."""
    async with jobhook(**env(fake)) as svc:
        lease = svc.runtime.poller.leases[Lane.MIRROR]
        assert mirror.DOWNLOAD_DEADLINE <= mirror.RUN_DEADLINE < lease
