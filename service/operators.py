"""Routes for operators and the dashboard: providers and their health, the outbox, the live stream.

All under `/v1/` (bearer token or dashboard session). The stream is server-sent events: one `job`
event with the job's JSON each time a commit changes a job, a `resync` event when the reader fell
behind, and a comment every 15 s so that proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api import job_json, json_body
from service.domain import budget
from service.domain.circuit import Circuit
from service.domain.measure import UNMEASURED
from service.http import ApiError, JSONResponse
from service.providers.registry import describe
from service.runtime import runtime

KEEPALIVE = 15.0


async def providers(request: Request) -> JSONResponse:
    rt = runtime(request)
    now = rt.engine.clock()
    midnight = dt.datetime.fromtimestamp(now, tz=dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    usage = await rt.store.usage_since(midnight.timestamp())
    states = {state["provider"]: state for state in await rt.store.provider_states()}
    circuits = await rt.store.provider_circuits()
    described = describe(rt.settings)
    measured = await rt.store.provider_measurements(row["provider"] for row in described)
    rows = []
    for row in described:
        name = row["provider"]
        state = states.get(name, {})
        rows.append(
            {
                **row,
                "callbacks": "degraded" if name in rt.store.degraded else "ok",
                "polled_in_a_row": state.get("polled_in_a_row", 0),
                "credits": state.get("credits"),
                "credits_low": bool(state.get("credits_low", 0)),
                "today": usage.get(name, {"jobs": 0, "cost_usd": 0.0}),
                "circuit": circuits.get(name, Circuit(name)).to_json(now),
                **measured.get(name, UNMEASURED).to_json(),
            }
        )
    return JSONResponse({"providers": rows})


async def budget_today(request: Request) -> JSONResponse:
    """SPEC §9: each cap, today's reserved and spent amounts (UTC), what is left, and the reset."""
    rt = runtime(request)
    now = rt.engine.clock()
    figures = await rt.store.budget_figures(budget.day_of(now))
    priced = {name: bool(each.adapter.prices.per_image) for name, each in rt.engine.providers.items()}
    return JSONResponse(budget.report(rt.settings.budget, figures, priced, now))


async def outbox(request: Request) -> JSONResponse:
    rt = runtime(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in ("pending", "delivered", "dead"):
        raise ApiError(400, "invalid_status", f"status must be pending, delivered or dead, got {status[:40]!r}")
    raw_limit = request.query_params.get("limit") or "50"
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3) or not 1 <= int(raw_limit) <= 200:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to 200, got {raw_limit[:40]!r}")
    rows = await rt.store.outbox(status=status, limit=int(raw_limit))
    stopped = await rt.store.stopped_destinations()
    destinations = {
        name: {"breaker": state, "stopped": stopped.get(name)} for name, state in rt.outbox.status().items()
    }
    return JSONResponse(
        {
            "deliveries": [dataclasses.asdict(row) for row in rows],
            "counts": await rt.store.outbox_counts(),
            "destinations": destinations,
        }
    )


RESEND_USAGE = 'send {"ids": [delivery ids]} or {"dead": true}'
MAX_DELIVERY_ID = 2**63 - 1  # SQLite's largest INTEGER: a larger id names no delivery and cannot be bound


async def resend(request: Request) -> JSONResponse:
    rt = runtime(request)
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"ids", "dead"}:
        raise ApiError(422, "invalid_body", RESEND_USAGE, field="body")
    # Strict: a `"dead": "no"` or `"ids": null` taken loosely would resend every dead delivery.
    dead = body.get("dead", False)
    if not isinstance(dead, bool):
        raise ApiError(422, "invalid_field", "dead must be true or false", field="dead")
    if dead == ("ids" in body):
        raise ApiError(422, "invalid_body", RESEND_USAGE, field="body")
    ids = body.get("ids")
    if not dead and (
        not isinstance(ids, list)
        or not ids
        or len(ids) > 1000
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_DELIVERY_ID for i in ids)
    ):
        raise ApiError(422, "invalid_field", "ids must be a list of 1 to 1000 delivery ids", field="ids")
    rows = await rt.store.resend(None if dead else ids)
    rt.outbox.wake()
    return JSONResponse({"resent": [row.id for row in rows]})


async def stream(request: Request) -> StreamingResponse:
    rt = runtime(request)

    async def events() -> AsyncIterator[bytes]:
        with rt.hub.stream() as changes:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    job_id = await asyncio.wait_for(changes.get(), KEEPALIVE)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                if job_id is None:
                    yield b"event: resync\ndata: {}\n\n"
                    continue
                job = await rt.store.get_job(job_id)
                if job is not None:
                    yield b"event: job\ndata: " + orjson.dumps(job_json(request, job)) + b"\n\n"

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    rt.streams.take()  # past JOBHOOK_MAX_STREAMS: 503 with Retry-After, never queued
    return HeldStream(events(), rt.streams.give_back, media_type="text/event-stream", headers=headers)


class HeldStream(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends (the client gone, shutdown)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


routes = [
    Route("/v1/providers", providers, methods=["GET"]),
    Route("/v1/budget", budget_today, methods=["GET"]),
    Route("/v1/outbox", outbox, methods=["GET"]),
    Route("/v1/outbox/resend", resend, methods=["POST"]),
    Route("/v1/stream", stream, methods=["GET"]),
]
