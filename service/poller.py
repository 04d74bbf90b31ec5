"""The loop that wakes for the earliest due row: polls, submissions, deadlines, mirroring (SPEC §5).

It never scans every open job: it asks the store for the earliest due time per lane and sleeps
until then, or until the engine says something earlier was scheduled. Claimed rows are leased in the
database, so work cut short by a crash comes due again after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service import mirror
from service.domain.work import Lane, WorkKind
from service.engine import POLL_LEASE, Engine
from service.loop import MAX_SLEEP, WorkLoop
from service.store.base import Due

__all__ = ["MAX_SLEEP", "Poller"]

DEADLINE_BATCH = 200
MIRROR_CONCURRENCY = 4


class Poller(WorkLoop):
    name = "poller"

    def __init__(self, engine: Engine, *, concurrency: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.engine = engine
        self.store = engine.store
        self.concurrency = concurrency
        # A claimed row comes due again after its lane's lease if the work on it was cut short.
        self.leases = {
            name: max(POLL_LEASE, engine.submit_lease(runtime)) for name, runtime in engine.providers.items()
        }
        self.leases[Lane.MIRROR] = mirror.MIRROR_LEASE
        self.limits = {name: concurrency for name in engine.providers}
        self.limits.update({Lane.INTERNAL: DEADLINE_BATCH, Lane.MIRROR: MIRROR_CONCURRENCY})
        engine.on_schedule(self.nudge)

    async def tick(self) -> float:
        """Start everything due now within each lane's bound; return how long to sleep."""
        now = self.clock()
        next_times = []
        for lane, limit in self.limits.items():
            paused = self.engine.paused_until.get(lane, 0.0)
            if paused > now:
                next_times.append(paused)
                continue
            free = limit - self.inflight(lane)
            if free <= 0:
                continue  # a finishing task wakes the loop again
            # Looked up first (a read): a lane with nothing due costs no write transaction.
            upcoming = await self.store.next_due_at(lane)
            if upcoming is not None and upcoming <= now:
                lease = now + self.leases.get(lane, POLL_LEASE)
                for due in await self.store.claim_due(lane, now, free, lease):
                    self.start(lane, self._run(due), f"{due.kind} of {due.job_id}")
                upcoming = await self.store.next_due_at(lane) if self.inflight(lane) < limit else None
            if upcoming is not None:
                next_times.append(upcoming)
        return self.sleep_until(next_times)

    async def _run(self, due: Due) -> None:
        if due.kind is WorkKind.DEADLINE:
            await self.engine.expire(due.job_id)
        elif due.kind is WorkKind.SUBMIT:
            await self.engine.resubmit(due.job_id)
        elif due.kind is WorkKind.MIRROR:
            await self.engine.mirroring.run(due.job_id, due.attempt)
        elif due.kind is WorkKind.LATE_POLL:
            await self.engine.polling.poll_late(due.job_id, due.provider, due.attempt)
        else:
            await self.engine.polling.poll(due.job_id, due.attempt, confirming=due.kind is WorkKind.CONFIRM)
