"""A background loop that cannot die silently: the shape the poller and the outbox worker share.

Each iteration (`tick`) starts the work that is due, bounded per lane, and says how long to sleep;
`nudge(due_at)` wakes it early when something comes due sooner. Every iteration is caught and
logged, and `heartbeat` tells `/readyz` that the loop is alive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from service.errors import StorageError

MAX_SLEEP = 15.0  # wake at least this often, so that the heartbeat stays fresh


class WorkLoop:
    name = "loop"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.heartbeat = time.monotonic()
        self.log = logging.getLogger(f"jobhook.{self.name}")
        self._wake = asyncio.Event()
        self._sleeping_until = math.inf
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def tick(self) -> float:
        """Start what is due now; return how many seconds to sleep."""
        raise NotImplementedError

    def nudge(self, due_at: float) -> None:
        """Something comes due at `due_at`: wake now if the loop would sleep past it."""
        if due_at < self._sleeping_until:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def inflight(self, lane: str | None = None) -> int:
        return sum(self._inflight.values()) if lane is None else self._inflight.get(lane, 0)

    def start(self, lane: str, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work` in the background, counted against `lane`; a failure is logged, never fatal."""
        self._inflight[lane] = self._inflight.get(lane, 0) + 1
        task = asyncio.create_task(self._guard(lane, work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, lane: str, work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except StorageError as exc:
            # Read-only, full or locked: expected, and said in one line (the lease brings it back).
            self.log.warning("%s failed, the database is unavailable: %s; it will be retried", what, exc)
        except Exception:
            # The work's row keeps its lease in the database and comes due again: nothing is dropped.
            self.log.exception("%s failed; it will be retried", what)
        finally:
            self._inflight[lane] -= 1
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: tick, then sleep until the next due time or a nudge."""
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self.heartbeat = time.monotonic()
                # While ticking, any nudge must wake the next sleep: what it scheduled may have been
                # written after the tick looked.
                self._wake.clear()
                self._sleeping_until = math.inf
                try:
                    sleep = await self.tick()
                except StorageError as exc:
                    # Every second while the database is read-only, full or locked: a line, not a traceback.
                    self.log.warning(
                        "%s iteration failed, the database is unavailable: %s; retrying in 1 s", self.name, exc
                    )
                    sleep = 1.0
                except Exception:
                    self.log.exception("%s iteration failed; retrying in 1 s", self.name)
                    sleep = 1.0
                self._sleeping_until = self.clock() + sleep
                if self._wake.is_set():
                    continue
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waker, stopper}, timeout=sleep, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            stopper.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def sleep_until(self, next_times: list[float]) -> float:
        if not next_times:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, min(next_times) - self.clock()))
