"""Counts of what clients hold open at once (`?wait=` waiters, event streams), refused past a bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from starlette.requests import Request

from service.http import RETRY_AFTER, ApiError

T = TypeVar("T")


class Slots:
    """At most `limit` held at once; one more is refused with 503, Retry-After and `code`, never queued."""

    def __init__(self, limit: int, code: str, what: str) -> None:
        self.limit = limit
        self.code = code
        self.what = what
        self.held = 0

    def take(self) -> None:
        """Hold one (give it back with `give_back`), or raise ApiError 503 when all are held."""
        if self.held >= self.limit:
            raise ApiError(
                503,
                self.code,
                f"{self.limit} {self.what} are open, the most jobhook holds at once; retry shortly",
                headers={"Retry-After": RETRY_AFTER},
            )
        self.held += 1

    def give_back(self) -> None:
        self.held -= 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give_back()


async def while_connected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None as soon as the client has gone (uvicorn does not cancel a handler whose
    client left: a `?wait=60` would otherwise keep its slot for the whole minute)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    return task.result() if not task.cancelled() else None
