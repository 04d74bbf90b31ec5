"""A callback answered 503 (storage unavailable) is counted in /metrics like every other delivery."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.conftest import ServiceFactory
from tests.integration.hostile import callback_path, delivery_body, delivery_headers, metric

DELIVERIES = "jobhook_callback_deliveries_total"


@pytest.mark.sqlite_only  # locks the SQLite file from another connection
async def test_a_503_delivery_is_counted_then_its_retry_accepted(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_CALLBACK_GRACE="600") as svc:
        job = await svc.submit(provider="simulator", prompt="a locked database", submit=False)
        delivery = {"content": delivery_body("task-locked"), "headers": delivery_headers("task-locked")}
        await asyncio.sleep(0.3)  # the poller's first tick writes: let it finish before the lock
        blocker = sqlite3.connect(svc.settings.database, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            try:
                refused = await svc.client.post(callback_path(job), **delivery)
            finally:
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
        finally:
            blocker.close()
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "storage_unavailable")
        text = (await svc.client.get("/metrics")).text
        labels = {"provider": "simulator", "outcome": "unavailable", "reason": "storage_unavailable"}
        assert metric(text, DELIVERIES, **labels) == 1
        retried = await svc.client.post(callback_path(job), **delivery)
        assert retried.json() == {"status": "accepted"}
        text = (await svc.client.get("/metrics")).text
        assert metric(text, DELIVERIES, provider="simulator", outcome="accepted", reason="") == 1
        callbacks = [e["outcome"] for e in await svc.events(job["id"]) if e["type"] == "callback"]
        assert callbacks == ["accepted"]  # the 503 left nothing behind
