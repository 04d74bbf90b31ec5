"""Kill -9 the service with work in flight; after a restart on the same database nothing is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=1.0, callback_retry_delays=(0.0, 1.0, 2.0)) as provider:
        yield provider


def env_for(fake: FakeAivideoapi, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_CALLBACK_GRACE": "2",
        "JOBHOOK_POLL_INTERVAL": "0.3",
        "JOBHOOK_POLL_MAX_INTERVAL": "1",
        **extra,
    }


async def wait_all_finished(url: str, ids: list[str], timeout: float = 30) -> dict[str, dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict] = {}  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=url) as client:
        while time.monotonic() < deadline:
            for job_id in ids:
                jobs[job_id] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if all(job["status"] in ("completed", "failed", "timed_out") for job in jobs.values()):
                return jobs
            await asyncio.sleep(0.2)
    raise AssertionError({job_id: job["status"] for job_id, job in jobs.items()})


async def test_jobs_in_flight_finish_after_kill_9(tmp_path: Path, database: str, fake: FakeAivideoapi) -> None:
    scripts = [TaskScript(), TaskScript(duplicates=1), TaskScript(drop_callback=True), TaskScript(outcome="failed")]
    fake.next_scripts = scripts * 2
    service = ServeProcess(tmp_path, env_for(fake), database=database)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url) as client:
            ids = []
            for n in range(8):
                response = await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"job {n}"})
                assert response.status_code == 202
                ids.append(response.json()["id"])
        service.kill()  # the tasks finish at the provider while jobhook is down: callbacks fail, and retry
        await asyncio.sleep(1.5)
        await service.start()
        jobs = await wait_all_finished(service.url, ids)
    finally:
        service.stop()
    statuses = sorted(job["status"] for job in jobs.values())
    assert statuses == ["completed"] * 6 + ["failed"] * 2
    assert len(fake.creates) == 8  # nothing was created twice at the provider
    assert {c.task_id for c in fake.creates} == {job["provider_task_id"] for job in jobs.values()}
    async with httpx.AsyncClient(base_url=service.url) as client:
        await service.start()
        try:
            for job_id in ids:
                events = (await client.get(f"/v1/jobs/{job_id}/events")).json()["events"]
                finals = [e for e in events if e["type"] == "status" and e["outcome"] in ("completed", "failed")]
                assert len(finals) == 1, events  # each final event applied once
        finally:
            service.stop()


async def test_submission_cut_by_kill_9_is_never_resent(tmp_path: Path, database: str, fake: FakeAivideoapi) -> None:
    fake.create_responses = ["hang"]
    fake.next_scripts = [TaskScript(drop_callback=True)]
    service = ServeProcess(
        tmp_path, env_for(fake, JOBHOOK_SUBMIT_TIMEOUT="1", JOBHOOK_JOB_TIMEOUT="6"), database=database
    )
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url) as client:
            post = asyncio.create_task(client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "cut"}))
            while not fake.creates:  # noqa: ASYNC110 - the fake records, it does not signal
                await asyncio.sleep(0.02)
            service.kill()  # while the provider holds the request: did it take the job? nobody knows
            with pytest.raises(httpx.HTTPError):
                await post
            await service.start()
            listing = (await client.get("/v1/jobs")).json()["jobs"]
            assert len(listing) == 1
            jobs = await wait_all_finished(service.url, [listing[0]["id"]], timeout=20)
    finally:
        service.stop()
    [job] = jobs.values()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "submission_uncertain"
    assert len(fake.creates) == 1


async def test_synchronous_call_cut_by_kill_9_is_never_resent(tmp_path: Path, database: str) -> None:
    from tests.fakes.segmind import FakeSegmind

    async with FakeSegmind(latency=0.1) as segmind:
        segmind.create_responses = ["hang"]
        env = {"JOBHOOK_SEGMIND_API_KEY": "sg-key", "JOBHOOK_SEGMIND_BASE_URL": segmind.base_url}
        # The call is cut by the kill within moments of reaching the fake, so a short sync timeout
        # loses nothing, and it sets the submission lease that the restarted service waits out
        # (timeout + its margin: 10 s here, where 30 s made it 60 s).
        service = ServeProcess(
            tmp_path, {**env, "JOBHOOK_SUBMIT_TIMEOUT": "1", "JOBHOOK_SYNC_TIMEOUT": "5"}, database=database
        )
        await service.start()
        try:
            async with httpx.AsyncClient(base_url=service.url) as client:
                response = await client.post("/v1/jobs", json={"provider": "segmind", "prompt": "cut mid-call"})
                assert response.status_code == 202
                assert response.json()["status"] == "queued"  # the call runs from the work queue
                job_id = response.json()["id"]
                while not segmind.calls:  # noqa: ASYNC110 - the fake records, it does not signal
                    await asyncio.sleep(0.02)
                service.kill()
                await service.start()
                jobs = await wait_all_finished(service.url, [job_id], timeout=60)
        finally:
            service.stop()
        assert jobs[job_id]["status"] == "failed"
        assert jobs[job_id]["error"]["code"] == "submission_uncertain"
        assert len(segmind.calls) == 1


async def test_notifications_owed_at_kill_9_are_delivered_once_after_restart(tmp_path: Path, database: str) -> None:
    from tests.fakes.sinks import notify_env, sinks

    async with sinks() as (slack, backend, smtp):
        slack.always = backend.always = 500  # owed, not delivered, when the service dies
        env = {
            **notify_env(slack, backend, smtp, JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3"),
            "JOBHOOK_SIMULATOR_LATENCY": "0.2",
        }
        service = ServeProcess(tmp_path, env, database=database)
        await service.start()
        try:
            async with httpx.AsyncClient(base_url=service.url) as client:
                ids = []
                for n in range(5):
                    response = await client.post("/v1/jobs", json={"provider": "simulator", "prompt": f"owed {n}"})
                    ids.append(response.json()["id"])
            await wait_all_finished(service.url, ids)
            async with httpx.AsyncClient(base_url=service.url) as client:
                # Kill only once jobhook has *recorded* the emails: a crash between a send and its
                # record re-sends (at least once, same id), which is not what this test is about.
                while True:
                    rows = (await client.get("/v1/outbox", params={"status": "delivered"})).json()["deliveries"]
                    if sum(row["destination"] == "email" for row in rows) == 5 and len(backend.received) >= 5:
                        break
                    await asyncio.sleep(0.05)
            service.kill()
            slack.always = backend.always = None
            await service.start()
            # A send cut by the kill comes due again when its lease (45 s) ends.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (len(backend.delivered()) < 5 or len(slack.delivered()) < 5):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a duplicate would have come by now
        finally:
            service.stop()
        delivered_ids = [r.headers["webhook-id"] for r in backend.delivered()]
        assert len(delivered_ids) == len(set(delivered_ids)) == 5
        assert sorted(r.json()["data"]["id"] for r in backend.delivered()) == sorted(ids)
        assert len(slack.delivered()) == 5
        assert len(smtp.messages) == 5  # delivered before the kill, not again after it
