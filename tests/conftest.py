"""Fixtures shared by the integration and acceptance tests: the real app on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import Runtime, create_app
from service.config import Settings
from service.http import server_protocol
from tests.fakes.server import free_socket, serve_asgi

FINISHED = ("completed", "failed", "timed_out")


@dataclasses.dataclass
class Service:
    """A running jobhook: its URL, an HTTP client on it, and its settings."""

    url: str
    client: httpx.AsyncClient
    settings: Settings
    runtime: Runtime

    async def submit(self, expect: int = 202, headers: Mapping[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=body, headers=dict(headers or {}))
        assert response.status_code == expect, response.text
        return response.json()  # type: ignore[no-any-return]

    async def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        response = await self.client.get(f"/v1/jobs/{job_id}", params=params)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        return response.json()["events"]  # type: ignore[no-any-return]

    async def wait_finished(self, job_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            job = await self.job(job_id, wait=max(0.1, min(remaining, 5)))
            if job["status"] in FINISHED or remaining <= 0:
                return job


ServiceFactory = Callable[..., contextlib.AbstractAsyncContextManager[Service]]


@pytest.fixture
def jobhook(tmp_path: Path) -> ServiceFactory:
    """`async with jobhook(JOBHOOK_X="…") as svc:` runs the real app under uvicorn on loopback.

    Defaults suit tests: a public URL pointing at itself, short poll intervals and grace.
    """

    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Service]:
        sock = free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        environ = {
            "JOBHOOK_DATABASE": str(tmp_path / "jobhook.db"),
            "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"),
            "JOBHOOK_PUBLIC_URL": url,
            "JOBHOOK_CALLBACK_GRACE": "1",
            "JOBHOOK_POLL_INTERVAL": "0.2",
            "JOBHOOK_POLL_MAX_INTERVAL": "0.5",
            "JOBHOOK_SIMULATOR_LATENCY": "0.2",
            "JOBHOOK_SIMULATOR_CALLBACK_RETRIES": "0,0.3,0.6",
            "JOBHOOK_SIMULATOR_SEED": "7",
            "JOBHOOK_SUBMIT_TIMEOUT": "2",
        }
        environ.update(env)
        environ = {key: value for key, value in environ.items() if value != "<unset>"}
        settings = Settings.from_environ(environ)
        app = create_app(settings, self_url=url)
        async with (
            serve_asgi(app, sock=sock, http=server_protocol()) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
        ):
            yield Service(url, client, settings, app.state.runtime)

    return start


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy (it may be a coroutine function)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
