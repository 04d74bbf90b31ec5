"""The store's part in failover (SPEC §8), on a real database (SQLite and PostgreSQL), several stores on
one database as replicas hold them: what a refusal's transaction leaves, who claims the next attempt,
and how a job whose provider is shut is passed on or made to wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from service.domain import attempt
from service.domain.circuit import CircuitPolicy
from service.domain.job import Candidate, Job
from service.domain.status import JobError, Status
from service.domain.work import SubmitState, WorkKind
from service.store.base import NewJob, OutboxPolicy
from service.store.common import Store
from tests.conftest import new_stored_job, replica_stores

LEASE = 60.0
REFUSED = JobError("provider_rejected", "no credits", "insufficient_credits")
KEY_REFUSED = JobError("provider_rejected", "bad key", "invalid_api_key")
# A refusal of the request itself (400): the job moves on, and no circuit counts it.
REFUSAL = attempt.rejected(
    {"http_status": 400}, JobError("provider_rejected", "bad request", "invalid_request"), http_status=400
)


@pytest.fixture
async def stores(database: str) -> AsyncIterator[list[Store]]:
    """Three stores on one database; one failure opens a circuit, for a minute (credits: ten)."""
    policy = OutboxPolicy(circuits=CircuitPolicy(failures=1, cooldown=60.0, credits_cooldown=600.0))
    async with replica_stores(database, policy=policy) as opened:
        yield opened


def lease(provider: str) -> float:
    return time.time() + LEASE


def new_job(provider: str, *candidates: str) -> NewJob:
    return new_stored_job(provider, *candidates, lease=LEASE)


def states(job: Job) -> list[tuple[str, str | None]]:
    return [(item.provider, item.state) for item in job.attempts]


async def shut(store: Store, provider: str, error: JobError = KEY_REFUSED) -> None:
    """One refused job opens the provider's circuit (failures=1)."""
    job, _ = await store.create_job(new_job(provider))
    status = 402 if error.provider_code == "insufficient_credits" else 401
    await store.record_submit(job.id, attempt.rejected({"http_status": status}, error, http_status=status))
    assert (await store.provider_circuits())[provider].state == "open"


async def submit_due(store: Store, job_id: str) -> list[float]:
    return [due.due_at for due in await store.due_for(job_id) if due.kind is WorkKind.SUBMIT]


async def test_a_refusal_commits_the_next_attempt_due_and_unclaimed(stores: list[Store]) -> None:
    """What a crash right after the refusal's commit leaves: nothing "sending", the next attempt due now."""
    store = stores[0]
    job, _ = await store.create_job(new_job("aivideoapi", "apiframe"))
    assert job.submit_state is SubmitState.SENDING and job.attempts[0].tries == 1
    before = time.time()
    after = await store.record_submit(job.id, REFUSAL, claim_next=True)
    assert (after.status, after.provider, after.submit_state) == (Status.QUEUED, "apiframe", None)
    assert states(after) == [("aivideoapi", "rejected"), ("apiframe", None)]
    assert after.attempts[1].tries == 0
    [due_at] = await submit_due(store, job.id)
    assert before <= due_at <= time.time()


async def test_the_next_attempt_is_claimed_once_by_the_request_or_by_the_work_queue(stores: list[Store]) -> None:
    """The request that failed the job over takes the next attempt only if no worker holds it."""
    one, two, three = stores
    job, _ = await one.create_job(new_job("aivideoapi", "apiframe"))
    await one.record_submit(job.id, REFUSAL, claim_next=True)
    # A worker claims the due row first: the request gets nothing to send.
    now = time.time()
    [claimed] = await two.claim_due("apiframe", now, 10, now + LEASE)
    assert claimed.job_id == job.id
    assert await one.begin_submit(job.id, lease, take_due=True) is None
    sending = await two.begin_submit(job.id, lease)  # the worker, holding the row
    assert sending is not None and sending.submit_state is SubmitState.SENDING
    assert sending.provider == "apiframe" and sending.attempts[1].tries == 1

    # The other way round: the request first, then no worker finds it due.
    other, _ = await one.create_job(new_job("aivideoapi", "apiframe"))
    await one.record_submit(other.id, REFUSAL, claim_next=True)
    taken = await three.begin_submit(other.id, lease, take_due=True)
    assert taken is not None and taken.submit_state is SubmitState.SENDING
    now = time.time()
    assert [due.job_id for due in await two.claim_due("apiframe", now, 10, now + LEASE)] == []


async def test_of_many_asking_at_once_one_claims_the_next_attempt(stores: list[Store]) -> None:
    job, _ = await stores[0].create_job(new_job("aivideoapi", "apiframe"))
    await stores[0].record_submit(job.id, REFUSAL, claim_next=True)
    claims = await asyncio.gather(*(stores[n % 3].begin_submit(job.id, lease, take_due=n % 2 == 0) for n in range(12)))
    assert len([claimed for claimed in claims if claimed is not None]) == 1
    final = await stores[1].get_job(job.id)
    assert final is not None and final.submit_attempts == 2 and final.attempts[1].tries == 1


async def test_a_new_job_whose_provider_is_shut_goes_to_the_next_open_one(stores: list[Store]) -> None:
    """The circuit opened after routing chose the order: the job is not made to wait for it."""
    store = stores[0]
    await shut(store, "aivideoapi")
    job, created = await store.create_job(new_job("aivideoapi", "apiframe", "apiinone"))
    assert created and job.submit_state is SubmitState.SENDING
    assert (job.provider, job.candidates) == ("apiframe", (Candidate("apiinone"),))
    assert states(job) == [("aivideoapi", "not_sent"), ("apiframe", None)]
    skipped = job.attempts[0]
    assert skipped.error is not None and skipped.error.code == "circuit_open"
    assert skipped.tries == 0 and skipped.ended_at is not None
    assert job.attempts[1].tries == 1 and job.submit_attempts == 1
    # Passed over, not failed: the shut provider's circuit is as it was.
    assert (await store.provider_circuits())["aivideoapi"].failures == 1


async def test_a_job_whose_every_candidate_is_shut_waits_for_the_first_to_half_open(stores: list[Store]) -> None:
    store = stores[0]
    await shut(store, "aivideoapi", REFUSED)  # ten minutes
    await shut(store, "apiframe")  # one minute: half-opens first
    job, _ = await store.create_job(new_job("aivideoapi", "apiframe"))
    # Nothing is passed over while none may be tried: it waits where it is, for apiframe's half-open.
    assert (job.status, job.provider, job.submit_state) == (Status.QUEUED, "aivideoapi", None)
    assert states(job) == [("aivideoapi", None)] and job.submit_attempts == 0
    circuits = await store.provider_circuits()
    assert await submit_due(store, job.id) == [circuits["apiframe"].until]
    [waiting] = [event for event in await store.events(job.id) if event.type == "circuit"]
    assert (waiting.outcome, waiting.detail["provider"]) == ("waiting", "apiframe")
    # Asked again while still shut: it waits again, and nothing is recorded as sent.
    assert await store.begin_submit(job.id, lease) is None
    assert states((await store.get_job(job.id)) or job) == [("aivideoapi", None)]


async def test_a_failover_to_a_shut_provider_passes_it_over_when_the_claim_comes(stores: list[Store]) -> None:
    """The refusal's transaction does not look at circuits: the claim does (its own transaction)."""
    store = stores[0]
    job, _ = await store.create_job(new_job("aivideoapi", "apiframe", "apiinone"))
    await shut(store, "apiframe")
    await store.record_submit(job.id, REFUSAL, claim_next=True)
    sending = await store.begin_submit(job.id, lease, take_due=True)
    assert sending is not None and sending.provider == "apiinone"
    assert states(sending) == [("aivideoapi", "rejected"), ("apiframe", "not_sent"), ("apiinone", None)]
    reasons = [event.detail["reason"] for event in await store.events(job.id) if event.type == "failover"]
    assert reasons == ["rejected", "circuit_open"]


async def test_a_provider_left_to_the_work_queue_is_left_due(stores: list[Store]) -> None:
    """A lease of None (a synchronous provider: never a request's call) leaves it due for the queue."""
    store = stores[0]
    job, _ = await store.create_job(new_job("aivideoapi", "segmind"))
    await store.record_submit(job.id, REFUSAL, claim_next=True)
    assert await store.begin_submit(job.id, lambda provider: None, take_due=True) is None
    left = await store.get_job(job.id)
    assert left is not None and (left.provider, left.submit_state) == ("segmind", None)
    [due_at] = await submit_due(store, job.id)
    assert due_at <= time.time()
