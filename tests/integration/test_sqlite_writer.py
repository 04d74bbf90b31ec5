"""The SQLite writer and its group commit, on a real database file.

Batches are made deterministic by holding the writer's thread in a first piece of work (it waits on
an event) while writes queue behind it: those then commit together.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.errors import StorageError
from service.store.sqlite_writer import MAX_BATCH, Writer


def _connector(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    return connect


def _overwrite(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS scratch (n INTEGER)")
    db.execute("INSERT INTO scratch (n) VALUES (1)")


def _schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS item (n INTEGER PRIMARY KEY, note TEXT)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS child (id INTEGER PRIMARY KEY,"
        " parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[Writer]:
    writer = Writer(_connector(tmp_path / "w.db"), busy_timeout_ms=200, overwrite=_overwrite)
    await writer.start()
    await writer.alone(_schema)
    yield writer
    await writer.stop()


def _insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def run(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO item (n) VALUES (?)", (n,))
        return n

    return run


def _held(gate: threading.Event, entered: threading.Event) -> Callable[[sqlite3.Connection], str]:
    """Work for the writer's thread that waits for the test to open the gate."""

    def run(db: sqlite3.Connection) -> str:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        db.execute("INSERT INTO item (n) VALUES (-1)")  # outside a transaction: commits at once
        return "first"

    return run


def _items(path: Path) -> list[int]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT n FROM item ORDER BY n")]


async def _queued_behind_a_held_write(
    writer: Writer, works: list[Callable[[sqlite3.Connection], object]]
) -> tuple[str, list[object]]:
    """Hold the writer in work that waits, queue `works` behind it, then let it go: they commit together."""
    gate, entered = threading.Event(), threading.Event()
    first = asyncio.ensure_future(writer.alone(_held(gate, entered)))
    await asyncio.to_thread(entered.wait, 30)
    rest = [asyncio.ensure_future(writer.transaction(work)) for work in works]
    await asyncio.sleep(0)
    gate.set()
    done = await asyncio.gather(first, *rest, return_exceptions=True)
    return str(done[0]), list(done[1:])


async def test_writes_queued_during_a_commit_share_the_next_one(writer: Writer, tmp_path: Path) -> None:
    before = writer.stats.commits
    first, results = await _queued_behind_a_held_write(writer, [_insert(n) for n in range(100)])
    assert first == "first"
    assert results == list(range(100))
    assert _items(tmp_path / "w.db") == [-1, *range(100)]
    # The hundred queued behind the held work went in one transaction.
    assert writer.stats.commits - before == 1
    assert writer.stats.largest == 100


async def test_a_batch_is_bounded(writer: Writer) -> None:
    _, results = await _queued_behind_a_held_write(writer, [_insert(n) for n in range(MAX_BATCH + 10)])
    assert results == list(range(MAX_BATCH + 10))
    assert writer.stats.largest == MAX_BATCH


async def test_a_write_that_raises_is_rolled_back_alone(writer: Writer, tmp_path: Path) -> None:
    class Refused(Exception):
        pass

    def refuse(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO item (n) VALUES (1000)")
        raise Refused("no")

    def duplicate(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO item (n) VALUES (1)")  # 1 is written by a neighbour in the same batch

    _, results = await _queued_behind_a_held_write(writer, [_insert(1), refuse, duplicate, _insert(2)])
    assert results[0] == 1 and results[3] == 2
    assert isinstance(results[1], Refused)
    assert isinstance(results[2], StorageError) and "UNIQUE constraint failed" in str(results[2])
    assert isinstance(results[2].__cause__, sqlite3.IntegrityError)
    assert _items(tmp_path / "w.db") == [-1, 1, 2]
    assert writer.stats.largest == 4


async def test_a_caller_is_answered_only_after_the_commit(writer: Writer, tmp_path: Path) -> None:
    seen_in_hook: list[list[int]] = []

    def after(value: int) -> None:
        seen_in_hook.append(_items(tmp_path / "w.db"))

    assert await writer.transaction(_insert(7), after=after) == 7
    # Another connection already sees it when the caller resumes, and when the hook runs before that.
    assert _items(tmp_path / "w.db") == [7]
    assert seen_in_hook == [[7]]


async def test_a_failed_commit_fails_every_write_of_the_batch(writer: Writer, tmp_path: Path) -> None:
    def orphan(db: sqlite3.Connection) -> None:  # a deferred foreign key: refused at COMMIT, not before
        db.execute("INSERT INTO child (id, parent) VALUES (1, 99)")

    _, results = await _queued_behind_a_held_write(writer, [_insert(1), orphan, _insert(2)])
    assert all(isinstance(result, StorageError) and "commit failed" in str(result) for result in results)
    assert _items(tmp_path / "w.db") == [-1]
    with sqlite3.connect(tmp_path / "w.db") as db:  # a small write went over the failed commit
        assert db.execute("SELECT COUNT(*) FROM scratch").fetchone() == (1,)
    assert await writer.transaction(_insert(3)) == 3  # and the writer goes on
    assert _items(tmp_path / "w.db") == [-1, 3]


async def test_a_database_locked_from_outside_fails_the_batch_then_recovers(writer: Writer, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.gather(*(writer.transaction(_insert(n)) for n in range(5)), return_exceptions=True)
        assert all(
            isinstance(outcome, StorageError) and "cannot start a write transaction" in str(outcome)
            for outcome in outcomes
        ), outcomes
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await writer.transaction(_insert(5)) == 5
    assert _items(tmp_path / "w.db") == [5]


async def test_a_cancelled_caller_does_not_undo_its_write(writer: Writer, tmp_path: Path) -> None:
    hooked: list[int] = []
    gate, entered = threading.Event(), threading.Event()
    first = asyncio.ensure_future(writer.alone(_held(gate, entered)))
    await asyncio.to_thread(entered.wait, 30)
    cancelled = asyncio.ensure_future(writer.transaction(_insert(8), after=hooked.append))
    await asyncio.sleep(0)
    cancelled.cancel()
    gate.set()
    await first
    assert await writer.transaction(_insert(9)) == 9  # FIFO: the cancelled one's batch is done by now
    assert cancelled.cancelled()
    assert _items(tmp_path / "w.db") == [-1, 8, 9]
    assert hooked == [8]  # announced all the same: it is committed


async def test_alone_runs_in_the_thread_outside_a_transaction(writer: Writer) -> None:
    in_transaction, thread = await writer.alone(lambda db: (db.in_transaction, threading.current_thread().name))
    assert not in_transaction and thread.startswith("jobhook-sqlite-writer")
    assert await writer.transaction(lambda db: db.in_transaction) is True


async def test_after_stop_writes_are_refused(tmp_path: Path) -> None:
    writer = Writer(_connector(tmp_path / "w.db"), busy_timeout_ms=200, overwrite=_overwrite)
    await writer.start()
    await writer.alone(_schema)
    await writer.stop()
    with pytest.raises(StorageError, match="not open"):
        await writer.transaction(_insert(1))
    await writer.stop()  # twice is fine


async def test_a_connection_that_cannot_open_is_an_error_at_start(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "missing" / "w.db")

    writer = Writer(connect, busy_timeout_ms=200, overwrite=_overwrite)
    with pytest.raises(sqlite3.OperationalError):
        await writer.start()
    await writer.stop()
    with pytest.raises(StorageError):
        await writer.transaction(_insert(1))


async def test_a_write_waits_out_a_short_lock_held_by_another_process(writer: Writer, tmp_path: Path) -> None:
    """The loop never waits for the lock itself: the thread does, up to the busy timeout (200 ms here)."""
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO item (n) VALUES (100)")
    releasing = threading.Timer(0.05, lambda: other.execute("COMMIT"))
    releasing.start()
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.ensure_future(ticking())
    try:
        assert await writer.transaction(_insert(101)) == 101
    finally:
        ticker.cancel()
        releasing.join()
        other.close()
    assert _items(tmp_path / "w.db") == [100, 101]
    assert ticks > 0  # the event loop went on while the write waited for the lock
