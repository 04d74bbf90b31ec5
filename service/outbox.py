"""The outbox worker: delivers each notification to each destination (SPEC §6).

Rows are written by the store in the same transaction as the change they announce; this loop claims
the due ones per destination (leased, so a crash hands them back), sends, and records the outcome: a
retry on the schedule with jitter (honouring Retry-After), delivered, or dead. A destination that
keeps failing is paused by its circuit breaker and never delays the others; one that answered 410
Gone is stopped until an operator resends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from service.domain.delivery import Breaker, next_attempt_at
from service.domain.job import Job
from service.loop import WorkLoop
from service.metrics import Metrics
from service.notify.base import DeliveryResult, Destination, Notification
from service.store.base import OutboxRow
from service.store.common import Store

OUTBOX_LEASE = 45.0  # a send is bounded by its client's timeout (30 s); a crashed one is retried after this
CONCURRENCY = 4


class OutboxWorker(WorkLoop):
    name = "outbox"

    def __init__(
        self,
        store: Store,
        destinations: Mapping[str, Destination],
        *,
        schedule: Sequence[float],
        image_url: Callable[[Job], str | None],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        concurrency: int = CONCURRENCY,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(clock)
        self.metrics = metrics or Metrics()
        self.store = store
        self.destinations = destinations
        self.schedule = tuple(schedule)
        self.image_url = image_url
        self.rng = rng or random.Random()
        self.concurrency = concurrency
        self.breakers = {name: Breaker() for name in destinations}
        store.add_outbox_listener(self.wake)

    async def tick(self) -> float:
        now = self.clock()
        stopped = await self.store.stopped_destinations() if self.destinations else {}
        next_times = []
        for name in self.destinations:
            if name in stopped:
                continue
            breaker = self.breakers[name]
            if not breaker.allows(now):
                next_times.append(breaker.open_until)
                continue
            capacity = breaker.capacity(now, self.concurrency)
            for row in await self.store.claim_outbox(name, now, capacity - self.inflight(name), now + OUTBOX_LEASE):
                self.start(name, self.deliver(row), f"delivery {row.id} to {name}")
            if self.inflight(name) < capacity:
                upcoming = await self.store.next_outbox_due(name)
                if upcoming is not None:
                    next_times.append(upcoming)
        return self.sleep_until(next_times)

    async def deliver(self, row: OutboxRow) -> None:
        notification = await self.notification(row)
        destination = self.destinations[row.destination]
        if notification is None:  # its job was purged meanwhile
            result = DeliveryResult(ok=False, error="the notification no longer exists")
        else:
            try:
                result = await destination.send(notification)
            except Exception as exc:  # a destination's bug must not kill the delivery: retry it
                self.log.exception("sending to %s failed", row.destination)
                result = DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
        now = self.clock()
        self.breakers[row.destination].record(result.ok, now)
        due = None
        if not result.ok and notification is not None:
            due = next_attempt_at(row.attempts + 1, self.schedule, now, self.rng, result.retry_after)
        await self.store.record_delivery(
            row.id, ok=result.ok, status=result.status, error=result.error, next_attempt_at=due, gone=result.gone
        )
        outcome = "delivered" if result.ok else ("retry" if due is not None else "dead")
        self.metrics.notifications.labels(row.destination, outcome).inc()
        if result.ok:
            self.log.info("%s delivered to %s", row.type, row.destination)
        else:
            verdict = "dead" if due is None else f"retry in {due - now:.0f} s"
            self.log.warning("%s to %s failed (%s): %s", row.type, row.destination, result.error, verdict)

    async def notification(self, row: OutboxRow) -> Notification | None:
        stored = await self.store.notification(row.notification_id)
        if stored is None:
            return None
        job = await self.store.get_job(stored.job_id) if stored.job_id else None
        payload: Mapping[str, Any] = stored.payload
        return Notification(
            id=stored.id,
            type=stored.type,
            created_at=stored.created_at,
            job=payload.get("job"),
            provider=stored.provider,
            detail=payload.get("detail") or {},
            image_url=self.image_url(job) if job is not None else None,
        )

    def status(self) -> dict[str, str]:
        return {name: breaker.state for name, breaker in self.breakers.items()}
