"""Three `jobhook serve` processes on one PostgreSQL database: every replica takes every request.

What must hold across processes is held by the database — constraints, row locks, leased due work
and deliveries (FOR UPDATE SKIP LOCKED), LISTEN/NOTIFY — never by one process's memory: a duplicate
storm spread over the replicas is applied once, each due poll and each notification is done by one
replica, `?wait=N` wakes on any replica's change, provider health is shared, and a replica killed
with leases held hands them back when they run out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import ServeProcess, jobhook_command
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink
from tests.integration.hostile import callback_path, delivery_body, delivery_headers, metric

pytestmark = pytest.mark.timeout(240)

REPLICAS = 3
SECRET = "replicas-test-signing-key"  # every replica must sign and check callback URLs with the same key


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, database: str, env: dict[str, str], count: int = REPLICAS
) -> AsyncIterator[list[ServeProcess]]:
    """`count` replicas started at once on one database (they race to migrate it), sharing a media folder."""
    shared = {"JOBHOOK_SECRET": SECRET, "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"), **env}
    started = []
    for n in range(count):
        folder = tmp_path / f"replica-{n}"
        folder.mkdir(parents=True)
        started.append(ServeProcess(folder, shared, database=database))
    try:
        for replica in started:
            replica.spawn()
        await asyncio.gather(*(replica.wait_ready(timeout=30) for replica in started))
        yield started
    finally:
        for replica in started:
            replica.stop()
        for replica in started:
            assert "Traceback" not in replica.log(), replica.log()


def fake_env(fake: FakeAivideoapi, **extra: str) -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_CALLBACK_GRACE": "0.5",
        "JOBHOOK_POLL_INTERVAL": "0.3",
        "JOBHOOK_POLL_MAX_INTERVAL": "0.6",
        "JOBHOOK_MIRROR_IMAGES": "false",
        **extra,
    }


async def wait_finished(url: str, ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=url) as client:
        while time.monotonic() < deadline:
            for job_id in ids:
                jobs[job_id] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if all(job["status"] in ("completed", "failed", "timed_out") for job in jobs.values()):
                return jobs
            await asyncio.sleep(0.2)
    raise AssertionError({job_id: job["status"] for job_id, job in jobs.items()})


def migrate(database: str, processes: int) -> list[subprocess.CompletedProcess[str]]:
    """`jobhook migrate` in `processes` processes at once on one database."""
    env = {**os.environ, "JOBHOOK_DATABASE": database}
    running = [
        subprocess.Popen(jobhook_command("migrate"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    done = []
    for process in running:
        out, err = process.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


async def test_replicas_that_migrate_and_start_at_once_share_one_schema(tmp_path: Path, pg: str) -> None:
    raced = await asyncio.to_thread(migrate, pg, 4)
    assert [result.returncode for result in raced] == [0, 0, 0, 0], [result.stderr for result in raced]
    async with replicas(tmp_path, pg, {}) as started, httpx.AsyncClient() as client:
        for replica in started:
            assert (await client.get(f"{replica.url}/readyz")).status_code == 200
    [again] = await asyncio.to_thread(migrate, pg, 1)
    assert again.returncode == 0, again.stderr
    assert "postgresql://" in again.stdout + again.stderr


async def test_a_duplicate_storm_spread_over_three_replicas_is_applied_once(tmp_path: Path, pg: str) -> None:
    copies_per_replica, connections_per_replica = 300, 8
    async with replicas(tmp_path, pg, {"JOBHOOK_MIRROR_IMAGES": "false", "JOBHOOK_CALLBACK_GRACE": "600"}) as started:
        async with httpx.AsyncClient(base_url=started[0].url) as client:
            jobs = [
                (
                    await client.post(
                        "/v1/jobs", json={"provider": "simulator", "prompt": f"storm {n}", "submit": False}
                    )
                ).json()
                for n in range(3)
            ]
        answers: collections.Counter[tuple[str, int, str]] = collections.Counter()

        async def storm(replica: ServeProcess, job: dict[str, Any], task_id: str) -> None:
            path = callback_path(job)
            body = delivery_body(task_id)
            headers = delivery_headers(task_id)
            # 300 copies share 8 connections: a copy may wait its turn for a connection longer than
            # httpx's default 5 s on a loaded machine. That wait is the test client's queue, not the
            # service's answer time, so it has no bound of its own (the test's timeout bounds the run).
            async with httpx.AsyncClient(
                base_url=replica.url,
                limits=httpx.Limits(max_connections=connections_per_replica),
                timeout=httpx.Timeout(30.0, pool=None),
            ) as client:

                async def send() -> None:
                    response = await client.post(path, content=body, headers=headers)
                    if response.status_code == 200:
                        answers[(job["id"], 200, response.json()["status"])] += 1
                    else:
                        assert response.status_code == 503, response.text
                        answers[(job["id"], 503, response.json()["error"]["code"])] += 1

                await asyncio.gather(*(send() for _ in range(copies_per_replica)))

        await asyncio.gather(*(storm(replica, job, f"task-{n}") for n, job in enumerate(jobs) for replica in started))
        async with httpx.AsyncClient(base_url=started[2].url) as client:
            for n, job in enumerate(jobs):
                assert answers[(job["id"], 200, "accepted")] == 1, answers
                total = sum(count for (job_id, _, _), count in answers.items() if job_id == job["id"])
                assert total == copies_per_replica * REPLICAS
                done = (await client.get(f"/v1/jobs/{job['id']}")).json()
                assert (done["status"], done["provider_task_id"]) == ("completed", f"task-{n}")
                events = (await client.get(f"/v1/jobs/{job['id']}/events")).json()["events"]
                accepted = [e for e in events if e["type"] == "callback" and e["outcome"] == "accepted"]
                completed = [e for e in events if e["type"] == "status" and e["outcome"] == "completed"]
                assert (len(accepted), len(completed)) == (1, 1)


async def test_a_wait_on_one_replica_wakes_on_another_replicas_change(tmp_path: Path, pg: str) -> None:
    async with replicas(tmp_path, pg, {"JOBHOOK_CALLBACK_GRACE": "600"}, count=2) as (first, second):
        async with httpx.AsyncClient(base_url=first.url) as client:
            job = (await client.post("/v1/jobs", json={"provider": "simulator", "prompt": "x", "submit": False})).json()

        async def wait_on_first() -> dict[str, Any]:
            # The client gives up long before the wait would: only a wake-up answers in time.
            async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
                return (await client.get(f"/v1/jobs/{job['id']}", params={"wait": 60})).json()  # type: ignore[no-any-return]

        waiting = asyncio.create_task(wait_on_first())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        async with httpx.AsyncClient(base_url=second.url) as client:
            answer = await client.post(
                callback_path(job), content=delivery_body("task-w"), headers=delivery_headers("task-w")
            )
            assert answer.json()["status"] == "accepted", answer.text
        woken = await waiting
        assert (woken["status"], woken["provider_task_id"]) == ("completed", "task-w")


async def test_polls_and_notifications_are_each_done_by_one_replica_and_health_is_shared(
    tmp_path: Path, pg: str
) -> None:
    count = 12
    async with FakeAivideoapi(complete_after=0.5) as fake, HTTPSink(verify=True) as backend:
        fake.default_script = TaskScript(drop_callback=True)  # only polls finish these jobs
        env = fake_env(
            fake,
            JOBHOOK_FORWARD_URL=backend.url,
            JOBHOOK_FORWARD_SECRET=WEBHOOK_SECRET,
            JOBHOOK_DEGRADED_AFTER="3",
        )
        async with replicas(tmp_path, pg, env) as started:
            ids = []
            for n in range(count):
                async with httpx.AsyncClient(base_url=started[n % REPLICAS].url) as client:
                    response = await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"polled {n}"})
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])
            jobs = await wait_finished(started[1].url, ids)
            assert {job["status"] for job in jobs.values()} == {"completed"}
            assert {job["resolved_by"] for job in jobs.values()} == {"poll"}
            assert len(fake.creates) == count  # no submission was made twice

            async with httpx.AsyncClient() as client:
                for job_id, job in jobs.items():
                    events = (await client.get(f"{started[2].url}/v1/jobs/{job_id}/events")).json()["events"]
                    polls = [e for e in events if e["type"] == "poll"]
                    answered = [q for q in fake.queries if q.task_id == job["provider_task_id"] and q.status == 200]
                    assert len(polls) == len(answered)  # every poll the provider answered was one due row's, once
                    assert len([e for e in events if e["type"] == "status" and e["outcome"] == "completed"]) == 1

                # Health is shared: every replica knows the provider's callbacks are degraded.
                for replica in started:
                    text = (await client.get(f"{replica.url}/metrics")).text
                    assert metric(text, "jobhook_provider_callbacks_degraded", provider="aivideoapi") == 1

            # Each notification is delivered by one replica, once.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(backend.delivered()) < count + 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a second delivery by another replica would have come by now
            delivered = backend.delivered()
            webhook_ids = [r.headers["webhook-id"] for r in delivered]
            assert len(webhook_ids) == len(set(webhook_ids)), webhook_ids
            types = collections.Counter(r.json()["type"] for r in delivered)
            assert types == {"job.completed": count, "provider.callbacks_degraded": 1}, types
            assert sorted(r.json()["data"]["id"] for r in delivered if r.json()["type"] == "job.completed") == sorted(
                ids
            )


async def test_a_replica_killed_with_polls_in_flight_hands_them_back(tmp_path: Path, pg: str) -> None:
    count = 6
    async with FakeAivideoapi(complete_after=0.3) as fake:
        fake.default_script = TaskScript(drop_callback=True)
        env = fake_env(fake)
        async with replicas(tmp_path, pg, env, count=1) as (doomed,):
            fake.query_responses = ["hang"] * count  # the first polls never answer: doomed holds their leases
            async with httpx.AsyncClient(base_url=doomed.url) as client:
                ids = []
                for n in range(count):
                    response = await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"leased {n}"})
                    ids.append(response.json()["id"])
            deadline = time.monotonic() + 30
            while len([q for q in fake.queries if q.status is None]) < count:
                assert time.monotonic() < deadline, fake.queries
                await asyncio.sleep(0.05)
            doomed.kill()
            hung = len(fake.queries)
            async with replicas(tmp_path / "after", pg, env, count=2) as survivors:
                # The leases run out (45 s), and the survivors poll each job to its end.
                jobs = await wait_finished(survivors[0].url, ids, timeout=120)
        assert {job["status"] for job in jobs.values()} == {"completed"}
        assert len(fake.creates) == count
        by_task = collections.Counter(q.task_id for q in fake.queries[hung:] if q.status == 200)
        assert set(by_task) == {job["provider_task_id"] for job in jobs.values()}


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOOK_")}
    return subprocess.run(jobhook_command("demo", *args), env=env, capture_output=True, text=True, timeout=120)


async def test_the_demo_runs_through_three_replicas_on_postgresql(tmp_path: Path, pg: str) -> None:
    result = await asyncio.to_thread(run_demo, "--dir", str(tmp_path / "demo"), "--database", pg, "--replicas", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "replica 3 of 3 is up" in out
    assert "every job ended as scripted" in out
    assert {"(via replica 1)", "(via replica 2)", "(via replica 3)"} <= {
        line[line.rindex("(via") :] for line in out.splitlines() if "(via replica" in line
    }
    assert "the same job (yes)" in out
    assert "Traceback" not in result.stderr
    for log in (tmp_path / "demo").glob("replica-*.log"):
        assert "Traceback" not in log.read_text()
    # The same database again: a second demo is its own (its Idempotency-Keys are new).
    again = await asyncio.to_thread(run_demo, "--dir", str(tmp_path / "again"), "--database", pg, "--replicas", "2")
    assert again.returncode == 0, again.stdout + again.stderr


def test_replicas_without_postgresql_are_refused_in_one_line(tmp_path: Path) -> None:
    result = run_demo("--dir", str(tmp_path / "demo"), "--replicas", "3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "jobhook: --replicas needs --database postgresql://… (replicas share one PostgreSQL database)"
    )
    bad = run_demo("--dir", str(tmp_path / "demo"), "--database", "mysql://x/y")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "JOBHOOK_DATABASE" in bad.stderr
