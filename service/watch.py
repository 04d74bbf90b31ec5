"""Waking whoever waits on a job the moment a commit changes it (`GET /v1/jobs/{id}?wait=N`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

STREAM_BUFFER = 1000


class ChangeHub:
    """Futures per job id, resolved by the store's after-commit listener. No polling, no busy loop.

    Streams (the dashboard's live view) get every changed job id through a bounded queue; a reader too
    slow to keep up gets `None`, meaning "you missed some: read the list again".
    """

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._streams: set[asyncio.Queue[str | None]] = set()
        # Waiters and stream entries woken so far: what a change costs, for /metrics-style checks and
        # the tests that show a delivery that changes nothing wakes nobody.
        self.wakeups = 0

    def notify(self, job_ids: frozenset[str]) -> None:
        """The store's after-commit listener: `job_ids` changed (a refused or duplicate delivery, which
        changes nothing, never reaches here: see service.store.tx.Tx.event)."""
        for job_id in job_ids:
            for future in self._waiters.pop(job_id, ()):
                if not future.done():
                    future.set_result(None)
                    self.wakeups += 1
        for queue in self._streams:
            for job_id in job_ids:
                try:
                    queue.put_nowait(job_id)
                    self.wakeups += 1
                except asyncio.QueueFull:
                    _overflow(queue)
                    break

    @contextlib.contextmanager
    def stream(self) -> Iterator[asyncio.Queue[str | None]]:
        """Every job id changed from now on, in commit order (`None`: some were dropped)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(STREAM_BUFFER)
        self._streams.add(queue)
        try:
            yield queue
        finally:
            self._streams.discard(queue)

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved at the job's next change. Subscribe *before* reading the job."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]
            future.cancel()

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values()) + len(self._streams)


def _overflow(queue: asyncio.Queue[str | None]) -> None:
    """Empty a full queue and leave one `None`: the reader must resynchronise."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)
