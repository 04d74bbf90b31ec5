"""`POST /v1/jobs/{id}/reroute` and late results (SPEC §8) through the real edges: the app over HTTP, the
fake aivideoapi and apiframe (and the built-in simulator), on both engines.

The backend may move a job to its next candidate even when its current attempt was accepted, is
uncertain, or the job timed out: that attempt is not cancelled and may still deliver and charge. Its
callbacks are still taken (checked against its own provider and task id), it is still polled, the first
attempt to complete completes the job, every attempt's cost is kept and the job's cost is their sum.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.apiframe import FakeApiframe, JobScript, forced_error
from tests.integration.test_failover import attempts

pytestmark = pytest.mark.timeout(120)

BOTH = ["aivideoapi", "apiframe"]
AIVIDEOAPI_PRICE, APIFRAME_PRICE = 0.14, 0.06  # PROVIDERS.md, the default tier, one image


def env_for(aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url,
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": apiframe.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
        **extra,
    }


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


async def reroute(svc: Service, job_id: str, expect: int = 202, **body: Any) -> dict[str, Any]:
    """Reroute the job; on a 202, the job once its next attempt has been answered. The request sends it
    itself when it claims it first; when the work queue claimed it first, the 202 comes before that."""
    response = await svc.client.post(f"/v1/jobs/{job_id}/reroute", json=body)
    assert response.status_code == expect, response.text
    if expect != 202:
        return response.json()  # type: ignore[no-any-return]
    return await until(svc, job_id, lambda j: j["status"] != "queued" or j["attempts"][-1]["state"] is not None)


async def until(svc: Service, job_id: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    """The job once `check(job)` holds, read once more then: a job and its attempts are two reads, so
    the read that saw an attempt change may hold the job's row from just before the same commit."""

    async def probe() -> dict[str, Any] | None:
        job = await svc.job(job_id)
        return job if check(job) else None

    await eventually(probe, timeout=timeout)
    return await svc.job(job_id)


async def accepted_at_aivideoapi(svc: Service, aivideoapi: FakeAivideoapi, **body: Any) -> dict[str, Any]:
    """A job whose first attempt, at aivideoapi, was accepted and then goes quiet."""
    aivideoapi.default_script = TaskScript(outcome="never")
    job = await svc.submit(provider=body.pop("provider", BOTH), prompt="accepted, then silence", **body)
    assert attempts(job)[0] == ("aivideoapi", "accepted"), job
    return job


async def test_reroute_from_an_accepted_attempt_says_both_may_charge_and_the_next_completes(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        moved = await reroute(svc, job["id"])
        # Sent at once, within the request: the job is at apiframe with a task already.
        assert moved["provider"] == "apiframe" and moved["provider_task_id"] is not None, moved
        assert attempts(moved) == [("aivideoapi", "accepted"), ("apiframe", "accepted")]
        assert [item["seq"] for item in moved["attempts"]] == [1, 2]
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert attempts(done) == [("aivideoapi", "accepted"), ("apiframe", "completed")]
        assert (done["provider"], done["cost_usd"]) == ("apiframe", APIFRAME_PRICE)
        events = await svc.events(job["id"])
        [failover] = of_type(events, "failover")
        assert failover["outcome"] == "reroute"
        detail = failover["detail"]
        assert (detail["from"], detail["to"], detail["reason"], detail["left"]) == (
            "aivideoapi",
            "apiframe",
            "reroute",
            "accepted",
        )
        assert detail["both_may_charge"] is True and "both may charge" in detail["message"]
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 1)
        metrics = (await svc.client.get("/metrics")).text
        assert 'jobhook_failovers_total{from="aivideoapi",reason="reroute",to="apiframe"} 1.0' in metrics


async def test_a_second_attempt_completing_after_the_first_is_a_conflict_and_both_costs_count(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """The job completes at apiframe; aivideoapi's task, rerouted away from, completes after all: its
    callback (to the URL made for aivideoapi) is taken, the job keeps apiframe's images."""
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        first_task = job["provider_task_id"]
        await reroute(svc, job["id"])
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        images = done["result"]["images"]
        aivideoapi.complete(first_task)
        late = await until(svc, job["id"], lambda j: j["attempts"][0]["state"] == "completed")
        assert (late["status"], late["provider"], late["result"]["images"]) == ("completed", "apiframe", images)
        assert late["attempts"][0]["cost_usd"] == AIVIDEOAPI_PRICE
        assert late["cost_usd"] == pytest.approx(AIVIDEOAPI_PRICE + APIFRAME_PRICE)
        [conflict] = of_type(await svc.events(job["id"]), "conflict")
        named = conflict["detail"]
        assert (named["kept"], named["reported"]) == ("completed", "completed")
        assert named["first"] == {"seq": 2, "provider": "apiframe", "provider_task_id": done["provider_task_id"]}
        assert named["second"] == {"seq": 1, "provider": "aivideoapi", "provider_task_id": first_task}
        # The same delivery again is a duplicate, as any other.
        assert await aivideoapi.deliver(first_task) == (200, {"status": "duplicate"})


async def test_a_late_completion_of_the_earlier_attempt_completes_the_job(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """The other order: the attempt rerouted away from completes first, and the job is its; the later
    attempt completing too is the conflict."""
    apiframe.default_script = JobScript(outcome="never")
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        first_task = job["provider_task_id"]
        moved = await reroute(svc, job["id"])
        second_task = moved["provider_task_id"]
        aivideoapi.complete(first_task)
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert (done["provider"], done["provider_task_id"], done["resolved_by"]) == (
            "aivideoapi",
            first_task,
            "callback",
        )
        assert first_task in done["result"]["images"][0]["url"]
        assert attempts(done) == [("aivideoapi", "completed"), ("apiframe", "accepted")]
        assert done["cost_usd"] == AIVIDEOAPI_PRICE
        # apiframe's task goes on (it may charge): it is still polled, and its completion is kept.
        apiframe.complete(second_task)
        both = await until(svc, job["id"], lambda j: j["attempts"][1]["state"] == "completed")
        assert (both["status"], both["provider"], both["result"]) == ("completed", "aivideoapi", done["result"])
        assert both["cost_usd"] == pytest.approx(AIVIDEOAPI_PRICE + APIFRAME_PRICE)
        [conflict] = of_type(await svc.events(job["id"]), "conflict")
        assert conflict["detail"]["first"]["provider"] == "aivideoapi"
        assert conflict["detail"]["second"] == {"seq": 2, "provider": "apiframe", "provider_task_id": second_task}


async def test_an_earlier_attempt_whose_callback_never_comes_is_polled(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    apiframe.default_script = JobScript(outcome="never", drop_webhook=True)
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        aivideoapi.default_script = TaskScript(outcome="never", drop_callback=True)
        job = await svc.submit(provider=BOTH, prompt="quiet first")
        first_task = job["provider_task_id"]
        await reroute(svc, job["id"])
        aivideoapi.complete(first_task)  # no callback: only a poll can learn it
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert (done["provider"], done["resolved_by"]) == ("aivideoapi", "poll")
        polls = [e for e in of_type(await svc.events(job["id"]), "poll") if e["detail"].get("late")]
        assert polls and polls[-1]["detail"]["attempt"] == 1 and polls[-1]["outcome"] == "completed"
        assert any(query.task_id == first_task for query in aivideoapi.queries)


async def test_a_timed_out_job_is_rerouted_and_completes_at_the_next(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_JOB_TIMEOUT="1.5s")) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        assert (await until(svc, job["id"], lambda j: j["status"] == "timed_out"))["finished_at"] is not None
        moved = await reroute(svc, job["id"])
        assert (moved["error"], moved["finished_at"]) == (None, None)
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert attempts(done) == [("aivideoapi", "accepted"), ("apiframe", "completed")]
        statuses = [(e["detail"]["from"], e["outcome"]) for e in of_type(await svc.events(job["id"]), "status")]
        assert ("timed_out", "queued") in statuses


async def test_an_attempt_never_sent_is_left_without_a_charge(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """A job waiting out a 429 at its first provider: nothing was created there, so a reroute costs
    nothing more; the attempt ends not_sent."""
    aivideoapi.create_responses = [ForcedResponse.error(429, "rate_limit_exceeded", headers={"Retry-After": "600"})]
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="rate limited first")
        assert (job["status"], attempts(job)) == ("queued", [("aivideoapi", "not_sent")])
        moved = await reroute(svc, job["id"])
        assert attempts(moved)[0] == ("aivideoapi", "not_sent") and moved["attempts"][0]["ended_at"] is not None
        [failover] = of_type(await svc.events(job["id"]), "failover")
        assert failover["detail"]["both_may_charge"] is False
        assert "only apiframe may charge" in failover["detail"]["message"]
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert done["cost_usd"] == APIFRAME_PRICE
        assert len(aivideoapi.creates) == 1


@pytest.mark.parametrize("how", ["refused", "failed"])
async def test_the_last_candidate_failing_falls_back_to_the_earlier_attempt(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, how: str
) -> None:
    """Nothing is left to try after apiframe, but aivideoapi's attempt may still deliver: the job does
    not fail, it follows aivideoapi again, and completes when that attempt does."""
    if how == "refused":
        apiframe.create_responses = [forced_error(402, "insufficient_credits")]
    else:
        apiframe.default_script = JobScript(outcome="failed")
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        first_task = job["provider_task_id"]
        await reroute(svc, job["id"])
        back = await until(svc, job["id"], lambda j: j["provider"] == "aivideoapi" and len(j["attempts"]) == 2)
        second = "rejected" if how == "refused" else "failed"
        assert attempts(back) == [("aivideoapi", "accepted"), ("apiframe", second)], back
        assert back["status"] in ("submitted", "processing") and back["provider_task_id"] == first_task
        [fallback] = of_type(await svc.events(job["id"]), "fallback")
        assert (fallback["detail"]["from"], fallback["detail"]["to"], fallback["detail"]["attempt"]) == (
            "apiframe",
            "aivideoapi",
            1,
        )
        aivideoapi.complete(first_task)
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert attempts(done) == [("aivideoapi", "completed"), ("apiframe", second)]
        assert done["cost_usd"] == AIVIDEOAPI_PRICE


async def test_an_earlier_attempt_failing_after_the_job_completed_only_ends_that_attempt(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        await reroute(svc, job["id"])
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        aivideoapi.fail(job["provider_task_id"])
        after = await until(svc, job["id"], lambda j: j["attempts"][0]["state"] == "failed")
        assert (after["status"], after["result"], after["cost_usd"]) == ("completed", done["result"], APIFRAME_PRICE)
        assert after["attempts"][0]["error"]["code"] == "provider_failed"
        assert of_type(await svc.events(job["id"]), "conflict") == []


async def test_an_uncertain_attempt_is_bound_by_its_own_callback_after_a_reroute(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """aivideoapi took the job but its answer was lost: the attempt is uncertain. After a reroute its
    callback still binds it (checked against that attempt's task: another task id is refused), and from
    then on it is polled: its completion, which no callback tells, completes the job."""
    aivideoapi.create_responses = ["disconnect"]
    aivideoapi.default_script = TaskScript(outcome="never", drop_callback=True)
    apiframe.default_script = JobScript(outcome="never")
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await svc.submit(provider=BOTH, prompt="an answer lost")
        assert attempts(job) == [("aivideoapi", "uncertain")] and job["provider_task_id"] is None
        await reroute(svc, job["id"])
        [task] = list(aivideoapi.tasks)
        await eventually(lambda: aivideoapi.tasks[task].status == "processing")
        assert await aivideoapi.deliver(task) == (200, {"status": "accepted"})  # binds attempt 1
        bound = await svc.job(job["id"])
        assert bound["attempts"][0]["provider_task_id"] == task and bound["provider"] == "apiframe"
        aivideoapi.complete(task)  # no callback: a late poll learns it
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert (done["provider"], done["provider_task_id"], done["resolved_by"]) == ("aivideoapi", task, "poll")
        assert done["attempts"][0] == done["attempts"][0] | {"state": "completed", "provider_task_id": task}
        # Bound now: a delivery naming another task at the same URL is refused.
        status, answer = await aivideoapi.deliver(
            task, header_overrides={"X-Task-Id": "another"}, body_overrides={"id": "another"}
        )
        assert (status, answer["error"]["code"]) == (409, "task_id_conflict")
        stale = await aivideoapi.deliver(task, timestamp_offset=-3600)
        assert (stale[0], stale[1]["error"]["code"]) == (400, "stale_timestamp")


async def test_two_providers_sending_the_same_event_are_two_events(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """aivideoapi and the simulator both call back with `task.completed`: each attempt's is its own, not
    a duplicate of the other's."""
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi, provider=["aivideoapi", "simulator"])
        await reroute(svc, job["id"])
        await until(svc, job["id"], lambda j: j["status"] == "completed" and j["provider"] == "simulator")
        aivideoapi.complete(job["provider_task_id"])
        done = await until(svc, job["id"], lambda j: j["attempts"][0]["state"] == "completed")
        assert attempts(done) == [("aivideoapi", "completed"), ("simulator", "completed")]
        accepted = [e for e in of_type(await svc.events(job["id"]), "callback") if e["outcome"] == "accepted"]
        assert {e["detail"]["event"] for e in accepted} >= {"task.completed", "task.completed#2"}


async def test_reroutes_sent_at_once_move_the_job_once(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    apiframe.default_script = JobScript(outcome="never")
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi, provider=["aivideoapi", "apiframe", "simulator"])
        answers = await asyncio.gather(
            *(svc.client.post(f"/v1/jobs/{job['id']}/reroute", json={"from_attempt": 1}) for _ in range(5))
        )
        assert sorted(answer.status_code for answer in answers) == [200, 200, 200, 200, 202], [a.text for a in answers]
        after = await until(svc, job["id"], lambda j: j["attempts"][-1]["state"] is not None)
        assert [item["provider"] for item in after["attempts"]] == ["aivideoapi", "apiframe"]
        assert len(apiframe.creates) == 1
        # Asked again, deliberately, naming the attempt it leaves now: the job moves once more.
        again = await reroute(svc, job["id"], from_attempt=2)
        assert [item["provider"] for item in again["attempts"]] == ["aivideoapi", "apiframe", "simulator"]
        assert (await reroute(svc, job["id"], expect=200, from_attempt=2))["provider"] == "simulator"


async def test_refusals_say_why(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:

        async def refused(job_id: str, status: int, code: str, **body: Any) -> dict[str, Any]:
            response = await svc.client.post(f"/v1/jobs/{job_id}/reroute", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
            error: dict[str, Any] = response.json()["error"]
            assert error["message"]
            return error

        await refused("job_01JAAAAAAAAAAAAAAAAAAAAAAA", 404, "job_not_found")
        await refused("nope", 404, "job_not_found")
        one = await svc.submit(provider="aivideoapi", prompt="one provider")
        assert "aivideoapi" in (await refused(one["id"], 409, "no_candidate"))["message"]
        completed = await svc.submit(provider=BOTH, prompt="done already")
        await until(svc, completed["id"], lambda j: j["status"] == "completed")
        await refused(completed["id"], 409, "job_final")
        backend = await svc.submit(provider="aivideoapi", prompt="mine", submit=False)
        await refused(backend["id"], 409, "backend_submitted")
        aivideoapi.default_script = TaskScript(outcome="never")
        job = await svc.submit(provider=BOTH, prompt="bodies")
        assert (await refused(job["id"], 422, "invalid_field", from_attempt=5))["field"] == "from_attempt"
        for wrong in (0, -1, "1", True, 1.5):
            await refused(job["id"], 422, "invalid_field", from_attempt=wrong)
        await refused(job["id"], 422, "unknown_field", provider="apiframe")
        for raw, code in ((b"[1]", "invalid_body"), (b"{", "invalid_json")):
            response = await svc.client.post(f"/v1/jobs/{job['id']}/reroute", content=raw)
            assert (response.status_code, response.json()["error"]["code"]) == (
                422 if code == "invalid_body" else 400,
                code,
            )
        assert attempts(await svc.job(job["id"])) == [("aivideoapi", "accepted")]  # none of them moved it
        # An empty body is no body: the current attempt is left.
        moved = await svc.client.post(f"/v1/jobs/{job['id']}/reroute")
        assert moved.status_code == 202, moved.text


async def test_a_submission_in_flight_cannot_be_rerouted(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.create_gate = asyncio.Event()  # the task is made at once; the answer waits
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_SUBMIT_TIMEOUT="100")) as svc:
        submitting = asyncio.ensure_future(svc.submit(provider=BOTH, prompt="slow to answer"))
        await eventually(lambda: aivideoapi.creates)
        listed = await eventually(lambda: svc.client.get("/v1/jobs"))
        [job] = listed.json()["jobs"]
        response = await svc.client.post(f"/v1/jobs/{job['id']}/reroute")
        assert (response.status_code, response.json()["error"]["code"]) == (409, "submission_in_flight")
        aivideoapi.create_gate.set()
        assert [item["provider"] for item in (await submitting)["attempts"]] == ["aivideoapi"]
        assert apiframe.creates == []


async def test_reroute_takes_the_bearer_token(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_API_TOKENS="tok")) as svc:
        svc.client.headers["Authorization"] = "Bearer tok"
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        del svc.client.headers["Authorization"]
        response = await svc.client.post(f"/v1/jobs/{job['id']}/reroute")
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
        response = await svc.client.post(f"/v1/jobs/{job['id']}/reroute", headers={"Authorization": "Bearer tok"})
        assert response.status_code == 202, response.text


async def test_a_rerouted_job_is_not_failed_at_its_deadline_while_an_earlier_attempt_may_deliver(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """apiframe's answer is lost (uncertain, no task id): at the deadline such a job fails
    `submission_uncertain`, but aivideoapi's attempt may still deliver, so it only times out."""
    apiframe.create_responses = ["disconnect"]
    apiframe.default_script = JobScript(outcome="never")
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_JOB_TIMEOUT="1.5s")) as svc:
        job = await accepted_at_aivideoapi(svc, aivideoapi)
        moved = await reroute(svc, job["id"])
        assert attempts(moved) == [("aivideoapi", "accepted"), ("apiframe", "uncertain")], moved
        timed_out = await until(svc, job["id"], lambda j: j["status"] in ("timed_out", "failed"))
        assert (timed_out["status"], timed_out["error"]["code"]) == ("timed_out", "timed_out")
        aivideoapi.complete(job["provider_task_id"])
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert (done["provider"], done["cost_usd"]) == ("aivideoapi", AIVIDEOAPI_PRICE)


async def test_an_answer_that_comes_after_an_earlier_attempt_completed_the_job_is_kept(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """While the reroute's call to aivideoapi is in flight, apiframe's attempt (left alive) completes the
    job. aivideoapi's answer then only goes on its attempt, which is followed: when it completes too, its
    cost counts and the conflict is recorded."""
    apiframe.default_script = JobScript(outcome="never")
    aivideoapi.default_script = TaskScript(outcome="never")
    aivideoapi.create_gate = asyncio.Event()  # the reroute's call is held in flight
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_SUBMIT_TIMEOUT="100")) as svc:
        job = await svc.submit(provider=["apiframe", "aivideoapi"], prompt="apiframe first")
        first_task = job["provider_task_id"]
        rerouting = asyncio.ensure_future(reroute(svc, job["id"]))
        await eventually(lambda: aivideoapi.creates)
        apiframe.complete(first_task)  # its webhook is confirmed by a late poll
        done = await until(svc, job["id"], lambda j: j["status"] == "completed")
        assert (done["provider"], done["attempts"][1]["state"]) == ("apiframe", None)
        aivideoapi.create_gate.set()
        await rerouting
        answered = await until(svc, job["id"], lambda j: j["attempts"][1]["state"] is not None)
        assert (answered["status"], answered["provider"]) == ("completed", "apiframe")
        second = answered["attempts"][1]
        assert (second["state"], second["provider_task_id"]) == ("accepted", aivideoapi.creates[0].task_id)
        aivideoapi.complete(second["provider_task_id"])
        both = await until(svc, job["id"], lambda j: j["attempts"][1]["state"] == "completed")
        assert both["cost_usd"] == pytest.approx(AIVIDEOAPI_PRICE + APIFRAME_PRICE)
        assert both["result"] == done["result"]
        [conflict] = of_type(await svc.events(job["id"]), "conflict")
        assert (conflict["detail"]["first"]["provider"], conflict["detail"]["second"]["provider"]) == (
            "apiframe",
            "aivideoapi",
        )
