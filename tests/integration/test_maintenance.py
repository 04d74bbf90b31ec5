"""Backup and purge on a real SQLite file and real image files, built through the store's own operations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.domain.attempt import SubmitKind, SubmitResult
from service.domain.status import JobError, Observation, Status
from service.ids import new_job_id
from service.maintenance import MaintenanceError, PurgeReport, backup, parse_age, purge
from service.media import MediaStore
from service.store.base import NewJob, OutboxPolicy
from service.store.common import Store
from service.store.engines import make_store
from service.store.sqlite import migrations
from tests.postgres import dump_database, query_database

DAY = 86400.0
T0 = 1_700_000_000.0  # when the old jobs ran
NOW = T0 + 40 * DAY  # when the purge runs; with --older-than 30d the cutoff is T0 + 10 days


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_job(prompt: str = "x") -> NewJob:
    return NewJob(
        id=new_job_id(),
        provider="aivideoapi",
        request={"prompt": prompt, "padding": "p" * 400},
        metadata={"order": 1},
        callback_url_registered=True,
        submitted_by_backend=False,
        idempotency_key=None,
        request_hash="h",
        deadline_at=9e9,
        submit_lease_until=None,
    )


def accepted(task_id: str, observation: Observation | None = None, credits: float | None = None) -> SubmitResult:
    return SubmitResult(
        SubmitKind.ACCEPTED, {"http_status": 200}, task_id=task_id, observation=observation, credits_remaining=credits
    )


@contextlib.asynccontextmanager
async def opened(path: Path | str, clock: Clock, policy: OutboxPolicy | None = None) -> AsyncIterator[Store]:
    """The store of JOBHOOK_DATABASE `path`: a SQLite file, or (the purge tests) a PostgreSQL database."""
    store = make_store(Settings.from_environ({"JOBHOOK_DATABASE": str(path)}), clock=clock, policy=policy)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def rows(path: Path | str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return query_database(str(path), sql, params)


def dump(path: Path | str) -> list[str]:
    return dump_database(str(path))


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# -- backup ----------------------------------------------------------------------------------------


async def fill(store: Store, count: int) -> set[str]:
    return {(await store.create_job(new_job(f"job {n}")))[0].id for n in range(count)}


async def test_backup_while_jobs_are_written_is_the_database_as_it_was_when_it_began(tmp_path: Path) -> None:
    database = tmp_path / "jobhook.db"
    async with opened(database, Clock(T0)) as store:
        before = await fill(store, 300)
        loop = asyncio.get_running_loop()
        copying, resume = asyncio.Event(), threading.Event()
        steps: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:  # in the backup's worker thread
            steps.append((done, total))
            if len(steps) == 1:
                loop.call_soon_threadsafe(copying.set)
                assert resume.wait(10)  # hold the copy here until jobs were committed meanwhile

        task = asyncio.create_task(backup(database, tmp_path / "copy.db", progress=progress, pages_per_step=8))
        await copying.wait()
        during = await fill(store, 20)  # committed while the copy is under way
        resume.set()
        while not task.done():  # and the service keeps writing until the copy is done
            during |= await fill(store, 1)
        report = await task
        assert len(during) > 20

    copy = tmp_path / "copy.db"
    assert report.path == copy and report.bytes == copy.stat().st_size > 0
    assert report.schema_version == migrations()[-1][0]
    assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
    assert rows(copy, "PRAGMA user_version") == [(report.schema_version,)]
    assert rows(copy, "PRAGMA page_count") == [(report.pages,)]
    copied = {row[0] for row in rows(copy, "SELECT id FROM jobs")}
    # Everything committed before the backup began, and nothing after: one consistent snapshot.
    assert copied == before
    assert len(rows(copy, "SELECT * FROM job_events")) == len(before)
    assert rows(copy, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file
    assert [name for name in names(tmp_path) if "copy" in name] == ["copy.db"]  # no -wal, no temporary file
    assert steps[-1][0] == steps[-1][1] == report.pages and len(steps) > 3
    assert [done for done, _ in steps] == sorted(done for done, _ in steps)
    assert copy.stat().st_mode & 0o077 == 0  # the copy holds the signing secret: owner only


async def test_backup_copies_a_database_the_store_can_open(tmp_path: Path) -> None:
    database = tmp_path / "jobhook.db"
    async with opened(database, Clock(T0)) as store:
        [job_id] = await fill(store, 1)
        secret = await store.secret(lambda: "s3cret")
        report = await backup(database, tmp_path / "copy.db")
    async with opened(report.path, Clock(T0)) as copy:
        job = await copy.get_job(job_id)
        assert job is not None and job.status is Status.QUEUED
        assert await copy.secret(lambda: "other") == secret


async def test_backup_refusals_are_one_line_and_leave_nothing_behind(tmp_path: Path) -> None:
    database = tmp_path / "jobhook.db"
    async with opened(database, Clock(T0)):
        pass
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"keep me")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello " * 1000)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    link = tmp_path / "link.db"
    link.symlink_to(database)
    refusals: list[tuple[Path, Path, str]] = [
        (tmp_path / "absent.db", tmp_path / "x.db", "does not exist"),
        (database, database, "is the database itself"),
        (database, link, "is the database itself"),
        (database, tmp_path / "jobhook.db-wal", "is the database itself"),
        (database, tmp_path / "missing" / "x.db", "does not exist; create it first"),
        (database, tmp_path / "a-file" / "x.db", "is not a directory"),
        (database, tmp_path / "a-dir", "is a directory"),
        (database, existing, "already exists"),
        (not_sqlite, tmp_path / "x.db", "is not a SQLite database"),
        (empty, tmp_path / "x.db", "is not a jobhook database"),
    ]
    before = names(tmp_path)
    for source, target, message in refusals:
        with pytest.raises(MaintenanceError, match=message) as caught:
            await backup(source, target)
        assert "\n" not in str(caught.value)
    assert existing.read_bytes() == b"keep me"
    assert names(tmp_path) == before

    report = await backup(database, existing, overwrite=True)
    assert rows(report.path, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
async def test_backup_into_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "jobhook.db"
    async with opened(database, Clock(T0)):
        pass
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(MaintenanceError, match="cannot write in"):
            await backup(database, locked / "x.db")
    finally:
        locked.chmod(0o700)


async def test_a_cancelled_backup_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "jobhook.db"
    async with opened(database, Clock(T0)) as store:
        await fill(store, 100)
    loop = asyncio.get_running_loop()
    copying, resume = asyncio.Event(), threading.Event()

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(copying.set)
        resume.wait(10)

    task = asyncio.create_task(backup(database, tmp_path / "copy.db", progress=progress, pages_per_step=4))
    await copying.wait()
    assert [name for name in names(tmp_path) if name.startswith(".copy.db.")]  # the copy under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resume.set()  # only now may the worker thread go on: it must stop instead
    for _ in range(200):  # the worker thread notices at its next step, then removes its file
        if not [name for name in names(tmp_path) if name.startswith(".copy.db")]:
            break
        await asyncio.sleep(0.01)
    assert [name for name in names(tmp_path) if "copy" in name] == []


# -- purge -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("3600", 3600)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["0", "0d", "-5d", "-1", "soon", "", "30 days", "d"])
def test_parse_age_refuses_zero_negative_and_garbage(text: str) -> None:
    with pytest.raises(MaintenanceError, match=r"more than zero|expected an age"):
        parse_age(text)


class World:
    """A database with jobs of every kind, old (finished at T0) and recent, and their files."""

    def __init__(self, tmp_path: Path, database: str) -> None:
        self.path = database
        self.media = MediaStore(tmp_path / "media")
        self.clock = Clock(T0)
        self.old: dict[str, str] = {}  # purgeable: id → status
        self.kept: dict[str, str] = {}  # never purged: id → why
        self.busy: set[str] = set()  # old and finished, but with work pending
        self.images: dict[str, int] = {}  # bytes of image files held, per job

    async def build(self) -> None:
        policy = OutboxPolicy(destinations=("webhook",))
        async with opened(self.path, self.clock, policy=policy) as store:
            await self._old_finished(store)
            await self._old_unfinished(store)
            await self._old_busy(store)
            await store.log_refused("bad_token", {"ip": "203.0.113.9"})
            await self._deliver_all(store)
            self.clock.now = NOW - 9 * DAY  # recent: inside the 30 days
            job = await self._completed(store, with_image=True)
            self.kept[job] = "finished recently"
            await store.log_refused("bad_token", {"ip": "203.0.113.10"})
            await self._deliver_all(store)

    async def _completed(self, store: Store, *, with_image: bool) -> str:
        job, _ = await store.create_job(new_job())
        done = Observation(Status.COMPLETED, images=(f"https://cdn.example/{job.id}.png",))
        await store.record_submit(job.id, accepted(f"task-{job.id}", done))
        if with_image:
            held = await self.media.save(job.id, 0, b"\x89PNG" + os.urandom(3000), "image/png")
            await store.record_media(job.id, {0: held}, {"attempt": 1})
            self.images[job.id] = held.bytes
        return job.id

    async def _old_finished(self, store: Store) -> None:
        for _ in range(3):  # completed by the submission's answer, with an image held
            self.old[await self._completed(store, with_image=True)] = "completed"
        # completed by a callback (a receipt), after a duplicate delivery
        job, _ = await store.create_job(new_job())
        await store.record_submit(job.id, accepted("task-cb", credits=1.0))  # low credits: a provider notification
        done = Observation(Status.COMPLETED, images=("https://cdn.example/cb.png",))
        for _ in range(2):
            await store.record_callback(
                job.id, "completed", done, {"ip": "198.51.100.1"}, bind_task_id=None, cost_if_completed=0.08
            )
        self.old[job.id] = "completed"
        # refused by the provider
        job, _ = await store.create_job(new_job())
        rejected = SubmitResult(SubmitKind.REJECTED, {"http_status": 402}, error=JobError("provider_rejected", "no"))
        await store.record_submit(job.id, rejected)
        self.old[job.id] = "failed"
        # timed out, its polling over
        job, _ = await store.create_job(new_job())
        await store.record_submit(job.id, accepted("task-slow"))
        expired = await store.expire(job.id)
        assert expired.status is Status.TIMED_OUT
        self.old[job.id] = "timed_out"

    async def _old_unfinished(self, store: Store) -> None:
        """Queued, submitted and processing for 40 days, with no due work left: the status alone keeps them."""
        queued, _ = await store.create_job(new_job())
        submitted, _ = await store.create_job(new_job())
        await store.record_submit(submitted.id, accepted("task-sub"))
        processing, _ = await store.create_job(new_job())
        await store.record_submit(processing.id, accepted("task-proc"))
        await store.record_poll(processing.id, Observation(Status.PROCESSING), {}, outcome="processing", next_poll=None)
        for job_id, status in ((queued.id, "queued"), (submitted.id, "submitted"), (processing.id, "processing")):
            await store.unschedule(job_id, "deadline")
            assert await store.due_for(job_id) == []
            assert (job := await store.get_job(job_id)) is not None and job.status == status
            self.kept[job_id] = status

    async def _old_busy(self, store: Store) -> None:
        # A completed job whose image download is still being retried.
        job_id = await self._completed(store, with_image=False)
        await store.reschedule(job_id, "mirror", "_mirror", T0 + 60, 1, ("mirror", "retry", {"attempt": 1}))
        self.kept[job_id] = "image being fetched"
        # A timed-out job still polled.
        job, _ = await store.create_job(new_job())
        await store.record_submit(job.id, accepted("task-polled"))
        await store.expire(job.id)
        await store.record_poll(job.id, None, {}, outcome="error", next_poll=(T0 + 60, 1))
        self.kept[job.id] = "timed out, still polled"
        self.busy |= {job_id, job.id}

    async def _deliver_all(self, store: Store) -> None:
        for row in await store.outbox(status="pending", limit=1000):
            await store.record_delivery(row.id, ok=True, status=200, error=None, next_attempt_at=None)

    async def pending_delivery(self) -> str:
        """One more old completed job, whose notification is not delivered yet."""
        self.clock.now = T0
        async with opened(self.path, self.clock, policy=OutboxPolicy(destinations=("webhook",))) as store:
            job_id = await self._completed(store, with_image=False)
        self.kept[job_id] = "notification pending"
        self.busy.add(job_id)
        return job_id

    @property
    def purged_image_bytes(self) -> int:
        return sum(size for job_id, size in self.images.items() if job_id in self.old)

    def owned(self, table: str, column: str = "job_id") -> int:
        marks = ", ".join("?" for _ in self.old)
        return int(rows(self.path, f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({marks})", *self.old)[0][0])


@pytest.fixture
async def world(tmp_path: Path, database: str) -> World:
    built = World(tmp_path, database)
    await built.build()
    return built


async def run_purge(
    world: World, *, dry_run: bool, batch: int = 500, progress: Callable[[int], None] | None = None
) -> PurgeReport:
    async with opened(world.path, Clock(NOW)) as store:
        return await purge(
            store, world.media, older_than=30 * DAY, now=NOW, dry_run=dry_run, batch=batch, progress=progress
        )


async def test_purge_removes_exactly_the_old_finished_jobs_and_all_they_own(world: World) -> None:
    await world.pending_delivery()
    events = world.owned("job_events")
    receipts = world.owned("callback_receipts")
    notifications = world.owned("notifications") + 1  # and the provider's credits_low, delivered
    marks = ", ".join("?" for _ in world.old)
    deliveries = rows(
        world.path,
        f"SELECT COUNT(*) FROM outbox o JOIN notifications n ON n.id = o.notification_id"
        f" WHERE n.job_id IN ({marks}) OR n.job_id IS NULL",
        *world.old,
    )[0][0]
    assert events > 0 and receipts == 1 and deliveries == notifications

    report = await run_purge(world, dry_run=False)

    assert dict(report.jobs) == {"completed": 4, "failed": 1, "timed_out": 1}
    assert report.jobs_removed == len(world.old) == 6
    assert (report.events, report.receipts) == (events, receipts)
    assert (report.notifications, report.deliveries) == (notifications, deliveries)
    assert report.media_bytes == world.purged_image_bytes > 0
    assert report.refused_callbacks == 1
    assert report.kept == len(world.busy) == 3
    assert report.cutoff == NOW - 30 * DAY and not report.dry_run

    async with opened(world.path, Clock(NOW)) as store:
        for job_id in world.old:
            assert await store.get_job(job_id) is None
        for job_id, why in world.kept.items():
            assert await store.get_job(job_id) is not None, why
        assert [entry["detail"]["ip"] for entry in await store.refused_log()] == ["203.0.113.10"]
    for table in ("job_events", "callback_receipts", "due", "notifications"):
        assert world.owned(table) == 0, table
    assert rows(world.path, "SELECT COUNT(*) FROM notifications WHERE job_id IS NULL") == [(0,)]
    assert rows(
        world.path, "SELECT COUNT(*) FROM outbox WHERE notification_id NOT IN (SELECT id FROM notifications)"
    ) == [(0,)]
    if not world.path.startswith("postgresql://"):  # PostgreSQL checks every foreign key as it goes
        assert rows(world.path, "PRAGMA foreign_key_check") == []
    on_disk = {name.split("/")[0] for name in files(world.media.root)}
    assert on_disk.isdisjoint(world.old)
    assert on_disk == {job_id for job_id, why in world.kept.items() if why == "finished recently"}
    lines = report.summary()
    assert lines[0].startswith("removed 6 finished jobs (4 completed, 1 failed, 1 timed out), ")
    assert "KiB of images" in lines[0]
    assert any(line.startswith("kept 3 old finished jobs") for line in lines)

    again = await run_purge(world, dry_run=False)
    assert again.jobs_removed == again.events == again.media_bytes == again.refused_callbacks == 0
    assert again.summary()[0] == "no finished jobs to remove"


async def test_dry_run_changes_nothing_and_counts_what_the_purge_then_removes(world: World) -> None:
    database, images = dump(world.path), files(world.media.root)
    dry = await run_purge(world, dry_run=True)
    assert dump(world.path) == database
    assert files(world.media.root) == images
    assert dry.dry_run and dry.jobs_removed == 6
    assert dry.summary()[0].startswith("would remove 6 finished jobs")
    assert dry.summary()[-1] == "dry run: nothing was changed"

    real = await run_purge(world, dry_run=False)
    assert dataclasses.replace(dry, dry_run=False, seconds=real.seconds) == real


async def test_purge_in_small_batches_removes_the_same(world: World) -> None:
    seen: list[int] = []
    dry = await run_purge(world, dry_run=True, batch=2, progress=seen.append)
    assert seen == [2, 4, 6]
    seen.clear()
    report = await run_purge(world, dry_run=False, batch=2, progress=seen.append)
    assert seen == [2, 4, 6]
    assert report.jobs == dry.jobs and report.events == dry.events and report.media_bytes == dry.media_bytes


async def test_purge_keeps_the_service_answering_between_batches(world: World) -> None:
    """Another writer on the same database gets its turn while a purge is under way."""
    async with opened(world.path, Clock(NOW)) as store:
        writes: list[str] = []
        under_way = asyncio.Event()

        def between(jobs: int) -> None:
            writes.append(f"batch {jobs}")
            under_way.set()

        async def writer() -> None:
            # Once the purge has done its first batch of six: a write that then waited for the
            # whole purge would land after the last. (Started at once, writes raced the purge's
            # start, and a busy machine could let the purge's six batches outrun three writes.)
            await under_way.wait()
            job, _ = await store.create_job(new_job())
            writes.append(job.id)

        report, _ = await asyncio.gather(
            purge(store, world.media, older_than=30 * DAY, now=NOW, dry_run=False, batch=1, progress=between),
            writer(),
        )
    assert report.jobs_removed == 6
    (write,) = [i for i, entry in enumerate(writes) if entry.startswith("job_")]
    assert writes.index("batch 1") < write < writes.index("batch 6")  # it did not wait for the whole purge


async def test_purge_refuses_a_zero_age(world: World) -> None:
    with pytest.raises(MaintenanceError, match="more than zero"):
        async with opened(world.path, Clock(NOW)) as store:
            await purge(store, world.media, older_than=0, now=NOW, dry_run=True)
