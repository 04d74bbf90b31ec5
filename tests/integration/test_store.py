"""The SQLite store on a real file: migrations, leases, the one-writer transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from service.errors import SchemaTooNew
from service.ids import new_job_id
from service.store.base import NewJob
from service.store.sqlite import SQLiteStore, _statements, migrations


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


async def test_concurrent_creates_with_one_idempotency_key_make_one_job(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    await store.open()
    try:
        results = await asyncio.gather(*(store.create_job(new_job("same-key")) for _ in range(20)))
        assert len({job.id for job, _ in results}) == 1
        assert sum(created for _, created in results) == 1
    finally:
        await store.close()


async def test_claimed_rows_are_leased_and_come_due_again_when_the_lease_ends(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    await store.open()
    try:
        job, _ = await store.create_job(new_job(lease=100.0))
        first = await store.claim_due("aivideoapi", now=100.0, limit=10, lease_until=160.0)
        assert [(d.job_id, d.kind) for d in first] == [(job.id, "submit")]
        assert await store.claim_due("aivideoapi", now=150.0, limit=10, lease_until=210.0) == []
        again = await store.claim_due("aivideoapi", now=161.0, limit=10, lease_until=220.0)
        assert [(d.job_id, d.kind) for d in again] == [(job.id, "submit")]
        assert await store.next_due_at("aivideoapi") == 220.0
        assert await store.next_due_at("") == 9e9  # the deadline row, in its own lane
    finally:
        await store.close()
