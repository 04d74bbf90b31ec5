"""A crash in the middle of a failover (SPEC §8, issue 15): the next attempt is made once.

`jobhook serve` as a real child process on a real database (each engine), fake providers over loopback.

- Killed between an attempt's refusal and the next attempt: the refusal's transaction only made the
  next attempt due, so after the restart the work queue sends it — once — and the job completes. The
  moment lies between two commits of one request, microseconds apart, where no signal can be aimed:
  the test writes exactly what that commit leaves (the store's own `record_submit`, as the engine
  calls it) to the database, then starts jobhook on it.
- Killed (SIGKILL) while the next attempt is in flight at its provider: it is never sent again; the
  provider's callback still completes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from service.config import Settings
from service.domain import attempt
from service.domain.job import Candidate
from service.domain.status import JobError, Status
from service.domain.work import WorkKind
from service.ids import new_job_id
from service.store.base import NewJob
from service.store.engines import make_store
from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.apiframe import FakeApiframe, forced_error

FINISH_LIMIT = 60.0  # "did not hang", not a timing assertion


def env_for(aivideoapi: FakeAivideoapi, apiframe: FakeApiframe) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url,
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": apiframe.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.5",
        "JOBHOOK_POLL_INTERVAL": "0.3",
        "JOBHOOK_POLL_MAX_INTERVAL": "1",
        "JOBHOOK_SUBMIT_TIMEOUT": "2",
        "JOBHOOK_MIRROR_IMAGES": "false",
    }


async def finished(service: ServeProcess, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + FINISH_LIMIT
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 5})).json()
            if job["status"] in ("completed", "failed"):
                return job
            assert time.monotonic() < deadline, f"not finished: {job}\n{service.log()[-3000:]}"


def attempts(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(item["provider"], item["state"]) for item in job["attempts"]]


async def test_killed_between_a_refusal_and_the_next_attempt_the_next_is_sent_once_after_the_restart(
    tmp_path: Path, database: str
) -> None:
    async with FakeAivideoapi(complete_after=0.2) as aivideoapi, FakeApiframe(complete_after=0.2) as apiframe:
        service = ServeProcess(tmp_path, env_for(aivideoapi, apiframe), database=database)
        # What the request's refusal commit leaves, written by the store as the engine writes it: the
        # job was sent to aivideoapi ("sending"), which refused it; the request claims the next attempt
        # itself in a transaction of its own, which the crash never reaches.
        store = make_store(Settings.from_environ({"JOBHOOK_DATABASE": database}))
        await store.open()
        try:
            now = time.time()
            job, _ = await store.create_job(
                NewJob(
                    id=new_job_id(),
                    provider="aivideoapi",
                    request={"prompt": "a crash between two attempts"},
                    metadata=None,
                    callback_url_registered=True,
                    submitted_by_backend=False,
                    idempotency_key="crash-between",
                    request_hash="h",
                    deadline_at=now + 600,
                    submit_lease_until=now + 60,
                    candidates=(Candidate("apiframe", callbacks=True),),
                )
            )
            refusal = attempt.rejected(
                {"http_status": 402},
                JobError("provider_rejected", "no credits left", "insufficient_credits"),
                http_status=402,
            )
            left = await store.record_submit(job.id, refusal, claim_next=True)
            # Nothing "sending": the next attempt is due, unclaimed.
            assert (left.status, left.provider, left.submit_state) == (Status.QUEUED, "apiframe", None)
            assert [due.kind for due in await store.due_for(job.id)] == [WorkKind.SUBMIT, WorkKind.DEADLINE]
        finally:
            await store.close()

        await service.start()
        try:
            done = await finished(service, job.id)
            assert done["status"] == "completed", done
            assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "completed")]
            assert done["provider_task_id"] == apiframe.creates[0].job_id
            assert (len(aivideoapi.creates), len(apiframe.creates)) == (0, 1)
            # Restarted again: nothing is sent anew.
            service.kill()
            await service.start()
            assert (len(aivideoapi.creates), len(apiframe.creates)) == (0, 1)
        finally:
            service.stop()


async def test_kill_9_while_the_next_attempt_is_in_flight_never_sends_it_again(tmp_path: Path, database: str) -> None:
    async with (
        FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0)) as aivideoapi,
        FakeApiframe(complete_after=0.2) as apiframe,
    ):
        apiframe.create_responses = [forced_error(402, "insufficient_credits")]
        aivideoapi.create_responses = ["hang"]  # the task is made; its answer never comes
        service = ServeProcess(tmp_path, env_for(aivideoapi, apiframe), database=database)
        await service.start()
        try:
            body = {"provider": ["apiframe", "aivideoapi"], "prompt": "killed mid-failover"}
            headers = {"Idempotency-Key": "crash-in-flight"}
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                pending = asyncio.create_task(client.post("/v1/jobs", json=body, headers=headers))
                # The refusal is in, the next attempt is at aivideoapi: now jobhook dies.
                while not aivideoapi.creates:
                    assert not pending.done(), pending.result().text
                    await asyncio.sleep(0.02)
                service.kill()
                with contextlib.suppress(httpx.HTTPError):
                    await pending
            await service.start()
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                # The backend retries its request: the same job, nothing sent anew.
                again = await client.post("/v1/jobs", json=body, headers=headers)
                assert again.status_code == 202, again.text
            done = await finished(service, again.json()["id"])
            assert done["status"] == "completed", done
            assert attempts(done) == [("apiframe", "rejected"), ("aivideoapi", "completed")]
            assert done["provider_task_id"] == aivideoapi.creates[0].task_id
            assert (len(apiframe.creates), len(aivideoapi.creates)) == (1, 1)
        finally:
            service.stop()
