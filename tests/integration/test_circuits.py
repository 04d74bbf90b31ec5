"""Per-provider circuits (SPEC §8) through the real edges: the app over HTTP, the fake aivideoapi, a
webhook sink for the forwarded events, on both engines.

A provider that fails N attempts in a row for its own reasons is left alone: its jobs wait `queued`
without a request to it, one job probes it after the cooldown, success closes the circuit and the
waiting jobs go; a failed probe doubles the cooldown. The circuit is in the database: it survives a
restart, and two app instances on one database send one probe between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain import attempt
from service.domain.circuit import CircuitPolicy, CircuitState
from service.domain.status import JobError
from service.domain.work import SubmitState
from service.store.base import OutboxPolicy
from service.store.common import Store
from tests.conftest import Service, ServiceFactory, eventually, new_stored_job, replica_stores
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse
from tests.fakes.segmind import FakeSegmind
from tests.fakes.server import free_socket
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink

pytestmark = pytest.mark.timeout(120)

# (the fake's refusal, the setting whose cooldown applies to it)
REFUSALS = {
    "invalid key (401)": (401, "invalid_api_key", "JOBHOOK_ROUTE_COOLDOWN", "JOBHOOK_ROUTE_CREDITS_COOLDOWN"),
    "no credits (402)": (402, "insufficient_credits", "JOBHOOK_ROUTE_CREDITS_COOLDOWN", "JOBHOOK_ROUTE_COOLDOWN"),
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


@pytest.fixture
async def backend() -> AsyncIterator[HTTPSink]:
    async with HTTPSink(verify=True) as sink:
        yield sink


def env_for(
    fake: FakeAivideoapi | None, backend: HTTPSink, base_url: str | None = None, **extra: str
) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": base_url or (fake.base_url if fake is not None else ""),
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
        "JOBHOOK_FORWARD_URL": backend.url,
        "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
        "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0,0.2,0.2,0.2",
        "JOBHOOK_ROUTE_BREAKER_FAILURES": "3",
        "JOBHOOK_ROUTE_COOLDOWN": "60s",
        "JOBHOOK_ROUTE_CREDITS_COOLDOWN": "60s",
        "JOBHOOK_ROUTE_MAX_COOLDOWN": "10m",
        **extra,
    }


def forwarded(backend: HTTPSink, type_: str) -> list[dict[str, Any]]:
    """The `data` of each event of `type_` the backend received (signatures checked by the sink)."""
    return [body["data"] for body in (r.json() for r in backend.delivered()) if body["type"] == type_]


async def circuit(svc: Service, provider: str = "aivideoapi") -> dict[str, Any]:
    response = await svc.client.get("/v1/providers")
    assert response.status_code == 200, response.text
    [row] = [row for row in response.json()["providers"] if row["provider"] == provider]
    return row["circuit"]  # type: ignore[no-any-return]


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


async def refuse(svc: Service, fake: FakeAivideoapi, status: int, code: str, count: int) -> None:
    """`count` jobs, each refused by the provider: each answered 502 and failed."""
    fake.create_responses = [ForcedResponse.error(status, code) for _ in range(count)]
    for n in range(count):
        response = await svc.client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"refused {n}"})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["provider_code"] == code


async def waiting_job(svc: Service, prompt: str) -> dict[str, Any]:
    """A job submitted while the circuit is open: 202, queued, said to wait for the circuit."""
    job = await svc.submit(provider="aivideoapi", prompt=prompt)
    assert (job["status"], job["provider_task_id"]) == ("queued", None), job
    [waiting] = of_type(await svc.events(job["id"]), "circuit")
    assert waiting["outcome"] == "waiting"
    assert waiting["detail"]["message"].startswith("circuit open until ")
    return job


@pytest.mark.parametrize("refusal", list(REFUSALS), ids=list(REFUSALS))
async def test_refusals_open_the_circuit_jobs_wait_one_probe_and_success_closes_it(
    jobhook: ServiceFactory, fake: FakeAivideoapi, backend: HTTPSink, refusal: str
) -> None:
    status, code, applies, other = REFUSALS[refusal]
    async with jobhook(**env_for(fake, backend, **{applies: "1s", other: "60s"})) as svc:
        await refuse(svc, fake, status, code, 2)
        closed = await circuit(svc)
        assert (closed["state"], closed["failures_in_a_row"]) == ("closed", 2)
        await refuse(svc, fake, status, code, 1)  # the third in a row opens it
        opened = await eventually(lambda: forwarded(backend, "provider.circuit_opened"))
        reason = "insufficient_credits" if status == 402 else f"http_{status}"
        assert opened[0]["provider"] == "aivideoapi"
        assert (opened[0]["reason"], opened[0]["cooldown"], opened[0]["failures_in_a_row"]) == (reason, 1.0, 3)
        assert (await circuit(svc))["state"] == "open"

        # While open: accepted, queued, and nothing reaches the provider.
        waiting = [await waiting_job(svc, f"waits {n}") for n in range(3)]
        assert len(fake.creates) == 3

        # Half-open: one job probes; it is refused again, so the circuit opens for twice as long.
        fake.create_responses = [ForcedResponse.error(status, code)]
        await eventually(lambda: len(forwarded(backend, "provider.circuit_opened")) == 2, timeout=20)
        reopened = forwarded(backend, "provider.circuit_opened")[1]
        assert (reopened["cooldown"], reopened["probe_failed"]) == (2.0, True)
        assert len(fake.creates) == 4  # one probe, not one per waiting job
        jobs = [await svc.job(job["id"]) for job in waiting]
        [probe] = [job for job in jobs if job["status"] == "failed"]
        assert [job["status"] for job in jobs if job is not probe] == ["queued", "queued"]

        # The next probe succeeds: the circuit closes and the jobs still waiting go.
        finished = [await svc.wait_finished(job["id"], timeout=20) for job in jobs if job is not probe]
        assert [job["status"] for job in finished] == ["completed", "completed"]
        assert len(fake.creates) == 6
        await eventually(lambda: forwarded(backend, "provider.circuit_closed"))
        assert (await circuit(svc)) == {
            "state": "closed",
            "until": None,
            "failures_in_a_row": 0,
            "reason": None,
            "probing": False,
        }
        assert backend.rejected_signatures == 0


async def test_a_request_refused_for_itself_does_not_count(
    jobhook: ServiceFactory, fake: FakeAivideoapi, backend: HTTPSink
) -> None:
    """400/422 are the caller's fault: however many, the provider's circuit stays closed."""
    async with jobhook(**env_for(fake, backend)) as svc:
        await refuse(svc, fake, 400, "invalid_request", 4)
        assert (await circuit(svc))["state"] == "closed"
        assert (await circuit(svc))["failures_in_a_row"] == 0
        job = await svc.submit(provider="aivideoapi", prompt="goes through")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"


async def test_a_provider_that_refuses_connections_opens_its_circuit(
    jobhook: ServiceFactory, backend: HTTPSink
) -> None:
    sock = free_socket()  # bound, never listening: connection refused
    closed_port = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with contextlib.closing(sock):
        async with jobhook(**env_for(None, backend, base_url=closed_port)) as svc:
            job = await svc.submit(provider="aivideoapi", prompt="nobody home")
            assert job["status"] == "queued"
            # The job's own retries are attempts: the third in a row opens the circuit.
            opened = await eventually(lambda: forwarded(backend, "provider.circuit_opened"), timeout=20)
            assert (opened[0]["reason"], opened[0]["failures_in_a_row"]) == ("not_sent", 3)
            shown = await circuit(svc)
            assert (shown["state"], shown["reason"]) == ("open", "not_sent")
            events = await svc.events(job["id"])
            assert [e["outcome"] for e in of_type(events, "submit")] == ["retry", "retry", "retry"]

            async def waits() -> bool:
                circuit_events = of_type(await svc.events(job["id"]), "circuit")
                return any(event["outcome"] == "waiting" for event in circuit_events)

            await eventually(waits)  # its next retry is not sent: it waits for the circuit
            metrics = (await svc.client.get("/metrics")).text
            assert 'jobhook_provider_circuit_state{provider="aivideoapi",state="open"} 1.0' in metrics
            assert 'jobhook_provider_circuit_state{provider="aivideoapi",state="closed"} 0.0' in metrics


async def test_the_circuit_survives_a_restart(jobhook: ServiceFactory, fake: FakeAivideoapi, backend: HTTPSink) -> None:
    env = env_for(fake, backend)
    async with jobhook(**env) as svc:
        await refuse(svc, fake, 401, "invalid_api_key", 3)
        assert (await circuit(svc))["state"] == "open"
    async with jobhook(**env) as again:
        shown = await circuit(again)
        assert (shown["state"], shown["failures_in_a_row"], shown["reason"]) == ("open", 3, "http_401")
        await waiting_job(again, "after the restart")
        assert len(fake.creates) == 3


async def test_two_instances_on_one_database_send_one_probe(
    jobhook: ServiceFactory, fake: FakeAivideoapi, backend: HTTPSink
) -> None:
    env = env_for(fake, backend, JOBHOOK_ROUTE_COOLDOWN="1s")
    async with jobhook(**env) as one, jobhook(**env) as two:
        await refuse(one, fake, 401, "invalid_api_key", 3)
        waiting = [await waiting_job(svc, f"waits on {n}") for n in range(3) for svc in (one, two)]
        fake.create_responses = [ForcedResponse.error(401, "invalid_api_key")]  # the probe fails
        await eventually(lambda: len(forwarded(backend, "provider.circuit_opened")) == 2, timeout=20)
        assert len(fake.creates) == 4  # both instances' jobs came due at once: one probe between them
        # The second probe succeeds, and every job still waiting goes, from either instance.
        finished = [await one.wait_finished(job["id"], timeout=20) for job in waiting]
        assert sorted(job["status"] for job in finished) == ["completed"] * 5 + ["failed"]
        assert len(fake.creates) == 3 + 1 + 5
        assert len(forwarded(backend, "provider.circuit_closed")) == 1


@pytest.fixture
async def stores(database: str) -> AsyncIterator[list[Store]]:
    """Three stores open on one database, as three replicas hold, with a cooldown of 50 ms."""
    policy = OutboxPolicy(circuits=CircuitPolicy(failures=3, cooldown=0.05, max_cooldown=1.0))
    async with replica_stores(database, policy=policy) as opened:
        yield opened


async def test_of_many_jobs_created_at_once_on_several_stores_one_claims_the_probe(stores: list[Store]) -> None:
    """The probe is claimed in the job's own transaction, and by one of them only, whichever process."""
    refusal = attempt.rejected(
        {"http_status": 401}, JobError("provider_rejected", "bad key", "invalid_api_key"), http_status=401
    )
    for _ in range(3):
        job, _ = await stores[0].create_job(new_stored_job())
        await stores[0].record_submit(job.id, refusal)
    [shut] = (await stores[1].provider_circuits()).values()
    assert shut.state is CircuitState.OPEN
    await asyncio.sleep(0.1)  # past the cooldown: half-open
    created = await asyncio.gather(*(stores[n % 3].create_job(new_stored_job()) for n in range(30)))
    sending = [job for job, _ in created if job.submit_state is SubmitState.SENDING]
    assert len(sending) == 1
    [probing] = (await stores[2].provider_circuits()).values()
    assert probing.probe_job == sending[0].id


async def test_segmind_out_of_credits_opens_its_circuit_for_the_credits_cooldown(
    jobhook: ServiceFactory, backend: HTTPSink
) -> None:
    """Segmind answers the submission itself (the work queue sends it): its 406 is a want of credits."""
    async with FakeSegmind(latency=0.1, credits=0.0, price_per_image=1.0) as segmind:
        env = {
            **env_for(None, backend),
            "JOBHOOK_SEGMIND_API_KEY": "sg-test",
            "JOBHOOK_SEGMIND_BASE_URL": segmind.base_url,
            "JOBHOOK_ROUTE_CREDITS_COOLDOWN": "5m",
        }
        async with jobhook(**env) as svc:
            for n in range(3):
                response = await svc.client.post("/v1/jobs", json={"provider": "segmind", "prompt": f"broke {n}"})
                job_id = response.json().get("id") or response.json()["error"]["job_id"]
                assert (await svc.wait_finished(job_id))["status"] == "failed"
            opened = await eventually(lambda: forwarded(backend, "provider.circuit_opened"))
            assert (opened[0]["provider"], opened[0]["reason"], opened[0]["cooldown"]) == (
                "segmind",
                "insufficient_credits",
                300.0,
            )
            job = await svc.submit(provider="segmind", prompt="waits for credits")

            async def waits() -> bool:
                return any(e["outcome"] == "waiting" for e in of_type(await svc.events(job["id"]), "circuit"))

            await eventually(waits)
            assert (await svc.job(job["id"]))["status"] == "queued"
            assert len(segmind.creates) == 3
