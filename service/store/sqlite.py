"""The SQLite store: WAL mode, one writer with group commit, and reads on connections of their own.

Every operation that changes state is one transaction (`BEGIN IMMEDIATE`), and returns only after
COMMIT; with `synchronous=FULL` a committed change survives a power cut, which is what lets a route
answer 2xx after it. The operations themselves are engine-neutral (service.store.common).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from service.errors import SchemaTooNew, StorageError
from service.store.base import OutboxPolicy
from service.store.common import Store
from service.store.sqlite_writer import Writer, WriterStats
from service.store.tx import Dialect, Row, Tx, probe

__all__ = ["SQLiteStore", "migrations"]

BUSY_TIMEOUT_MS = 5000
# Page cache per connection (SQLite's default is 2 MiB): a callback touches ~10 B-tree pages of jobs
# spread over the whole history; those a cache holds are not read again from the OS.
CACHE_KIB = 64 * 1024
SQLITE = Dialect("sqlite", integrity_errors=(sqlite3.IntegrityError,))
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


class SQLiteStore(Store):
    """jobhook's state in one SQLite file."""

    dialect = SQLITE

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        mirror_images: bool = False,
        policy: OutboxPolicy | None = None,
    ) -> None:
        super().__init__(clock=clock, mirror_images=mirror_images, policy=policy)
        self.path = path
        self._synchronous = synchronous
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lookup: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, set the pragmas, and bring the schema up to date."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = Writer(self._connect_writer, busy_timeout_ms=BUSY_TIMEOUT_MS, overwrite=probe)
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

    async def _write(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in a write transaction (grouped with whatever else is queued: group commit);
        return its value once committed. A sqlite3 error is a StorageError."""

        def run(db: sqlite3.Connection) -> tuple[Tx, T]:
            tx = self._tx(db)
            return tx, work(tx)

        _, value = await self._writer_or_fail().transaction(run, after=lambda done: self._committed(done[0]))
        return value

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        if self._reader is None:
            raise StorageError("the database is not open")
        try:
            rows = await self._reader.execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StorageError(f"read failed: {exc}") from exc
        return list(rows)

    async def _lookup_one(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """A read by primary key, made in the event loop: a few µs from the page cache, where a hop to
        the reader's thread and back costs more than the read (measured: bench/, the callbacks phase).

        A WAL reader never waits for the writer; should it have to wait all the same (a WAL recovery,
        another process's exclusive lock), it does so in the reader's thread, not in the loop.
        """
        if self._lookup is None:
            raise StorageError("the database is not open")
        try:
            rows: list[Row] = self._lookup.execute(sql, params).fetchall()
            return rows
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StorageError(f"read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"read failed: {exc}") from exc
        return await self._read(sql, params)


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
