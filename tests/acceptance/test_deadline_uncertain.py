"""A synchronous call cut by a crash, whose JOBHOOK_JOB_TIMEOUT comes before its submission lease, ends
`submission_uncertain`: the provider got the request and may charge for it (issue 14, item 10)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import ServeProcess
from tests.conftest import eventually
from tests.fakes.segmind import FakeSegmind


@pytest.mark.timeout(120)
async def test_a_call_cut_by_a_crash_ends_uncertain_at_its_deadline(tmp_path: Path, database: str) -> None:
    async with FakeSegmind(latency=0.1) as fake:
        fake.create_responses = ["hang"]  # the provider takes it (and the credits), the answer never comes
        env = {
            "JOBHOOK_SEGMIND_API_KEY": "sg-test",
            "JOBHOOK_SEGMIND_BASE_URL": fake.base_url,
            # The submission lease (sync timeout + margin, ~60 s) comes long after the job's deadline.
            "JOBHOOK_SYNC_TIMEOUT": "30",
            "JOBHOOK_JOB_TIMEOUT": "4",
        }
        service = ServeProcess(tmp_path, env, database=database)
        await service.start()
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                response = await client.post("/v1/jobs", json={"provider": "segmind", "prompt": "cut mid-call"})
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]
                await eventually(lambda: len(fake.creates) == 1)  # the call is in flight
                service.kill()
                await service.start()
                job = await finished(client, job_id, timeout=60)  # "did not hang", not a timing check
                assert job["status"] == "failed", job
                assert job["error"]["code"] == "submission_uncertain", job["error"]
                assert len(fake.creates) == 1  # never re-sent
                assert fake.creates[0].charged > 0 and fake.creates[0].status is None
        finally:
            service.stop()


async def finished(client: httpx.AsyncClient, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 5})).json()
        if job["status"] in ("completed", "failed", "timed_out") or time.monotonic() > deadline:
            return job
