"""`jobhook backup` and `jobhook purge` as an operator runs them: child processes, exit codes, output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from service.domain.attempt import SubmitKind, SubmitResult
from service.domain.status import JobError, Observation, Status
from service.ids import new_job_id
from service.media import MediaStore
from service.store.base import NewJob
from service.store.sqlite import SQLiteStore, migrations
from tests.acceptance.harness import ServeProcess, jobhook_command

DAY = 86400.0


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobhook_command(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobhook: ") and "Traceback" not in result.stderr
    return lines[0]


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def test_help_explains_backup_and_purge() -> None:
    listing = run("--help").stdout
    assert "backup" in listing and "purge" in listing
    backup_help = run("backup", "--help")
    assert backup_help.returncode == 0
    for text in ("PATH", "--force", "JOBHOOK_DATABASE", "JOBHOOK_MEDIA_DIR", "integrity_check"):
        assert text in backup_help.stdout, text
    purge_help = run("purge", "--help")
    assert purge_help.returncode == 0
    for text in ("--older-than", "--dry-run", "30d", "JOBHOOK_DATABASE", "JOBHOOK_MEDIA_DIR"):
        assert text in purge_help.stdout, text


async def test_backup_while_the_service_takes_jobs(tmp_path: Path) -> None:
    service = ServeProcess(tmp_path, {"JOBHOOK_SIMULATOR_LATENCY": "0.2", "JOBHOOK_CALLBACK_GRACE": "1"})
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url) as client:

            async def submit(n: int) -> str:
                response = await client.post("/v1/jobs", json={"provider": "simulator", "prompt": f"poster {n}"})
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

            before = {await submit(n) for n in range(15)}  # 202: committed
            target = tmp_path / "backups" / "jobhook.db"
            target.parent.mkdir()
            env = {"JOBHOOK_DATABASE": str(tmp_path / "jobhook.db")}
            copying = asyncio.create_task(asyncio.to_thread(run, "backup", str(target), env=env))
            n = 100
            while not copying.done():  # the service keeps taking jobs during the backup
                await submit(n)
                n += 1
            result = await copying
            assert result.returncode == 0, result.stderr
            assert "backup: 100%" in result.stderr
            assert result.stdout.startswith(f"backed up {tmp_path / 'jobhook.db'} to {target}: ")
            assert f"schema version {migrations()[-1][0]}" in result.stdout and "integrity ok" in result.stdout
            assert (await client.get("/readyz")).status_code == 200

            again = run("backup", str(target), env=env)
            assert "already exists" in one_line_error(again) and "--force" in again.stderr
            forced = run("backup", str(target), "--force", env=env)
            assert forced.returncode == 0, forced.stderr
    finally:
        service.stop()
    assert query(target, "PRAGMA integrity_check") == [("ok",)]
    copied = {row[0] for row in query(target, "SELECT id FROM jobs")}
    assert before <= copied
    assert sorted(path.name for path in target.parent.iterdir()) == ["jobhook.db"]


def test_backup_refusals_are_one_line(tmp_path: Path) -> None:
    missing = run("backup", str(tmp_path / "copy.db"), env={"JOBHOOK_DATABASE": str(tmp_path / "absent.db")})
    assert "no database at" in one_line_error(missing) and "JOBHOOK_DATABASE" in missing.stderr
    database = tmp_path / "jobhook.db"
    assert run("migrate", env={"JOBHOOK_DATABASE": str(database)}).returncode == 0
    env = {"JOBHOOK_DATABASE": str(database)}
    assert "does not exist" in one_line_error(run("backup", str(tmp_path / "nowhere" / "copy.db"), env=env))
    assert "the database itself" in one_line_error(run("backup", str(database), env=env))
    assert "is a directory" in one_line_error(run("backup", str(tmp_path), env=env))


class OldJobs:
    """A database whose jobs ran 40 days ago, built with the store's own operations."""

    def __init__(self, tmp_path: Path) -> None:
        self.database = tmp_path / "jobhook.db"
        self.media = MediaStore(tmp_path / "media")
        self.env = {"JOBHOOK_DATABASE": str(self.database), "JOBHOOK_MEDIA_DIR": str(self.media.root)}
        self.now = time.time() - 40 * DAY
        self.old: set[str] = set()
        self.kept: set[str] = set()
        self.recent = ""

    async def build(self) -> None:
        store = SQLiteStore(self.database, clock=lambda: self.now)
        await store.open()
        try:
            self.old.add(await self.completed(store))
            failed, _ = await store.create_job(self.new_job())
            error = JobError("provider_rejected", "insufficient credits")
            await store.record_submit(failed.id, SubmitResult(SubmitKind.REJECTED, {}, error=error))
            self.old.add(failed.id)
            queued, _ = await store.create_job(self.new_job())  # never finished: never purged
            await store.unschedule(queued.id, "deadline")
            self.kept.add(queued.id)
            self.now = time.time() - 2 * DAY
            self.recent = await self.completed(store)
            self.kept.add(self.recent)
        finally:
            await store.close()

    def new_job(self) -> NewJob:
        return NewJob(
            id=new_job_id(),
            provider="aivideoapi",
            request={"prompt": "x"},
            metadata=None,
            callback_url_registered=True,
            submitted_by_backend=False,
            idempotency_key=None,
            request_hash=None,
            deadline_at=9e9,
            submit_lease_until=None,
        )

    async def completed(self, store: SQLiteStore) -> str:
        job, _ = await store.create_job(self.new_job())
        done = Observation(Status.COMPLETED, images=("https://cdn.example/a.png",))
        await store.record_submit(job.id, SubmitResult(SubmitKind.ACCEPTED, {}, task_id=job.id, observation=done))
        held = await self.media.save(job.id, 0, b"\x89PNG" + b"\0" * 2044, "image/png")
        await store.record_media(job.id, {0: held}, {})
        return job.id

    def job_ids(self) -> set[str]:
        return {row[0] for row in query(self.database, "SELECT id FROM jobs")}

    def image_folders(self) -> set[str]:
        return {path.name for path in self.media.root.iterdir()}


async def test_purge_removes_old_finished_jobs_and_their_images(tmp_path: Path) -> None:
    jobs = OldJobs(tmp_path)
    await jobs.build()
    everything = jobs.old | jobs.kept

    dry = run("purge", "--older-than", "30d", "--dry-run", env=jobs.env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 2 finished jobs (1 completed, 1 failed), ")
    assert "2.0 KiB of images" in dry.stdout and "nothing was changed" in dry.stdout
    assert jobs.job_ids() == everything and len(jobs.image_folders()) == 2

    result = run("purge", "--older-than", "30d", env=jobs.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed 2 finished jobs (1 completed, 1 failed), ")
    assert "2.0 KiB of images" in result.stdout
    assert jobs.job_ids() == jobs.kept
    assert jobs.image_folders() == {jobs.recent}

    again = run("purge", "--older-than", "30d", env=jobs.env)
    assert again.returncode == 0 and again.stdout.startswith("no finished jobs to remove")


def test_purge_refusals_are_one_line(tmp_path: Path) -> None:
    env = {"JOBHOOK_DATABASE": str(tmp_path / "jobhook.db"), "JOBHOOK_MEDIA_DIR": str(tmp_path / "media")}
    for age in ("0", "-5d", "soon", "30 days"):
        line = one_line_error(run("purge", f"--older-than={age}", env=env))
        assert "--older-than" in line and repr(age) in line
    assert "no database at" in one_line_error(run("purge", "--older-than", "30d", env=env))
    assert run("purge", env=env).returncode == 2  # --older-than is required
    assert run("migrate", env=env).returncode == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "jobhook.db")) as db:
        db.execute("PRAGMA user_version = 1")
    line = one_line_error(run("purge", "--older-than", "30d", "--dry-run", env=env))
    assert "jobhook migrate" in line
    assert query(tmp_path / "jobhook.db", "PRAGMA user_version") == [(1,)]  # a dry run migrates nothing either


def test_backup_of_a_postgresql_database_says_to_use_pg_dump(pg: str, tmp_path: Path) -> None:
    line = one_line_error(run("backup", str(tmp_path / "copy.dump"), env={"JOBHOOK_DATABASE": pg}))
    assert "pg_dump" in line and "pg_restore" in line
    assert not (tmp_path / "copy.dump").exists()


def test_an_unreachable_postgresql_database_is_one_line_naming_it_without_its_password() -> None:
    env = {"JOBHOOK_DATABASE": "postgresql://jobhook:s3cret@127.0.0.1:1/jobhook"}
    for command in (("migrate",), ("purge", "--older-than", "30d", "--dry-run"), ("outbox",)):
        result = run(*command, env=env)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "postgresql://jobhook:***@127.0.0.1:1/jobhook" in lines[0] and "s3cret" not in result.stderr


def test_purge_of_a_postgresql_database_before_it_is_migrated_says_to_migrate(pg: str) -> None:
    line = one_line_error(run("purge", "--older-than", "30d", env={"JOBHOOK_DATABASE": pg}))
    assert "jobhook migrate" in line
    assert run("migrate", env={"JOBHOOK_DATABASE": pg}).returncode == 0
    result = run("purge", "--older-than", "30d", "--dry-run", env={"JOBHOOK_DATABASE": pg})
    assert result.returncode == 0, result.stderr
    assert "no finished jobs to remove" in result.stdout
