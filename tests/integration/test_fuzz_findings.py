"""What the route fuzz (test_fuzz.py) found, each pinned by a targeted test over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.sinks import HTTPSink


@pytest.mark.parametrize("task_id", ["bad\x13id", "line\nbreak", "del\x7f", "c1\x85"])
async def test_a_task_id_with_control_characters_is_refused(jobhook: ServiceFactory, task_id: str) -> None:
    async with jobhook() as svc:
        job = await svc.submit(provider="simulator", prompt="the backend submits this one", submit=False)
        response = await svc.client.patch(f"/v1/jobs/{job['id']}", json={"provider_task_id": task_id})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_field"
        assert response.json()["error"]["field"] == "provider_task_id"
        assert (await svc.job(job["id"]))["provider_task_id"] is None


async def test_a_task_id_bound_by_a_callback_is_polled_whatever_it_holds(jobhook: ServiceFactory) -> None:
    """A genuine callback may bind a task id with a tab in it (a header value may hold one). It was put in
    the poll's URL as is: the URL could not be built, the poller failed on that job at each turn, and
    `POST /v1/jobs/{id}/refresh` answered 500."""
    async with jobhook() as svc:
        job = await svc.submit(provider="simulator", prompt="the backend submits this one", submit=False)
        task_id = "task\tid/../x?y"
        callback = await svc.client.post(
            job["callback_url"],
            json={"id": task_id, "status": "processing"},
            headers={"X-Task-Id": task_id, "X-Timestamp": str(int(time.time())), "X-Event": "task.processing"},
        )
        assert callback.status_code == 200, callback.text
        assert (await svc.job(job["id"]))["provider_task_id"] == task_id
        refreshed = await svc.client.post(f"/v1/jobs/{job['id']}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        polls = [event for event in await svc.events(job["id"]) if event["type"] == "poll"]
        # The simulator was asked about that task, by its quoted id, and does not know it.
        assert polls[-1]["detail"]["http_status"] == 404, polls


async def test_a_callback_nested_past_the_stack_is_refused(jobhook: ServiceFactory) -> None:
    """It was a 500: looking for image URLs followed {"urls": {"urls": …}} a thousand levels down."""
    async with jobhook() as svc:
        job = await svc.submit(provider="simulator", prompt="the backend submits this one", submit=False)
        output = '"https://file.example/a.png"'
        for _ in range(1000):
            output = '{"urls": ' + output + "}"
        response = await svc.client.post(
            job["callback_url"],
            content=b'{"id": "t1", "status": "completed", "output": ' + output.encode() + b"}",
            headers={"X-Task-Id": "t1", "X-Timestamp": str(int(time.time())), "X-Event": "task.completed"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_payload"
        assert (await svc.job(job["id"]))["status"] == "queued"


RESEND_REFUSALS = [
    pytest.param({"dead": "no"}, "dead", id="dead-a-string"),
    pytest.param({"dead": 1}, "dead", id="dead-a-number"),
    pytest.param({"dead": -1.454953133514034e16}, "dead", id="dead-a-float"),
    pytest.param({"ids": None}, "ids", id="ids-null"),
    pytest.param({"ids": [2**63]}, "ids", id="id-over-sqlite-integer"),
    pytest.param({"ids": [2**64 - 1]}, "ids", id="id-largest-u64"),
]


@pytest.mark.parametrize(("body", "field"), RESEND_REFUSALS)
async def test_resend_is_strict_about_what_it_resends(jobhook: ServiceFactory, body: Any, field: str) -> None:
    """It was: `"dead"` of any truthy value, or `"ids": null`, resent every dead delivery; an id past
    SQLite's INTEGER answered 500."""
    async with HTTPSink() as backend:
        backend.always = 500
        env = {
            "JOBHOOK_FORWARD_URL": backend.url,
            "JOBHOOK_FORWARD_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0",
        }
        async with jobhook(**env) as svc:
            job = await svc.submit(provider="simulator", prompt="undeliverable")
            await svc.wait_finished(job["id"])
            await eventually(lambda: _dead(svc))
            response = await svc.client.post("/v1/outbox/resend", json=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_field"
            assert response.json()["error"]["field"] == field
            assert await _dead(svc), "a refused resend resent the dead delivery"


async def _dead(svc: Service) -> list[dict[str, Any]]:
    response = await svc.client.get("/v1/outbox", params={"status": "dead"})
    return response.json()["deliveries"]  # type: ignore[no-any-return]


async def test_the_simulator_refuses_json_nested_too_deep(jobhook: ServiceFactory) -> None:
    """It was a 500 (RecursionError in the simulator's JSON parser), on jobhook's public port."""
    async with jobhook() as svc:
        response = await svc.client.post(
            "/simulator/v1/images/generations",
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("query", ["status=&limit=&provider=&cursor=", "limit=", "status="])
async def test_an_empty_query_value_counts_as_not_given(jobhook: ServiceFactory, query: str) -> None:
    """SPEC's `?status=&limit=`: an empty value is "not given" (the fuzz took it for a value outside the
    enum that the route accepted; /openapi.json now says so)."""
    async with jobhook() as svc:
        await svc.submit(provider="simulator", prompt="listed")
        response = await svc.client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        assert len(response.json()["jobs"]) == 1
        outbox = await svc.client.get(f"/v1/outbox?{query.replace('&provider=&cursor=', '')}")
        assert outbox.status_code == 200, outbox.text
