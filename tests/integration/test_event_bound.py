"""One callback URL cannot grow a job's history, its /events answer or the log without bound (issue 14,
item 5), and a delivery that changes nothing wakes no waiter and no stream (item 6)."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import subprocess
from typing import Any

import httpx
import pytest

from service.domain.history import NOISE_EVENTS_PER_JOB
from service.http import encode_cursor
from service.loglimit import REFUSAL_LINES_PER_MINUTE
from tests.acceptance.harness import jobhook_command
from tests.conftest import Service, ServiceFactory, eventually
from tests.integration.hostile import callback_path, delivery_body, delivery_headers
from tests.postgres import query

QUIET = {"JOBHOOK_CALLBACK_GRACE": "600", "JOBHOOK_MIRROR_IMAGES": "false"}


async def deliver(
    svc: Service, job: dict[str, Any], task_id: str, status: str, *, stale: bool = False
) -> httpx.Response:
    """One aivideoapi-style delivery to the job's callback URL; `stale`: refused for its timestamp."""
    headers = delivery_headers(task_id, status, timestamp=0 if stale else None)
    return await svc.client.post(callback_path(job), content=delivery_body(task_id, status), headers=headers)


async def refuse(svc: Service, job: dict[str, Any], task_id: str, times: int) -> None:
    for _ in range(times):
        response = await deliver(svc, job, task_id, "completed", stale=True)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "stale_timestamp"), response.text


async def duplicate(svc: Service, job: dict[str, Any], task_id: str, status: str, times: int) -> None:
    for _ in range(times):
        response = await deliver(svc, job, task_id, status)
        assert (response.status_code, response.json()) == (200, {"status": "duplicate"}), response.text


def callbacks(events: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(str(e["outcome"]) for e in events if e["type"] == "callback")


# -- item 5: the bound ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_past_the_bound_refusals_and_duplicates_are_counted_on_one_summary_event(
    jobhook: ServiceFactory,
) -> None:
    async with jobhook(**QUIET) as svc:
        job = await svc.submit(provider="simulator", prompt="a noisy callback URL", submit=False)
        assert (await deliver(svc, job, "task-noisy", "processing")).json() == {"status": "accepted"}
        await refuse(svc, job, "task-noisy", NOISE_EVENTS_PER_JOB - 10)
        await duplicate(svc, job, "task-noisy", "processing", 30)  # 10 within the bound, 20 past it
        await refuse(svc, job, "task-noisy", 25)
        # A genuine change past the bound keeps its own events, after the summary.
        assert (await deliver(svc, job, "task-noisy", "completed")).json() == {"status": "accepted"}
        await duplicate(svc, job, "task-noisy", "completed", 5)

        events = await svc.events(job["id"])
        assert callbacks(events) == {
            "accepted": 2,
            "refused": NOISE_EVENTS_PER_JOB - 10,
            "duplicate": 10,
            "summary": 1,
        }
        [summary] = [e for e in events if e["outcome"] == "summary"]
        detail = summary["detail"]
        assert detail["count"] == 20 + 25 + 5
        assert detail["bound"] == NOISE_EVENTS_PER_JOB
        assert detail["counts"] == {
            "duplicate": {"task.processing": 20, "task.completed": 5},
            "refused": {"stale_timestamp": 25},
        }
        assert detail["first_at"] == summary["at"] and detail["first_at"] < detail["last_at"]
        positions = {(e["type"], e["outcome"]): i for i, e in enumerate(events)}
        assert positions[("callback", "summary")] < positions[("status", "completed")]
        assert (await svc.job(job["id"]))["status"] == "completed"
        # The database holds what the API shows: one row per event, none hidden.
        [(rows,)] = query(svc.settings, "SELECT COUNT(*) FROM job_events WHERE job_id = ?", (job["id"],))
        assert rows == len(events) < NOISE_EVENTS_PER_JOB + 20


@pytest.mark.timeout(180)
async def test_events_are_paginated_like_the_jobs_list(jobhook: ServiceFactory) -> None:
    async with jobhook(**QUIET) as svc:
        job = await svc.submit(provider="simulator", prompt="a long history", submit=False)
        await refuse(svc, job, "task-pages", NOISE_EVENTS_PER_JOB + 5)
        everything = await svc.events(job["id"])
        assert len(everything) == NOISE_EVENTS_PER_JOB + 2  # created, the refusals, the summary
        path = f"/v1/jobs/{job['id']}/events"

        first = (await svc.client.get(path)).json()
        assert first["job_id"] == job["id"]
        assert first["events"] == everything[:100]  # the default page
        assert first["next_cursor"] is not None

        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
            page = (await svc.client.get(path, params=params)).json()
            assert 1 <= len(page["events"]) <= 7
            pages.append(page["events"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [e for page in pages for e in page] == everything
        assert len(pages) == -(-len(everything) // 7)
        whole = (await svc.client.get(path, params={"limit": 500})).json()
        assert (whole["events"], whole["next_cursor"]) == (everything, None)

        for bad in ("0", "501", "-1", "1.5", "abc", "²", "1" * 5000, " 5"):
            response = await svc.client.get(path, params={"limit": bad})
            assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_limit"), bad
        not_ours = base64.urlsafe_b64encode(b"v1:job_01AAAAAAAAAAAAAAAAAAAAAAAA").decode()
        for bad in ("garbage!", "%%%", not_ours, encode_cursor("-1"), encode_cursor("9" * 40)):
            response = await svc.client.get(path, params={"cursor": bad})
            assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_cursor"), bad
        missing = await svc.client.get("/v1/jobs/job_01AAAAAAAAAAAAAAAAAAAAAAAA/events")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "job_not_found")

        # The CLI's `jobhook job` still prints the whole history, every page of it.
        env = {**os.environ, "JOBHOOK_URL": svc.url}
        run = await asyncio.to_thread(
            subprocess.run,
            jobhook_command("job", job["id"], "--json"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["events"] == everything


async def test_the_refusal_log_line_is_rate_limited(jobhook: ServiceFactory, caplog: pytest.LogCaptureFixture) -> None:
    async with jobhook(**QUIET) as svc:
        job = await svc.submit(provider="simulator", prompt="refused often", submit=False)
        with caplog.at_level(logging.WARNING, logger="jobhook"):
            await refuse(svc, job, "task-log", 60)
            for _ in range(60):
                response = await svc.client.post("/callbacks/not-a-token", json={})
                assert response.status_code == 404
        lines = [record.getMessage() for record in caplog.records if record.name == "jobhook"]
        for_job = [line for line in lines if line.startswith(f"callback refused for {job['id']}: stale_timestamp")]
        assert len(for_job) == REFUSAL_LINES_PER_MINUTE, lines
        assert "more like it are logged at most" in for_job[-1]
        unknown = [line for line in lines if line.startswith("callback refused: invalid_token")]
        assert len(unknown) == REFUSAL_LINES_PER_MINUTE, lines
        # Every refusal is still counted where an operator looks: /metrics.
        assert 'reason="stale_timestamp"} 60.0' in (await svc.client.get("/metrics")).text


# -- item 6: only a change to the job wakes anyone -------------------------------------------------------


@pytest.mark.timeout(120)
async def test_refused_and_duplicate_deliveries_wake_no_waiter(jobhook: ServiceFactory) -> None:
    async with jobhook(**QUIET) as svc:
        hub = svc.runtime.hub
        done = await svc.submit(provider="simulator", prompt="finished already", submit=False)
        assert (await deliver(svc, done, "task-done", "completed")).json() == {"status": "accepted"}
        waited = await svc.submit(provider="simulator", prompt="waited on", submit=False)
        waiter = asyncio.create_task(svc.client.get(f"/v1/jobs/{waited['id']}", params={"wait": 30}))
        await eventually(lambda: hub.waiting >= 1)
        before = hub.wakeups
        await refuse(svc, waited, "task-waited", 20)
        await duplicate(svc, done, "task-done", "completed", 20)
        await refuse(svc, done, "task-done", 5)
        assert hub.wakeups == before, "a delivery that changed nothing woke a waiter"
        assert not waiter.done()
        # A real change wakes it at once.
        assert (await deliver(svc, waited, "task-waited", "completed")).json() == {"status": "accepted"}
        answer = await asyncio.wait_for(waiter, 10)
        assert answer.json()["status"] == "completed"
        assert hub.wakeups > before


@pytest.mark.timeout(120)
async def test_a_stream_hears_changes_only(jobhook: ServiceFactory) -> None:
    async with jobhook(**QUIET) as svc:
        done = await svc.submit(provider="simulator", prompt="finished already", submit=False)
        assert (await deliver(svc, done, "task-done", "completed")).json() == {"status": "accepted"}
        quiet = await svc.submit(provider="simulator", prompt="refused only", submit=False)
        async with svc.client.stream("GET", "/v1/stream") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 2000"  # subscribed from here on
            await refuse(svc, quiet, "task-quiet", 10)
            await duplicate(svc, done, "task-done", "completed", 10)
            changed = await svc.submit(provider="simulator", prompt="a real change", submit=False)
            heard = []
            async for line in lines:
                if line.startswith("data: "):
                    heard.append(line)
                    break
        # Stream events come in commit order: the first one heard is the first real change.
        assert changed["id"] in heard[0], heard
