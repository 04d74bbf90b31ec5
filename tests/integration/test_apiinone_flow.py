"""jobhook against a fake apiinone over real HTTP: polling alone, answers that already hold the images."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceFactory, eventually
from tests.fakes.apiinone import SIZES, FakeApiinone, TaskScript, forced_error


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiinone]:
    async with FakeApiinone(complete_after=0.4) as provider:
        yield provider


def provider_env(fake: FakeApiinone, **extra: str) -> dict[str, str]:
    # A public URL is set (the fixture's default) and the grace is long: neither may matter here.
    return {
        "JOBHOOK_APIINONE_API_KEY": "aio_test",
        "JOBHOOK_APIINONE_BASE_URL": fake.base_url,
        "JOBHOOK_CALLBACK_GRACE": "30",
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.0/8",  # the fake serves its images on loopback
        **extra,
    }


def kinds(events: list[dict[str, Any]], type_: str) -> list[str | None]:
    return [event["outcome"] for event in events if event["type"] == type_]


# -- submission and polling --------------------------------------------------------------------------


async def test_no_callback_is_registered_and_polling_starts_at_the_interval(
    jobhook: ServiceFactory, fake: FakeApiinone
) -> None:
    async with jobhook(**provider_env(fake, JOBHOOK_POLL_INTERVAL="0.5", JOBHOOK_POLL_MAX_INTERVAL="0.5")) as svc:
        assert svc.settings.public_url is not None
        job = await svc.submit(
            provider="apiinone",
            prompt='A label reading "FRESH"',
            aspect_ratio="21:9",
            rendering_speed="QUALITY",
            output_format="jpeg",
            metadata={"sku": "x1"},
        )
        assert job["status"] == "submitted"
        assert job["callback_url_registered"] is False
        assert "callback_url" not in job
        [create] = fake.creates
        assert job["provider_task_id"] == create.task_id
        assert create.headers["authorization"] == "Bearer aio_test"
        assert create.body == {
            "model": "ideogram-v4",
            "prompt": 'A label reading "FRESH"',
            "size": "21:9",
            "rendering_speed": "QUALITY",
            "output_format": "jpeg",
        }
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert done["cost_usd"] == 0.12
        assert done["metadata"] == {"sku": "x1"}
        assert done["result"]["images"][0]["url"] == fake.tasks[str(create.task_id)].urls[0]
        assert fake.queries[0].time - create.time >= 0.5  # not before the poll interval
        assert {q.task_id for q in fake.queries} == {create.task_id}
        assert all(q.headers["authorization"] == "Bearer aio_test" for q in fake.queries)
        assert kinds(await svc.events(job["id"]), "poll")[-1] == "completed"


async def test_a_bare_request_sends_only_model_and_prompt(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="defaults")
        assert fake.creates[0].body == {"model": "ideogram-v4", "prompt": "defaults"}
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"


@pytest.mark.parametrize(("wrapped", "wrap_query"), [(False, None), (True, None), (True, False), (False, True)])
async def test_wrapped_and_unwrapped_answers(
    jobhook: ServiceFactory, fake: FakeApiinone, wrapped: bool, wrap_query: bool | None
) -> None:
    fake.next_scripts = [TaskScript(wrapped=wrapped, wrap_query=wrap_query)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="in a box or not")
        [create] = fake.creates
        assert ("data" in create.answer) is wrapped
        assert job["provider_task_id"] == create.task_id
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        answered = [q.answer for q in fake.queries if q.status == 200]
        assert ("data" in answered[-1]) is (wrapped if wrap_query is None else wrap_query)
        assert done["result"]["images"][0]["url"] == fake.tasks[str(create.task_id)].urls[0]


DIRECT_VARIANTS = [
    ("urls", True),
    ("urls", False),
    ("images", True),
    ("images", False),
    ("output.urls", True),
    ("output.urls", False),
    ("data[].url", False),
]


async def test_an_answer_holding_the_images_completes_the_job_at_once(
    jobhook: ServiceFactory, fake: FakeApiinone
) -> None:
    fake.next_scripts = [TaskScript(direct=d, direct_task_id=t) for d, t in DIRECT_VARIANTS]  # type: ignore[arg-type]
    async with jobhook(**provider_env(fake)) as svc:
        jobs = []
        for index, (direct, with_task_id) in enumerate(DIRECT_VARIANTS):
            job = await svc.submit(provider="apiinone", prompt=f"direct {direct}")
            create = fake.creates[index]
            variant = (direct, with_task_id)
            assert job["status"] == "completed", variant
            assert job["resolved_by"] == "submit", variant
            assert job["cost_usd"] == 0.12, variant
            assert job["finished_at"] is not None, variant
            assert [image["url"] for image in job["result"]["images"]] == fake.tasks[str(create.task_id)].urls, variant
            expected_task = create.task_id if with_task_id and direct != "data[].url" else None
            assert job["provider_task_id"] == expected_task, variant
            jobs.append(job)
        await asyncio.sleep(0.6)  # three poll intervals past the last: a poll would have come by now
        assert fake.queries == []
        for job in jobs:
            events = await svc.events(job["id"])
            assert kinds(events, "poll") == []
            assert kinds(events, "status") == ["submitted", "completed"]
            assert (await svc.job(job["id"]))["status"] == "completed"


async def test_status_synonyms(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    completed_words = ["completed", "succeeded", "success"]
    failed_words = ["failed", "error", "canceled"]
    fake.next_scripts = [TaskScript(completed_word=w) for w in completed_words] + [  # type: ignore[arg-type]
        TaskScript(outcome="failed", failed_word=w)  # type: ignore[arg-type]
        for w in failed_words
    ]
    async with jobhook(**provider_env(fake)) as svc:
        jobs = [await svc.submit(provider="apiinone", prompt=w) for w in completed_words + failed_words]
        for job, word in zip(jobs, completed_words + failed_words, strict=True):
            done = await svc.wait_finished(job["id"])
            answers = [q.answer for q in fake.queries if q.task_id == job["provider_task_id"] and q.answer]
            assert answers[-1]["status"] == word
            assert done["resolved_by"] == "poll", word
            if word in completed_words:
                assert done["status"] == "completed", word
                assert done["cost_usd"] == 0.12, word
                assert done["error"] is None, word
            else:
                assert done["status"] == "failed", word
                assert done["error"] == {
                    "code": "provider_failed",
                    "message": "Image generation failed",
                    "provider_code": "upstream_error",
                }, word
                assert done["cost_usd"] is None, word
                assert done["result"] is None, word


async def test_rate_limited_poll_waits_out_retry_after(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    fake.query_responses = [forced_error(429, "rate_limit_exceeded", "Slow down", headers={"Retry-After": "1"})]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="not so fast")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        limited, following = fake.queries[0], fake.queries[1]
        assert limited.status == 429
        assert following.time - limited.time >= 1.0  # Retry-After honoured
        polls = [e for e in await svc.events(job["id"]) if e["type"] == "poll"]
        assert polls[0]["outcome"] == "rate_limited"
        assert polls[0]["detail"]["provider_code"] == "rate_limit_exceeded"


async def test_retry_after_counts_from_a_slow_answer_not_from_the_request(
    jobhook: ServiceFactory, fake: FakeApiinone
) -> None:
    """A 429 that takes 0.6 s to arrive says "1 s from now": the next poll comes 1 s after the answer."""
    slow = dataclasses.replace(
        forced_error(429, "rate_limit_exceeded", "Slow down", headers={"Retry-After": "1"}), delay=0.6
    )
    fake.query_responses = [slow]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="slowly refused")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        limited, following = fake.queries[0], fake.queries[1]
        assert limited.status == 429
        assert following.time - limited.time >= 1.6  # 0.6 s to answer, then the 1 s it asked for


async def test_rate_limited_submission_is_queued_then_retried(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    fake.create_responses = [forced_error(429, "rate_limit_exceeded", headers={"Retry-After": "1"})]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="queue me")
        assert job["status"] == "queued"
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert [c.status for c in fake.creates] == [429, 200]
        assert fake.creates[1].time - fake.creates[0].time >= 1.0


async def test_provider_refusal_answers_502(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    fake.create_responses = [forced_error(402, "insufficient_credits", "Top up your balance")]
    async with jobhook(**provider_env(fake)) as svc:
        response = await svc.client.post("/v1/jobs", json={"provider": "apiinone", "prompt": "no money"})
        assert response.status_code == 502
        error = response.json()["error"]
        assert (error["code"], error["provider_code"]) == ("provider_rejected", "insufficient_credits")
        assert (await svc.job(error["job_id"]))["status"] == "failed"
        assert len(fake.creates) == 1


# -- what apiinone accepts ---------------------------------------------------------------------------


async def test_all_nine_aspect_ratios_are_accepted(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    assert len(SIZES) == 9
    async with jobhook(**provider_env(fake)) as svc:
        jobs = [await svc.submit(provider="apiinone", prompt=f"ratio {ratio}", aspect_ratio=ratio) for ratio in SIZES]
        assert [create.body["size"] for create in fake.creates] == list(SIZES)
        assert [create.status for create in fake.creates] == [200] * 9
        for job in jobs:
            assert (await svc.wait_finished(job["id"]))["status"] == "completed"


async def test_an_unknown_aspect_ratio_is_refused_listing_the_nine(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        response = await svc.client.post(
            "/v1/jobs", json={"provider": "apiinone", "prompt": "x", "aspect_ratio": "5:4"}
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "aspect_ratio"
        assert sorted(error["accepted"]) == sorted(SIZES)
        for ratio in SIZES:
            assert ratio in error["message"]
        await asyncio.sleep(0.3)
        assert fake.creates == []


async def test_what_apiinone_cannot_honour_is_refused(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seed": 1}, "seed"),
        ({"negative_prompt": "x"}, "negative_prompt"),
        ({"style_type": "AUTO"}, "style_type"),
        ({"magic_prompt": True}, "magic_prompt"),
        ({"num_images": 2}, "num_images"),
        ({"reference_image_url": "https://example.com/r.png"}, "reference_image_url"),
        ({"output_format": "gif"}, "output_format"),
    ]
    async with jobhook(**provider_env(fake)) as svc:
        for extra, field in cases:
            response = await svc.client.post("/v1/jobs", json={"provider": "apiinone", "prompt": "x", **extra})
            assert response.status_code == 422, field
            assert response.json()["error"]["field"] == field
        assert fake.creates == []
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []


async def test_webp_is_accepted_and_its_image_mirrored(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="small and sharp", output_format="webp")
        [create] = fake.creates
        assert create.body["output_format"] == "webp"
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["result"]["images"][0]["url"].endswith(".webp")

        async def mirrored() -> dict[str, Any] | None:
            image = (await svc.job(job["id"]))["result"]["images"][0]
            return image if "mirror_url" in image else None

        image = await eventually(mirrored)
        assert image["content_type"] == "image/webp"
        response = await svc.client.get(image["mirror_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WEBP"


# -- the backend's own submissions -------------------------------------------------------------------


async def test_backend_submitted_job_bound_by_patch_then_polled(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="the backend sends it", submit=False)
        assert job["status"] == "queued"
        assert job["callback_url_registered"] is False
        assert job["provider_task_id"] is None
        await asyncio.sleep(0.3)
        assert fake.creates == []
        async with httpx.AsyncClient(base_url=fake.base_url) as backend:
            created = await backend.post(
                "/api/v1/images/generations",
                json={"model": "ideogram-v4", "prompt": "the backend sends it"},
                headers={"Authorization": "Bearer aio_backend"},
            )
        assert created.status_code == 200
        task_id = created.json()["task_id"]
        response = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": task_id})
        assert response.status_code == 200
        assert response.json()["status"] == "submitted"
        assert response.json()["provider_task_id"] == task_id
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert done["cost_usd"] == 0.12
        assert len(fake.creates) == 1  # the backend's, not jobhook's
        assert fake.creates[0].headers["authorization"] == "Bearer aio_backend"
        assert {q.task_id for q in fake.queries} == {task_id}
        assert all(q.headers["authorization"] == "Bearer aio_test" for q in fake.queries)
        other = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": "another"})
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "task_id_conflict"


async def test_backend_submitted_job_is_offered_no_callback_url(jobhook: ServiceFactory, fake: FakeApiinone) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="apiinone", prompt="polling only", submit=False)
        assert job["callback_url_registered"] is False
        assert job.get("callback_url") is None
