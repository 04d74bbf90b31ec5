"""Operator maintenance while the service runs: `jobhook backup PATH` and `jobhook purge --older-than AGE`.

Both work on JOBHOOK_DATABASE beside a running `jobhook serve`. The backup reads one consistent
snapshot with SQLite's online backup API (writers go on: the database is in WAL mode). The purge
deletes in short write transactions, one batch each, so the service keeps answering between them.

The purge's SQL lives in the store (service/store/purge_queries.py); this module decides what to
remove, in what order, and reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service import ids
from service.config import Settings, load, parse_duration
from service.errors import StorageError
from service.media import MediaStore
from service.store.base import PURGEABLE, PurgedRows

if TYPE_CHECKING:
    from service.store.common import Store

# Pages copied per backup step: progress is reported after each (256 pages = 1 MiB at 4 KiB pages).
PAGES_PER_STEP = 256
# Finished jobs a purge deletes per write transaction.
PURGE_BATCH = 500


class MaintenanceError(StorageError):
    """A backup or purge cannot be done: the message says why, in one line."""


class _Interrupted(Exception):
    """The backup's caller went away (Ctrl-C, cancellation): stop copying."""


# -- ages ------------------------------------------------------------------------------------------


def parse_age(text: str) -> float:
    """Seconds from an age such as `30d`, `12h`, `90m`, `45s` or `3600` (seconds); more than zero."""
    raw = text.strip()
    if raw.startswith("-"):
        raise MaintenanceError(f"an age must be more than zero, got {text!r}")
    try:
        seconds = parse_duration(raw)
    except ValueError:
        raise MaintenanceError(f"expected an age such as 30d, 12h, 90m or 3600 (seconds), got {text!r}") from None
    if seconds <= 0:
        raise MaintenanceError(f"an age must be more than zero, got {text!r}")
    return seconds


# -- backup ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BackupReport:
    database: Path
    path: Path
    bytes: int
    pages: int
    schema_version: int
    seconds: float

    def summary(self) -> str:
        return (
            f"backed up {self.database} to {self.path}: {format_bytes(self.bytes)}, {self.pages:,} pages, "
            f"schema version {self.schema_version}, integrity ok ({self.seconds:.1f} s)"
        )


async def backup(
    database: Path,
    target: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    pages_per_step: int = PAGES_PER_STEP,
) -> BackupReport:
    """Copy `database` to `target`, consistently, while the service goes on reading and writing it.

    The copy is the database as it was when the backup began: one read transaction is held on the
    source across all steps (WAL mode: writers are not blocked; the WAL grows until it ends), so
    the backup never restarts however busy the service is. It is written to a temporary file next
    to `target` (mode 0600: the database holds the signing secret), switched to a self-contained
    rollback journal, checked with `PRAGMA integrity_check`, synced, and only then given the name
    `target`, so `target` never holds a half-written copy. Without `overwrite`, an existing
    `target` is refused. `progress(pages_copied, pages_total)` is called after each step of
    `pages_per_step` pages, from the worker thread that copies. Image files are not included.
    """
    if pages_per_step < 1:
        raise ValueError("pages_per_step must be at least 1")
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_backup, Path(database), Path(target), overwrite, progress, pages_per_step, stop)
    except asyncio.CancelledError:
        stop.set()  # the worker thread stops at its next step and removes its temporary file
        raise


def _backup(
    database: Path,
    target: Path,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
    pages_per_step: int,
    stop: threading.Event,
) -> BackupReport:
    started = time.monotonic()
    _check_backup_paths(database, target, overwrite)
    folder = target.resolve().parent
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MaintenanceError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
    os.close(handle)
    temporary = Path(name)
    try:
        _copy(database, temporary, progress, pages_per_step, stop)
        schema_version, pages = _verify_copy(temporary, target)
        _fsync(temporary)
        if stop.is_set():
            raise _Interrupted
        _publish(temporary, target, overwrite)
        _fsync(folder)
        size = target.stat().st_size
    except _Interrupted:
        _discard(temporary)
        raise MaintenanceError(f"backup to {target} interrupted; nothing was written") from None
    except sqlite3.Error as exc:
        _discard(temporary)
        raise MaintenanceError(f"backup of {database} failed: {exc}") from exc
    except OSError as exc:
        _discard(temporary)
        raise MaintenanceError(f"backup to {target} failed: {exc.strerror or exc}") from exc
    except BaseException:
        _discard(temporary)
        raise
    return BackupReport(database, target, size, pages, schema_version, time.monotonic() - started)


def _check_backup_paths(database: Path, target: Path, overwrite: bool) -> None:
    """Every refusal that can be known before copying, each in one line."""
    if not database.exists():
        raise MaintenanceError(f"database {database} does not exist")
    if not database.is_file():
        raise MaintenanceError(f"database {database} is not a file")
    source = database.resolve()
    resolved = target.resolve()
    companions = {source.name + suffix for suffix in ("-wal", "-shm", "-journal")}
    if (
        resolved == source
        or (resolved.parent == source.parent and resolved.name in companions)
        or (target.exists() and os.path.samefile(target, database))
    ):
        raise MaintenanceError(f"{target} is the database itself; give another path for the copy")
    if not resolved.parent.exists():
        raise MaintenanceError(f"directory {target.parent} does not exist; create it first")
    if not resolved.parent.is_dir():
        raise MaintenanceError(f"{target.parent} is not a directory")
    if target.is_dir():
        raise MaintenanceError(f"{target} is a directory; give the backup file's path, e.g. {target / 'jobhook.db'}")
    if target.exists() and not overwrite:
        raise MaintenanceError(f"{target} already exists; refusing to overwrite it (--force replaces it)")
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise MaintenanceError(f"cannot write in {target.parent}: permission denied")


def _copy(
    database: Path,
    temporary: Path,
    progress: Callable[[int, int], None] | None,
    pages_per_step: int,
    stop: threading.Event,
) -> None:
    # mode=rw: a database that vanished after the checks is an error, never a new empty file.
    source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=5)
    try:
        # The snapshot: a read transaction held across every step (backup_step reuses an open one).
        source.execute("BEGIN")
        try:
            jobs = source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise MaintenanceError(f"{database} is not a SQLite database ({exc})") from None
        if jobs is None:
            raise MaintenanceError(f"{database} is not a jobhook database (it has no jobs table)")

        def step(status: int, remaining: int, total: int) -> None:
            if stop.is_set():
                raise _Interrupted
            if progress is not None:
                progress(total - remaining, total)
            if stop.is_set():
                raise _Interrupted

        copy = sqlite3.connect(temporary, isolation_level=None)
        try:
            source.backup(copy, pages=pages_per_step, progress=step)
        finally:
            copy.close()
    finally:
        source.close()


def _verify_copy(temporary: Path, target: Path) -> tuple[int, int]:
    """Make the copy one self-contained file, check it; its schema version and page count."""
    copy = sqlite3.connect(temporary, isolation_level=None)
    try:
        copy.execute("PRAGMA journal_mode = DELETE").fetchall()
        problems = [str(row[0]) for row in copy.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise MaintenanceError(
                f"the copy failed PRAGMA integrity_check: {problems[0]}{more}; {target} was not written"
            )
        schema_version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
    finally:
        copy.close()
    return schema_version, pages


def _publish(temporary: Path, target: Path, overwrite: bool) -> None:
    """Give the finished copy its name: atomically, and without overwriting unless asked to."""
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)  # fails if `target` appeared meanwhile, where a rename would replace it
    except FileExistsError:
        raise MaintenanceError(f"{target} already exists; refusing to overwrite it (--force replaces it)") from None
    except OSError:  # a filesystem without hard links
        if target.exists():
            raise MaintenanceError(f"{target} already exists; refusing to overwrite it (--force replaces it)") from None
        os.replace(temporary, target)
        return
    with contextlib.suppress(OSError):  # the copy is in place; the second name is only clutter
        temporary.unlink()


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # directories cannot be opened everywhere
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _discard(temporary: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)


# -- purge -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PurgeReport:
    """What a purge removed (or, with `dry_run`, would remove)."""

    dry_run: bool
    cutoff: float  # jobs finished before this time (Unix seconds)
    jobs: Mapping[str, int]  # per status: completed, failed, timed_out
    events: int
    receipts: int  # callback receipts
    notifications: int  # the jobs' notifications, and provider notifications older than the cutoff
    deliveries: int  # outbox rows of those notifications
    refused_callbacks: int  # rows of the refused-callbacks log older than the cutoff
    media_bytes: int
    kept: int  # old finished jobs kept because work on them is still pending
    seconds: float

    @property
    def jobs_removed(self) -> int:
        return sum(self.jobs.values())

    def summary(self) -> list[str]:
        """The purge in a few lines, e.g. `removed 1,204 finished jobs (1,180 completed, 24 failed), …`."""
        verb = "would remove" if self.dry_run else "removed"
        before = dt.datetime.fromtimestamp(self.cutoff, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines = []
        if self.jobs_removed:
            statuses = ", ".join(
                f"{count:,} {status.replace('_', ' ')}" for status, count in self.jobs.items() if count
            )
            lines.append(
                f"{verb} {_plural(self.jobs_removed, 'finished job')} ({statuses}), "
                f"{_plural(self.events, 'event')}, {_plural(self.notifications, 'notification')}, "
                f"{format_bytes(self.media_bytes)} of images"
            )
        else:
            lines.append("no finished jobs to remove")
            if self.notifications:
                lines.append(f"{verb} {_plural(self.notifications, 'old provider notification')}")
        if self.refused_callbacks:
            lines.append(
                f"{'would trim' if self.dry_run else 'trimmed'} {_plural(self.refused_callbacks, 'refused callback')}"
            )
        if self.kept:
            lines.append(
                f"{'would keep' if self.dry_run else 'kept'} {_plural(self.kept, 'old finished job')} with work "
                "still pending (images being fetched, polls, or notifications not yet delivered): a later purge "
                "removes them"
            )
        lines.append(f"(jobs finished before {before}; {self.seconds:.1f} s)")
        if self.dry_run:
            lines.append("dry run: nothing was changed")
        return lines


async def purge(
    store: Store,
    media: MediaStore,
    *,
    older_than: float,
    now: float,
    dry_run: bool,
    batch: int = PURGE_BATCH,
    progress: Callable[[int], None] | None = None,
) -> PurgeReport:
    """Remove the jobs that finished more than `older_than` seconds before `now`, with all they own.

    A job goes when its status is completed, failed or timed_out and its `finished_at` (its
    `updated_at` if unset) is before the cutoff; with it go its events, callback receipts,
    notifications and their outbox rows, and its image files. Queued, submitted and processing
    jobs are never removed, however old. Nor is a job that still has due work (its images are
    being fetched, or a timed-out job is still polled) or a notification not yet delivered: the
    running service is busy with those, and a later purge takes them (`kept` counts them).

    timed_out is purged like completed and failed, by the same age. A late callback or poll can
    still complete a timed-out job, but only while the provider still knows the task: jobhook stops
    polling it at twice JOBHOOK_JOB_TIMEOUT (and the purge keeps it while it is polled), and
    providers stop retrying callbacks within hours. A timed-out job untouched since the cutoff
    (30 days, typically) is as finished as a failed one; keeping it for ever would make the purge
    leak. A callback that still comes for it is refused as for an unknown job, into the bounded
    refused-callbacks log.

    Also removed: provider notifications (no job) created before the cutoff whose deliveries are
    done, and refused-callbacks log rows older than the cutoff.

    Each batch of `batch` jobs is one write transaction; its files are deleted after its commit
    (a crash in between leaves files of jobs that are gone, never a job without its files).
    With `dry_run`, nothing changes and the report holds what would be removed.
    `progress(jobs_so_far)` is called after each batch.
    """
    if not (math.isfinite(older_than) and older_than > 0):
        raise MaintenanceError(f"an age must be more than zero, got {older_than!r} s")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    started = time.monotonic()
    cutoff = now - older_than
    jobs = dict.fromkeys(PURGEABLE, 0)
    rows = PurgedRows()
    media_bytes = 0
    after = ""
    while True:
        if dry_run:
            chosen = await store.purgeable(cutoff, after, batch)
            if not chosen:
                break
            job_ids = [job_id for job_id, _ in chosen]
            rows.add(await store.count_job_rows(job_ids))
            media_bytes += await asyncio.to_thread(_media_bytes, media, job_ids)
        else:
            chosen, removed = await store.delete_purgeable(cutoff, after, batch)
            if not chosen:
                break
            rows.add(removed)
            job_ids = [job_id for job_id, _ in chosen]
            media_bytes += await _delete_media(media, job_ids)
        after = job_ids[-1]
        for _, status in chosen:
            jobs[status] += 1
        if progress is not None:
            progress(sum(jobs.values()))
        await asyncio.sleep(0)  # let this process's other writers in between batches
    rest, refused = await (store.count_old_rest(cutoff) if dry_run else store.delete_old_rest(cutoff))
    rows.add(rest)
    kept = await store.count_kept(cutoff)
    return PurgeReport(
        dry_run=dry_run,
        cutoff=cutoff,
        jobs=jobs,
        events=rows.events,
        receipts=rows.receipts,
        notifications=rows.notifications,
        deliveries=rows.deliveries,
        refused_callbacks=refused,
        media_bytes=media_bytes,
        kept=kept,
        seconds=time.monotonic() - started,
    )


def _media_bytes(media: MediaStore, job_ids: Sequence[str]) -> int:
    """The bytes of these jobs' image files (what deleting them would free)."""
    total = 0
    for job_id in job_ids:
        folder = media.root / job_id
        if not ids.is_job_id(job_id) or not folder.is_dir():
            continue
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total


async def _delete_media(media: MediaStore, job_ids: Sequence[str]) -> int:
    freed = 0
    for job_id in job_ids:
        if not ids.is_job_id(job_id):
            continue  # MediaStore only ever made folders for valid ids
        with contextlib.suppress(OSError):
            freed += await media.delete_job(job_id)
    return freed


# -- the commands ----------------------------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `backup` and `purge` on jobhook's subcommands."""
    backup_parser = commands.add_parser(
        "backup",
        help="copy the database safely while the service runs",
        description="Copy JOBHOOK_DATABASE to PATH with SQLite's online backup API. Safe while `jobhook serve` "
        "runs: the service goes on answering and writing, and the copy is the database as it was when the "
        "backup began. The copy is written next to PATH under a temporary name, checked with PRAGMA "
        "integrity_check, then renamed into place: PATH never holds a half-written file. It is readable by "
        "you alone (it holds the signing secret). Image files under JOBHOOK_MEDIA_DIR are not included: "
        "copy that directory with your usual tools.",
    )
    backup_parser.add_argument("path", metavar="PATH", help="the backup file to write, e.g. backups/jobhook.db")
    backup_parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    backup_parser.set_defaults(handler=cmd_backup)

    purge_parser = commands.add_parser(
        "purge",
        help="remove finished jobs older than an age",
        description="Remove the jobs of JOBHOOK_DATABASE that finished (completed, failed or timed_out) more "
        "than AGE ago, with their events, callback receipts and notifications, and their images under "
        "JOBHOOK_MEDIA_DIR; trim the refused-callbacks log likewise. Jobs still queued, submitted or "
        "processing are never removed, however old; nor are jobs whose images are still being fetched, whose "
        "polling goes on, or whose notifications are not yet delivered. Safe while `jobhook serve` runs: it "
        "deletes in small batches. The database file keeps its size; SQLite reuses the freed pages.",
    )
    purge_parser.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="how long ago a job must have finished: 30d, 12h, 90m, or seconds (3600)",
    )
    purge_parser.add_argument("--dry-run", action="store_true", help="count what would be removed; change nothing")
    purge_parser.set_defaults(handler=cmd_purge)


def cmd_backup(args: argparse.Namespace) -> int:
    settings = load(getattr(args, "env_file", None))
    if settings.database_url is not None:
        # PostgreSQL has the tool for this, and it needs no help from jobhook.
        raise MaintenanceError(
            "JOBHOOK_DATABASE is a PostgreSQL database: back it up with pg_dump, e.g. "
            f"pg_dump --format=custom --file={args.path} '<the JOBHOOK_DATABASE URL>' "
            "(and restore with pg_restore)"
        )
    require_database(settings.database)
    target = Path(args.path).expanduser()
    report = asyncio.run(backup(settings.database, target, overwrite=args.force, progress=_BackupProgress()))
    print(report.summary())
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    try:
        older_than = parse_age(args.older_than)
    except MaintenanceError as exc:
        raise MaintenanceError(f"--older-than: {exc}") from None
    settings = load(getattr(args, "env_file", None))
    if settings.database_url is None:
        require_database(settings.database)
    report = asyncio.run(_run_purge(settings, older_than, dry_run=args.dry_run))
    for line in report.summary():
        print(line)
    return 0


def require_database(database: Path) -> None:
    """Refuse a SQLite database that is not there: opening it would create an empty one, and a command
    run in the wrong directory (or with a misspelt path) would report success on it."""
    if not database.is_file():
        raise MaintenanceError(f"no database at {database} (set JOBHOOK_DATABASE, or --env-file)")


async def _run_purge(settings: Settings, older_than: float, *, dry_run: bool) -> PurgeReport:
    from service.store import engines

    # Opening the store would migrate an older schema: a change a dry run must not make, and a purge
    # written for this schema should not run on another. `jobhook migrate` (or serve) comes first.
    store = engines.make_store(settings)
    if settings.database_url is None:
        from service.store.sqlite import migrations

        _check_version(settings, _schema_version(settings.database), migrations()[-1][0])
        await store.open()
    else:
        from service.store.postgres import PostgresStore
        from service.store.postgres import migrations as pg_migrations

        assert isinstance(store, PostgresStore)
        await store.open(migrate=False)
        try:
            _check_version(settings, await store.schema_version(), pg_migrations()[-1][0])
        except BaseException:
            await store.close()
            raise
    try:
        return await purge(
            store,
            MediaStore(settings.media_dir),
            older_than=older_than,
            now=time.time(),
            dry_run=dry_run,
            progress=_PurgeProgress(dry_run),
        )
    finally:
        await store.close()


def _check_version(settings: Settings, current: int, latest: int) -> None:
    from service.store.engines import database_label

    where = database_label(settings)
    if current < latest:
        raise MaintenanceError(
            f"database {where} has schema version {current}, this jobhook expects {latest}: run `jobhook migrate` first"
        )
    if current > latest:
        raise MaintenanceError(
            f"database {where} has schema version {current}, newer than this jobhook knows ({latest}); upgrade jobhook"
        )


def _schema_version(database: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise MaintenanceError(f"cannot read database {database}: {exc}") from None


class _BackupProgress:
    """Prints `backup: 40% (1,234 of 3,085 pages)` to stderr at each tenth (and at the end)."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 if total == 0 else done * 10 // total
        if tenth > self.shown:
            self.shown = tenth
            percent = 100 if total == 0 else done * 100 // total
            print(f"backup: {percent}% ({done:,} of {total:,} pages)", file=sys.stderr, flush=True)


class _PurgeProgress:
    """Prints how far a long purge has got to stderr, at most once a second."""

    def __init__(self, dry_run: bool) -> None:
        self.verb = "counted" if dry_run else "removed"
        self.last = time.monotonic()

    def __call__(self, jobs: int) -> None:
        if time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            print(f"purge: {jobs:,} jobs {self.verb} so far…", file=sys.stderr, flush=True)


def format_bytes(count: int) -> str:
    """`512 B`, `3.4 MiB`, …"""
    size, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{count:,} B" if unit == "B" else f"{size:,.1f} {unit}"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")
