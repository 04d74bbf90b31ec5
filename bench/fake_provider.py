"""A light fake aivideoapi (PROVIDERS.md §1) for the bench, recording how many requests are in flight.

    POST /v1/images/generations  → 200 {"code": 200, "msg": "success", "data": {"taskId": …}} at once
    GET  /v1/tasks/{id}          → the task object, completed, after --poll-latency seconds
    GET  /_stats, POST /_reset   → what it saw: counts, and in-flight max / time-weighted mean / time share per level

Unlike tests/fakes/aivideoapi.py it keeps no tasks and never calls back: it only answers, cheaply,
so that the service under test gets the machine. Served by uvicorn like the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import uvicorn

Scope = dict[str, Any]


class InFlight:
    """In-flight requests of one kind over time: max, time-weighted mean, and time spent at each level."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.now = 0
        self.max = 0
        self.first: float | None = None
        self.last_end: float | None = None
        self.changed = 0.0
        self.levels: dict[int, float] = {}

    def _move(self, delta: int) -> None:
        t = time.monotonic()
        if self.first is None:
            self.first = self.changed = t
        self.levels[self.now] = self.levels.get(self.now, 0.0) + (t - self.changed)
        self.changed = t
        self.now += delta
        self.max = max(self.max, self.now)
        if delta < 0:
            self.last_end = t

    def enter(self) -> None:
        self.count += 1
        self._move(+1)

    def leave(self) -> None:
        self._move(-1)

    def stats(self) -> dict[str, Any]:
        if self.first is None or self.last_end is None:
            return {"count": self.count, "max_in_flight": self.max, "window_s": 0.0}
        window = self.last_end - self.first
        levels = self.levels  # from the first request to the last change (an answer, when idle)
        area = sum(level * seconds for level, seconds in levels.items())
        total = sum(levels.values()) or 1.0
        return {
            "count": self.count,
            "first_mono": self.first,
            "last_end_mono": self.last_end,
            "window_s": round(window, 4),
            "per_s": round(self.count / window, 1) if window > 0 else None,
            "max_in_flight": self.max,
            "mean_in_flight": round(area / total, 3),
            "time_share_by_level": {str(k): round(v / total, 4) for k, v in sorted(levels.items()) if v > 0},
        }


class FakeProvider:
    def __init__(self, poll_latency: float) -> None:
        self.poll_latency = poll_latency
        self.polls = InFlight()
        self.submits = InFlight()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        more = True
        while more:  # read the whole body
            message = await receive()
            more = message.get("more_body", False)
        if method == "GET" and path.startswith("/v1/tasks/"):
            self.polls.enter()
            try:
                if self.poll_latency > 0:
                    await asyncio.sleep(self.poll_latency)
                task_id = path.rsplit("/", 1)[1]
                now = int(time.time())
                body = {
                    "id": task_id,
                    "status": "completed",
                    "model": "ideogram-v4",
                    "created_at": now - 20,
                    "completed_at": now,
                    "output": {
                        "urls": [f"https://files.aivideoapi.invalid/{task_id}.png"],
                        "metadata": {"model": "ideogram-ai/ideogram-v4"},
                    },
                }
                await self._json(send, 200, body)
            finally:
                self.polls.leave()
        elif method == "POST" and path == "/v1/images/generations":
            self.submits.enter()
            try:
                await self._json(send, 200, {"code": 200, "msg": "success", "data": {"taskId": str(uuid.uuid4())}})
            finally:
                self.submits.leave()
        elif path == "/_stats":
            await self._json(send, 200, {"polls": self.polls.stats(), "submits": self.submits.stats()})
        elif path == "/_reset" and method == "POST":
            self.polls.reset()
            self.submits.reset()
            await self._json(send, 200, {"reset": True})
        else:
            await self._json(send, 404, {"error": {"code": "task_not_found", "message": "no such path", "type": "x"}})

    @staticmethod
    async def _json(send: Any, status: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-latency", type=float, default=0.02, help="seconds before answering a poll")
    args = parser.parse_args()
    uvicorn.run(FakeProvider(args.poll_latency), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
