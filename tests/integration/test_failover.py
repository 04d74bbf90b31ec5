"""Failover across candidate providers (SPEC §8) through the real edges: the app over HTTP, the fake
aivideoapi and apiframe, on both engines.

A job names several providers (or "auto"); an attempt that cannot have been charged (refused, never
sent, or a task the provider failed) moves the job to the next candidate; one that was accepted and
then went quiet never does. Each provider tried is an attempt of the job, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.apiframe import FakeApiframe, JobScript, forced_error
from tests.fakes.server import free_socket

pytestmark = pytest.mark.timeout(120)

BOTH = ["aivideoapi", "apiframe"]


def env_for(aivideoapi_url: str, apiframe: FakeApiframe, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi_url,
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": apiframe.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
        **extra,
    }


def attempts(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(item["provider"], item["state"]) for item in job["attempts"]]


async def finished(svc: Service, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = await svc.job(job_id)
        return job if job["status"] in ("completed", "failed", "timed_out") else None

    result: dict[str, Any] = await eventually(done, timeout=30)
    return result


async def failovers(svc: Service, job_id: str) -> list[dict[str, Any]]:
    return [event["detail"] for event in await svc.events(job_id) if event["type"] == "failover"]


async def test_a_refusal_moves_the_job_to_the_next_candidate(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="a cat")
        # Tried at once, within the request: the job is already at the second provider.
        assert job["provider"] == "apiframe" and job["provider_task_id"] is not None, job
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "completed")]
        first, second = done["attempts"]
        assert first["error"]["provider_code"] == "insufficient_credits" and first["ended_at"] is not None
        assert second["provider_task_id"] == done["provider_task_id"] and second["cost_usd"] == done["cost_usd"]
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 1)
        assert await failovers(svc, job["id"]) == [{"from": "aivideoapi", "to": "apiframe", "reason": "rejected"}]


async def test_a_provider_that_is_down_is_not_sent_and_the_next_is_tried(
    jobhook: ServiceFactory, apiframe: FakeApiframe
) -> None:
    sock = free_socket()  # bound, never listening: connection refused
    with contextlib.closing(sock):
        async with jobhook(**env_for(f"http://127.0.0.1:{sock.getsockname()[1]}", apiframe)) as svc:
            job = await svc.submit(provider=BOTH, prompt="nobody home at the first")
            done = await finished(svc, job["id"])
            assert done["status"] == "completed", done
            assert attempts(done) == [("aivideoapi", "not_sent"), ("apiframe", "completed")]
            assert len(apiframe.creates) == 1
            [failover] = await failovers(svc, job["id"])
            assert failover["reason"] == "not_sent"


async def test_an_accepted_attempt_that_times_out_is_never_sent_elsewhere(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.default_script = TaskScript(outcome="never", drop_callback=True)
    env = env_for(aivideoapi.base_url, apiframe, JOBHOOK_JOB_TIMEOUT="2s")
    async with jobhook(**env) as svc:
        job = await svc.submit(provider=BOTH, prompt="accepted, then silence")
        done = await finished(svc, job["id"])
        assert done["status"] == "timed_out", done
        assert attempts(done) == [("aivideoapi", "accepted")]
        await asyncio.sleep(1.0)  # time enough for a wrongful failover to be made
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 0)
        assert await failovers(svc, job["id"]) == []


async def test_a_task_the_provider_failed_moves_to_the_next_candidate(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.default_script = TaskScript(outcome="failed")
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="failed at the first")
        assert job["provider"] == "aivideoapi"
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "failed"), ("apiframe", "completed")]
        assert done["attempts"][0]["error"] is not None
        [failover] = await failovers(svc, job["id"])
        assert failover == {"from": "aivideoapi", "to": "apiframe", "reason": "failed"}
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 1)


async def test_the_last_candidate_refusing_fails_the_job_as_before(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    apiframe.create_responses = [ForcedResponse.error(401, "invalid_api_key")]
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        refused = await svc.submit(expect=502, provider=BOTH, prompt="nobody will")
        assert refused["error"]["code"] == "provider_rejected"
        job = await svc.job(refused["error"]["job_id"])
        assert job["status"] == "failed"
        assert attempts(job) == [("aivideoapi", "rejected"), ("apiframe", "rejected")]


async def test_auto_tries_the_cheapest_first(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    apiframe.create_responses = [forced_error(402, "insufficient_credits")]
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider="auto", prompt="cheapest first")
        done = await finished(svc, job["id"])
        # apiframe is cheaper than aivideoapi (PROVIDERS.md): tried first, it refused.
        assert attempts(done) == [("apiframe", "rejected"), ("aivideoapi", "completed")], done
        assert done["status"] == "completed"


async def test_no_candidate_left_is_422_no_provider_with_each_reason(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        # apiframe $0.06, aivideoapi $0.14 at their defaults; segmind is not configured.
        body = {"provider": ["aivideoapi", "apiframe", "segmind"], "prompt": "too dear", "max_price_usd": 0.01}
        response = await svc.client.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "no_provider"
        reasons = {item["provider"]: item["reason"] for item in error["candidates"]}
        assert reasons == {"aivideoapi": "over_max_price", "apiframe": "over_max_price", "segmind": "not_configured"}
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (0, 0)
        unknown = await svc.client.post("/v1/jobs", json={"provider": ["aivideoapi", "nope"], "prompt": "x"})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown_provider")


async def test_a_single_provider_job_has_its_one_attempt(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="one")
        done = await finished(svc, job["id"])
        assert attempts(done) == [("aivideoapi", "completed")]
        listed = (await svc.client.get("/v1/jobs")).json()
        assert [attempts(item) for item in listed["jobs"]] == [[("aivideoapi", "completed")]]


async def test_one_idempotency_key_sent_concurrently_during_a_failover_is_one_job(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        body = {"provider": BOTH, "prompt": "once"}
        headers = {"Idempotency-Key": "failover-once"}
        answers = await asyncio.gather(*(svc.client.post("/v1/jobs", json=body, headers=headers) for _ in range(10)))
        assert {answer.status_code for answer in answers} == {202}, [a.text for a in answers]
        assert len({answer.json()["id"] for answer in answers}) == 1
        done = await finished(svc, answers[0].json()["id"])
        assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "completed")]
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 1)


async def test_a_provider_whose_circuit_is_open_is_tried_last_without_a_request(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    env = env_for(aivideoapi.base_url, apiframe, JOBHOOK_ROUTE_BREAKER_FAILURES="1")
    async with jobhook(**env) as svc:
        first = await svc.submit(provider=BOTH, prompt="opens the circuit")  # one refusal opens it
        assert attempts(await finished(svc, first["id"])) == [("aivideoapi", "rejected"), ("apiframe", "completed")]
        second = await svc.submit(provider=BOTH, prompt="goes round it")
        done = await finished(svc, second["id"])
        assert attempts(done) == [("apiframe", "completed")], done
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 2)


async def test_a_poll_of_the_attempt_left_answered_after_the_failover_does_not_touch_the_next(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """A poll of aivideoapi's task is in flight when its callback fails the task and the job moves to
    apiframe; the poll's late "failed" is about the attempt left, not the job's new one."""
    aivideoapi.default_script = TaskScript(outcome="never")
    apiframe.default_script = JobScript(outcome="never")
    aivideoapi.query_gate = asyncio.Event()
    async with jobhook(**env_for(aivideoapi.base_url, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="a poll out during the failover")
        await eventually(lambda: aivideoapi.queries)  # past the grace: a poll is held in flight
        task = aivideoapi.fail(job["provider_task_id"])
        await aivideoapi.wait_final(task.id)
        moved = await _moved_to_apiframe(svc, job["id"])
        aivideoapi.query_gate.set()  # the held poll now answers "failed"
        await eventually(lambda: all(record.status is not None for record in aivideoapi.queries))
        await asyncio.sleep(0.5)  # time for a wrongful write of that answer to be made
        after = await svc.job(job["id"])
        assert moved["status"] in ("submitted", "processing")
        assert (after["status"], after["provider"]) in (("submitted", "apiframe"), ("processing", "apiframe")), after
        assert attempts(after) == [("aivideoapi", "failed"), ("apiframe", "accepted")]
        apiframe.complete(after["provider_task_id"])
        done = await finished(svc, job["id"])
        assert (done["status"], done["provider"]) == ("completed", "apiframe")


async def _moved_to_apiframe(svc: Service, job_id: str) -> dict[str, Any]:
    """The job once it follows apiframe's accepted task."""

    async def probe() -> dict[str, Any] | None:
        job = await svc.job(job_id)
        return job if job["provider"] == "apiframe" and job["provider_task_id"] else None

    result: dict[str, Any] = await eventually(probe, timeout=30)
    return result
