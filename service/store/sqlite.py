"""The SQLite store: the only code that speaks SQL. WAL mode, one writer, named operations.

Every operation that changes state is one transaction (`BEGIN IMMEDIATE`), and returns only after
COMMIT; with `synchronous=FULL` a committed change survives a power cut, which is what lets a route
answer 2xx after it. Listeners hear which jobs changed after each commit (for `?wait=N`).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from service.domain import status as status_machine
from service.domain.job import Event, Job
from service.domain.status import FINAL, JobError, Observation, Outcome, Source, Status
from service.errors import SchemaTooNew, StorageError
from service.ids import job_id_floor, new_message_id
from service.media import MediaFile
from service.store.base import (
    Applied,
    CallbackResult,
    Due,
    JobNotFound,
    NewJob,
    OutboxPolicy,
    ReceiptKind,
    SubmitKind,
    SubmitResult,
    TaskIdConflict,
)
from service.store.sqlite_outbox import OutboxQueries
from service.store.sqlite_purge import PurgeQueries
from service.store.sqlite_writer import Writer, WriterStats

REFUSED_LOG_SIZE = 1000
BUSY_TIMEOUT_MS = 5000
# Page cache per connection (SQLite's default is 2 MiB): a callback touches ~10 B-tree pages of jobs
# spread over the whole history; those a cache holds are not read again from the OS.
CACHE_KIB = 64 * 1024
DEADLINE = "deadline"
# The `provider` column of due rows is the lane that bounds how many run at once: a provider's name,
# or one of these for work that calls no provider.
INTERNAL = ""  # deadlines
MIRROR = "_mirror"  # downloads of completed images
# The due work that follows a job until it is final; mirroring outlives it.
TRACKING_KINDS = ("submit", "poll", "deadline", "confirm")

Listener = Callable[[frozenset[str]], None]
T = TypeVar("T")


def migrations() -> list[tuple[int, str]]:
    """The numbered migrations shipped with this code, in order."""
    found = []
    folder = importlib.resources.files("service.store") / "migrations"
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        provider=row["provider"],
        status=Status(row["status"]),
        request=_loads(row["request"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        provider_task_id=row["provider_task_id"],
        metadata=_loads(row["metadata"]),
        images=tuple(_loads(row["images"]) or ()),
        error=JobError.from_json(_loads(row["error"])),
        resolved_by=row["resolved_by"],
        callback_url_registered=bool(row["callback_url_registered"]),
        submitted_by_backend=bool(row["submitted_by_backend"]),
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
        cost_usd=row["cost_usd"],
        submit_state=row["submit_state"],
        submit_attempts=row["submit_attempts"],
        media=tuple(_loads(row["media"]) or ()),
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
    )


class _Tx:
    """One open write transaction: a thin veneer that remembers which jobs it changed."""

    def __init__(self, db: sqlite3.Connection, now: float, *, mirror_images: bool, policy: OutboxPolicy) -> None:
        self.db = db
        self.now = now
        self.mirror_images = mirror_images
        self.policy = policy
        self.changed: set[str] = set()
        self.outbox_changed = False
        self.health: dict[str, bool] = {}  # provider → degraded, for what this transaction changed

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, tuple(params))

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, tuple(params)).fetchone()
        return row

    def job(self, job_id: str) -> Job:
        row = self.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def event(self, job_id: str, type_: str, outcome: str | None, detail: Mapping[str, Any]) -> None:
        self.execute(
            "INSERT INTO job_events (job_id, at, type, outcome, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, self.now, type_, outcome, _dumps(dict(detail))),
        )
        self.changed.add(job_id)

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = self.now
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))
        self.changed.add(job_id)

    def schedule(self, job_id: str, kind: str, provider: str, due_at: float, attempt: int) -> None:
        self.execute(
            "INSERT INTO due (job_id, kind, provider, due_at, attempt) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, kind) DO UPDATE SET due_at = excluded.due_at, attempt = excluded.attempt",
            (job_id, kind, provider, due_at, attempt),
        )

    def unschedule(self, job_id: str, *kinds: str) -> None:
        """Drop the job's due rows of `kinds`; by default those that track it (not its mirroring)."""
        kinds = kinds or TRACKING_KINDS
        marks = ", ".join("?" for _ in kinds)
        self.execute(f"DELETE FROM due WHERE job_id = ? AND kind IN ({marks})", (job_id, *kinds))

    def wants(self, type_: str) -> bool:
        """Does any destination want events of this type?"""
        if not self.policy.destinations:
            return False
        return not type_.startswith("job.") or type_.removeprefix("job.") in self.policy.notify_on

    def notify(
        self,
        type_: str,
        *,
        job: Job | None = None,
        provider: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """An event for every configured destination, in this transaction (the outbox pattern)."""
        if not self.wants(type_):
            return
        policy = self.policy
        notification_id = new_message_id()
        payload = {"job": job.to_json(base_url=policy.base_url)} if job is not None else {"detail": dict(detail or {})}
        self.execute(
            "INSERT INTO notifications (id, type, job_id, provider, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                notification_id,
                type_,
                job.id if job is not None else None,
                provider or (job.provider if job is not None else None),
                _dumps(payload),
                self.now,
            ),
        )
        for destination in policy.destinations:
            self.execute(
                "INSERT INTO outbox (notification_id, destination, status, next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, 'pending', ?, ?, ?)",
                (notification_id, destination, self.now, self.now, self.now),
            )
        if job is not None:
            detail_out = {"type": type_, "id": notification_id, "destinations": list(policy.destinations)}
            self.event(job.id, "notification", "queued", detail_out)
        self.outbox_changed = True

    def first_receipt(self, job_id: str, event_key: str, detail: Mapping[str, Any]) -> bool:
        """Is this the first delivery of this event for this job? A repeat is counted and recorded."""
        count = self.execute(
            "INSERT INTO callback_receipts (job_id, event_key, first_at, last_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id, event_key) DO UPDATE SET count = count + 1, last_at = excluded.last_at "
            "RETURNING count",
            (job_id, event_key, self.now, self.now),
        ).fetchone()[0]
        if count == 1:
            return True
        self.event(job_id, "callback", "duplicate", {**detail, "event": event_key})
        return False

    def provider_state(self, provider: str) -> sqlite3.Row:
        self.execute(
            "INSERT INTO provider_state (provider, updated_at) VALUES (?, ?) ON CONFLICT (provider) DO NOTHING",
            (provider, self.now),
        )
        row = self.one("SELECT * FROM provider_state WHERE provider = ?", (provider,))
        assert row is not None
        return row

    def finished_by_polling(self, provider: str) -> None:
        """A job with a registered callback had to be finished by a poll: one more in a row."""
        state = self.provider_state(provider)
        in_a_row = state["polled_in_a_row"] + 1
        degrade = in_a_row >= self.policy.degraded_after and not state["degraded"]
        self.execute(
            "UPDATE provider_state SET polled_in_a_row = ?, degraded = degraded OR ?, updated_at = ? WHERE provider = ?",
            (in_a_row, int(degrade), self.now, provider),
        )
        if degrade:
            self.health[provider] = True
            self.notify("provider.callbacks_degraded", provider=provider, detail={"polled_in_a_row": in_a_row})

    def callback_came(self, provider: str) -> None:
        """A genuine callback: the run of polled jobs ends, and a degraded provider recovers."""
        state = self.one(
            "SELECT degraded FROM provider_state WHERE provider = ? AND (polled_in_a_row > 0 OR degraded)",
            (provider,),
        )
        if state is None:  # the usual case: nothing to reset (no row at all means the same)
            return
        self.execute(
            "UPDATE provider_state SET polled_in_a_row = 0, degraded = 0, updated_at = ? WHERE provider = ?",
            (self.now, provider),
        )
        if state["degraded"]:
            self.health[provider] = False
            self.notify("provider.callbacks_recovered", provider=provider, detail={})

    def credits(self, provider: str, remaining: float | None, exhausted: bool) -> None:
        """A provider's balance: `provider.credits_low` once per crossing below the threshold."""
        if remaining is None and not exhausted:
            return
        state = self.provider_state(provider)
        low = exhausted or (remaining is not None and remaining < self.policy.credits_low)
        self.execute(
            "UPDATE provider_state SET credits = COALESCE(?, credits), credits_low = ?, updated_at = ? WHERE provider = ?",
            (remaining, int(low), self.now, provider),
        )
        if low and not state["credits_low"]:
            detail = {"credits": remaining, "threshold": self.policy.credits_low, "exhausted": exhausted}
            self.notify("provider.credits_low", provider=provider, detail=detail)

    def apply(
        self,
        job: Job,
        observation: Observation,
        source: Source,
        cost_if_completed: float | None,
        *,
        record: tuple[str, str | None, Mapping[str, Any]] | None = None,
    ) -> status_machine.Decision:
        """Run the status machine on `job` and write what it decides (SPEC §2).

        `record` is the event that brought the observation (type, outcome, detail); it is written
        first, with the decision's effect, so that a job's history reads cause before consequence.
        """
        decision = status_machine.apply(job.status, observation)
        if record is not None:
            type_, outcome, detail = record
            self.event(job.id, type_, outcome, {**detail, "effect": str(decision.outcome)})
        if decision.applied:
            fields: dict[str, Any] = {"status": str(decision.status)}
            if observation.images:
                fields["images"] = _dumps(list(observation.images))
            if decision.status is Status.FAILED:
                error = observation.error or JobError("provider_failed", "the provider reported the job failed")
                fields["error"] = _dumps(error.to_json())
            elif decision.status is Status.COMPLETED:
                fields["error"] = None
                fields["cost_usd"] = cost_if_completed
            if decision.status in FINAL:
                fields["finished_at"] = self.now
                fields["resolved_by"] = str(source)
            if job.submitted_at is None:
                fields["submitted_at"] = self.now
            self.update(job.id, **fields)
            self.event(job.id, "status", str(decision.status), {"from": str(job.status), "by": str(source)})
            if decision.status in FINAL:
                self.unschedule(job.id)
                if self.wants(f"job.{decision.status}"):
                    self.notify(f"job.{decision.status}", job=self.job(job.id))
                if source is Source.POLL and job.callback_url_registered:
                    self.finished_by_polling(job.provider)
            if decision.status is Status.COMPLETED and observation.images and self.mirror_images:
                self.schedule(job.id, "mirror", MIRROR, self.now, 0)
        elif decision.outcome is Outcome.CONFLICT:
            self.event(
                job.id,
                "conflict",
                str(observation.status),
                {"kept": str(job.status), "reported": str(observation.status), "by": str(source)},
            )
        return decision


class SQLiteStore(OutboxQueries, PurgeQueries):
    """jobhook's state in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        mirror_images: bool = False,
        policy: OutboxPolicy | None = None,
    ) -> None:
        """`mirror_images`: a job completed with provider URLs gets a 'mirror' row in the same commit;
        `policy`: which events go to the outbox, and the provider health thresholds."""
        self.path = path
        self.mirror_images = mirror_images
        self.policy = policy or OutboxPolicy()
        self.degraded: set[str] = set()
        self._outbox_listeners: list[Callable[[], None]] = []
        self._synchronous = synchronous
        self._clock = clock
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lookup: sqlite3.Connection | None = None
        self._listeners: list[Listener] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, set the pragmas, and bring the schema up to date."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = Writer(self._connect_writer, busy_timeout_ms=BUSY_TIMEOUT_MS, overwrite=_probe)
            await self._writer.start()
            await self.migrate()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            for pragma in self._pragmas():
                await self._reader.execute(pragma)
            await self._reader.execute("PRAGMA query_only = ON")
            self._lookup = self._connect_lookup()
            rows = await self._read("SELECT provider FROM provider_state WHERE degraded = 1")
            self.degraded = {row[0] for row in rows}
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()  # a connection's thread would keep the process alive
            raise

    def _pragmas(self) -> list[str]:
        return [
            f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
            f"PRAGMA synchronous = {self._synchronous}",
            "PRAGMA foreign_keys = ON",
            f"PRAGMA cache_size = -{CACHE_KIB}",
        ]

    def _connect_writer(self) -> sqlite3.Connection:
        """The write connection (used by the writer's thread and the event loop in turn, never at once)."""
        db = sqlite3.connect(self.path, isolation_level=None, cached_statements=256, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            for pragma in self._pragmas():
                db.execute(pragma)
            db.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            db.close()
            raise
        return db

    def _connect_lookup(self) -> sqlite3.Connection:
        """The connection for point reads made in the event loop itself (see `_lookup_one`)."""
        db = sqlite3.connect(self.path, isolation_level=None, cached_statements=64, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            for pragma in self._pragmas():
                db.execute(pragma)
            db.execute("PRAGMA busy_timeout = 0")  # never wait in the loop: see _lookup_one
            db.execute("PRAGMA query_only = ON")
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        if self._lookup is not None:
            with contextlib.suppress(sqlite3.Error):
                self._lookup.close()
            self._lookup = None
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._reader.close()
        if self._writer is not None:
            await self._writer.stop()
        self._reader = self._writer = None

    @property
    def write_stats(self) -> WriterStats:
        """How many commits, and how many writes they held (group commit at work)."""
        return self._writer.stats if self._writer is not None else WriterStats()

    def add_outbox_listener(self, wake: Callable[[], None]) -> None:
        """`wake()` is called after every commit that queued notifications."""
        self._outbox_listeners.append(wake)

    def add_listener(self, listener: Listener) -> None:
        """`listener(job_ids)` is called after every commit that changed those jobs."""
        self._listeners.append(listener)

    async def migrate(self) -> int:
        """Apply the migrations this database lacks, in one transaction; return the schema version."""
        return await self._writer_or_fail().alone(self._migrate)

    def _migrate(self, db: sqlite3.Connection) -> int:
        known = migrations()
        latest = known[-1][0]
        db.execute("BEGIN IMMEDIATE")
        try:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            if current > latest:
                raise SchemaTooNew(
                    f"database {self.path} has schema version {current}, newer than this jobhook "
                    f"knows ({latest}); upgrade jobhook"
                )
            for version, sql in known:
                if version > current:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return latest

    async def schema_version(self) -> int:
        rows = await self._read("PRAGMA user_version")
        return int(rows[0][0])

    # -- plumbing ----------------------------------------------------------------------------------

    def _writer_or_fail(self) -> Writer:
        if self._writer is None:
            raise StorageError("the database is not open")
        return self._writer

    async def _write(self, work: Callable[[_Tx], T]) -> T:
        """Run `work` in a write transaction (in the writer's thread, grouped with whatever else is
        queued); return its value once committed. A sqlite3 error is a StorageError."""

        def run(db: sqlite3.Connection) -> tuple[_Tx, T]:
            tx = _Tx(db, self._clock(), mirror_images=self.mirror_images, policy=self.policy)
            return tx, work(tx)

        _, value = await self._writer_or_fail().transaction(run, after=self._committed)
        return value

    def _committed(self, done: tuple[_Tx, Any]) -> None:
        """After a commit, in the event loop: tell whoever listens what it changed."""
        tx = done[0]
        for provider, degraded in tx.health.items():
            (self.degraded.add if degraded else self.degraded.discard)(provider)
        if tx.outbox_changed:
            for wake in self._outbox_listeners:
                wake()
        if tx.changed:
            changed = frozenset(tx.changed)
            for listener in self._listeners:
                listener(changed)

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StorageError("the database is not open")
        try:
            rows = await self._reader.execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StorageError(f"read failed: {exc}") from exc
        return list(rows)

    async def _lookup_one(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        """A read by primary key, made in the event loop: a few µs from the page cache, where a hop to
        the reader's thread and back costs more than the read (measured: bench/, the callbacks phase).

        A WAL reader never waits for the writer; should it have to wait all the same (a WAL recovery,
        another process's exclusive lock), it does so in the reader's thread, not in the loop.
        """
        if self._lookup is None:
            raise StorageError("the database is not open")
        try:
            return self._lookup.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StorageError(f"read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"read failed: {exc}") from exc
        return await self._read(sql, params)

    # -- secrets and health ------------------------------------------------------------------------

    async def secret(self, generate: Callable[[], str]) -> str:
        """The signing key kept in the database, made once on first use."""

        def write(tx: _Tx) -> str:
            row = tx.one("SELECT value FROM meta WHERE key = 'secret'")
            if row is not None:
                return str(row["value"])
            value = generate()
            tx.execute("INSERT INTO meta (key, value) VALUES ('secret', ?)", (value,))
            return value

        return await self._write(write)

    async def write_probe(self) -> None:
        """A real write (readiness: the disk takes writes, the lock can be had)."""

        def write(tx: _Tx) -> None:
            _probe(tx.db)

        return await self._write(write)

    # -- jobs --------------------------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a job, or return the one with the same idempotency key (created = False)."""

        def write(tx: _Tx) -> tuple[Job, bool]:
            if new.idempotency_key is not None:
                row = tx.one("SELECT * FROM jobs WHERE idempotency_key = ?", (new.idempotency_key,))
                if row is not None:
                    return _job(row), False
            sending = new.submit_lease_until is not None
            tx.execute(
                "INSERT INTO jobs (id, provider, status, request, metadata, callback_url_registered, "
                "submitted_by_backend, submit_state, submit_attempts, idempotency_key, request_hash, "
                "created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.provider,
                    _dumps(dict(new.request)),
                    _dumps(dict(new.metadata)) if new.metadata is not None else None,
                    int(new.callback_url_registered),
                    int(new.submitted_by_backend),
                    "sending" if sending else None,
                    1 if sending else 0,
                    new.idempotency_key,
                    new.request_hash,
                    tx.now,
                    tx.now,
                ),
            )
            tx.schedule(new.id, DEADLINE, INTERNAL, new.deadline_at, 0)
            if new.submit_lease_until is not None:
                tx.schedule(new.id, "submit", new.provider, new.submit_lease_until, 0)
            elif new.submit_at is not None:
                tx.schedule(new.id, "submit", new.provider, new.submit_at, 0)
            tx.event(
                new.id,
                "created",
                None,
                {"provider": new.provider, "submitted_by": "backend" if new.submitted_by_backend else "jobhook"},
            )
            return tx.job(new.id), True

        return await self._write(write)

    async def begin_submit(self, job_id: str, lease_until: float) -> Job | None:
        """Mark a queued job's next attempt as in flight; None if it is no longer to be sent."""

        def write(tx: _Tx) -> Job | None:
            job = tx.job(job_id)
            if job.status is not Status.QUEUED or job.submit_state == "sending" or job.submitted_by_backend:
                return None
            tx.execute(
                "UPDATE jobs SET submit_state = 'sending', submit_attempts = submit_attempts + 1, "
                "updated_at = ? WHERE id = ?",
                (tx.now, job_id),
            )
            tx.schedule(job_id, "submit", job.provider, lease_until, 0)
            tx.changed.add(job_id)
            return tx.job(job_id)

        return await self._write(write)

    async def record_submit(self, job_id: str, result: SubmitResult) -> Job:
        """Write the outcome of a submission attempt (SPEC §3)."""

        def write(tx: _Tx) -> Job:
            job = tx.job(job_id)
            tx.event(job_id, "submit", str(result.kind), result.detail)
            tx.credits(job.provider, result.credits_remaining, result.credits_exhausted)
            if job.status is not Status.QUEUED:
                # Decided already (a deadline, or a callback that bound it first): keep the record only.
                return job
            if result.kind is SubmitKind.ACCEPTED:
                tx.unschedule(job_id, "submit")
                fields: dict[str, Any] = {"status": "submitted", "submit_state": "done", "submitted_at": tx.now}
                if result.task_id is not None:
                    fields["provider_task_id"] = result.task_id
                try:
                    tx.update(job_id, **fields)
                except sqlite3.IntegrityError:
                    raise TaskIdConflict(result.task_id) from None
                tx.event(job_id, "status", "submitted", {"from": "queued", "by": "submit"})
                if result.media:
                    tx.update(job_id, media=_dumps([media.to_json() for media in result.media]))
                job = tx.job(job_id)
                if result.observation is not None:
                    tx.apply(job, result.observation, Source.SUBMIT, result.cost_usd)
                    job = tx.job(job_id)
                if not job.finished and result.first_poll_at is not None and job.provider_task_id:
                    tx.schedule(job_id, "poll", job.provider, result.first_poll_at, 0)
            elif result.kind in (SubmitKind.REJECTED, SubmitKind.FAILED):
                error = result.error or JobError("provider_rejected", "the provider refused the job")
                tx.update(
                    job_id,
                    status="failed",
                    submit_state="done",
                    error=_dumps(error.to_json()),
                    finished_at=tx.now,
                    resolved_by="submit",
                )
                tx.event(job_id, "status", "failed", {"from": "queued", "by": "submit"})
                tx.unschedule(job_id)
                tx.notify("job.failed", job=tx.job(job_id))
            elif result.kind is SubmitKind.RETRY:
                tx.update(job_id, submit_state=None)
                retry_at = result.retry_at if result.retry_at is not None else tx.now
                tx.schedule(job_id, "submit", job.provider, retry_at, 0)
            else:  # UNCERTAIN: never sent again; a callback may still bind it, the deadline ends it.
                tx.update(job_id, status="submitted", submit_state="uncertain", submitted_at=tx.now)
                tx.event(job_id, "status", "submitted", {"from": "queued", "by": "submit", "uncertain": True})
                tx.unschedule(job_id, "submit")
            return tx.job(job_id)

        return await self._write(write)

    async def record_poll(
        self,
        job_id: str,
        observation: Observation | None,
        detail: Mapping[str, Any],
        *,
        outcome: str,
        next_poll: tuple[float, int] | None,
        cost_if_completed: float | None = None,
        confirming: bool = False,
    ) -> Applied:
        """Write one poll: what it saw (if anything), and when to poll next unless the job finished.

        `confirming`: the poll that checks a bare webhook's claim; what it confirms is the callback's.
        """

        def write(tx: _Tx) -> Applied:
            job = tx.job(job_id)
            decision = None
            if confirming:
                tx.unschedule(job_id, "confirm")
            if observation is not None:
                source = Source.CALLBACK if confirming else Source.POLL
                decision = tx.apply(job, observation, source, cost_if_completed, record=("poll", outcome, detail))
                job = tx.job(job_id)
            else:
                tx.event(job_id, "poll", outcome, detail)
            if job.status in FINAL:
                tx.unschedule(job_id)
            elif next_poll is not None:
                tx.schedule(job_id, "poll", job.provider, next_poll[0], next_poll[1])
            else:
                tx.unschedule(job_id, "poll")
            return Applied(job, decision)

        return await self._write(write)

    async def record_callback(
        self,
        job_id: str,
        event_key: str,
        observation: Observation,
        detail: Mapping[str, Any],
        *,
        bind_task_id: str | None,
        cost_if_completed: float | None,
        poll_if_bound: float | None = None,
    ) -> CallbackResult:
        """Write one genuine delivery: bind the task id if new, then apply it once per event key."""

        def write(tx: _Tx) -> CallbackResult:
            job = tx.job(job_id)
            if self._bind_from_callback(tx, job, bind_task_id):
                job = tx.job(job_id)
                if poll_if_bound is not None and not job.finished:
                    tx.schedule(job_id, "poll", job.provider, poll_if_bound, 0)
            if not tx.first_receipt(job_id, event_key, detail):
                return CallbackResult(ReceiptKind.DUPLICATE, job, None)
            tx.callback_came(job.provider)
            decision = tx.apply(
                job,
                observation,
                Source.CALLBACK,
                cost_if_completed,
                record=("callback", "accepted", {**detail, "event": event_key}),
            )
            return CallbackResult(ReceiptKind.ACCEPTED, tx.job(job_id), decision)

        return await self._write(write)

    async def record_claim(
        self, job_id: str, event_key: str, detail: Mapping[str, Any], *, bind_task_id: str | None
    ) -> ReceiptKind:
        """A bare webhook (no headers to check): keep its receipt and schedule the poll that confirms it.

        Nothing is applied from the claim itself; the confirming poll, due now, applies what it sees.
        """

        def write(tx: _Tx) -> ReceiptKind:
            job = tx.job(job_id)
            self._bind_from_callback(tx, job, bind_task_id)
            if not tx.first_receipt(job_id, event_key, detail):
                if not job.finished:
                    # An earlier copy's claim may have been refuted by its poll, and this one be true now:
                    # confirm again (one pending 'confirm' row per job, however many copies come).
                    tx.schedule(job_id, "confirm", job.provider, tx.now, 0)
                return ReceiptKind.DUPLICATE
            tx.callback_came(job.provider)
            tx.event(job_id, "callback", "accepted", {**detail, "event": event_key, "effect": "confirming"})
            tx.schedule(job_id, "confirm", job.provider, tx.now, 0)
            return ReceiptKind.ACCEPTED

        return await self._write(write)

    async def record_media(self, job_id: str, held: Mapping[int, MediaFile], detail: Mapping[str, Any]) -> Job:
        """Images jobhook now holds (index → file); the 'mirror' row is done."""

        def write(tx: _Tx) -> Job:
            job = tx.job(job_id)
            media: list[Any] = list(job.media) + [None] * max(0, job.image_count() - len(job.media))
            for index, file in held.items():
                media[index] = file.to_json()
            tx.update(job_id, media=_dumps(media))
            tx.unschedule(job_id, "mirror")
            tx.event(job_id, "mirror", "done", {**detail, "images": sorted(held)})
            return tx.job(job_id)

        return await self._write(write)

    async def reschedule(
        self, job_id: str, kind: str, lane: str, due_at: float, attempt: int, event: tuple[str, str, Mapping[str, Any]]
    ) -> None:
        """Try `kind` again at `due_at` (attempt number `attempt`), recording why."""

        def write(tx: _Tx) -> None:
            tx.job(job_id)
            tx.schedule(job_id, kind, lane, due_at, attempt)
            tx.event(job_id, *event)

        return await self._write(write)

    def _bind_from_callback(self, tx: _Tx, job: Job, task_id: str | None) -> bool:
        """A genuine callback names its task: bind the job to it if it has none yet (True if bound)."""
        if task_id is None or job.provider_task_id == task_id:
            return False
        if job.provider_task_id is not None:
            raise TaskIdConflict(task_id)
        self._bind(tx, job, task_id, by="callback")
        return True

    def _bind(self, tx: _Tx, job: Job, task_id: str, *, by: str) -> None:
        other = tx.one(
            "SELECT id FROM jobs WHERE provider = ? AND provider_task_id = ? AND id != ?",
            (job.provider, task_id, job.id),
        )
        if other is not None:
            raise TaskIdConflict(task_id)
        fields: dict[str, Any] = {"provider_task_id": task_id, "submit_state": "done"}
        if job.submitted_at is None:
            fields["submitted_at"] = tx.now
        if job.status is Status.QUEUED:
            fields["status"] = "submitted"
        tx.update(job.id, **fields)
        tx.event(job.id, "bound", None, {"provider_task_id": task_id, "by": by})
        if job.status is Status.QUEUED:
            tx.event(job.id, "status", "submitted", {"from": "queued", "by": by})

    async def bind_task_id(self, job_id: str, task_id: str, first_poll_at: float) -> Job:
        """`PATCH /v1/jobs/{id}`: the backend says which task it created. Idempotent for the same id."""

        def write(tx: _Tx) -> Job:
            job = tx.job(job_id)
            if job.provider_task_id == task_id:
                return job
            if job.provider_task_id is not None:
                raise TaskIdConflict(task_id)
            self._bind(tx, job, task_id, by="backend")
            job = tx.job(job_id)
            if not job.finished:
                tx.schedule(job_id, "poll", job.provider, first_poll_at, 0)
            return job

        return await self._write(write)

    async def expire(self, job_id: str) -> Job:
        """The job's deadline (JOBHOOK_JOB_TIMEOUT) has come: time it out, unless it is finished."""

        def write(tx: _Tx) -> Job:
            job = tx.job(job_id)
            tx.unschedule(job_id, DEADLINE)
            verdict = status_machine.on_deadline(job.status, has_task_id=job.provider_task_id is not None)
            if verdict is None:
                return job
            new_status, error = verdict
            tx.update(job_id, status=str(new_status), error=_dumps(error.to_json()), finished_at=tx.now)
            tx.event(job_id, "status", str(new_status), {"from": str(job.status), "by": "deadline"})
            if new_status in FINAL:
                tx.unschedule(job_id)
            expired = tx.job(job_id)
            tx.notify(f"job.{new_status}", job=expired)
            return expired

        return await self._write(write)

    async def note(self, job_id: str, type_: str, outcome: str | None, detail: Mapping[str, Any]) -> None:
        """Record an event that changes nothing else (a refused delivery, a stopped poll, …)."""

        def write(tx: _Tx) -> None:
            tx.event(job_id, type_, outcome, detail)

        return await self._write(write)

    async def unschedule(self, job_id: str, kind: str) -> None:

        def write(tx: _Tx) -> None:
            tx.unschedule(job_id, kind)

        return await self._write(write)

    async def log_refused(self, code: str, detail: Mapping[str, Any]) -> None:
        """A delivery refused before any job could be named: kept in a bounded log."""

        def write(tx: _Tx) -> None:
            tx.execute(
                "INSERT INTO refused_callbacks (at, code, detail) VALUES (?, ?, ?)",
                (tx.now, code, _dumps(dict(detail))),
            )
            tx.execute(
                "DELETE FROM refused_callbacks WHERE id <= (SELECT MAX(id) FROM refused_callbacks) - ?",
                (REFUSED_LOG_SIZE,),
            )

        return await self._write(write)

    async def refused_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._read("SELECT * FROM refused_callbacks ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": row["at"], "code": row["code"], "detail": _loads(row["detail"])} for row in rows]

    # -- due work ----------------------------------------------------------------------------------

    async def claim_due(self, provider: str, now: float, limit: int, lease_until: float) -> list[Due]:
        """Take up to `limit` due rows of `provider`, pushing their due time to `lease_until`."""
        if limit <= 0:
            return []

        def write(tx: _Tx) -> list[sqlite3.Row]:
            cursor = tx.execute(
                "UPDATE due SET due_at = ? WHERE (job_id, kind) IN ("
                " SELECT job_id, kind FROM due WHERE provider = ? AND due_at <= ? ORDER BY due_at LIMIT ?"
                ") RETURNING job_id, kind, provider, attempt",
                (lease_until, provider, now, limit),
            )
            return cursor.fetchall()

        rows = await self._write(write)
        return [Due(row["job_id"], row["kind"], row["provider"], lease_until, row["attempt"]) for row in rows]

    async def next_due_at(self, provider: str) -> float | None:
        rows = await self._read("SELECT MIN(due_at) FROM due WHERE provider = ?", (provider,))
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def due_for(self, job_id: str) -> list[Due]:
        rows = await self._read("SELECT * FROM due WHERE job_id = ? ORDER BY due_at", (job_id,))
        return [Due(row["job_id"], row["kind"], row["provider"], row["due_at"], row["attempt"]) for row in rows]

    # -- reads -------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._lookup_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def list_jobs(
        self, *, status: str | None, provider: str | None, before_id: str | None, limit: int
    ) -> list[Job]:
        """Newest first; `before_id` is the last id of the previous page (keyset pagination)."""
        clauses, params = [], []
        for column, value in (("status", status), ("provider", provider)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_job(row) for row in rows]

    async def events(self, job_id: str) -> list[Event]:
        rows = await self._read("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            Event(row["id"], row["job_id"], row["at"], row["type"], row["outcome"], _loads(row["detail"]))
            for row in rows
        ]

    async def usage_since(self, timestamp: float) -> dict[str, dict[str, Any]]:
        """Jobs created since `timestamp` per provider, and what they cost (ids are time-ordered)."""
        rows = await self._read(
            "SELECT provider, COUNT(*), COALESCE(SUM(cost_usd), 0) FROM jobs WHERE id >= ? GROUP BY provider",
            (job_id_floor(timestamp),),
        )
        return {row[0]: {"jobs": row[1], "cost_usd": round(row[2], 4)} for row in rows}

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (provider, status), kept by triggers in the same transactions as the jobs."""
        rows = await self._read("SELECT provider, status, n FROM job_counts")
        return {(row[0], row[1]): row[2] for row in rows}

    async def counts(self) -> dict[str, int]:
        rows = await self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {row[0]: row[1] for row in rows}


def _probe(db: sqlite3.Connection) -> None:
    """A write that changes nothing that matters (readiness, and burying a failed commit)."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (repr(time.time()),),
    )


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements; a trigger's body keeps its inner `;`s."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements, buffer = [], ""
    for piece in "\n".join(lines).split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    return statements
