"""Daily budgets (SPEC §9) through the real edges: the app over HTTP, the fake providers, a webhook
sink for `budget.exhausted`, on both engines.

An attempt's price is reserved in the transaction that sends it: however many submissions come at
once (on however many replicas), what the fake providers were sent never passes the cap. Kept when
the provider takes it (or may have: uncertain), released when it refuses or fails the task. A provider
over its own cap is left out by routing; a submission nothing can take is 429 with Retry-After, and
no job is made; a queued job that meets a cap waits for the reset (the next UTC midnight: an injected
clock crosses it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.domain import budget
from service.domain.budget import Caps, Policy
from service.domain.pricing import PriceTable
from service.domain.work import SubmitState, WorkKind
from service.store.base import OutboxPolicy
from service.store.common import Store
from tests.conftest import Service, ServiceFactory, eventually, new_stored_job, replica_stores
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.apiframe import FakeApiframe
from tests.fakes.segmind import FakeSegmind
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink

pytestmark = pytest.mark.timeout(120)


class Clock:
    """The app's time: the real clock, moved to a chosen moment (and on, when a test needs tomorrow)."""

    def __init__(self, at: float) -> None:
        self.offset = at - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset

    def move_to(self, at: float) -> None:
        self.offset = at - time.time()


def today_at(hour: int, minute: int = 0, second: int = 0) -> float:
    """A moment of the real current UTC day: an injected clock near the real one keeps the providers'
    own timestamps (callbacks) within a day of jobhook's."""
    start = math.floor(time.time() / 86_400) * 86_400
    return start + hour * 3600 + minute * 60 + second


@pytest.fixture
async def aivideoapi() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


@pytest.fixture
async def backend() -> AsyncIterator[HTTPSink]:
    async with HTTPSink(verify=True) as sink:
        yield sink


def env_for(aivideoapi: FakeAivideoapi, backend: HTTPSink | None = None, **extra: str) -> dict[str, str]:
    env = {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url,
        "JOBHOOK_AIVIDEOAPI_PRICES": "0.10",
        "JOBHOOK_CALLBACK_GRACE": "0.3",
        "JOBHOOK_MIRROR_IMAGES": "false",
        "JOBHOOK_TIMESTAMP_TOLERANCE": "1d",  # an injected clock may be hours from the fake's
        **extra,
    }
    if backend is not None:
        env.update(
            JOBHOOK_FORWARD_URL=backend.url,
            JOBHOOK_FORWARD_SECRET=WEBHOOK_SECRET,
            JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,0.2,0.2,0.2",
        )
    return env


async def budget_of(svc: Service) -> dict[str, Any]:
    response = await svc.client.get("/v1/budget")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def scope(report: dict[str, Any], name: str) -> dict[str, Any]:
    if name == "total":
        return report["total"]  # type: ignore[no-any-return]
    [row] = [row for row in report["providers"] if row["scope"] == name]
    return row  # type: ignore[no-any-return]


def figures(report: dict[str, Any], name: str) -> tuple[float, float]:
    row = scope(report, name)
    return row["reserved_usd"], row["spent_usd"]


def exhausted(backend: HTTPSink) -> list[dict[str, Any]]:
    """The `data` of each budget.exhausted the backend received (signatures checked by the sink)."""
    return [body["data"] for body in (r.json() for r in backend.delivered()) if body["type"] == "budget.exhausted"]


async def post(svc: Service, prompt: str, provider: Any = "aivideoapi", **more: Any) -> httpx.Response:
    return await svc.client.post("/v1/jobs", json={"provider": provider, "prompt": prompt, **more})


def accepted(fake: FakeAivideoapi | FakeApiframe) -> int:
    """The tasks the fake provider created: its own record, not jobhook's."""
    return sum(1 for record in fake.creates if record.status is not None and 200 <= record.status < 300)


async def test_fifty_submissions_at_once_never_pass_the_cap(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, backend: HTTPSink
) -> None:
    """$1.00 a day at $0.07 a job: 14 fit ($0.98), the 15th would pass it. 50 at once: 14 are sent."""
    env = env_for(aivideoapi, backend, JOBHOOK_AIVIDEOAPI_PRICES="0.07", JOBHOOK_BUDGET_USD_PER_DAY="1")
    async with jobhook(**env) as svc:
        answers = await asyncio.gather(*(post(svc, f"at the edge {n}") for n in range(50)))
        codes = sorted(response.status_code for response in answers)
        assert codes == [202] * 14 + [429] * 36, codes
        assert accepted(aivideoapi) == len(aivideoapi.creates) == 14  # nothing else reached the provider
        assert accepted(aivideoapi) * 0.07 <= 1.0
        report = await budget_of(svc)
        reserved, spent = figures(report, "total")
        assert (reserved, spent) == (0.0, 0.98)
        assert figures(report, "aivideoapi") == (0.0, 0.98)
        assert scope(report, "total")["remaining_usd"] == 0.02
        listed = (await svc.client.get("/v1/jobs", params={"limit": 200})).json()["jobs"]
        assert len(listed) == 14  # a refused submission leaves no job behind
        # 36 refusals, many at the same moment: the cap's first refusal of the day is told once.
        await eventually(lambda: exhausted(backend))
        await asyncio.sleep(0.5)  # a second event would have come by now
        [told] = exhausted(backend)
        assert (told["scope"], told["cap"]) == ("total", 1.0)


async def test_a_refusal_and_a_failed_task_release_their_reservation(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi
) -> None:
    async with jobhook(**env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.20")) as svc:
        aivideoapi.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
        assert (await post(svc, "refused")).status_code == 502
        assert figures(await budget_of(svc), "total") == (0.0, 0.0)

        aivideoapi.next_scripts = [TaskScript(outcome="failed", complete_after=3.0)]
        failing = (await post(svc, "fails")).json()
        assert figures(await budget_of(svc), "total") == (0.0, 0.10)  # taken: kept while it may be charged
        assert (await svc.wait_finished(failing["id"], timeout=30))["status"] == "failed"
        assert figures(await budget_of(svc), "total") == (0.0, 0.0)  # failed: refunded, released

        # What was released is free again: the whole $0.20 takes two jobs, and no third.
        assert [(await post(svc, f"fits {n}")).status_code for n in range(3)] == [202, 202, 429]
        assert figures(await budget_of(svc), "total") == (0.0, 0.20)
        assert accepted(aivideoapi) == 3


async def test_an_attempt_never_sent_releases_its_reservation(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi
) -> None:
    """429 from the provider: not taken now, retried later; nothing is held meanwhile."""
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.10")
    async with jobhook(**env) as svc:
        aivideoapi.create_responses = [ForcedResponse.error(429, "rate_limit_exceeded", headers={"Retry-After": "30"})]
        job = (await post(svc, "later")).json()
        assert job["status"] == "queued"
        assert figures(await budget_of(svc), "total") == (0.0, 0.0)
        assert [item["state"] for item in job["attempts"]] == ["not_sent"]


async def test_an_uncertain_attempt_keeps_its_reservation(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi) -> None:
    """Sent and no answer: the provider may have taken it and may charge, so its price stays counted."""
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.15", JOBHOOK_SUBMIT_TIMEOUT="0.5")
    async with jobhook(**env) as svc:
        aivideoapi.create_responses = ["hang"]
        aivideoapi.next_scripts = [TaskScript(outcome="never")]  # no callback comes to bind it either
        job = (await post(svc, "no answer")).json()
        assert (job["status"], job["attempts"][0]["state"]) == ("submitted", "uncertain")
        assert figures(await budget_of(svc), "total") == (0.0, 0.10)
        refused = await post(svc, "over")
        assert refused.status_code == 429, refused.text
        assert len(aivideoapi.creates) == 1


async def test_a_provider_over_its_own_cap_steers_auto_to_the_next(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, backend: HTTPSink
) -> None:
    async with FakeApiframe(complete_after=0.2) as apiframe:
        env = env_for(
            aivideoapi,
            backend,
            JOBHOOK_APIFRAME_API_KEY="afk_test",
            JOBHOOK_APIFRAME_BASE_URL=apiframe.base_url,
            JOBHOOK_ROUTE_ORDER="aivideoapi,apiframe",
            JOBHOOK_AIVIDEOAPI_BUDGET_USD_PER_DAY="0.10",
        )
        async with jobhook(**env) as svc:
            first = (await post(svc, "first", "auto")).json()
            assert first["provider"] == "aivideoapi"
            second = (await post(svc, "second", "auto")).json()
            assert second["provider"] == "apiframe"  # aivideoapi's own cap is spent: left out like an open circuit
            assert [item["provider"] for item in second["attempts"]] == ["apiframe"]
            assert (accepted(aivideoapi), accepted(apiframe)) == (1, 1)
            # Named alone, it is refused: its cap, and when it resets.
            alone = await post(svc, "alone")
            assert alone.status_code == 429
            assert alone.json()["error"]["scope"] == "aivideoapi"
            assert alone.json()["error"]["candidates"][0]["reason"] == "over_budget"
            report = await budget_of(svc)
            assert figures(report, "aivideoapi") == (0.0, 0.10)
            assert figures(report, "apiframe") == (0.0, 0.06)  # no cap of its own: counted all the same
            assert figures(report, "total") == (0.0, 0.16)
            told = await eventually(lambda: exhausted(backend))
            await asyncio.sleep(0.5)  # a second event would have come by now
            assert len(exhausted(backend)) == 1  # left out, then refused: told once
            assert told[0] == {
                "provider": "aivideoapi",
                "scope": "aivideoapi",
                "cap": 0.1,
                "spent": 0.1,
                "reserved": 0.0,
                "reset_at": report["reset_at"],
            }
            assert scope(await budget_of(svc), "aivideoapi")["exhausted_at"] is not None


async def test_the_429_says_which_cap_and_when_it_resets(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi) -> None:
    clock = Clock(today_at(23, 55, 0))
    reset = dt.datetime.fromtimestamp(today_at(0) + 86_400, tz=dt.UTC).isoformat(timespec="milliseconds")
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.10")
    async with jobhook(clock=clock, **env) as svc:
        first = {"provider": "aivideoapi", "prompt": "fits"}
        made = await svc.client.post("/v1/jobs", json=first, headers={"Idempotency-Key": "k-0"})
        assert made.status_code == 202
        refused = await svc.client.post(
            "/v1/jobs", json={"provider": "aivideoapi", "prompt": "over"}, headers={"Idempotency-Key": "k-1"}
        )
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 300  # to the next UTC midnight, 5 minutes away at most
        error = refused.json()["error"]
        assert (error["code"], error["scope"], error["reset_at"]) == (
            "budget_exceeded",
            "total",
            reset.removesuffix("+00:00") + "Z",
        )
        assert "JOBHOOK_BUDGET_USD_PER_DAY=0.1" in error["message"]
        assert "$0.10 of $0.10 is spent or reserved today" in error["message"]
        assert error["candidates"] == [
            {"provider": "aivideoapi", "reason": "over_budget", "message": error["candidates"][0]["message"]}
        ]
        assert len(aivideoapi.creates) == 1  # nothing sent
        # A replay of a job made before the cap was spent is that job, as its key promises.
        replayed = await svc.client.post("/v1/jobs", json=first, headers={"Idempotency-Key": "k-0"})
        assert (replayed.status_code, replayed.json()["id"]) == (202, made.json()["id"]), replayed.text
        assert replayed.headers["idempotent-replayed"] == "true"
        other = await svc.client.post("/v1/jobs", json={**first, "prompt": "else"}, headers={"Idempotency-Key": "k-0"})
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        # No job was left behind: the same key after the reset makes the job, and sends it then.
        clock.move_to(today_at(0) + 86_400 + 5)
        again = await svc.client.post(
            "/v1/jobs", json={"provider": "aivideoapi", "prompt": "over"}, headers={"Idempotency-Key": "k-1"}
        )
        assert again.status_code == 202, again.text
        assert "idempotent-replayed" not in again.headers
        assert len(aivideoapi.creates) == 2


async def test_budget_exhausted_once_per_scope_per_day_and_the_day_rolls_over(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi, backend: HTTPSink
) -> None:
    clock = Clock(today_at(12))
    env = env_for(aivideoapi, backend, JOBHOOK_BUDGET_USD_PER_DAY="0.10")
    async with jobhook(clock=clock, **env) as svc:
        day = (await budget_of(svc))["day"]
        assert [(await post(svc, f"day one {n}")).status_code for n in range(4)] == [202, 429, 429, 429]
        await eventually(lambda: exhausted(backend))
        # Midnight UTC, no restart: a new day, its own figures, and the cap takes jobs again.
        clock.move_to(today_at(0) + 86_400 + 1)
        report = await budget_of(svc)
        assert report["day"] != day
        assert figures(report, "total") == (0.0, 0.0)
        assert scope(report, "total")["exhausted_at"] is None
        assert [(await post(svc, f"day two {n}")).status_code for n in range(3)] == [202, 429, 429]
        told = await eventually(lambda: exhausted(backend) if len(exhausted(backend)) == 2 else None)
        await asyncio.sleep(0.5)
        assert len(exhausted(backend)) == 2  # once on each day
        assert told[0]["reset_at"] != told[1]["reset_at"]
        assert [item["scope"] for item in told] == ["total", "total"]
        assert told[1]["provider"] is None
        assert accepted(aivideoapi) == 2


async def test_a_queued_job_that_meets_a_cap_waits_for_the_reset(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi
) -> None:
    clock = Clock(today_at(12))
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.10", JOBHOOK_JOB_TIMEOUT="2d")
    async with jobhook(clock=clock, **env) as svc:
        # Not taken now (429, Retry-After a minute): queued, its reservation released meanwhile...
        aivideoapi.create_responses = [ForcedResponse.error(429, "rate_limit_exceeded", headers={"Retry-After": "60"})]
        waiting = (await post(svc, "waits")).json()
        assert waiting["status"] == "queued"
        # ... and another job takes the day's whole budget before its retry, which then comes.
        assert (await post(svc, "takes it all")).status_code == 202
        clock.move_to(today_at(12, 2))
        svc.runtime.poller.wake()

        async def budget_events() -> list[dict[str, Any]]:
            return [event for event in await svc.events(waiting["id"]) if event["type"] == "budget"]

        [event] = await eventually(budget_events)
        assert event["outcome"] == "waiting"
        assert event["detail"]["scope"] == "total"
        assert event["detail"]["reset_at"] == (await budget_of(svc))["reset_at"]
        assert "resets at" in event["detail"]["message"]
        assert (await svc.job(waiting["id"]))["status"] == "queued"
        [due] = [due for due in await svc.runtime.store.due_for(waiting["id"]) if due.kind is WorkKind.SUBMIT]
        assert due.due_at == today_at(0) + 86_400  # not before the reset: nothing to try until then
        assert accepted(aivideoapi) == 1

        # The next day it is sent (the poller wakes for it, as its next tick would within 15 s).
        clock.move_to(today_at(0) + 86_400 + 1)
        svc.runtime.poller.wake()
        sent = await eventually(lambda: accepted(aivideoapi) == 2, timeout=30)
        assert sent
        done = await svc.wait_finished(waiting["id"], timeout=30)
        assert done["status"] == "completed"
        assert figures(await budget_of(svc), "total") == (0.0, 0.10)


async def test_todays_figures_survive_a_restart(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi) -> None:
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.20")
    async with jobhook(**env) as svc:
        assert [(await post(svc, f"before {n}")).status_code for n in range(2)] == [202, 202]
    async with jobhook(**env) as again:
        assert figures(await budget_of(again), "total") == (0.0, 0.20)
        assert (await post(again, "after")).status_code == 429
    # A higher cap takes effect at the next start; what was spent today still counts.
    async with jobhook(**{**env, "JOBHOOK_BUDGET_USD_PER_DAY": "0.30"}) as raised:
        assert [(await post(raised, f"raised {n}")).status_code for n in range(2)] == [202, 429]
        assert accepted(aivideoapi) == 3


async def test_replicas_share_the_cap(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi) -> None:
    env = env_for(aivideoapi, JOBHOOK_BUDGET_USD_PER_DAY="0.50")
    async with jobhook(**env) as one, jobhook(**env) as two:
        answers = await asyncio.gather(*(post((one, two)[n % 2], f"replica {n}") for n in range(20)))
        assert sorted(response.status_code for response in answers) == [202] * 5 + [429] * 15
        assert accepted(aivideoapi) == 5
        assert figures(await budget_of(one), "total") == figures(await budget_of(two), "total") == (0.0, 0.5)


async def test_a_provider_without_a_price_is_left_out_under_a_cap(
    jobhook: ServiceFactory, aivideoapi: FakeAivideoapi
) -> None:
    async with FakeSegmind(latency=0.1) as segmind:
        env = env_for(
            aivideoapi,
            JOBHOOK_SEGMIND_API_KEY="sg-test",
            JOBHOOK_SEGMIND_BASE_URL=segmind.base_url,
            JOBHOOK_BUDGET_USD_PER_DAY="5",
            JOBHOOK_ROUTE_ORDER="segmind,aivideoapi",
        )
        async with jobhook(**env) as svc:
            refused = await post(svc, "unpriced", "segmind")
            assert refused.status_code == 422, refused.text  # waiting for a reset would not give it a price
            [why] = refused.json()["error"]["candidates"]
            assert why["reason"] == "unknown_price"
            assert why["message"] == (
                "segmind's price for this request is unknown, so it cannot be held under the daily budget "
                "(JOBHOOK_BUDGET_USD_PER_DAY=5): set JOBHOOK_SEGMIND_PRICES"
            )
            job = (await post(svc, "goes elsewhere", "auto")).json()
            assert job["provider"] == "aivideoapi"
            assert segmind.creates == []
            assert scope(await budget_of(svc), "segmind")["priced"] is False


async def test_the_budget_route_metrics_and_no_cap(jobhook: ServiceFactory, aivideoapi: FakeAivideoapi) -> None:
    """Without a cap nothing is refused, and the day's spend is shown all the same."""
    async with jobhook(**env_for(aivideoapi)) as svc:
        assert [(await post(svc, f"uncapped {n}")).status_code for n in range(3)] == [202, 202, 202]
        report = await budget_of(svc)
        assert report["total"] == {
            "scope": "total",
            "cap_usd": None,
            "reserved_usd": 0.0,
            "spent_usd": 0.3,
            "remaining_usd": None,
            "exhausted_at": None,
        }
        assert 0 < report["retry_after"] <= 86_400
        metrics = (await svc.client.get("/metrics")).text
        assert 'jobhook_spend_usd_total{provider="aivideoapi"} 0.3' in metrics


# -- the store itself, several replicas on one database -------------------------------------------------

PRICE = 0.07
CAP = 1.0


@pytest.fixture
async def stores(database: str) -> AsyncIterator[list[Store]]:
    """Three stores open on one database, as three replicas hold, with a $1.00 cap and $0.07 a job."""
    policy = OutboxPolicy(
        budget=Policy(Caps.of(total=budget.micros(CAP)), {"aivideoapi": PriceTable.flat(PRICE)}),
    )
    async with replica_stores(database, policy=policy) as opened:
        yield opened


async def test_of_many_jobs_made_at_once_on_several_stores_the_reservations_never_pass_the_cap(
    stores: list[Store],
) -> None:
    """No routing in front: the transactions alone hold the cap, whichever process runs them."""

    async def create(n: int) -> str:
        try:
            job, _ = await stores[n % 3].create_job(new_stored_job())
        except budget.OverBudget as exc:
            assert exc.refusal.scope == "total"
            return "refused"
        assert job.submit_state is SubmitState.SENDING
        return "sending"

    outcomes = await asyncio.gather(*(create(n) for n in range(60)))
    assert outcomes.count("sending") == 14 and outcomes.count("refused") == 46
    day = budget.day_of(time.time())
    shown = (await stores[1].budget_figures(day))["total"]
    assert shown.reserved == 14 * budget.micros(PRICE) <= budget.micros(CAP)
    assert (await stores[2].budget_figures(day))["aivideoapi"].reserved == shown.reserved


async def test_of_refusals_at_once_on_several_stores_one_tells_the_cap_is_spent(stores: list[Store]) -> None:
    """`budget.exhausted` once per scope per day: marked by one conditional write, whichever process."""
    now = time.time()
    refusal = budget.check(Caps.of(total=0), {}, "aivideoapi", budget.micros(PRICE), now)
    assert refusal is not None
    told = await asyncio.gather(*(stores[n % 3].budget_exhausted(refusal) for n in range(30)))
    assert told.count(True) == 1
    assert (await stores[0].budget_figures(budget.day_of(now)))["total"].exhausted_at is not None
    tomorrow = budget.check(Caps.of(total=0), {}, "aivideoapi", budget.micros(PRICE), now + 86_400)
    assert tomorrow is not None
    assert await stores[1].budget_exhausted(tomorrow) is True  # a new day, told again
