"""10,000 copies of one callback delivery, 64 connections at once: applied exactly once (SPEC §4).

The copies race from the very first one: the job has no task id yet, so every copy also tries to bind
it. Every answer must be `200` (`accepted` once, `duplicate` for the rest) or a clean `503` that the
provider would retry; the job's history, the receipt count and /metrics must all tell the same story.
"""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from service.domain.history import NOISE_EVENTS_PER_JOB
from tests.conftest import ServiceFactory
from tests.integration.hostile import (
    assert_healthy,
    callback_path,
    metric,
    port,
    raw_delivery,
    receipts,
)
from tests.rawhttp import RawConnection

COPIES = 10_000
CONNECTIONS = 64


@pytest.mark.timeout(300)
async def test_ten_thousand_concurrent_copies_apply_once(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_MIRROR_IMAGES="false", JOBHOOK_CALLBACK_GRACE="600") as svc:
        job = await svc.submit(provider="simulator", prompt="one event, ten thousand times", submit=False)
        request = raw_delivery(callback_path(job), "task-storm", "completed")
        answers: collections.Counter[tuple[int, str]] = collections.Counter()
        remaining = COPIES

        async def sender() -> None:
            nonlocal remaining
            connection = await RawConnection.open(port(svc))
            try:
                while remaining > 0:
                    remaining -= 1
                    assert await connection.send(request)
                    response = await connection.response(timeout=60)
                    assert response is not None, "the connection was closed without an answer"
                    if response.status == 200:
                        answers[(200, response.json()["status"])] += 1
                    else:
                        assert response.status == 503, (response.status, response.body[:300])
                        assert response.json()["error"]["code"] == "storage_unavailable"
                        assert response.headers.get("retry-after")
                        answers[(503, "storage_unavailable")] += 1
                    if response.closes:
                        await connection.close()
                        connection = await RawConnection.open(port(svc))
            finally:
                await connection.close()

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(CONNECTIONS)))
        elapsed = time.monotonic() - started

        ok = answers[(200, "accepted")] + answers[(200, "duplicate")]
        unavailable = answers[(503, "storage_unavailable")]
        print(
            f"\n{COPIES} copies over {CONNECTIONS} connections in {elapsed:.1f} s ({COPIES / elapsed:.0f}/s): "
            f"{answers[(200, 'accepted')]} accepted, {answers[(200, 'duplicate')]} duplicate, {unavailable} 503"
        )
        assert ok + unavailable == COPIES
        assert answers[(200, "accepted")] == 1
        done = await svc.job(job["id"])
        assert (done["status"], done["provider_task_id"], done["resolved_by"]) == (
            "completed",
            "task-storm",
            "callback",
        )
        events = await svc.events(job["id"])
        callbacks = collections.Counter(e["outcome"] for e in events if e["type"] == "callback")
        # The first duplicates have an event each; the rest are counted on one summary (the bound).
        assert callbacks == {"accepted": 1, "duplicate": NOISE_EVENTS_PER_JOB, "summary": 1}
        [summary] = [e for e in events if e["outcome"] == "summary"]
        assert summary["detail"]["counts"] == {"duplicate": {"task.completed": ok - 1 - NOISE_EVENTS_PER_JOB}}
        assert [e["outcome"] for e in events if e["type"] == "status"] == [
            "submitted",
            "completed",
        ]  # bound, then applied
        assert receipts(svc, job["id"]) == {"task.completed": ok}  # a 503 left no receipt behind
        text = (await svc.client.get("/metrics")).text
        deliveries = "jobhook_callback_deliveries_total"
        assert metric(text, deliveries, provider="simulator", outcome="accepted", reason="") == 1
        assert metric(text, deliveries, provider="simulator", outcome="duplicate", reason="") == ok - 1
        refused = {"provider": "simulator", "outcome": "unavailable", "reason": "storage_unavailable"}
        assert metric(text, deliveries, **refused) == unavailable
        await assert_healthy(svc)
