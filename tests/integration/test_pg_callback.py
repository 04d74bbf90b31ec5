"""PostgreSQL's callback in one round trip (service/store/pg_callback.py, schema 8's function) writes
exactly the rows of the general transaction, and takes only the plain case.

Two databases, two stores — one with the one-round-trip path, one without — are given the same jobs,
the same clock and the same deliveries: every (status, observation) pair, with images past what the
job asked for, a provider's error, a job that could fail over, a repeat, a job changed since it was
read. After each delivery both return the same result, and every table (jobs, attempts, events, due
rows, receipts, notifications and outbox, counts) holds the same rows. The table of which pairs took
one round trip is checked against the status machine, and the database's own status trigger against
the status machine for every pair too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain import status as status_machine
from service.domain.job import Candidate, Job
from service.domain.status import FINAL, OBSERVABLE, JobError, Observation, Status
from service.store.base import CallbackResult, NewJob, OutboxPolicy
from service.store.postgres import PostgresStore
from tests.postgres import PostgresServer, query_database

POLICY = OutboxPolicy(destinations=("webhook", "slack"), base_url="http://jobhook.test")
DETAIL = {"x-event": "task.x", "x-timestamp": "1765000000", "status": "x"}

# What a provider may say, as the deliveries of the table: each observable status, images past the one
# asked for, and a failure with the provider's own error.
OBSERVATIONS: dict[str, Observation] = {
    "submitted": Observation(Status.SUBMITTED),
    "processing": Observation(Status.PROCESSING),
    "completed": Observation(Status.COMPLETED, images=("https://img.test/1.png",)),
    "completed+2": Observation(Status.COMPLETED, images=tuple(f"https://img.test/{n}.png" for n in range(3))),
    "failed": Observation(Status.FAILED),
    "failed+error": Observation(Status.FAILED, error=JobError("content_policy", "refused", "E42")),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_765_000_000.125

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 1.5


@dataclasses.dataclass
class Pair:
    """The same database twice: one store with the one-round-trip path, one without."""

    fast: PostgresStore
    general: PostgresStore
    urls: tuple[str, str]
    clock: Clock

    @property
    def stores(self) -> tuple[PostgresStore, PostgresStore]:
        return self.fast, self.general

    async def both(self, op: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        results = []
        for store in self.stores:
            results.append(await getattr(store, op)(*args, **kwargs))
        self.clock.tick()
        return results[0], results[1]

    async def deliver(self, job_id: str, key: str, observation: Observation, *, stale: Job | None = None) -> str:
        """The same delivery to both, each with the job as it reads it now (or `stale`); both results
        must agree. Returns how the fast store wrote it."""
        results: list[CallbackResult] = []
        taken_by: list[str] = []
        for store in self.stores:
            seen = stale if stale is not None and store is self.fast else await store.get_job(job_id)
            assert seen is not None
            before = store.callback_paths.copy()
            results.append(
                await store.record_callback(
                    job_id,
                    key,
                    observation,
                    {**DETAIL, "x-event": key},
                    bind_task_id=None,
                    cost_if_completed=0.06,
                    seen=seen,
                )
            )
            taken_by.append(next(iter(store.callback_paths - before)))
        self.clock.tick()
        fast, general = results
        assert (fast.kind, fast.decision) == (general.kind, general.decision)
        assert fast.job == general.job
        assert fast.job.attempts == general.job.attempts
        assert taken_by[1] == "general"
        return taken_by[0]

    def assert_same_rows(self) -> None:
        fast, general = (tables(url) for url in self.urls)
        assert fast.keys() == general.keys()
        for table in fast:
            assert fast[table] == general[table], table


def tables(url: str) -> dict[str, list[str]]:
    """Every row of jobhook's tables as text, notification ids numbered in order of appearance, counts
    summed over their shards (a shard is the writing connection's)."""
    names = [row[0] for row in query_database(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    ids: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        return ids.setdefault(match.group(0), f"msg#{len(ids)}")

    out: dict[str, list[str]] = {}
    order = {"job_events": "id", "outbox": "id", "notifications": "created_at, type"}
    for name in sorted(set(names) - {"job_counts", "jobhook_schema", "meta"}):
        rows = query_database(url, f"SELECT * FROM {name} ORDER BY {order.get(name, '1, 2')}")
        out[name] = [re.sub(r"msg_[0-9A-Za-z]+", number, repr(row)) for row in rows]
    out["job_counts"] = [
        repr(row)
        for row in query_database(
            url, "SELECT provider, status, SUM(n) FROM job_counts GROUP BY 1, 2 HAVING SUM(n) != 0 ORDER BY 1, 2"
        )
    ]
    return out


@contextlib.asynccontextmanager
async def pair(postgres_server: PostgresServer) -> AsyncIterator[Pair]:
    clock = Clock()
    with postgres_server.database() as fast_url, postgres_server.database() as general_url:
        stores = [
            PostgresStore(url, clock=clock, mirror_images=True, policy=POLICY, fast_callbacks=fast)
            for url, fast in ((fast_url, True), (general_url, False))
        ]
        for store in stores:
            await store.open()
        try:
            yield Pair(stores[0], stores[1], (fast_url, general_url), clock)
        finally:
            for store in stores:
                await store.close()


def new_job(job_id: str, *, candidates: tuple[Candidate, ...] = ()) -> NewJob:
    return NewJob(
        id=job_id,
        provider="aivideoapi",
        request={"prompt": "a sign", "num_images": 1},
        metadata={"order": 7},
        callback_url_registered=True,
        submitted_by_backend=True,
        idempotency_key=None,
        request_hash=None,
        deadline_at=1_765_009_999.0,
        submit_lease_until=None,
        candidates=candidates,
    )


async def job_in(p: Pair, job_id: str, status: Status, *, candidates: tuple[Candidate, ...] = ()) -> None:
    """A job brought to `status` the same way in both databases (by the general transaction)."""
    await p.both("create_job", new_job(job_id, candidates=candidates))
    if status is Status.QUEUED:
        return
    await p.both("bind_task_id", job_id, f"task-{job_id}", 1_765_000_600.0)
    if status is Status.TIMED_OUT:
        await p.both("record_poll", job_id, Observation(Status.PROCESSING), {}, outcome="seen", next_poll=None)
        await p.both("expire", job_id)
        return
    if status is not Status.SUBMITTED:
        seen = Observation(status, images=("https://img.test/0.png",) if status is Status.COMPLETED else ())
        await p.both("record_callback", job_id, f"prep.{status}", seen, {}, bind_task_id=None, cost_if_completed=0.06)


def plain(status: Status, observation: Observation, *, has_task: bool, fails_over: bool) -> bool:
    """Which deliveries the one round trip takes, by the status machine: a first delivery for the
    current attempt that moves the job forward, and does not fail it (a failure fails over, falls back
    to an earlier attempt or releases a budget reservation: the general transaction's). `fails_over`
    no longer matters: a failure is never the plain case."""
    decision = status_machine.apply(status, observation)
    return has_task and decision.applied and decision.status is not Status.FAILED


async def submitted_jobs(store: PostgresStore, ids: list[str]) -> dict[str, Job | None]:
    """Jobs made and given their task ids (by the general transaction), each as read afterwards."""
    for job_id in ids:
        await store.create_job(new_job(job_id))
        await store.bind_task_id(job_id, f"task-{job_id}", 1_765_000_600.0)
    return {job_id: await store.get_job(job_id) for job_id in ids}


async def deliver_to(
    store: PostgresStore, job_id: str, seen: Job | None, key: str = "task.completed"
) -> CallbackResult:
    """A genuine delivery of `key` (the observation of the same name), with the job as read (`seen`)."""
    observation = OBSERVATIONS[key.removeprefix("task.")]
    return await store.record_callback(
        job_id, key, observation, DETAIL, bind_task_id=None, cost_if_completed=0.06, seen=seen
    )


@pytest.mark.parametrize("status", list(Status), ids=str)
async def test_every_status_and_observation_writes_the_same_rows_either_way(
    postgres_server: PostgresServer, status: Status
) -> None:
    async with pair(postgres_server) as p:
        taken: dict[str, str] = {}
        for n, (name, observation) in enumerate(OBSERVATIONS.items()):
            for variant, fails_over in (("", False), ("candidates", True), ("no attempts", False)):
                job_id = f"01JTEST{status.name[:4]:_<4}{n}{variant[:1] or '_'}".ljust(26, "0")
                await job_in(p, job_id, status, candidates=(Candidate("apiframe"),) if fails_over else ())
                if variant == "no attempts":  # a job made before attempts were kept (schema 6)
                    for url in p.urls:
                        query_database(url, "DELETE FROM attempts WHERE job_id = ? RETURNING seq", (job_id,))
                first = await p.deliver(job_id, f"task.{name}", observation)
                expected = plain(status, observation, has_task=status is not Status.QUEUED, fails_over=fails_over)
                assert first == ("accepted" if expected else "general"), (status, name, variant)
                taken[f"{name} {variant}"] = first
                # The same event again: a repeat, in one round trip whatever the job's status now.
                assert await p.deliver(job_id, f"task.{name}", observation) == "duplicate"
                p.assert_same_rows()
        assert taken  # every pair was delivered, and compared


async def test_a_job_changed_since_it_was_read_takes_the_general_transaction(postgres_server: PostgresServer) -> None:
    async with pair(postgres_server) as p:
        job_id = "01JTESTSTALE0000000000000"
        await job_in(p, job_id, Status.SUBMITTED)
        stale = await p.fast.get_job(job_id)
        await p.both("record_poll", job_id, Observation(Status.PROCESSING), {}, outcome="seen", next_poll=None)
        assert await p.deliver(job_id, "task.completed", OBSERVATIONS["completed"], stale=stale) == "general"
        p.assert_same_rows()
        # And a later delivery, read afresh, takes the one round trip again.
        other = "01JTESTSTALE1000000000000"
        await job_in(p, other, Status.PROCESSING)
        assert await p.deliver(other, "task.completed", OBSERVATIONS["completed"]) == "accepted"
        p.assert_same_rows()


async def test_a_callback_after_jobs_finished_by_polling_takes_the_general_transaction(
    postgres_server: PostgresServer,
) -> None:
    """A genuine callback resets the provider's run of polled jobs (and may recover it): that is the
    general transaction's, and the one after it is plain again."""
    async with pair(postgres_server) as p:
        polled, *jobs = (f"01JTESTPOLLED{n}".ljust(26, "0") for n in range(3))
        for job_id in (polled, *jobs):
            await job_in(p, job_id, Status.PROCESSING)
        done = Observation(Status.COMPLETED, images=("https://img.test/p.png",))
        await p.both("record_poll", polled, done, {}, outcome="completed", next_poll=None, cost_if_completed=0.06)
        assert [row[0] for row in query_database(p.urls[0], "SELECT polled_in_a_row FROM provider_state")] == [1]
        for job_id, expected in zip(jobs, ("general", "accepted"), strict=True):
            assert await p.deliver(job_id, "task.completed", done) == expected
            p.assert_same_rows()


async def test_repeats_past_the_history_bound_are_counted_by_the_general_transaction(
    postgres_server: PostgresServer,
) -> None:
    from service.domain.history import NOISE_EVENTS_PER_JOB

    async with pair(postgres_server) as p:
        job_id = "01JTESTBOUND0000000000000"
        await job_in(p, job_id, Status.PROCESSING)
        assert await p.deliver(job_id, "task.completed", OBSERVATIONS["completed"]) == "accepted"
        ways = [
            await p.deliver(job_id, "task.completed", OBSERVATIONS["completed"])
            for _ in range(NOISE_EVENTS_PER_JOB + 2)
        ]
        assert ways == ["duplicate"] * NOISE_EVENTS_PER_JOB + ["general"] * 2
        p.assert_same_rows()


@pytest.mark.parametrize("before", list(Status), ids=str)
def test_the_databases_status_rule_is_the_status_machines(pg: str, before: Status) -> None:
    """The trigger that keeps a status from moving backwards (schema 1, 6) allows exactly the moves the
    status machine makes from what a provider can report; QUEUED and TIMED_OUT are jobhook's own."""
    import psycopg

    _migrate(pg)
    with psycopg.connect(pg, autocommit=True) as connection:
        for after in sorted(OBSERVABLE - {before}):
            job_id = f"01JRULE{before.name[:4]}{after.name[:4]}".ljust(26, "0")
            connection.execute(
                "INSERT INTO jobs (id, provider, status, request, created_at, updated_at) "
                "VALUES (%s, 'aivideoapi', %s, '{}', 0, 0)",
                (job_id, str(before)),
            )
            try:
                connection.execute("UPDATE jobs SET status = %s WHERE id = %s", (str(after), job_id))
                allowed = True
            except psycopg.errors.CheckViolation:
                allowed = False
            moves = status_machine.apply(before, Observation(after)).applied
            assert allowed == moves, (before, after)
            assert allowed == (before not in FINAL and moves)


def _migrate(url: str) -> None:
    import asyncio

    async def run() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.close()

    asyncio.run(run())


async def test_copies_at_once_through_both_paths_apply_once(postgres_server: PostgresServer) -> None:
    """Copies of one delivery at once, to two replicas (one writing in one round trip, one always by the
    general transaction), each with the job as read before any was written: applied once, the
    others counted as repeats, whichever path each took."""
    import asyncio

    with postgres_server.database() as url:
        fast = PostgresStore(url, policy=POLICY)
        general = PostgresStore(url, policy=POLICY, fast_callbacks=False)
        for store in (fast, general):
            await store.open()
        try:
            for n in range(3):
                job_id = f"01JTESTCOPIES{n}".ljust(26, "0")
                await fast.create_job(new_job(job_id))
                await fast.bind_task_id(job_id, f"task-{job_id}", 1_765_000_600.0)
                seen = await fast.get_job(job_id)

                async def copy(store: PostgresStore, seen: Job | None = seen, job_id: str = job_id) -> CallbackResult:
                    return await store.record_callback(
                        job_id,
                        "task.completed",
                        OBSERVATIONS["completed"],
                        DETAIL,
                        bind_task_id=None,
                        cost_if_completed=0.06,
                        seen=seen,
                    )

                results = await asyncio.gather(*(copy(fast if k % 3 else general) for k in range(24)))
                assert sorted(str(r.kind) for r in results) == ["accepted"] + ["duplicate"] * 23
                rows = query_database(
                    url,
                    "SELECT (SELECT count FROM callback_receipts WHERE job_id = ?), "
                    "(SELECT COUNT(*) FROM job_events WHERE job_id = ? AND type = 'callback' AND outcome = 'accepted'), "
                    "(SELECT COUNT(*) FROM job_events WHERE job_id = ? AND type = 'callback' AND outcome = 'duplicate'), "
                    "(SELECT COUNT(*) FROM notifications WHERE job_id = ?), (SELECT status FROM jobs WHERE id = ?)",
                    (job_id,) * 5,
                )
                assert rows == [(24, 1, 23, 1, "completed")]
            assert fast.callback_paths["accepted"] + fast.callback_paths["duplicate"] > 0
        finally:
            for store in (fast, general):
                await store.close()


async def test_callbacks_at_once_are_written_in_batches_each_applied_once(postgres_server: PostgresServer) -> None:
    """Plain callbacks and their repeats, all at once: fewer transactions than callbacks (schema 12's
    batches), and each job has exactly what one delivery and its repeats leave."""
    import asyncio

    with postgres_server.database() as url:
        store = PostgresStore(url, policy=POLICY)
        await store.open()
        try:
            ids = [f"01JTESTBATCH{n:03d}".ljust(26, "0") for n in range(60)]
            seen = await submitted_jobs(store, ids)

            results = await asyncio.gather(
                *(deliver_to(store, job_id, seen[job_id]) for _ in range(3) for job_id in ids)
            )
            assert sorted(str(r.kind) for r in results) == ["accepted"] * 60 + ["duplicate"] * 120
            # A repeat whose first delivery was in a batch still in flight finds the job changed once that
            # batch commits: the general transaction records it, as a repeat too.
            assert store.callback_paths["accepted"] == 60
            assert store.callback_paths["duplicate"] + store.callback_paths["general"] == 120
            batches, calls = store.callback_batches
            assert calls == 180
            assert batches < calls / 4, (batches, calls)
            rows = query_database(
                url,
                "SELECT j.status, r.count, "
                "(SELECT COUNT(*) FROM job_events e WHERE e.job_id = j.id AND e.outcome = 'accepted'), "
                "(SELECT COUNT(*) FROM job_events e WHERE e.job_id = j.id AND e.outcome = 'duplicate'), "
                "(SELECT COUNT(*) FROM notifications n WHERE n.job_id = j.id), "
                "(SELECT COUNT(*) FROM due d WHERE d.job_id = j.id) "
                "FROM jobs j JOIN callback_receipts r ON r.job_id = j.id ORDER BY j.id",
            )
            assert rows == [("completed", 3, 1, 2, 1, 0)] * 60
        finally:
            await store.close()


async def test_two_events_of_one_job_in_one_batch_are_both_applied(postgres_server: PostgresServer) -> None:
    """Two events of one job planned from the same read, in one batch: the first is written there, the
    second finds the job changed and is written by the general transaction."""
    import asyncio

    with postgres_server.database() as url:
        store = PostgresStore(url, policy=POLICY)
        await store.open()
        try:
            job_id, *fillers = (f"01JTESTTWO{n:02d}".ljust(26, "0") for n in range(5))
            seen = await submitted_jobs(store, [job_id, *fillers])

            # The fillers take the free batch slots; the two events wait, and go together.
            calls = [deliver_to(store, one, seen[one], "task.processing") for one in fillers]
            calls += [
                deliver_to(store, job_id, seen[job_id], "task.processing"),
                deliver_to(store, job_id, seen[job_id], "task.completed"),
            ]
            results = await asyncio.gather(*calls)
            assert [str(r.kind) for r in results] == ["accepted"] * 6
            assert store.callback_batches == (5, 6)
            assert store.callback_paths == {"accepted": 5, "general": 1}
            done = await store.get_job(job_id)
            assert done is not None and done.status is Status.COMPLETED
            statuses = query_database(
                url, "SELECT outcome FROM job_events WHERE job_id = ? AND type = 'status' ORDER BY id", (job_id,)
            )
            assert [row[0] for row in statuses] == ["submitted", "processing", "completed"]
        finally:
            await store.close()


async def test_a_repeat_that_loses_the_last_place_under_the_bound_takes_its_count_back(
    postgres_server: PostgresServer,
) -> None:
    """Two replicas' batches each hold a repeat of a job one place under its bound, both having read the
    counter before either wrote: one takes the place, the other takes its count back and is counted
    on the summary event by the general transaction."""
    import asyncio

    import psycopg

    from service.domain.history import NOISE_EVENTS_PER_JOB

    with postgres_server.database() as url:
        stores = [PostgresStore(url, policy=POLICY) for _ in range(2)]
        for store in stores:
            await store.open()
        try:
            job_id = "01JTESTLASTPLACE000000000"
            await submitted_jobs(stores[0], [job_id])

            async def deliver(store: PostgresStore) -> CallbackResult:
                return await deliver_to(store, job_id, await store.get_job(job_id))

            for _ in range(NOISE_EVENTS_PER_JOB):  # the first delivery, and repeats up to one under the bound
                await deliver(stores[0])
            # Hold the receipt's lock, so that both repeats read the counter and then wait for it.
            with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watcher:
                holder.execute(
                    "SELECT 1 FROM callback_receipts WHERE job_id = %s FOR NO KEY UPDATE", (job_id,)
                ).fetchone()
                copies = [asyncio.ensure_future(deliver(store)) for store in stores]
                deadline = asyncio.get_running_loop().time() + 10
                while True:  # both calls are waiting on the lock
                    waiting = watcher.execute(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'SELECT jobhook_callbacks%'"
                    ).fetchone()
                    if waiting is not None and waiting[0] == 2:
                        break
                    assert asyncio.get_running_loop().time() < deadline, "the repeats never met the lock"
                    await asyncio.sleep(0.02)
                holder.commit()
            results = await asyncio.gather(*copies)
            assert [str(r.kind) for r in results] == ["duplicate", "duplicate"]
            paths = stores[0].callback_paths + stores[1].callback_paths
            assert paths["general"] == 1  # the one that took its count back
            rows = query_database(
                url,
                "SELECT (SELECT count FROM callback_receipts WHERE job_id = ?), "
                "(SELECT noise FROM job_event_bounds WHERE job_id = ?), "
                "(SELECT COUNT(*) FROM job_events WHERE job_id = ? AND outcome = 'duplicate')",
                (job_id,) * 3,
            )
            assert rows == [(NOISE_EVENTS_PER_JOB + 2, NOISE_EVENTS_PER_JOB + 1, NOISE_EVENTS_PER_JOB)]
            summary = query_database(
                url, "SELECT detail FROM job_events WHERE job_id = ? AND outcome = 'summary'", (job_id,)
            )
            assert len(summary) == 1
            assert json.loads(summary[0][0])["counts"] == {"duplicate": {"task.completed": 1}}
        finally:
            for store in stores:
                await store.close()


async def test_the_other_replicas_hear_of_a_batch_and_of_a_general_transaction(postgres_server: PostgresServer) -> None:
    """What a batch of callbacks changed, and what a general transaction changed, reaches another
    replica's listeners (told after the COMMIT, in a NOTIFY of its own): the jobs, and the outbox's wake."""
    import asyncio

    with postgres_server.database() as url:
        writer, other = PostgresStore(url, policy=POLICY), PostgresStore(url, policy=POLICY)
        for store in (writer, other):
            await store.open()
        heard: set[str] = set()
        outbox_wakes: list[None] = []
        other.add_listener(heard.update)
        other.add_outbox_listener(lambda: outbox_wakes.append(None))
        try:
            ids = [f"01JTESTHEARD{n}".ljust(26, "0") for n in range(4)]
            seen = await submitted_jobs(writer, ids)
            heard.clear()
            outbox_wakes.clear()

            results = await asyncio.gather(*(deliver_to(writer, job_id, seen[job_id]) for job_id in ids[:3]))
            assert [str(r.kind) for r in results] == ["accepted"] * 3
            assert writer.callback_paths["accepted"] == 3  # by batches, not the general transaction
            # ...and one by the general transaction (no job as read: it reads the job itself).
            await writer.record_callback(
                ids[3], "task.processing", OBSERVATIONS["processing"], DETAIL, bind_task_id=None, cost_if_completed=None
            )
            deadline = asyncio.get_running_loop().time() + 10
            while heard != set(ids) or not outbox_wakes:
                assert asyncio.get_running_loop().time() < deadline, (heard, outbox_wakes)
                await asyncio.sleep(0.02)
        finally:
            for store in (writer, other):
                await store.close()
