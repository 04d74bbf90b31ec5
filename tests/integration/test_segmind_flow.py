"""jobhook against a fake segmind over real HTTP: a synchronous call made in the background, images held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.segmind import FakeSegmind, RequestScript, forced_error

IMAGE_SIZES = {
    "1:1": "square_hd",
    "3:4": "portrait_4_3",
    "9:16": "portrait_16_9",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(latency=0.2, credits=1000.0, price_per_image=1.0) as provider:
        yield provider


def provider_env(fake: FakeSegmind, **extra: str) -> dict[str, str]:
    return {"JOBHOOK_SEGMIND_API_KEY": "sg-test", "JOBHOOK_SEGMIND_BASE_URL": fake.base_url, **extra}


def submits(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == "submit"]


async def raw_get(svc: Service, path: str) -> tuple[int, bytes]:
    """GET `path` byte for byte (no client-side normalisation of `..` or percent-escapes)."""
    parts = urlsplit(svc.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def submit_refused(svc: Service, provider_code: str, **body: Any) -> str:
    """Submit a job the provider refuses; the job's id.

    The call runs in the background: a refusal that comes while the POST is still answering is the
    POST's answer (502 provider_rejected, SPEC §3), a later one leaves the POST's 202 `queued`.
    """
    response = await svc.client.post("/v1/jobs", json={"provider": "segmind", **body})
    if response.status_code == 502:
        error = response.json()["error"]
        assert error["code"] == "provider_rejected"
        assert error["provider_code"] == provider_code
        return str(error["job_id"])
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


# -- the background call and the images it brings -----------------------------------------------------


async def test_submission_answers_at_once_and_the_image_is_held(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    fake.next_scripts = [RequestScript(latency=3.0)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="segmind", prompt="A neon sign reading OPEN", metadata={"order": 9})
        # The answer is there while the provider has not answered (maybe not even been called) yet.
        assert all(call.answered_at is None for call in fake.calls)
        assert job["status"] == "queued"
        assert job["provider_task_id"] is None
        assert job["callback_url_registered"] is False
        assert job["result"] is None
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "submit"
        assert done["provider_task_id"] is None
        assert done["cost_usd"] is None
        assert done["metadata"] == {"order": 9}
        [call] = fake.creates
        assert call.headers["x-api-key"] == "sg-test"
        assert call.status == 200
        [image] = done["result"]["images"]
        assert image["url"] == f"{svc.url}/v1/jobs/{job['id']}/images/0"
        assert image["content_type"] == "image/jpeg"
        response = await svc.client.get(image["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == call.images[0]
        events = await svc.events(job["id"])
        [submit] = submits(events)
        assert submit["outcome"] == "accepted"
        assert submit["detail"]["credits_remaining"] == 999.0
        assert float(call.remaining_credits or "nan") == 999.0


async def test_png_is_served_as_png(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="segmind", prompt="lossless", output_format="png")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        [call] = fake.creates
        assert call.body["output_format"] == "png"
        response = await svc.client.get(done["result"]["images"][0]["url"])
        assert response.headers["content-type"] == "image/png"
        assert response.content == call.images[0]
        assert response.content.startswith(b"\x89PNG")


async def test_three_images_are_each_held_byte_for_byte(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="segmind", prompt="a triptych", num_images=3)
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "submit"
        [call] = fake.creates
        assert call.body["num_images"] == 3
        assert call.content_type is not None and call.content_type.startswith("application/json")
        assert len(call.images) == 3
        assert len(set(call.images)) == 3  # three different pictures, so a mix-up would show
        images = done["result"]["images"]
        assert [image["url"] for image in images] == [f"{svc.url}/v1/jobs/{job['id']}/images/{n}" for n in range(3)]
        for index, expected in enumerate(call.images):
            response = await svc.client.get(images[index]["url"])
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/jpeg"
            assert response.content == expected
        [submit] = submits(await svc.events(job["id"]))
        assert submit["detail"]["credits_remaining"] == 997.0
        assert submit["detail"]["images"] == 3
        assert done["cost_usd"] is None


# -- the wire ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "size"), list(IMAGE_SIZES.items()))
async def test_every_field_on_the_wire(jobhook: ServiceFactory, fake: FakeSegmind, ratio: str, size: str) -> None:
    magic = ratio in ("1:1", "9:16", "16:9")
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(
            provider="segmind",
            prompt="exact",
            aspect_ratio=ratio,
            rendering_speed="TURBO",
            magic_prompt=magic,
            output_format="png",
            seed=2147483647,
            num_images=1,
        )
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        [call] = fake.creates
        assert call.body == {
            "prompt": "exact",
            "rendering_speed": "TURBO",
            "image_size": size,
            "num_images": 1,
            "enable_prompt_expansion": magic,
            "output_format": "png",
            "seed": 2147483647,
        }


async def test_a_bare_request_sends_only_the_prompt(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="segmind", prompt="defaults apply")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        assert fake.creates[0].body == {"prompt": "defaults apply"}


async def test_what_segmind_cannot_honour_is_refused_and_nothing_is_sent(
    jobhook: ServiceFactory, fake: FakeSegmind
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"submit": False}, "submit"),
        ({"aspect_ratio": "3:2"}, "aspect_ratio"),
        ({"output_format": "webp"}, "output_format"),
        ({"num_images": 9}, "num_images"),
        ({"num_images": 0}, "num_images"),
        ({"style_type": "DESIGN"}, "style_type"),
        ({"negative_prompt": "blur"}, "negative_prompt"),
        ({"reference_image_url": "https://example.com/r.jpg"}, "reference_image_url"),
        ({"seed": -2}, "seed"),
    ]
    async with jobhook(**provider_env(fake)) as svc:
        for extra, field in cases:
            response = await svc.client.post("/v1/jobs", json={"provider": "segmind", "prompt": "no", **extra})
            assert response.status_code == 422, field
            assert response.json()["error"]["field"] == field
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []
        await asyncio.sleep(0.3)
        assert fake.calls == []


# -- refusals, errors and lost answers ---------------------------------------------------------------


@pytest.mark.parametrize("error_format", ["json", "text"])
async def test_not_enough_credits_fails_the_job_without_retry(
    jobhook: ServiceFactory, fake: FakeSegmind, error_format: str
) -> None:
    fake.next_scripts = [RequestScript(outcome="no_credits", error_format=error_format)]  # type: ignore[arg-type]
    async with jobhook(**provider_env(fake)) as svc:
        job_id = await submit_refused(svc, "insufficient_credits", prompt="broke")
        done = await svc.wait_finished(job_id)
        assert done["status"] == "failed"
        assert done["resolved_by"] == "submit"
        assert done["error"]["code"] == "provider_rejected"
        assert done["error"]["provider_code"] == "insufficient_credits"
        assert "Not enough credits" in done["error"]["message"]
        assert done["result"] is None
        await asyncio.sleep(1.0)  # several poll intervals: a retry would have come by now
        assert [call.status for call in fake.creates] == [406]
        assert [e["outcome"] for e in submits(await svc.events(job_id))] == ["rejected"]


async def test_unauthorized_fails_the_job(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    fake.create_responses = [forced_error(401, "Unauthorized")]
    async with jobhook(**provider_env(fake)) as svc:
        job_id = await submit_refused(svc, "unauthorized", prompt="who are you")
        done = await svc.wait_finished(job_id)
        assert done["status"] == "failed"
        assert done["error"]["code"] == "provider_rejected"
        assert done["error"]["provider_code"] == "unauthorized"
        await asyncio.sleep(1.0)
        assert len(fake.creates) == 1


async def test_server_error_is_retried_then_completes(jobhook: ServiceFactory, fake: FakeSegmind) -> None:
    fake.next_scripts = [RequestScript(outcome="server_error"), RequestScript()]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="segmind", prompt="second time lucky")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "submit"
        await asyncio.sleep(0.5)
        assert [call.status for call in fake.creates] == [500, 200]
        assert [e["outcome"] for e in submits(await svc.events(job["id"]))] == ["retry", "accepted"]
        response = await svc.client.get(done["result"]["images"][0]["url"])
        assert response.content == fake.creates[1].images[0]


async def test_a_call_without_answer_fails_as_uncertain_and_is_never_resent(
    jobhook: ServiceFactory, fake: FakeSegmind
) -> None:
    fake.create_responses = ["hang"]
    async with jobhook(**provider_env(fake, JOBHOOK_SYNC_TIMEOUT="0.5")) as svc:
        job = await svc.submit(provider="segmind", prompt="into the void")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "failed"
        assert done["resolved_by"] == "submit"
        assert done["error"]["code"] == "submission_uncertain"
        await asyncio.sleep(1.5)  # well past another timeout and several poll intervals
        assert len(fake.calls) == 1
        assert fake.calls[0].status is None  # the provider did the work; its answer was lost
        [submit] = submits(await svc.events(job["id"]))
        assert submit["outcome"] == "failed"
        assert submit["detail"]["reason"] == "no_answer"


async def test_a_call_still_without_answer_at_the_deadline_ends_uncertain(
    jobhook: ServiceFactory, fake: FakeSegmind
) -> None:
    # JOBHOOK_JOB_TIMEOUT before the call's own timeout: at the deadline it was sent, and no answer is
    # known. The provider may have it and charge for it: never "the provider never accepted" it.
    fake.create_responses = ["hang"]
    async with jobhook(**provider_env(fake, JOBHOOK_SYNC_TIMEOUT="30", JOBHOOK_JOB_TIMEOUT="1.5")) as svc:
        job = await svc.submit(provider="segmind", prompt="longer than the deadline")
        done = await svc.wait_finished(job["id"], timeout=20)
        assert done["status"] == "failed"
        assert done["error"]["code"] == "submission_uncertain", done["error"]
        assert len(fake.creates) == 1


async def test_a_call_longer_than_the_submit_timeout_but_within_the_sync_timeout_completes(
    jobhook: ServiceFactory, fake: FakeSegmind
) -> None:
    # A submission lease of 0.5 + 1 s; the provider takes 4 s, well within the 10 s sync timeout.
    fake.next_scripts = [RequestScript(latency=4.0)]
    env = provider_env(fake, JOBHOOK_SUBMIT_TIMEOUT="0.5", JOBHOOK_SYNC_TIMEOUT="10")
    async with jobhook(**env) as svc:
        slow = await svc.submit(provider="segmind", prompt="slow but fine")
        await eventually(lambda: len(fake.creates) == 1)
        await asyncio.sleep(2.0)  # past the lease, the call still in flight
        # Any other work wakes the queue (here: another job), as it would in a busy service.
        quick = await svc.submit(provider="segmind", prompt="quick")
        assert (await svc.wait_finished(quick["id"]))["status"] == "completed"
        await fake.wait_idle()
        done = await svc.wait_finished(slow["id"])
        assert [call.status for call in fake.creates] == [200, 200]
        assert done["error"] is None, done["error"]
        assert done["status"] == "completed"
        assert done["resolved_by"] == "submit"


# -- the images route --------------------------------------------------------------------------------


async def test_images_route_refuses_what_it_does_not_hold(
    jobhook: ServiceFactory, fake: FakeSegmind, tmp_path: Path
) -> None:
    secret = b"TOP-SECRET-OUTSIDE-THE-MEDIA-DIR"
    (tmp_path / "outside.txt").write_bytes(secret)
    async with jobhook(**provider_env(fake)) as svc:
        media = svc.settings.media_dir
        (media / "outside.txt").parent.mkdir(parents=True, exist_ok=True)
        (media / "outside.txt").write_bytes(secret)
        job = await svc.submit(provider="segmind", prompt="one only")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        base = f"/v1/jobs/{job['id']}/images"
        image = fake.creates[0].images[0]
        assert await raw_get(svc, f"{base}/0") == (200, image)  # the helper reaches what is held
        for index in ("1", "3", "99999", "-1", "٣", "0.jpg"):
            response = await svc.client.get(f"{base}/{index}")
            assert response.status_code == 404, index
            assert response.json()["error"]["code"] == "image_not_found", index
        attempts = [
            f"{base}/..",
            f"{base}/%2e%2e",
            f"{base}/%2E%2E",
            f"{base}/-1",
            f"{base}/99999",
            f"{base}/../../../outside.txt",
            f"{base}/%2e%2e%2f%2e%2e%2f%2e%2e%2foutside.txt",
            f"{base}/..%2f..%2f..%2f..%2foutside.txt",
            f"{base}/%2e%2e%2foutside.txt",
            f"{base}/0%2f..%2f..%2foutside.txt",
            "/v1/jobs/..%2f..%2foutside.txt/images/0",
            f"/v1/jobs/{job['id']}%2f..%2f..%2foutside.txt/images/0",
        ]
        for path in attempts:
            status, body = await raw_get(svc, path)
            assert status == 404, path
            assert secret not in body, path
            assert image not in body, path
        missing = await svc.client.get("/v1/jobs/job_01J0000000000000000000000/images/0")
        assert missing.status_code == 404
