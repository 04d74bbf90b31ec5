"""jobhook against a fake aivideoapi over real HTTP: submission, callbacks, polling, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.3, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


def provider_env(fake: FakeAivideoapi, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.0/8",  # the fake serves its images on loopback
        **extra,
    }


def kinds(events: list[dict[str, Any]], type_: str) -> list[str | None]:
    return [event["outcome"] for event in events if event["type"] == type_]


async def test_job_completes_by_callback_and_wire_is_exact(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(
            provider="aivideoapi",
            prompt='A poster reading "SUMMER NIGHTS"',
            aspect_ratio="16:9",
            rendering_speed="TURBO",
            output_format="png",
            metadata={"order": 1234},
        )
        assert job["status"] == "submitted"
        assert job["provider_task_id"]
        assert job["callback_url_registered"] is True
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["result"]["images"][0]["url"].startswith(fake.base_url)
        assert done["metadata"] == {"order": 1234}
        assert done["cost_usd"] == 0.08
        assert done["finished_at"] is not None
        [create] = fake.creates
        assert create.headers["authorization"] == "Bearer sk-test"
        assert create.body == {
            "model": "ideogram-v4",
            "callback_url": create.body["callback_url"],
            "input": {
                "prompt": 'A poster reading "SUMMER NIGHTS"',
                "size": "16:9",
                "rendering_speed": "TURBO",
                "output_format": "png",
            },
        }
        assert create.body["callback_url"].startswith(f"{svc.url}/callbacks/")
        events = await svc.events(job["id"])
        assert kinds(events, "callback") == ["accepted"]
        assert kinds(events, "status") == ["submitted", "completed"]


async def test_duplicates_change_the_job_once(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(duplicates=2)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="twice and thrice")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        await fake.wait_idle()
        answers = [d.answer for d in fake.deliveries_for(job["provider_task_id"])]
        assert answers == [{"status": "accepted"}, {"status": "duplicate"}, {"status": "duplicate"}]
        events = await svc.events(job["id"])
        assert kinds(events, "callback") == ["accepted", "duplicate", "duplicate"]
        assert kinds(events, "status") == ["submitted", "completed"]


async def test_concurrent_duplicates_apply_once(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(concurrent_duplicates=12)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="a storm of the same event")
        await svc.wait_finished(job["id"])
        await fake.wait_idle()
        deliveries = fake.deliveries_for(job["provider_task_id"])
        assert len(deliveries) == 12
        assert all(d.status == 200 for d in deliveries)
        assert sorted(d.answer["status"] for d in deliveries) == ["accepted"] + ["duplicate"] * 11
        events = await svc.events(job["id"])
        assert kinds(events, "status").count("completed") == 1


async def test_dropped_callback_is_caught_by_polling_after_the_grace(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.next_scripts = [TaskScript(drop_callback=True)]
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="1")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="nobody calls back")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert fake.deliveries_for(job["provider_task_id"]) == []
        first_query = min(q.time for q in fake.queries)
        assert first_query - fake.creates[0].time >= 1.0  # never before the grace
        assert kinds(await svc.events(job["id"]), "poll")[-1] == "completed"


async def test_without_public_url_jobs_are_polled_from_the_poll_interval(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    async with jobhook(**provider_env(fake, JOBHOOK_PUBLIC_URL="<unset>", JOBHOOK_CALLBACK_GRACE="30")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="polling alone")
        assert job["callback_url_registered"] is False
        assert "callback_url" not in fake.creates[0].body
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        assert fake.deliveries == []


@pytest.mark.parametrize("offset", [-3600, 3600])
async def test_stale_and_future_timestamps_are_refused(
    jobhook: ServiceFactory, fake: FakeAivideoapi, offset: int
) -> None:
    fake.next_scripts = [TaskScript(timestamp_offset=offset)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="from another time")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"
        await fake.wait_idle()
        deliveries = fake.deliveries_for(job["provider_task_id"])
        assert len(deliveries) == 3  # the provider retried each refusal
        assert {d.status for d in deliveries} == {400}
        assert {d.answer["error"]["code"] for d in deliveries} == {"stale_timestamp"}
        refused = [e for e in await svc.events(job["id"]) if e["outcome"] == "refused"]
        assert len(refused) == 3
        assert refused[0]["detail"]["code"] == "stale_timestamp"


async def test_failed_task_fails_the_job(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(outcome="failed")]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="doomed")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "failed"
        assert done["resolved_by"] == "callback"
        assert done["error"]["code"] == "provider_failed"
        assert done["error"]["provider_code"] == "upstream_error"
        assert done["cost_usd"] is None


async def test_header_checks_refuse_with_their_codes(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.default_script = TaskScript(outcome="never")
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="checked")
        other = await svc.submit(provider="aivideoapi", prompt="another")
        task_id = job["provider_task_id"]
        fake.complete(task_id)
        await fake.wait_idle()
        # Each tampering of an otherwise genuine delivery, and the code it must earn.
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"header_overrides": {"X-Task-Id": None}}, 400, "missing_task_id"),
            ({"header_overrides": {"X-Task-Id": "someone-else"}}, 400, "task_id_mismatch"),
            ({"header_overrides": {"X-Timestamp": None}}, 400, "stale_timestamp"),
            ({"header_overrides": {"X-Timestamp": "soon"}}, 400, "stale_timestamp"),
            ({"header_overrides": {"X-Event": "task.failed"}}, 400, "event_mismatch"),
            ({"header_overrides": {"X-Event": None}}, 400, "event_mismatch"),
        ]
        for overrides, status, code in cases:
            answer_status, answer = await fake.deliver(task_id, **overrides)
            assert (answer_status, answer["error"]["code"]) == (status, code), overrides
        # The genuine delivery of job 1's task to job 2's URL: the task id belongs to another job.
        other_url = svc.runtime.engine.callback_url(await svc.runtime.store.get_job(other["id"]))  # type: ignore[arg-type]
        assert other_url is not None
        async with httpx.AsyncClient() as client:
            body = fake.tasks[task_id].to_dict()
            headers = {"X-Task-Id": task_id, "X-Event": "task.completed", "X-Timestamp": str(int(time.time()))}
            response = await client.post(other_url, json=body, headers=headers)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "task_id_conflict"
        assert (await svc.job(other["id"]))["status"] in ("submitted", "processing")  # not completed


async def test_forged_and_oversized_and_malformed_deliveries(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.default_script = TaskScript(outcome="never")
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="guarded")
        url = svc.runtime.engine.callback_url(await svc.runtime.store.get_job(job["id"]))  # type: ignore[arg-type]
        assert url is not None
        token = url.rsplit("/", 1)[1]
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        for bad in ("not-a-token", tampered, "x" * 2000):
            response = await svc.client.post(f"/callbacks/{bad}", json={"id": "t", "status": "completed"})
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
            assert job["id"] not in response.text
        too_big = b'{"pad": "' + b"x" * (256 * 1024) + b'"}'
        response = await svc.client.post(url, content=too_big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        for raw in (b"not json", b"[1, 2]", b"\xff\xfe"):
            response = await svc.client.post(url, content=raw)
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_json"
        refused = [e["detail"]["code"] for e in await svc.events(job["id"]) if e["outcome"] == "refused"]
        assert refused == ["payload_too_large", "invalid_json", "invalid_json", "invalid_json"]
        log = await svc.runtime.store.refused_log()
        assert [entry["code"] for entry in log] == ["invalid_token"] * 3


async def test_status_never_moves_backwards_and_conflicts_are_recorded(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="settled")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        await fake.wait_idle()
        task_id = job["provider_task_id"]
        status, answer = await fake.deliver(
            task_id,
            header_overrides={"X-Event": "task.failed"},
            body_overrides={"status": "failed", "error": {"code": "upstream_error", "message": "late"}},
        )
        assert (status, answer) == (200, {"status": "accepted"})
        after = await svc.job(job["id"])
        assert after["status"] == "completed"
        assert after["error"] is None
        events = await svc.events(job["id"])
        assert [e["detail"]["reported"] for e in events if e["type"] == "conflict"] == ["failed"]


async def test_provider_refusal_answers_502_and_fails_the_job(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.create_responses = [ForcedResponse.error(402, "insufficient_credits", "Balance too low")]
    async with jobhook(**provider_env(fake)) as svc:
        response = await svc.client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "no money"})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "provider_rejected"
        assert error["provider_code"] == "insufficient_credits"
        assert "Balance too low" in error["message"]
        job = await svc.job(error["job_id"])
        assert job["status"] == "failed"
        assert job["resolved_by"] == "submit"
        assert len(fake.creates) == 1


@pytest.mark.parametrize(
    "forced",
    [
        ForcedResponse.error(429, "rate_limit_exceeded", headers={"Retry-After": "1"}),
        ForcedResponse.error(500, "internal_error"),
        ForcedResponse.error(503, "upstream_error"),
    ],
)
async def test_briefly_unable_provider_leaves_job_queued_then_retries(
    jobhook: ServiceFactory, fake: FakeAivideoapi, forced: ForcedResponse
) -> None:
    fake.create_responses = [forced]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="try again")
        assert job["status"] == "queued"
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert len(fake.creates) == 2
        retry = [e for e in await svc.events(job["id"]) if e["type"] == "submit"]
        assert [e["outcome"] for e in retry] == ["retry", "accepted"]
        if forced.status == 429:
            assert fake.creates[1].time - fake.creates[0].time >= 1.0  # Retry-After honoured


async def test_connection_refused_leaves_job_queued(jobhook: ServiceFactory, tmp_path: Any) -> None:
    from tests.fakes.server import free_socket

    closed = free_socket()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    env = {"JOBHOOK_AIVIDEOAPI_API_KEY": "sk-x", "JOBHOOK_AIVIDEOAPI_BASE_URL": f"http://127.0.0.1:{port}"}
    async with jobhook(**env) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="nobody home")
        assert job["status"] == "queued"
        submits = [e for e in await svc.events(job["id"]) if e["type"] == "submit"]
        assert submits[0]["outcome"] == "retry"
        assert submits[0]["detail"]["reason"] == "not_sent"


async def test_uncertain_submission_is_never_resent_and_a_callback_binds_it(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.create_responses = ["hang"]
    fake.next_scripts = [TaskScript(complete_after=1.5)]  # the callback comes after the verdict
    async with jobhook(**provider_env(fake, JOBHOOK_SUBMIT_TIMEOUT="0.5")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="did it arrive?")
        assert job["status"] == "submitted"
        assert job["provider_task_id"] is None
        submits = [e for e in await svc.events(job["id"]) if e["type"] == "submit"]
        assert submits[0]["outcome"] == "uncertain"
        # The provider did create the task, and its callback carries our token: that binds the job.
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["provider_task_id"] == next(iter(fake.tasks))
        assert len(fake.creates) == 1


async def test_uncertain_submission_without_callback_fails_at_the_deadline(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.create_responses = ["hang"]
    fake.next_scripts = [TaskScript(drop_callback=True)]
    env = provider_env(fake, JOBHOOK_SUBMIT_TIMEOUT="0.3", JOBHOOK_JOB_TIMEOUT="1.5")
    async with jobhook(**env) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="lost in transit")
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "submission_uncertain"
        assert len(fake.creates) == 1
        assert fake.queries == []


async def test_timed_out_job_still_completes_later(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(outcome="never")]
    async with jobhook(**provider_env(fake, JOBHOOK_JOB_TIMEOUT="1")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="slow")
        timed_out = await svc.wait_finished(job["id"])
        assert timed_out["status"] == "timed_out"
        assert timed_out["error"]["code"] == "timed_out"
        fake.complete(job["provider_task_id"])
        done = await eventually(
            lambda: _status_is(svc.job(job["id"]), "completed"),
            timeout=10,
        )
        assert done["resolved_by"] in ("callback", "poll")
        assert done["error"] is None


async def _status_is(coro: Any, status: str) -> dict[str, Any] | None:
    job = await coro
    return job if job["status"] == status else None


async def test_refresh_polls_now(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(drop_callback=True)]
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="60")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="refresh me")
        await fake.wait_final(job["provider_task_id"])
        response = await svc.client.post(f"/v1/jobs/{job['id']}/refresh")
        assert response.status_code == 200
        assert response.json()["status"] == "completed"
        assert response.json()["resolved_by"] == "poll"
        assert len(fake.queries) == 1


async def test_wait_returns_the_moment_the_job_finishes(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(complete_after=0.5)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="patience")
        started = time.monotonic()
        done = await svc.job(job["id"], wait=30)
        assert done["status"] == "completed"
        assert time.monotonic() - started < 20  # woke on the change, not at the end of the wait


async def test_idempotency_key_makes_one_job_and_one_provider_call(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        body = {"provider": "aivideoapi", "prompt": "exactly once"}
        headers = {"Idempotency-Key": "order-1234"}
        responses = await asyncio.gather(*(svc.client.post("/v1/jobs", json=body, headers=headers) for _ in range(8)))
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["id"] for r in responses}) == 1
        assert len({r.json()["provider_task_id"] for r in responses}) == 1
        assert len(fake.creates) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
        other = await svc.client.post("/v1/jobs", json={**body, "prompt": "different"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert len(fake.creates) == 1


async def test_backend_submitted_job_bound_by_patch(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="the backend sends it", submit=False)
        assert job["status"] == "queued"
        assert job["callback_url"].startswith(f"{svc.url}/callbacks/")
        assert fake.creates == []
        # The backend creates the task itself with our callback URL, then tells us its id.
        fake.next_scripts = [TaskScript(drop_callback=True)]
        async with httpx.AsyncClient(base_url=fake.base_url) as backend:
            created = await backend.post(
                "/v1/images/generations",
                json={"model": "ideogram-v4", "callback_url": job["callback_url"], "input": {"prompt": "x"}},
                headers={"Authorization": "Bearer sk-backend"},
            )
        task_id = created.json()["data"]["taskId"]
        response = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": task_id})
        assert response.status_code == 200
        assert response.json()["status"] == "submitted"
        again = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": task_id})
        assert again.status_code == 200
        conflict = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": "other"})
        assert conflict.status_code == 409
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "poll"


async def test_backend_submitted_job_bound_by_first_callback(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="bound by its callback", submit=False)
        async with httpx.AsyncClient(base_url=fake.base_url) as backend:
            await backend.post(
                "/v1/images/generations",
                json={"model": "ideogram-v4", "callback_url": job["callback_url"], "input": {"prompt": "x"}},
                headers={"Authorization": "Bearer sk-backend"},
            )
        done = await svc.wait_finished(job["id"])
        assert done["status"] == "completed"
        assert done["resolved_by"] == "callback"
        assert done["provider_task_id"] == next(iter(fake.tasks))
        patch = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": "another"})
        assert patch.status_code == 409
        own = await svc.submit(provider="aivideoapi", prompt="ours")
        not_theirs = await svc.client.patch(f"/v1/jobs/{own['id']}", json={"provider_task_id": "x"})
        assert not_theirs.status_code == 409
        assert not_theirs.json()["error"]["code"] == "not_backend_submitted"
