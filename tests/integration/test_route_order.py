"""Measured latency and success rate per provider, and the order "auto" tries providers in
(JOBHOOK_ROUTE_ORDER, SPEC §8), through the real edges: the app over HTTP, the fake aivideoapi and
apiframe, on both engines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.acceptance.test_cli import run as run_cli
from tests.conftest import Service, ServiceFactory
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.apiframe import FakeApiframe

pytestmark = pytest.mark.timeout(120)

SLOW = 1.5  # seconds the slow provider takes to finish a task
FAST = 0.1
MEASURED = ("latency_p50_s", "latency_p90_s", "success_rate", "jobs_measured")


@pytest.fixture
async def aivideoapi() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=SLOW) as provider:
        yield provider


@pytest.fixture
async def apiframe() -> AsyncIterator[FakeApiframe]:
    async with FakeApiframe(complete_after=FAST) as provider:
        yield provider


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


async def providers(svc: Service) -> dict[str, dict[str, Any]]:
    response = await svc.client.get("/v1/providers")
    assert response.status_code == 200, response.text
    return {row["provider"]: row for row in response.json()["providers"]}


async def run(svc: Service, provider: str, count: int) -> None:
    for index in range(count):
        job = await svc.submit(provider=provider, prompt=f"measure {provider} {index}")
        done = await svc.wait_finished(job["id"], timeout=30)
        assert done["status"] in ("completed", "failed"), done


async def test_providers_show_latency_and_success_rate_over_finished_jobs(
    jobhook: ServiceFactory, database: str, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        before = await providers(svc)
        assert {key: before["apiframe"][key] for key in ("latency_p50_s", "success_rate", "jobs_measured")} == {
            "latency_p50_s": None,
            "success_rate": None,
            "jobs_measured": 0,
        }
        await run(svc, "aivideoapi", 2)
        aivideoapi.default_script = TaskScript(outcome="failed")
        await run(svc, "aivideoapi", 1)
        await run(svc, "apiframe", 2)
        rows = await providers(svc)
        slow, fast = rows["aivideoapi"], rows["apiframe"]
        assert slow["jobs_measured"] == 3 and slow["success_rate"] == pytest.approx(0.6667), slow
        assert fast["jobs_measured"] == 2 and fast["success_rate"] == 1.0, fast
        assert slow["latency_p50_s"] >= SLOW * 0.9 and slow["latency_p90_s"] >= slow["latency_p50_s"], slow
        assert fast["latency_p50_s"] < slow["latency_p50_s"], (fast, slow)
        assert rows["segmind"]["jobs_measured"] == 0 and rows["segmind"]["latency_p90_s"] is None
    # `jobhook providers` reads the same figures from the database.
    env = {"JOBHOOK_DATABASE": database, "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test", "JOBHOOK_APIFRAME_API_KEY": "afk"}
    as_json = run_cli("providers", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    shown = {row["provider"]: row for row in json.loads(as_json.stdout)}
    assert {key: shown["aivideoapi"][key] for key in MEASURED} == {key: slow[key] for key in MEASURED}
    table = run_cli("providers", env=env)
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert f"{slow['latency_p50_s']:g}s/{slow['latency_p90_s']:g}s 67% of 3" in lines["aivideoapi"], table.stdout
    assert " — " in lines["segmind"], table.stdout


async def test_auto_by_latency_picks_the_measurably_faster_provider(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    # apiframe is the cheaper: by price (the default) "auto" would send it the job; here it is the slow one.
    apiframe.complete_after, aivideoapi.complete_after = SLOW, FAST
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_ROUTE_ORDER="latency")) as svc:
        await run(svc, "apiframe", 2)
        await run(svc, "aivideoapi", 2)
        rows = await providers(svc)
        assert rows["aivideoapi"]["latency_p50_s"] < rows["apiframe"]["latency_p50_s"], rows
        job = await svc.submit(provider="auto", prompt="the faster one, please")
        assert job["provider"] == "aivideoapi", job
        done = await svc.wait_finished(job["id"], timeout=30)
        assert done["status"] == "completed" and [item["provider"] for item in done["attempts"]] == ["aivideoapi"]
        assert (len(aivideoapi.creates), len(apiframe.creates)) == (3, 2)


async def test_auto_by_price_is_the_default(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await svc.submit(provider="auto", prompt="the cheaper one")
        assert job["provider"] == "apiframe", job


async def test_auto_follows_a_fixed_list_and_fails_over_along_it(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.complete_after = FAST
    async with jobhook(**env_for(aivideoapi, apiframe, JOBHOOK_ROUTE_ORDER="aivideoapi,apiframe")) as svc:
        job = await svc.submit(provider="auto", prompt="the first on the list, though dearer")
        assert job["provider"] == "aivideoapi", job
        done = await svc.wait_finished(job["id"], timeout=30)
        assert done["status"] == "completed", done
        aivideoapi.default_script = TaskScript(outcome="failed")
        job = await svc.submit(provider="auto", prompt="the first fails the task: the second takes it")
        done = await svc.wait_finished(job["id"], timeout=30)
        assert [(item["provider"], item["state"]) for item in done["attempts"]] == [
            ("aivideoapi", "failed"),
            ("apiframe", "completed"),
        ], done


def samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of the exposition, by their labels."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


async def test_metrics_count_ended_attempts_by_provider_and_state_and_failovers_by_reason(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> None:
    aivideoapi.complete_after = FAST
    aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
    async with jobhook(**env_for(aivideoapi, apiframe)) as svc:
        job = await svc.submit(provider=["aivideoapi", "apiframe"], prompt="refused, then made elsewhere")
        done = await svc.wait_finished(job["id"], timeout=30)
        assert done["status"] == "completed", done
        await run(svc, "aivideoapi", 1)
        text = (await svc.client.get("/metrics")).text
        assert samples(text, "jobhook_attempts_ended_total") == {
            '{provider="aivideoapi",state="rejected"}': 1.0,
            '{provider="aivideoapi",state="completed"}': 1.0,
            '{provider="apiframe",state="completed"}': 1.0,
        }, text
        assert samples(text, "jobhook_provider_success_ratio") == {
            '{provider="aivideoapi"}': 1.0,
            '{provider="apiframe"}': 1.0,
        }, text
        latency = samples(text, "jobhook_provider_latency_seconds")
        assert set(latency) == {
            f'{{provider="{name}",quantile="{q}"}}' for name in ("aivideoapi", "apiframe") for q in ("0.5", "0.9")
        }, text
        assert samples(text, "jobhook_failovers_total") == {
            '{from="aivideoapi",reason="rejected",to="apiframe"}': 1.0
        }, text
