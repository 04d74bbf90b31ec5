"""jobhook against a fake apiframe over real HTTP: tiers on the wire, webhooks confirmed by a poll, polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.apiframe import FakeApiframe, JobScript, forced_error

PROMPT = 'A poster reading "SUMMER NIGHTS"'


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiframe]:
    async with FakeApiframe(complete_after=0.3) as provider:
        yield provider


def provider_env(fake: FakeApiframe, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.0/8",  # the fake serves its images on loopback
        **extra,
    }


# A long grace: any query the fake sees before it is the one that confirms a webhook's claim.
WEBHOOK_ENV = {"JOBHOOK_CALLBACK_GRACE": "30"}


def kinds(events: list[dict[str, Any]], type_: str) -> list[str | None]:
    return [event["outcome"] for event in events if event["type"] == type_]


def types(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(event["type"], event["outcome"]) for event in events]


async def callback_url(svc: Service, job_id: str) -> str:
    job = await svc.runtime.store.get_job(job_id)
    assert job is not None
    url = svc.runtime.engine.callback_url(job)
    assert url is not None
    return url


async def status_is(svc: Service, job_id: str, status: str) -> dict[str, Any] | None:
    job = await svc.job(job_id)
    return job if job["status"] == status else None


def assert_confirmed_by_one_poll(events: list[dict[str, Any]], final: str) -> None:
    """The webhook was taken, then one confirming poll saw `final`, and only then the job moved."""
    seen = types(events)
    accepted = seen.index(("callback", "accepted"))
    confirm = seen.index(("poll", final))
    finished = seen.index(("status", final))
    assert accepted < confirm < finished
    assert events[accepted]["detail"]["effect"] == "confirming"
    assert events[confirm]["detail"]["confirming"] is True
    assert events[confirm]["detail"]["effect"] == "applied"
    assert events[finished]["detail"]["by"] == "callback"


# -- the wire ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "model", "speed", "magic", "option", "cost"),
    [
        ("TURBO", "ideogram-v4-turbo", "turbo", True, "On", 0.03),
        ("BALANCED", "ideogram-v4-balanced", "default", False, "Off", 0.06),
        ("QUALITY", "ideogram-v4-quality", "quality", True, "On", 0.10),
        (None, "ideogram-v4-balanced", None, False, "Off", 0.06),
    ],
)
async def test_each_tier_on_the_wire_and_its_cost(
    jobhook: ServiceFactory,
    fake: FakeApiframe,
    tier: str | None,
    model: str,
    speed: str | None,
    magic: bool,
    option: str,
    cost: float,
) -> None:
    request: dict[str, Any] = {
        "prompt": PROMPT,
        "aspect_ratio": "16:9",
        "style_type": "DESIGN",
        "magic_prompt": magic,
        "reference_image_url": "https://example.com/ref.jpg",
        "negative_prompt": "blurry text",
        "seed": 42,
    }
    if tier is not None:
        request["rendering_speed"] = tier
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", metadata={"order": 7}, **request)
        assert job["status"] == "submitted"
        assert job["callback_url_registered"] is True
        [create] = fake.creates
        assert job["provider_task_id"] == create.job_id
        assert create.headers["x-api-key"] == "afk_test"
        params: dict[str, Any] = {
            "style_type": "DESIGN",
            "magic_prompt_option": option,
            "image": "https://example.com/ref.jpg",
            "negative_prompt": "blurry text",
            "seed": 42,
            "aspect_ratio": "16:9",
        }
        if speed is not None:
            params["rendering_speed"] = speed
        expected_hook = await callback_url(svc, job["id"])
        assert expected_hook.startswith(f"{svc.url}/callbacks/")
        assert create.body == {"prompt": PROMPT, "model": model, "webhook_url": expected_hook, "ideogramParams": params}
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["cost_usd"] == cost
        assert done["metadata"] == {"order": 7}
        assert done["result"]["images"][0]["url"] == fake.jobs[str(create.job_id)].urls[0]


async def test_a_bare_request_sends_only_prompt_model_and_webhook(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="just words")
        [create] = fake.creates
        assert create.body == {
            "prompt": "just words",
            "model": "ideogram-v4-balanced",
            "webhook_url": await callback_url(svc, job["id"]),
        }
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] == 0.06


async def test_without_public_url_no_webhook_is_registered_and_polling_finishes(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    env = provider_env(fake, JOBHOOK_PUBLIC_URL="<unset>", JOBHOOK_CALLBACK_GRACE="30")
    async with jobhook(**env) as svc:
        job = await svc.submit(provider="apiframe", prompt="nobody to call", rendering_speed="TURBO")
        assert job["callback_url_registered"] is False
        [create] = fake.creates
        assert "webhook_url" not in create.body
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert done["cost_usd"] == 0.03
        assert fake.deliveries == []


async def test_output_format_is_refused_and_nothing_is_sent(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        response = await svc.client.post(
            "/v1/jobs", json={"provider": "apiframe", "prompt": "as png please", "output_format": "png"}
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "output_format"
        assert error["code"] == "unsupported_field"
        listed = await svc.client.get("/v1/jobs")
        assert listed.json()["jobs"] == []
        await asyncio.sleep(0.3)
        assert fake.creates == []


# -- webhooks ----------------------------------------------------------------------------------------


async def test_webhook_is_accepted_and_applied_only_after_a_confirming_poll(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="confirmed", rendering_speed="QUALITY")
        task_id = job["provider_task_id"]
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["cost_usd"] == 0.10
        await fake.wait_idle()
        [delivery] = fake.deliveries_for(task_id)
        assert (delivery.status, delivery.answer) == (200, {"status": "accepted"})
        assert delivery.body["status"] == "COMPLETED"
        # The grace is 30 s: the one query there is came from the webhook, after it, and was answered.
        [query] = fake.queries
        assert query.job_id == task_id
        assert query.time > delivery.time
        assert query.status == 200
        assert query.headers["x-api-key"] == "afk_test"
        events = await svc.events(job["id"])
        assert_confirmed_by_one_poll(events, "completed")
        assert kinds(events, "status") == ["submitted", "completed"]


async def test_duplicate_webhooks_are_answered_duplicate_and_applied_once(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    fake.next_scripts = [JobScript(duplicates=2)]
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="again and again")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        await fake.wait_idle()
        answers = [d.answer for d in fake.deliveries_for(job["provider_task_id"])]
        assert answers == [{"status": "accepted"}, {"status": "duplicate"}, {"status": "duplicate"}]
        events = await svc.events(job["id"])
        assert kinds(events, "callback") == ["accepted", "duplicate", "duplicate"]
        assert kinds(events, "status") == ["submitted", "completed"]
        assert len(fake.queries) == 1  # one claim, one confirming poll


async def test_concurrent_duplicate_webhooks_apply_once(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    fake.next_scripts = [JobScript(concurrent_duplicates=8)]
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="a crowd of the same")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        await fake.wait_idle()
        deliveries = fake.deliveries_for(job["provider_task_id"])
        assert len(deliveries) == 8
        assert sorted(d.answer["status"] for d in deliveries) == ["accepted"] + ["duplicate"] * 7
        events = await svc.events(job["id"])
        assert kinds(events, "status") == ["submitted", "completed"]
        assert len(fake.queries) == 1


async def test_webhook_naming_another_job_is_refused_with_409(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    fake.default_script = JobScript(outcome="never")
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        mine = await svc.submit(provider="apiframe", prompt="mine")
        other = await svc.submit(provider="apiframe", prompt="someone else's")
        fake.complete(other["provider_task_id"])
        await fake.wait_idle()
        # The other job's genuine (completed) job object, delivered to my job's webhook URL.
        my_url = fake.jobs[mine["provider_task_id"]].webhook_url
        assert my_url == await callback_url(svc, mine["id"])
        status, answer = await fake.deliver(other["provider_task_id"], url=my_url)
        assert status == 409
        assert answer["error"]["code"] == "task_id_conflict"
        # My own job object with the other job's id in it: refused the same way.
        status, answer = await fake.deliver(
            mine["provider_task_id"], body_overrides={"jobId": other["provider_task_id"]}
        )
        assert status == 409
        assert answer["error"]["code"] == "task_id_conflict"
        await asyncio.sleep(0.5)
        after = await svc.job(mine["id"])
        assert after["status"] == "submitted"
        assert after["provider_task_id"] == mine["provider_task_id"]
        assert after["result"] is None
        events = await svc.events(mine["id"])
        refused = [e["detail"]["code"] for e in events if e["outcome"] == "refused"]
        assert refused == ["task_id_conflict", "task_id_conflict"]
        assert kinds(events, "callback") == ["refused", "refused"]
        # Nothing was confirmed about my job: the only queries are none at all (grace 30 s).
        assert [q for q in fake.queries if q.job_id == mine["provider_task_id"]] == []


async def test_a_claim_the_poll_contradicts_is_not_applied(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    fake.next_scripts = [JobScript(outcome="never", complete_after=0.2)]
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="not yet")
        task_id = job["provider_task_id"]
        await eventually(lambda: fake.jobs[task_id].status == "PROCESSING")
        claim = {"status": "COMPLETED", "result": {"urls": [f"{fake.base_url}/files/{task_id}.png"]}}
        status, answer = await fake.deliver(task_id, body_overrides=claim)
        assert (status, answer) == (200, {"status": "accepted"})
        await eventually(lambda: any(q.status == 200 for q in fake.queries))
        events = await eventually(
            lambda: _with_event(svc, job["id"], ("poll", "processing")),
        )
        confirm = next(e for e in events if (e["type"], e["outcome"]) == ("poll", "processing"))
        assert confirm["detail"]["confirming"] is True
        current = await svc.job(job["id"])
        assert current["status"] == "processing"  # what the poll saw, not what the webhook claimed
        assert current["result"] is None
        assert current["finished_at"] is None
        # Only the real completion finishes it.
        fake.complete(task_id)
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["result"]["images"][0]["url"] == fake.jobs[task_id].urls[0]
        assert kinds(await svc.events(job["id"]), "status") == ["submitted", "processing", "completed"]


async def test_the_genuine_webhook_after_a_refuted_claim_is_confirmed(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    fake.next_scripts = [JobScript(outcome="never", complete_after=0.2)]
    # Polls far apart: only a confirming poll can finish the job within the test's wait.
    env = provider_env(fake, JOBHOOK_CALLBACK_GRACE="30", JOBHOOK_POLL_INTERVAL="20", JOBHOOK_POLL_MAX_INTERVAL="30")
    async with jobhook(**env) as svc:
        job = await svc.submit(provider="apiframe", prompt="premature")
        task_id = job["provider_task_id"]
        await eventually(lambda: fake.jobs[task_id].status == "PROCESSING")
        claim = {"status": "COMPLETED", "result": {"urls": [f"{fake.base_url}/files/{task_id}.png"]}}
        assert await fake.deliver(task_id, body_overrides=claim) == (200, {"status": "accepted"})
        await eventually(lambda: _with_event(svc, job["id"], ("poll", "processing")))
        fake.complete(task_id)  # now the real webhook goes out
        await fake.wait_idle()
        done = await svc.wait_finished(job["id"], timeout=3)
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"


async def _with_event(svc: Service, job_id: str, wanted: tuple[str, str]) -> list[dict[str, Any]] | None:
    events = await svc.events(job_id)
    return events if wanted in types(events) else None


async def test_dropped_webhook_is_caught_by_polling_after_the_grace(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    fake.next_scripts = [JobScript(drop_webhook=True)]
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="1")) as svc:
        job = await svc.submit(provider="apiframe", prompt="silence", rendering_speed="TURBO")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert done["cost_usd"] == 0.03
        assert fake.deliveries == []
        first_query = min(q.time for q in fake.queries)
        assert first_query - fake.creates[0].time >= 1.0  # never before the grace
        assert kinds(await svc.events(job["id"]), "poll")[-1] == "completed"


# -- what the job object carries ---------------------------------------------------------------------


async def test_every_result_shape_completes_the_job(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    shapes = ["urls", "list", "string", "images", "images_objects"]
    urls = ["https://cdn.example.com/a/1.png", "https://cdn.example.com/a/2.png"]
    fake.next_scripts = [JobScript(result_shape=shape, urls=urls) for shape in shapes]  # type: ignore[arg-type]
    env = provider_env(fake, JOBHOOK_MIRROR_IMAGES="false", **WEBHOOK_ENV)
    async with jobhook(**env) as svc:
        jobs = [await svc.submit(provider="apiframe", prompt=f"shape {shape}") for shape in shapes]
        for job, shape in zip(jobs, shapes, strict=True):
            done = await svc.wait_finished(job["id"])
            assert done["status"] == "completed", shape
            assert done["resolved_by"] == "callback", shape
            # The job asked for one image (num_images unset): it keeps the first, and notes the rest.
            assert [image["url"] for image in done["result"]["images"]] == urls[:1], shape
            offered = 1 if shape == "string" else len(urls)
            noted = [e["detail"]["offered"] for e in await svc.events(job["id"]) if e["type"] == "images"]
            assert noted == ([offered] if offered > 1 else []), shape
        await fake.wait_idle()
        assert {d.answer["status"] for d in fake.deliveries} == {"accepted"}


@pytest.mark.parametrize(
    ("error_shape", "expected"),
    [
        (
            "object",
            {"code": "provider_failed", "message": "Image generation failed", "provider_code": "upstream_error"},
        ),
        ("string", {"code": "provider_failed", "message": "Image generation failed"}),
    ],
)
async def test_both_failure_shapes_fail_the_job(
    jobhook: ServiceFactory, fake: FakeApiframe, error_shape: str, expected: dict[str, str]
) -> None:
    fake.next_scripts = [JobScript(outcome="failed", error_shape=error_shape)]  # type: ignore[arg-type]
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="doomed")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "failed"
        assert done["resolved_by"] == "callback"
        assert done["error"] == expected
        assert done["cost_usd"] is None
        assert done["result"] is None
        await fake.wait_idle()
        [delivery] = fake.deliveries_for(job["provider_task_id"])
        assert delivery.answer == {"status": "accepted"}
        assert_confirmed_by_one_poll(await svc.events(job["id"]), "failed")


async def test_a_failure_with_its_own_code_and_message(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    fake.default_script = JobScript(outcome="never")
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="unsafe")
        fake.fail(job["provider_task_id"], {"code": "content_policy", "message": "Prompt rejected by the filter"})
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "failed"
        assert done["error"] == {
            "code": "provider_failed",
            "message": "Prompt rejected by the filter",
            "provider_code": "content_policy",
        }


# -- submission outcomes -----------------------------------------------------------------------------


async def test_provider_refusal_answers_502_and_fails_the_job(jobhook: ServiceFactory, fake: FakeApiframe) -> None:
    fake.create_responses = [forced_error(402, "insufficient_credits", "Balance too low")]
    async with jobhook(**provider_env(fake)) as svc:
        response = await svc.client.post("/v1/jobs", json={"provider": "apiframe", "prompt": "no money"})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "provider_rejected"
        assert error["provider_code"] == "insufficient_credits"
        assert "Balance too low" in error["message"]
        job = await svc.job(error["job_id"])
        assert job["status"] == "failed"
        assert job["resolved_by"] == "submit"
        assert job["error"]["provider_code"] == "insufficient_credits"
        await asyncio.sleep(0.5)
        assert len(fake.creates) == 1


async def test_rate_limited_submission_waits_out_retry_after_then_is_accepted(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    fake.create_responses = [forced_error(429, "rate_limit_exceeded", headers={"Retry-After": "1"})]
    async with jobhook(**provider_env(fake, **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="patience")
        assert job["status"] == "queued"
        assert job["provider_task_id"] is None
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert len(fake.creates) == 2
        assert fake.creates[0].status == 429
        assert fake.creates[1].status == 202
        assert done["provider_task_id"] == fake.creates[1].job_id
        assert fake.creates[1].time - fake.creates[0].time >= 1.0  # Retry-After honoured
        submits = [e for e in await svc.events(job["id"]) if e["type"] == "submit"]
        assert [e["outcome"] for e in submits] == ["retry", "accepted"]
        assert submits[0]["detail"]["provider_code"] == "rate_limit_exceeded"


async def test_uncertain_submission_is_never_resent_and_the_webhook_binds_it(
    jobhook: ServiceFactory, fake: FakeApiframe
) -> None:
    fake.create_responses = ["hang"]
    fake.next_scripts = [JobScript(complete_after=1.5)]  # the webhook comes after the verdict
    async with jobhook(**provider_env(fake, JOBHOOK_SUBMIT_TIMEOUT="0.5", **WEBHOOK_ENV)) as svc:
        job = await svc.submit(provider="apiframe", prompt="did it arrive?")
        assert job["status"] == "submitted"
        assert job["provider_task_id"] is None
        submits = [e for e in await svc.events(job["id"]) if e["type"] == "submit"]
        assert [e["outcome"] for e in submits] == ["uncertain"]
        [create] = fake.creates
        assert create.status is None  # never answered
        assert create.job_id is not None  # but the provider did create the job
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["provider_task_id"] == create.job_id
        await fake.wait_idle()
        assert [d.answer for d in fake.deliveries] == [{"status": "accepted"}]
        assert len(fake.creates) == 1
        events = await svc.events(job["id"])
        assert ("bound", None) in types(events)
        assert_confirmed_by_one_poll(events, "completed")
