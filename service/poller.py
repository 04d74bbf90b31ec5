"""The loop that wakes for the earliest due row: polls, submission retries, deadlines (SPEC §5).

It never scans every open job: it asks the store for the earliest due time per provider and sleeps
until then, or until the engine says something earlier was scheduled. Claimed rows are leased in the
database, so work cut short by a crash comes due again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from service.engine import POLL_LEASE, Engine
from service.store.base import Due
from service.store.sqlite import DEADLINE, INTERNAL, MIRROR

log = logging.getLogger("jobhook.poller")

MAX_SLEEP = 15.0  # wake at least this often, so that the heartbeat stays fresh
DEADLINE_BATCH = 200
MIRROR_CONCURRENCY = 4


class Poller:
    def __init__(self, engine: Engine, *, concurrency: int, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.store = engine.store
        self.concurrency = concurrency
        self.clock = clock
        self.heartbeat = time.monotonic()
        self._wake = asyncio.Event()
        self._sleeping_until = math.inf
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # A claimed row comes due again after its lane's lease if the work on it was cut short.
        self.leases = {
            name: max(POLL_LEASE, engine.submit_lease(runtime)) for name, runtime in engine.providers.items()
        }
        self.lease = POLL_LEASE
        engine.on_schedule(self.nudge)

    def nudge(self, due_at: float) -> None:
        """Something comes due at `due_at`: wake now if the loop would sleep past it."""
        if due_at < self._sleeping_until:
            self._wake.set()

    @property
    def inflight(self) -> int:
        return sum(self._inflight.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: claim what is due, start it, sleep until the next due time."""
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
                except Exception:
                    log.exception("poller iteration failed; retrying in 1 s")
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

    async def tick(self) -> float:
        """Start everything due now within the bounds; return how long to sleep."""
        now = self.clock()
        for due in await self.store.claim_due(INTERNAL, now, DEADLINE_BATCH, now + self.lease):
            self._start(due)
        next_times = []
        for provider in self.engine.providers:
            paused = self.engine.paused_until.get(provider, 0.0)
            if paused > now:
                next_times.append(paused)
                continue
            free = self.concurrency - self._inflight.get(provider, 0)
            if free > 0:
                for due in await self.store.claim_due(provider, now, free, now + self.leases[provider]):
                    self._start(due)
            if self._inflight.get(provider, 0) < self.concurrency:
                upcoming = await self.store.next_due_at(provider)
                if upcoming is not None:
                    next_times.append(upcoming)
        free = MIRROR_CONCURRENCY - self._inflight.get(MIRROR, 0)
        for due in await self.store.claim_due(MIRROR, now, free, now + self.lease):
            self._start(due)
        if self._inflight.get(MIRROR, 0) < MIRROR_CONCURRENCY:
            upcoming = await self.store.next_due_at(MIRROR)
            if upcoming is not None:
                next_times.append(upcoming)
        upcoming = await self.store.next_due_at(INTERNAL)
        if upcoming is not None:
            next_times.append(upcoming)
        if not next_times:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, min(next_times) - self.clock()))

    def _start(self, due: Due) -> None:
        self._inflight[due.provider] = self._inflight.get(due.provider, 0) + 1
        task = asyncio.create_task(self._run(due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, due: Due) -> None:
        try:
            if due.kind == DEADLINE:
                await self.engine.expire(due.job_id)
            elif due.kind == "submit":
                await self.engine.resubmit(due.job_id)
            elif due.kind == "mirror":
                await self.engine.mirror(due.job_id, due.attempt)
            else:
                await self.engine.poll(due.job_id, due.attempt, confirming=due.kind == "confirm")
        except asyncio.CancelledError:
            raise
        except Exception:
            # The row keeps its lease and comes due again: nothing is dropped.
            log.exception("%s of %s failed; it will be retried", due.kind, due.job_id)
        finally:
            self._inflight[due.provider] -= 1
            self._wake.set()

    async def drain(self) -> None:
        """Wait for the work in flight (tests and `--burst` style runs)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
