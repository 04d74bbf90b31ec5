"""The edges of failover (SPEC §8) through the real edges: the app over HTTP, the fake aivideoapi,
apiframe and apiinone, on both engines.

- A 429 or 5xx is retried at the same provider; a job with a candidate left moves on once its tries
  there are spent (the attempt ends `rejected`), a job without one retries until its deadline. On the
  circuit, a 429 counts only when it ends an attempt; a 5xx counts at each try.
- A next candidate whose circuit is open is passed over (an attempt `not_sent`, saying until when)
  while a later one may be tried; when every one left is open, the job waits for the first to
  half-open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain import attempt
from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse
from tests.fakes.apiframe import FakeApiframe
from tests.fakes.apiframe import forced_error as apiframe_error
from tests.fakes.apiinone import FakeApiinone
from tests.fakes.apiinone import forced_error as apiinone_error
from tests.integration.test_failover import attempts

pytestmark = pytest.mark.timeout(120)

BOTH = ["aivideoapi", "apiframe"]
THREE = ["aivideoapi", "apiframe", "apiinone"]
HELD_SUBMIT = "30"  # JOBHOOK_SUBMIT_TIMEOUT while a provider's answer is held back by the test


@pytest.fixture
async def apiinone() -> AsyncIterator[FakeApiinone]:
    async with FakeApiinone(complete_after=0.2) as provider:
        yield provider


def env_for(
    aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, apiinone: FakeApiinone | None = None, **extra: str
) -> dict[str, str]:
    env = {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url,
        "JOBHOOK_APIFRAME_API_KEY": "afk_test",
        "JOBHOOK_APIFRAME_BASE_URL": apiframe.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
    }
    if apiinone is not None:
        env.update(JOBHOOK_APIINONE_API_KEY="aio_test", JOBHOOK_APIINONE_BASE_URL=apiinone.base_url)
    return {**env, **extra}


async def finished(svc: Service, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = await svc.job(job_id)
        return job if job["status"] in ("completed", "failed", "timed_out") else None

    result: dict[str, Any] = await eventually(done, timeout=40)
    return result


async def circuit(svc: Service, provider: str) -> dict[str, Any]:
    response = await svc.client.get("/v1/providers")
    assert response.status_code == 200, response.text
    [row] = [row for row in response.json()["providers"] if row["provider"] == provider]
    return row["circuit"]  # type: ignore[no-any-return]


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


# -- 429/5xx past the retries ---------------------------------------------------------------------------

# status → (the fake's answer, the circuit's count after the job's tries there: a 429 counts once, when
# it ends the attempt; a 503 at each try)
BUSY = {
    "429": (ForcedResponse.error(429, "rate_limited", "slow down", headers={"Retry-After": "1"}), 1, "http_429"),
    "503": (ForcedResponse.error(503, "unavailable", "down for maintenance"), attempt.TRIES_PER_CANDIDATE, "http_503"),
}


@pytest.mark.parametrize("status", list(BUSY))
async def test_429_or_5xx_past_the_retries_ends_the_attempt_and_the_next_candidate_takes_the_job(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, status: str
) -> None:
    answer, counted, reason = BUSY[status]
    aivideoapi.create_responses = [answer] * attempt.TRIES_PER_CANDIDATE
    # A threshold over the tries: the count is read, not the circuit opening.
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_ROUTE_BREAKER_FAILURES="10")) as svc:
        job = await svc.submit(provider=BOTH, prompt=f"busy with {status}")
        assert (job["status"], job["provider"]) == ("queued", "aivideoapi"), job  # retried there first
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "completed")]
        error = done["attempts"][0]["error"]
        assert (error["code"], error["provider_code"]) == ("retries_exhausted", answer.body["error"]["code"])  # type: ignore[index]
        assert error["message"].startswith(f"aivideoapi could not take the job {attempt.TRIES_PER_CANDIDATE} times")
        assert done["attempts"][0]["ended_at"] is not None
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (attempt.TRIES_PER_CANDIDATE, 1)
        events = await svc.events(job["id"])
        retried = [event for event in of_type(events, "submit") if event["outcome"] == "retry"]
        assert len(retried) == attempt.TRIES_PER_CANDIDATE
        if status == "429":  # Retry-After was respected between the tries (as recorded, not as timed)
            assert all(event["detail"]["retry_in"] >= 1.0 for event in retried), retried
        assert [event["detail"] for event in of_type(events, "failover")] == [
            {"from": "aivideoapi", "to": "apiframe", "reason": "rejected"}
        ]
        shown = await circuit(svc, "aivideoapi")
        assert (shown["state"], shown["failures_in_a_row"], shown["reason"]) == ("closed", counted, reason)
        metrics = (await svc.client.get("/metrics")).text
        assert 'jobhook_attempts_ended_total{provider="aivideoapi",state="rejected"} 1.0' in metrics


async def test_a_single_provider_job_retries_429s_past_the_tries_and_its_circuit_stays_closed(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    """Nowhere else to go: retried until accepted (or the deadline). Rate limits are the provider pacing
    its clients, not failing: its circuit (3 failures open it here) does not open."""
    tries = attempt.TRIES_PER_CANDIDATE + 2
    aivideoapi.create_responses = [ForcedResponse.error(429, "rate_limited", headers={"Retry-After": "0"})] * tries
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_ROUTE_BREAKER_FAILURES="3")) as svc:
        job = await svc.submit(provider="aivideoapi", prompt="patient")
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "completed")]
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (tries + 1, 0)
        shown = await circuit(svc, "aivideoapi")
        assert (shown["state"], shown["failures_in_a_row"]) == ("closed", 0)
        assert of_type(await svc.events(job["id"]), "circuit") == []


# -- a next candidate whose circuit is open -------------------------------------------------------------


async def held_refusal(svc: Service, aivideoapi: FakeAivideoapi, body: dict[str, Any]) -> tuple[asyncio.Event, Any]:
    """Submit `body` (aivideoapi first) with aivideoapi's refusal held back: returns the gate that lets it
    answer, and the pending request. The job is routed and sent once this returns (HELD_SUBMIT: time
    enough to arrange what the test needs before the call would be cut as uncertain)."""
    gate = asyncio.Event()
    aivideoapi.create_responses = [ForcedResponse(402, {"error": {"code": "insufficient_credits"}}, gate=gate)]
    pending = asyncio.create_task(svc.client.post("/v1/jobs", json=body))
    await eventually(lambda: aivideoapi.creates)
    return gate, pending


async def open_circuit(svc: Service, provider: str, fake: FakeApiframe | FakeApiinone, status: int, code: str) -> str:
    """One refusal of a job naming `provider` alone opens its circuit (JOBHOOK_ROUTE_BREAKER_FAILURES=1):
    returns until when."""
    error = apiframe_error(status, code) if isinstance(fake, FakeApiframe) else apiinone_error(status, code)
    fake.create_responses = [error]
    response = await svc.client.post("/v1/jobs", json={"provider": provider, "prompt": f"opens {provider}"})
    assert response.status_code == 502, response.text
    shown = await circuit(svc, provider)
    assert shown["state"] == "open"
    return str(shown["until"])


async def test_a_next_candidate_whose_circuit_is_open_is_passed_over_without_a_request(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, apiinone: FakeApiinone
) -> None:
    env = env_for(
        aivideoapi,
        apiframe,
        apiinone,
        JOBHOOK_ROUTE_BREAKER_FAILURES="1",
        JOBHOOK_ROUTE_COOLDOWN="60s",
        JOBHOOK_SUBMIT_TIMEOUT=HELD_SUBMIT,
    )
    async with jobhook(**env) as svc:
        # Routed while every circuit is closed: aivideoapi, then apiframe, then apiinone.
        gate, pending = await held_refusal(svc, aivideoapi, {"provider": THREE, "prompt": "goes round"})
        until = await open_circuit(svc, "apiframe", apiframe, 401, "invalid_api_key")  # while the job is out
        gate.set()
        answer = await pending
        assert answer.status_code == 202, answer.text
        job = answer.json()
        # Within the same request: refused, apiframe passed over, sent to apiinone.
        assert (job["provider"], job["status"]) == ("apiinone", "submitted"), job
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "not_sent"), ("apiinone", "completed")]
        skipped = done["attempts"][1]
        assert skipped["error"]["code"] == "circuit_open"
        assert skipped["error"]["message"] == (
            f"apiframe's circuit is open until {until}: not sent, the next candidate is tried"
        )
        assert skipped["ended_at"] is not None and skipped["provider_task_id"] is None
        assert (len(aivideoapi.creates), len(apiframe.creates), len(apiinone.creates)) == (1, 1, 1)
        failovers = [event["detail"] for event in of_type(await svc.events(job["id"]), "failover")]
        assert failovers == [
            {"from": "aivideoapi", "to": "apiframe", "reason": "rejected"},
            {"from": "apiframe", "to": "apiinone", "reason": "circuit_open"},
        ]
        # Passing over a shut provider is not a failure of that provider: its count is as it was.
        assert (await circuit(svc, "apiframe"))["failures_in_a_row"] == 1
        metrics = (await svc.client.get("/metrics")).text
        assert 'jobhook_attempts_ended_total{provider="apiframe",state="not_sent"} 1.0' in metrics
        assert 'jobhook_failovers_total{from="apiframe",reason="circuit_open",to="apiinone"} 1.0' in metrics


async def test_when_every_candidate_left_is_open_the_job_waits_for_the_first_to_half_open(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe, apiinone: FakeApiinone
) -> None:
    env = env_for(
        aivideoapi,
        apiframe,
        apiinone,
        JOBHOOK_ROUTE_BREAKER_FAILURES="1",
        JOBHOOK_ROUTE_CREDITS_COOLDOWN="10m",  # apiframe: out of credits, shut for long
        JOBHOOK_ROUTE_COOLDOWN="4s",  # apiinone: a refused key, half-open first (time to look first)
        JOBHOOK_SUBMIT_TIMEOUT=HELD_SUBMIT,
    )
    async with jobhook(**env) as svc:
        gate, pending = await held_refusal(svc, aivideoapi, {"provider": THREE, "prompt": "waits for one"})
        await open_circuit(svc, "apiframe", apiframe, 402, "insufficient_credits")
        half_opens = await open_circuit(svc, "apiinone", apiinone, 401, "invalid_api_key")
        gate.set()
        answer = await pending
        assert answer.status_code == 202, answer.text
        job = answer.json()
        # Both left are open: it waits, queued at apiframe, for apiinone (the first to half-open).
        assert (job["status"], job["provider"], job["provider_task_id"]) == ("queued", "apiframe", None), job
        circuit_events = of_type(await svc.events(job["id"]), "circuit")
        [waiting] = [event for event in circuit_events if event["outcome"] == "waiting"]
        assert waiting["detail"]["provider"] == "apiinone"
        assert waiting["detail"]["until"] == half_opens
        done = await finished(svc, job["id"])
        assert done["status"] == "completed", done
        assert attempts(done) == [("aivideoapi", "rejected"), ("apiframe", "not_sent"), ("apiinone", "completed")]
        assert done["attempts"][1]["error"]["code"] == "circuit_open"
        # apiinone's one request is the job's probe: it succeeded, so its circuit closed.
        assert (len(aivideoapi.creates), len(apiframe.creates), len(apiinone.creates)) == (1, 1, 2)
        assert (await circuit(svc, "apiinone"))["state"] == "closed"
        assert (await circuit(svc, "apiframe"))["state"] == "open"
