"""Waking whoever waits on a job the moment a commit changes it (`GET /v1/jobs/{id}?wait=N`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class ChangeHub:
    """Futures per job id, resolved by the store's after-commit listener. No polling, no busy loop."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def notify(self, job_ids: frozenset[str]) -> None:
        for job_id in job_ids:
            for future in self._waiters.pop(job_id, ()):
                if not future.done():
                    future.set_result(None)

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
        return sum(len(futures) for futures in self._waiters.values())
