"""A provider that misbehaves, over real HTTP (the fake aivideoapi): each misbehaviour leaves a clear
event on its job, and the poller and the outbox keep running (another job still completes after)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.3, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


def provider_env(fake: FakeAivideoapi, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
        **extra,
    }


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


async def another_job_completes(svc: Service, fake: FakeAivideoapi) -> None:
    """The loops are alive: a fresh, well-behaved job goes all the way, and /readyz agrees."""
    fake.next_scripts.append(TaskScript())
    job = await svc.submit(provider="aivideoapi", prompt="a well-behaved job afterwards")
    done = await svc.wait_finished(job["id"])
    assert done["status"] == "completed", done
    ready = await svc.client.get("/readyz")
    assert ready.status_code == 200, ready.text


def task_answer(task_id: str | None = None, **body: Any) -> ForcedResponse:
    data = {"taskId": task_id} if task_id is not None else {}
    return ForcedResponse(200, {"code": 200, "msg": "success", "data": {**data, **body}})


UNREADABLE_SUBMITS = {
    "not JSON": ForcedResponse(200, "<html><body>OK</body></html>"),
    "no task id": task_answer(),
    "a number for the task id": ForcedResponse(200, {"code": 200, "msg": "success", "data": {"taskId": 397}}),
    "a list for the task id": ForcedResponse(200, {"code": 200, "msg": "success", "data": {"taskId": ["t"]}}),
    "data is a list": ForcedResponse(200, {"code": 200, "msg": "success", "data": [{"taskId": "t"}]}),
}


async def test_an_unreadable_answer_to_a_submission_is_uncertain_and_never_resent(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.create_responses = list(UNREADABLE_SUBMITS.values())
    async with jobhook(**provider_env(fake)) as svc:
        jobs = [await svc.submit(provider="aivideoapi", prompt=f"unreadable: {name}") for name in UNREADABLE_SUBMITS]
        for name, job in zip(UNREADABLE_SUBMITS, jobs, strict=True):
            assert (job["status"], job["provider_task_id"]) == ("submitted", None), name
            [submit] = of_type(await svc.events(job["id"]), "submit")
            assert submit["outcome"] == "uncertain", name
            assert (submit["detail"]["reason"], submit["detail"]["http_status"]) == ("unreadable_answer", 200), name
            assert submit["detail"]["message"], name
        await another_job_completes(svc, fake)
        assert len(fake.creates) == len(UNREADABLE_SUBMITS) + 1  # none of them was sent twice
        for job in jobs:
            assert (await svc.job(job["id"]))["status"] == "submitted"


async def test_unreadable_polls_are_recorded_and_polling_goes_on(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(drop_callback=True)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="answers we cannot read")
        task_id = job["provider_task_id"]
        fake.query_responses = [
            ForcedResponse(200, "<html>Bad Gateway</html>"),
            ForcedResponse(200, {"id": task_id}),
            ForcedResponse(200, {"id": task_id, "status": 7}),
            ForcedResponse(200, {"id": task_id, "status": "completed"}),  # completed, but no image
            ForcedResponse(200, {"id": task_id, "status": "completed", "output": {"urls": [None, 5, "ftp://x"]}}),
        ]
        done = await svc.wait_finished(job["id"], timeout=20)
        assert (done["status"], done["resolved_by"]) == ("completed", "poll")
        polls = of_type(await svc.events(job["id"]), "poll")
        assert [poll["outcome"] for poll in polls[:5]] == ["unreadable"] * 5
        assert all(poll["detail"]["message"] for poll in polls[:5])
        assert polls[-1]["outcome"] == "completed"
        await another_job_completes(svc, fake)


async def test_a_task_id_is_polled_at_its_own_path_whatever_it_holds(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    hostile = "../../v1/account?key=1#x"
    fake.create_responses = [task_answer(hostile)]
    async with jobhook(**provider_env(fake)) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="a task id with a path in it")
        assert job["provider_task_id"] == hostile
        await eventually(lambda: _polled(svc, job["id"]))
        gets = [target for method, target in fake.requests if method == "GET"]
        assert gets and set(gets) == {b"/v1/tasks/..%2F..%2Fv1%2Faccount%3Fkey%3D1%23x"}
        poll = of_type(await svc.events(job["id"]), "poll")[0]
        assert (poll["outcome"], poll["detail"]["http_status"]) == ("error", 404)  # no such task: as it should be
        await another_job_completes(svc, fake)


async def _polled(svc: Service, job_id: str) -> bool:
    return bool(of_type(await svc.events(job_id), "poll"))


async def test_callback_bodies_that_disagree_with_their_headers(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    fake.next_scripts = [TaskScript(outcome="never", drop_callback=True)]
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="600")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="a provider that contradicts itself")
        task_id = job["provider_task_id"]
        fake.complete(task_id)  # its own callback is dropped: only ours below arrive
        failure = {"status": "failed", "error": {"code": "upstream_error", "message": "no"}}
        cases: list[tuple[dict[str, Any], dict[str, Any], int, str]] = [
            ({}, {"id": "another-task"}, 400, "task_id_mismatch"),
            ({}, {"id": None}, 400, "task_id_mismatch"),
            ({}, failure, 400, "event_mismatch"),
            ({}, {"status": "processing"}, 400, "event_mismatch"),
            ({"X-Event": "task.failed"}, {}, 400, "event_mismatch"),
            ({"X-Task-Id": "another-task"}, {"id": "another-task"}, 409, "task_id_conflict"),
        ]
        for headers, body, status, code in cases:
            answer = await fake.deliver(task_id, header_overrides=headers, body_overrides=body)
            assert (answer[0], answer[1]["error"]["code"]) == (status, code), (headers, body)
        mid = await svc.job(job["id"])
        assert mid["status"] == "submitted" and mid["result"] is None
        refused = [e["detail"]["code"] for e in await svc.events(job["id"]) if e["outcome"] == "refused"]
        assert refused == [code for *_, code in cases]
        # The genuine delivery still counts.
        assert await fake.deliver(task_id) == (200, {"status": "accepted"})
        assert (await svc.job(job["id"]))["status"] == "completed"


async def test_a_final_status_flipped_by_a_poll_keeps_the_first(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="600")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="completed, then failed")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        task_id = job["provider_task_id"]
        failed = {"id": task_id, "status": "failed", "error": {"code": "upstream_error", "message": "changed mind"}}
        fake.query_responses = [ForcedResponse(200, failed)]
        refreshed = await svc.client.post(f"/v1/jobs/{job['id']}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        after = refreshed.json()
        assert (after["status"], after["error"], after["resolved_by"]) == ("completed", None, "callback")
        events = await svc.events(job["id"])
        [conflict] = of_type(events, "conflict")
        assert conflict["detail"] == {"kept": "completed", "reported": "failed", "by": "poll"}
        assert [e["outcome"] for e in of_type(events, "status")] == ["submitted", "completed"]


async def test_a_failed_job_stays_failed_when_a_completed_callback_follows(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.next_scripts = [TaskScript(outcome="failed")]
    async with jobhook(**provider_env(fake, JOBHOOK_CALLBACK_GRACE="600")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="failed, then completed")
        assert (await svc.wait_finished(job["id"]))["status"] == "failed"
        await fake.wait_idle()
        task_id = job["provider_task_id"]
        answer = await fake.deliver(
            task_id,
            header_overrides={"X-Event": "task.completed"},
            body_overrides={"status": "completed", "output": {"urls": ["https://files.example/late.png"]}},
        )
        assert answer == (200, {"status": "accepted"})  # genuine and new: recorded, not applied
        after = await svc.job(job["id"])
        assert (after["status"], after["error"]["code"], after["result"]) == ("failed", "provider_failed", None)
        [conflict] = of_type(await svc.events(job["id"]), "conflict")
        assert conflict["detail"] == {"kept": "failed", "reported": "completed", "by": "callback"}


@pytest.mark.parametrize("misbehaviour", ["hang", "trickle"])
async def test_a_poll_that_never_ends_is_cut_and_others_go_on(
    jobhook: ServiceFactory, fake: FakeAivideoapi, misbehaviour: str
) -> None:
    """ "hang": no answer at all (httpx's read timeout). "trickle": a 200 whose body never ends, a
    byte at a time, well within each read's timeout: only the whole call's deadline ends it."""
    fake.next_scripts = [TaskScript(drop_callback=True)]
    async with jobhook(**provider_env(fake, JOBHOOK_POLL_TIMEOUT="1")) as svc:
        stuck = await svc.submit(provider="aivideoapi", prompt=f"a poll that {misbehaviour}s")
        fake.query_responses = [misbehaviour]  # type: ignore[list-item]
        await eventually(lambda: _polled(svc, stuck["id"]), timeout=10)
        first = of_type(await svc.events(stuck["id"]), "poll")[0]
        assert first["outcome"] == "unreachable"
        assert ("ReadTimeout" if misbehaviour == "hang" else "no whole answer") in first["detail"]["message"]
        done = await svc.wait_finished(stuck["id"], timeout=15)
        assert (done["status"], done["resolved_by"]) == ("completed", "poll")  # the next poll got through
        await another_job_completes(svc, fake)


async def test_a_submission_whose_answer_never_ends_is_uncertain_and_others_go_on(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    fake.create_responses = ["trickle"]
    fake.next_scripts = [TaskScript(drop_callback=True, outcome="never")]
    async with jobhook(**provider_env(fake, JOBHOOK_SUBMIT_TIMEOUT="1")) as svc:
        started = time.monotonic()
        job = await svc.submit(provider="aivideoapi", prompt="an answer that never ends")
        assert time.monotonic() - started < 10  # bounded, not waiting for the fake to give up
        assert (job["status"], job["provider_task_id"]) == ("submitted", None)
        [submit] = of_type(await svc.events(job["id"]), "submit")
        assert (submit["outcome"], submit["detail"]["reason"]) == ("uncertain", "no_answer")
        assert "no whole answer" in submit["detail"]["message"]
        await another_job_completes(svc, fake)
        assert len(fake.creates) == 2  # never sent again


async def test_the_outbox_goes_on_past_a_destination_that_hangs(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    """A webhook destination that never answers holds one delivery until its timeout, not the loop:
    Slack still gets every job's message meanwhile."""
    async with HTTPSink() as slack, HTTPSink() as backend:
        backend.hang = True
        env = provider_env(
            fake,
            JOBHOOK_SLACK_WEBHOOK_URL=slack.url + "/T/B/hook",
            JOBHOOK_FORWARD_URL=backend.url,
            JOBHOOK_FORWARD_SECRET=WEBHOOK_SECRET,
            JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,60",
        )
        async with jobhook(**env) as svc:
            for n in range(3):
                job = await svc.submit(provider="aivideoapi", prompt=f"notified {n}")
                assert (await svc.wait_finished(job["id"]))["status"] == "completed"
            await eventually(lambda: len(slack.received) >= 3, timeout=15)
            assert backend.received  # it was tried, and is still hanging
            ready = await svc.client.get("/readyz")
            assert ready.status_code == 200, ready.text
