"""PostgreSQL: plain callbacks written in batches (schema 12's `jobhook_callbacks`).

Each plain callback (service.store.pg_callback) is one call of `jobhook_callback`. Written one per
transaction, about a third of what a callback cost PostgreSQL was the transaction itself — the
statement's start, the answer's send, the COMMIT and its WAL flush (bench/README.md). So a replica
writes them as SQLite's writer does, in groups: a callback that finds a batch slot free is sent at
once (a batch of one: no wait on a quiet day); those that arrive while every slot is taken wait for
the next free one, and go together, up to `MAX_BATCH`, in one statement and one transaction. Each is
answered only once that transaction is committed.

A batch's calls are sorted by job id, so that every batch locks its jobs in one order and two of
them never wait for each other in a circle. What the batch changed is told to the other replicas
after its COMMIT, by one `pg_notify` of its own (service.store.postgres says why not inside it). When the statement fails (a deadlock with a general
transaction, a lost race the function could not settle, the connection), every callback of the
batch gets the error, and the store writes each by the general transaction or answers 503, as it
did for a call of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger("jobhook.store")

BATCH_SQL = "SELECT jobhook_callbacks(%s)"
# Calls per batch at most: a batch holds its jobs' row locks until its COMMIT (~0.15 ms of the
# server's CPU a call), and a general transaction that needs one of them waits that long.
MAX_BATCH = 48
# Batches in flight at once per replica: each holds a connection of the event loop's pool, which the
# jobs' reads share. A new batch starts as soon as one of these is free.
IN_FLIGHT = 4


Call = tuple[tuple[Any, ...], Any, "asyncio.Future[str]"]  # the parameters, what to announce, the answer


class CallbackBatches:
    """Calls of `jobhook_callback` (their 28 parameters each), written in batches; each `submit` is
    answered with that call's outcome once its batch is committed, or with the batch's error."""

    def __init__(
        self,
        connection: Callable[[], Any],
        *,
        max_batch: int = MAX_BATCH,
        in_flight: int = IN_FLIGHT,
        on_commit: Callable[[int, float], None] | None = None,
        announce: Callable[[list[Any]], Awaitable[None]] | None = None,
    ) -> None:
        """`connection()`: an async context manager lending a connection (the loop pool's);
        `on_commit(calls, seconds)` after each committed batch; `announce(items)` then, with what was
        submitted to announce for each call the batch accepted (after the callers have their answers)."""
        self._connection = connection
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._on_commit = on_commit
        self._announce = announce
        self._waiting: list[Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # committed, for the tests and the bench
        self.calls = 0

    def submit(self, params: tuple[Any, ...], announce: Any = None) -> asyncio.Future[str]:
        """`announce`: given to `announce` once committed, if the call was accepted."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((params, announce, future))
        self._start()
        return future

    def _start(self) -> None:
        while self._waiting and len(self._running) < self._in_flight:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            task = asyncio.get_running_loop().create_task(self._write(batch), name="jobhook-pg-callbacks")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _write(self, batch: list[Call]) -> None:
        from psycopg.rows import tuple_row

        batch.sort(key=lambda call: call[0][0])  # by job id: one locking order for every batch
        started = time.perf_counter()
        try:
            payload = orjson.dumps([params for params, _, _ in batch]).decode()
            async with self._connection() as connection:
                cursor = connection.cursor(row_factory=tuple_row)
                await cursor.execute(BATCH_SQL, (payload,), prepare=True)
                row = await cursor.fetchone()
            outcomes = row[0] if row is not None else None
            if outcomes is None or len(outcomes) != len(batch):
                raise RuntimeError(f"jobhook_callbacks answered {outcomes!r} for {len(batch)} calls")
        except BaseException as exc:  # every caller of the batch learns it; a cancellation goes on
            for _, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.calls += len(batch)
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started)
        for (_, _, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
        accepted = [item for (_, item, _), outcome in zip(batch, outcomes, strict=True) if outcome == "accepted"]
        if self._announce is not None and any(item is not None for item in accepted):
            try:
                await self._announce([item for item in accepted if item is not None])
            except Exception as exc:  # committed and answered: the other replicas hear of it later, or not
                log.warning("telling the other replicas of %d callbacks failed: %s", len(accepted), exc)

    async def close(self) -> None:
        """Cancel what is waiting and in flight (the store is closing)."""
        waiting, self._waiting = self._waiting, []
        for _, _, future in waiting:
            if not future.done():
                future.cancel()
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
