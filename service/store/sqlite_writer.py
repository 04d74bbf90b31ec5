"""jobhook's one SQLite writer, and its group commit.

SQLite lets one connection write at a time, so jobhook has exactly one write connection. A write is a
plain function of that connection, run whole at once. Writes that arrive while a COMMIT and its fsync
are under way go into the next transaction together, each in its own SAVEPOINT: one that raises is
rolled back alone, the others commit. Every caller is answered only after the COMMIT that made its
write durable, so a 2xx still means "on disk", while a burst of N callbacks costs one fsync, not N.

Where each part runs, and why:
- What may wait runs in a thread of its own: COMMIT (fsync, WAL checkpoints), and BEGIN IMMEDIATE
  when another process holds the write lock (a `jobhook purge` batch): the loop first tries it with
  no busy wait at all, and hands it to the thread, with the busy timeout, only if the lock is taken.
- The writes themselves run in the event loop, between the two, one batch at a time. They hold the
  write lock already, so they never wait on it; what they cost is CPU (~0.1 ms for a callback), which
  the loop would spend anyway handing them to a thread and back. Running them in a thread instead
  was measured slower (bench/, README): the sqlite3 module releases the GIL around every statement,
  and each of a write's ten statements then waited for a busy event loop to give the GIL back; and
  every hop back to a loop under load waits for its turn behind the requests it is serving.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from service.errors import StorageError
from service.store.base import WriterStats

log = logging.getLogger("jobhook.store")

T = TypeVar("T")
MAX_BATCH = 256  # writes per transaction: bounds how long the last of a burst waits for the first


@dataclasses.dataclass(eq=False)
class _Work:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    alone: bool  # in the thread, outside any transaction: migrations, maintenance
    after: Callable[[Any], None] | None = None  # after the commit, before the caller resumes


@dataclasses.dataclass
class _Outcome:
    work: _Work
    value: Any = None
    error: BaseException | None = None


class Writer:
    """The write connection. `start()`, then `transaction(fn)` and `alone(fn)`, then `stop()`; all from
    one event loop."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        busy_timeout_ms: int,
        overwrite: Callable[[sqlite3.Connection], object],
        name: str = "jobhook-sqlite-writer",
    ) -> None:
        """`connect()` makes the connection (called in the writer's thread; it must allow use from the
        loop's thread too: `check_same_thread=False`; only one of them ever uses it at a time).
        `busy_timeout_ms`: how long the thread waits for a lock another process holds.
        `overwrite(db)`: a small harmless write, made after a COMMIT failed (see `_bury`)."""
        self._connect = connect
        self._overwrite = overwrite
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None
        self._pending: collections.deque[_Work] = collections.deque()
        self._pump: asyncio.Task[None] | None = None
        self._stopped = False
        self.stats = WriterStats()

    async def start(self) -> None:
        """Open the connection (its error, if any, is raised here)."""
        try:
            self._db = await self._in_thread(self._open)
        except BaseException:
            await self.stop()
            raise

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, after: Callable[[T], None] | None = None
    ) -> T:
        """Run `fn` in a write transaction; return what it returned once that transaction is committed.

        `after(value)` runs right after the commit, even if the caller has been cancelled meanwhile (a
        committed change is announced whatever happens to who asked for it).
        """
        return await self._submit(_Work(fn, self._future(), alone=False, after=after))

    async def alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the writer's thread, outside any transaction (it manages its own if it needs one),
        in turn with the transactions."""
        return await self._submit(_Work(fn, self._future(), alone=True))

    async def stop(self) -> None:
        """Finish what is queued, then close the connection."""
        if self._stopped:
            return
        self._stopped = True
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._pump)
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                await self._in_thread(db.close)
        self._thread.shutdown(wait=False)

    # -- internals ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("PRAGMA busy_timeout = 0")  # the loop never waits for a lock; see _waiting
        return db

    def _waiting(self, db: sqlite3.Connection, fn: Callable[[], T]) -> T:
        """In the thread: `fn()` with the busy timeout, so that it waits out another process's lock."""
        db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        try:
            return fn()
        finally:
            db.execute("PRAGMA busy_timeout = 0")

    def _commit_now(self, db: sqlite3.Connection) -> None:
        """In the thread: COMMIT, in one statement where it can.

        Each statement the thread makes takes the GIL back from a busy event loop when it ends, and
        that can take up to the interpreter's switch interval (5 ms): wrapped in the two PRAGMAs that
        set and reset the busy timeout, a COMMIT took ~15 ms under load, most of it waiting for the GIL
        (measured: bench/, jobhook_store_commit_seconds). A COMMIT in WAL mode holds the write lock
        already and hardly ever meets another's lock; when it does, it is retried with the timeout.
        """
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or not db.in_transaction:
                raise
            self._waiting(db, lambda: db.execute("COMMIT"))

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _submit(self, work: _Work) -> asyncio.Future[Any]:
        if self._stopped or self._db is None:
            work.future.set_exception(StorageError("the database is not open"))
            return work.future
        self._pending.append(work)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run(), name="jobhook-sqlite-writer")
        return work.future

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _run(self) -> None:
        """Take what is pending, a batch at a time, until nothing is."""
        try:
            await self._drain()
        except BaseException as exc:  # a bug or a cancellation: no caller may be left waiting
            log.exception("the SQLite writer stopped")
            failed = _failed(list(self._pending), StorageError(f"the database writer stopped: {exc!r}"))
            self._pending.clear()
            _answer(failed)
            raise

    async def _drain(self) -> None:
        while self._pending:
            if self._pending[0].alone:
                work = self._pending.popleft()
                _answer([await self._run_alone(work)])
                continue
            batch: list[_Work] = []
            while self._pending and not self._pending[0].alone and len(batch) < MAX_BATCH:
                batch.append(self._pending.popleft())
            _answer(await self._commit(batch))

    def _bury(self, db: sqlite3.Connection) -> None:
        """After a failed COMMIT: roll back, then commit one small write over it.

        A COMMIT whose fsync failed has already put its frames, commit mark included, in the WAL file.
        This process no longer sees them, but a restart would replay them: the writes its callers were
        told had failed (503) would come back. The next commit is written where those frames start and
        breaks their checksum chain, so recovery stops before them; that is this write's whole purpose,
        and it is made even if its own sync fails too.
        """
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            self._waiting(db, lambda: db.execute("BEGIN IMMEDIATE"))
            self._overwrite(db)
            db.execute("COMMIT")
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")

    async def _run_alone(self, work: _Work) -> _Outcome:
        db = self._db
        try:
            if db is None:
                raise StorageError("the database is not open")
            return _Outcome(work, value=await self._in_thread(lambda: self._waiting(db, lambda: work.run(db))))
        except Exception as exc:
            return _Outcome(work, error=exc)

    async def _commit(self, batch: list[_Work]) -> list[_Outcome]:
        db = self._db
        if db is None:
            return _failed(batch, StorageError("the database is not open"))
        try:
            try:
                db.execute("BEGIN IMMEDIATE")  # at once, unless another process holds the lock
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
                await self._in_thread(lambda: self._waiting(db, lambda: db.execute("BEGIN IMMEDIATE")))
        except sqlite3.Error as exc:
            return _failed(batch, StorageError(f"cannot start a write transaction: {exc}"))
        started = time.perf_counter()
        outcomes = []
        for work in batch:
            outcome = _run_one(db, work)
            if outcome is None:  # a failure took the whole transaction with it: every write in it is lost
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                return _failed(batch, StorageError("write failed: the transaction was rolled back"))
            outcomes.append(outcome)
        written = time.perf_counter()
        try:
            await self._in_thread(lambda: self._commit_now(db))
        except sqlite3.Error as exc:
            await self._in_thread(lambda: self._bury(db))
            return _failed(batch, StorageError(f"commit failed: {exc}"))
        self.stats.write_seconds += written - started
        self.stats.commit_seconds += time.perf_counter() - written
        self.stats.commits += 1
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        return outcomes


def _run_one(db: sqlite3.Connection, work: _Work) -> _Outcome | None:
    """One write in its savepoint; None if a failure took the whole transaction with it."""
    db.execute("SAVEPOINT write")
    try:
        value = work.run(db)
    except Exception as exc:
        if not db.in_transaction:
            return None
        try:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
        except sqlite3.Error:
            return None
        if isinstance(exc, sqlite3.Error):
            error = StorageError(f"write failed: {exc}")
            error.__cause__ = exc
            return _Outcome(work, error=error)
        return _Outcome(work, error=exc)
    db.execute("RELEASE write")
    return _Outcome(work, value=value)


def _failed(batch: list[_Work], error: StorageError) -> list[_Outcome]:
    return [_Outcome(work, error=error) for work in batch]


def _answer(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        work = outcome.work
        if outcome.error is None and work.after is not None:
            try:
                work.after(outcome.value)
            except Exception:
                log.exception("a post-commit hook failed")
        if work.future.done():  # the caller was cancelled; the write stands
            continue
        if outcome.error is not None:
            work.future.set_exception(outcome.error)
        else:
            work.future.set_result(outcome.value)
