"""The one thread that writes to SQLite, and its group commit.

SQLite lets one connection write at a time, so jobhook has exactly one writer: a thread that owns the
write connection. A write is a plain function, run whole in that thread (one hop from the event loop,
however many statements it makes). Writes that queue while a COMMIT and its fsync are under way go
into the next transaction together, each in its own SAVEPOINT: one that raises is rolled back alone,
the others commit. Every caller is answered only after the COMMIT that made its write durable, so a
2xx still means "on disk", while a burst of N callbacks costs one fsync instead of N.

The connection is used by this thread alone; nothing else may touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from service.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 256  # writes per transaction: bounds how long the last of a burst waits for the first


@dataclasses.dataclass(eq=False)
class _Work:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    alone: bool  # outside any transaction: opening, migrations, closing
    after: Callable[[Any], None] | None = None  # in the loop, after the commit, before the caller resumes


@dataclasses.dataclass
class _Outcome:
    work: _Work
    value: Any = None
    error: BaseException | None = None


@dataclasses.dataclass
class WriterStats:
    """What group commit did (for the bench and /metrics): transactions and the writes they held."""

    commits: int = 0
    writes: int = 0
    largest: int = 0


class Writer:
    """The write connection's thread. `start()`, then `transaction(fn)` and `alone(fn)`, then `stop()`."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str = "jobhook-sqlite-writer") -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._db: sqlite3.Connection | None = None
        self._stopped = False
        self.stats = WriterStats()

    # -- the loop's side ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread and open the connection in it (its error, if any, is raised here)."""
        self._thread.start()
        try:
            await self.alone(self._open)
        except BaseException:
            await self.stop()
            raise

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, after: Callable[[T], None] | None = None
    ) -> T:
        """Run `fn` in a write transaction; return what it returned once that transaction is committed.

        `after(value)` runs in the event loop right after the commit, even if the caller has been
        cancelled meanwhile (a committed change is announced whatever happens to who asked for it).
        """
        return await self._submit(fn, alone=False, after=after)

    async def alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the thread outside any transaction (it manages its own, if it needs one)."""
        return await self._submit(fn, alone=True, after=None)

    async def stop(self) -> None:
        """Finish what is queued, close the connection, end the thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)

    def _submit(self, fn: Callable[[sqlite3.Connection], Any], *, alone: bool, after: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._stopped or not self._thread.is_alive():
            future.set_exception(StorageError("the database is not open"))
        else:
            self._queue.put(_Work(fn, future, loop, alone, after))
        return future

    # -- the thread's side -------------------------------------------------------------------------

    def _open(self, _: Any) -> None:
        self._db = self._connect()

    def _main(self) -> None:
        pending: list[_Work | None] = []  # taken from the queue, not yet run (a lone work or the stop)
        try:
            while True:
                work = pending.pop() if pending else self._queue.get()
                if work is None:
                    break
                if work.alone:
                    self._settle([self._run_alone(work)])
                    continue
                batch = [work]
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None or more.alone:
                        pending.append(more)
                        break
                    batch.append(more)
                self._settle(self._commit(batch))
            self._drain(StorageError("the database was closed"))
        except BaseException as exc:  # the thread must never leave a caller waiting
            log.exception("the SQLite writer stopped")
            self._drain(StorageError(f"the database writer stopped: {exc}"))
        finally:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def _drain(self, error: StorageError) -> None:
        self._stopped = True
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                return
            if work is not None:
                self._settle([_Outcome(work, error=error)])

    def _run_alone(self, work: _Work) -> _Outcome:
        try:
            return _Outcome(work, value=work.run(self._db))  # type: ignore[arg-type]
        except Exception as exc:
            return _Outcome(work, error=exc)

    def _commit(self, batch: list[_Work]) -> list[_Outcome]:
        db = self._db
        if db is None:
            return [_Outcome(work, error=StorageError("the database is not open")) for work in batch]
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = StorageError(f"cannot start a write transaction: {exc}")
            return [_Outcome(work, error=error) for work in batch]
        outcomes = []
        for work in batch:
            outcome = self._run_one(db, work)
            if outcome is None:  # SQLite rolled the whole transaction back: every write in it is lost
                error = StorageError("write failed: the transaction was rolled back")
                return [_Outcome(work, error=error) for work in batch]
            outcomes.append(outcome)
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            error = StorageError(f"commit failed: {exc}")
            return [_Outcome(work, error=error) for work in batch]
        self.stats.commits += 1
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        return outcomes

    @staticmethod
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
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                return None
            if isinstance(exc, sqlite3.Error):
                return _Outcome(work, error=_storage_error(exc))
            return _Outcome(work, error=exc)
        db.execute("RELEASE write")
        return _Outcome(work, value=value)

    @staticmethod
    def _settle(outcomes: list[_Outcome]) -> None:
        """Answer each caller in its own event loop (one wake-up per loop for the whole batch)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome.work.loop, []).append(outcome)
        for loop, mine in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_answer, mine)


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


def _storage_error(exc: sqlite3.Error) -> StorageError:
    error = StorageError(f"write failed: {exc}")
    error.__cause__ = exc
    return error
