"""What jobhook's public edges give away (issue 14, item 9): /readyz says "database unavailable" and no
more; the simulator mounted on the public port posts to jobhook's own callback URLs only."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from tests.conftest import ServiceFactory


@pytest.mark.sqlite_only  # locks the SQLite file from another connection
async def test_readyz_does_not_echo_the_database_error(
    jobhook: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with jobhook() as svc:
        assert (await svc.client.get("/readyz")).status_code == 200
        await asyncio.sleep(0.3)  # the poller's first tick writes: let it finish before the lock
        blocker = sqlite3.connect(svc.settings.database, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            try:
                with caplog.at_level(logging.WARNING, logger="jobhook"):
                    response = await svc.client.get("/readyz")
            finally:
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
        finally:
            blocker.close()
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"] == "failing: database unavailable"
        assert "locked" not in response.text and str(svc.settings.database) not in response.text
        logged = [r.getMessage() for r in caplog.records if r.name == "jobhook" and "readiness" in r.getMessage()]
        assert any("database is locked" in line for line in logged), logged  # the detail is in the log


@pytest.mark.parametrize(
    "tail",
    ["../v1/jobs", "%2e%2e/v1/jobs", "x/../../v1/jobs", "./", "x?y=1"],
)
async def test_the_simulator_refuses_a_callback_url_that_leaves_the_callbacks(
    jobhook: ServiceFactory, tail: str
) -> None:
    async with jobhook() as svc:
        create = {"model": "ideogram-v4", "input": {"prompt": "post it elsewhere"}}
        prefix = f"{svc.url}/callbacks/"
        headers = {"Authorization": "Bearer sk-anything"}
        response = await svc.client.post(
            "/simulator/v1/images/generations", json={**create, "callback_url": prefix + tail}, headers=headers
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert "callback_url" in response.json()["error"]["message"]
        # jobhook's own callback URLs are still taken.
        job = await svc.submit(provider="simulator", prompt="the backend submits it", submit=False)
        genuine = await svc.client.post(
            "/simulator/v1/images/generations", json={**create, "callback_url": job["callback_url"]}, headers=headers
        )
        assert genuine.status_code == 200, genuine.text
