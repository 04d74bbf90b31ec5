"""The stores on a real database: migrations, leases, transactions that race (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.config import Settings
from service.domain.status import Observation, Status
from service.errors import SchemaTooNew
from service.ids import new_job_id
from service.store import common
from service.store.base import NewJob, ReceiptKind, TaskIdConflict
from service.store.common import Store
from service.store.engines import make_store
from service.store.sqlite import SQLiteStore, _statements, migrations
from tests.conftest import replica_stores


def new_job(key: str | None = None, *, deadline: float = 9e9, lease: float | None = 5e9) -> NewJob:
    return NewJob(
        id=new_job_id(),
        provider="aivideoapi",
        request={"prompt": "x"},
        metadata={"order": 1},
        callback_url_registered=True,
        submitted_by_backend=False,
        idempotency_key=key,
        request_hash="h",
        deadline_at=deadline,
        submit_lease_until=lease,
    )


def schema(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    # Table rebuilds leave the CREATE text of renamed tables quoted differently; compare normalised text.
    return {(kind, " ".join((sql or "").replace('"', "").split())) for kind, _, sql in rows}


async def test_every_migration_path_ends_at_the_same_schema_and_keeps_the_data(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    store = SQLiteStore(fresh)
    await store.open()
    await store.close()
    old = tmp_path / "old.db"
    first_version, first_sql = migrations()[0]
    with sqlite3.connect(old) as db:
        for statement in _statements(first_sql):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {first_version}")
        db.execute(
            "INSERT INTO jobs (id, provider, status, request, created_at, updated_at) "
            "VALUES ('job_01AAAAAAAAAAAAAAAAAAAAAAAA', 'aivideoapi', 'submitted', '{}', 1, 1)"
        )
        db.execute("INSERT INTO due VALUES ('job_01AAAAAAAAAAAAAAAAAAAAAAAA', 'poll', 'aivideoapi', 42, 3)")
    upgraded = SQLiteStore(old)
    await upgraded.open()
    try:
        assert await upgraded.schema_version() == migrations()[-1][0]
        [due] = await upgraded.due_for("job_01AAAAAAAAAAAAAAAAAAAAAAAA")
        assert (due.kind, due.due_at, due.attempt) == ("poll", 42, 3)
        job = await upgraded.get_job("job_01AAAAAAAAAAAAAAAAAAAAAAAA")
        assert job is not None and job.media == ()
    finally:
        await upgraded.close()
    assert schema(old) == schema(fresh)


async def test_a_database_newer_than_the_code_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    store = SQLiteStore(path)
    with pytest.raises(SchemaTooNew, match="999"):
        await store.open()


@pytest.fixture
async def stores(database: str) -> AsyncIterator[list[Store]]:
    """Three stores open on one database, as three replicas (or three processes on one SQLite file) hold."""
    async with replica_stores(database) as opened:
        yield opened


async def test_concurrent_creates_with_one_idempotency_key_make_one_job(stores: list[Store]) -> None:
    results = await asyncio.gather(*(stores[n % 3].create_job(new_job("same-key")) for n in range(30)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_claimed_rows_are_leased_and_come_due_again_when_the_lease_ends(stores: list[Store]) -> None:
    store, other, _ = stores
    job, _ = await store.create_job(new_job(lease=100.0))
    first = await store.claim_due("aivideoapi", now=100.0, limit=10, lease_until=160.0)
    assert [(d.job_id, d.kind) for d in first] == [(job.id, "submit")]
    assert await other.claim_due("aivideoapi", now=150.0, limit=10, lease_until=210.0) == []
    again = await other.claim_due("aivideoapi", now=161.0, limit=10, lease_until=220.0)
    assert [(d.job_id, d.kind) for d in again] == [(job.id, "submit")]
    assert await store.next_due_at("aivideoapi") == 220.0
    assert await store.next_due_at("") == 9e9  # the deadline row, in its own lane


async def test_due_rows_claimed_at_once_by_several_stores_go_to_one_each(stores: list[Store]) -> None:
    created = [await stores[0].create_job(new_job(lease=100.0)) for _ in range(60)]
    claims = await asyncio.gather(
        *(stores[n % 3].claim_due("aivideoapi", now=100.0, limit=7, lease_until=500.0) for n in range(12))
    )
    claimed = [due.job_id for batch in claims for due in batch]
    assert len(claimed) == len(set(claimed)) == 60  # every row once, none twice
    assert set(claimed) == {job.id for job, _ in created}


async def test_one_task_id_is_bound_to_one_job_whichever_store_binds_it(stores: list[Store]) -> None:
    jobs = [(await stores[0].create_job(new_job(lease=None)))[0] for _ in range(6)]
    results = await asyncio.gather(
        *(stores[n % 3].bind_task_id(job.id, "task-shared", 9e9) for n, job in enumerate(jobs)),
        return_exceptions=True,
    )
    bound = [result for result in results if not isinstance(result, BaseException)]
    assert len(bound) == 1 and bound[0].provider_task_id == "task-shared"
    assert all(isinstance(result, TaskIdConflict) for result in results if isinstance(result, BaseException))


async def test_job_counts_stay_exact_under_status_changes_from_every_store(stores: list[Store]) -> None:
    jobs = [(await stores[n % 3].create_job(new_job(lease=None)))[0] for n in range(45)]
    done = Observation(Status.COMPLETED, images=("https://files.invalid/a.png",))
    failed = Observation(Status.FAILED)
    await asyncio.gather(
        *(
            stores[n % 3].record_callback(
                job.id, "final", done if n % 5 else failed, {}, bind_task_id=f"task-{n}", cost_if_completed=0.1
            )
            for n, job in enumerate(jobs[:40])
        )
    )
    by_status = await stores[1].counts()
    assert by_status == {"completed": 32, "failed": 8, "queued": 5}
    kept = {key: n for key, n in (await stores[2].job_counts()).items() if n}
    assert kept == {("aivideoapi", status): n for status, n in by_status.items()}


async def tracking(store: Store, job_id: str) -> list[tuple[str, float]]:
    """The job's due rows but its deadline, soonest first."""
    return [(due.kind, due.due_at) for due in await store.due_for(job_id) if due.kind != "deadline"]


async def test_a_copy_of_a_bare_webhook_leaves_a_confirming_poll_in_flight_alone(stores: list[Store]) -> None:
    store, other, _ = stores
    job, _ = await store.create_job(new_job(lease=None))
    assert await store.record_claim(job.id, "status.completed", {}, bind_task_id="task-1") is ReceiptKind.ACCEPTED
    now = time.time() + 1
    [confirm] = await store.claim_due("aivideoapi", now=now, limit=10, lease_until=now + 60)
    assert confirm.kind == "confirm"
    # A copy comes while that poll is out: its claim is the same, and the poll was sent after the first.
    assert await other.record_claim(job.id, "status.completed", {}, bind_task_id="task-1") is ReceiptKind.DUPLICATE
    assert await tracking(store, job.id) == [("confirm", now + 60)]
    assert await other.claim_due("aivideoapi", now=now + 1, limit=10, lease_until=now + 61) == []
    # The poll refutes the claim (the job still runs); a later copy may be true now: it is confirmed again.
    await store.record_poll(job.id, None, {}, outcome="error", next_poll=(now + 600, 1), confirming=True)
    assert await tracking(store, job.id) == [("poll", now + 600)]
    assert await other.record_claim(job.id, "status.completed", {}, bind_task_id="task-1") is ReceiptKind.DUPLICATE
    assert [kind for kind, _ in await tracking(store, job.id)] == ["confirm", "poll"]


async def test_a_postgresql_database_of_the_first_schema_is_upgraded_with_its_counts(pg: str) -> None:
    import psycopg

    from service.store import postgres

    first_version, first_sql = postgres.migrations()[0]
    with psycopg.connect(pg, autocommit=True) as connection:
        connection.execute(first_sql)
        connection.execute("CREATE TABLE jobhook_schema (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO jobhook_schema (version) VALUES (%s)", (first_version,))
        for n, status in enumerate(("queued", "queued", "completed")):
            connection.execute(
                "INSERT INTO jobs (id, provider, status, request, created_at, updated_at) "
                "VALUES (%s, 'aivideoapi', %s, '{}', 1, 1)",
                (f"job_01AAAAAAAAAAAAAAAAAAAAAAA{n}", status),
            )
    store = make_store(Settings.from_environ({"JOBHOOK_DATABASE": pg}))
    await store.open()
    try:
        assert await store.schema_version() == postgres.migrations()[-1][0] > first_version
        await store.record_callback(
            "job_01AAAAAAAAAAAAAAAAAAAAAAA0",
            "final",
            Observation(Status.FAILED),
            {},
            bind_task_id="task-0",
            cost_if_completed=None,
        )
        kept = {status: n for (_, status), n in (await store.job_counts()).items() if n}
        assert kept == {"queued": 1, "completed": 1, "failed": 1}
    finally:
        await store.close()


async def test_a_postgresql_write_blocked_by_a_lock_gives_up_as_a_storage_error(pg: str) -> None:
    import psycopg

    from service.errors import StorageError
    from service.store.postgres import PostgresStore

    store = PostgresStore(pg, lock_timeout=0.5)
    await store.open()
    try:
        job, _ = await store.create_job(new_job(lease=None))
        with psycopg.connect(pg) as blocker:
            blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # held until this transaction ends
            with pytest.raises(StorageError):
                await store.note(job.id, "test", None, {})
        await store.note(job.id, "test", "after", {})  # the lock gone, writes go through again
        assert [e.outcome for e in await store.events(job.id) if e.type == "test"] == ["after"]
    finally:
        await store.close()


def test_a_providers_measurement_is_read_by_its_index_not_by_a_scan(tmp_path: Path) -> None:
    """Latency and success rate are read on every /v1/providers and dashboard refresh: the read must
    cost the provider's last 100 finished attempts, never every attempt ever made."""
    path = tmp_path / "jobhook.db"
    with sqlite3.connect(path) as db:
        for _, script in migrations():
            db.executescript(script)
        plan = " ".join(
            str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {common.MEASURE_SQL}", ("apiframe", 100))
        )
    assert "USING INDEX attempts_finished" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted afterwards
