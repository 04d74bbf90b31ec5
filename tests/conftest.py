"""Fixtures shared by the integration and acceptance tests: the real app on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.http import server_protocol
from service.runtime import Runtime
from tests.fakes.server import free_socket, serve_asgi
from tests.postgres import PostgresServer, missing_reason

FINISHED = ("completed", "failed", "timed_out")
# Every test that asks for `database` (the `jobhook` fixture does) runs once per engine; a test that
# reads or breaks the SQLite file itself is marked `sqlite_only`. JOBHOOK_TEST_ENGINES narrows the set.
ENGINES = tuple(os.environ.get("JOBHOOK_TEST_ENGINES", "sqlite,postgresql").split(","))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        engines = ENGINES
        if metafunc.definition.get_closest_marker("sqlite_only"):
            engines = tuple(engine for engine in ENGINES if engine == "sqlite")
        metafunc.parametrize("database", engines, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, in a temporary directory."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the suite on PostgreSQL too: {reason}")
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[str]:
    """A new PostgreSQL database, for the tests about PostgreSQL alone (not run on both engines)."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """JOBHOOK_DATABASE for this test: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "jobhook.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


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
        """The job's whole history, every page of it."""
        events: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            response = await self.client.get(f"/v1/jobs/{job_id}/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            events.extend(page["events"])
            if page["next_cursor"] is None:
                return events
            params["cursor"] = page["next_cursor"]

    async def wait_finished(self, job_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            job = await self.job(job_id, wait=max(0.1, min(remaining, 5)))
            if job["status"] in FINISHED or remaining <= 0:
                return job


ServiceFactory = Callable[..., contextlib.AbstractAsyncContextManager[Service]]


@pytest.fixture
def jobhook(tmp_path: Path, database: str) -> ServiceFactory:
    """`async with jobhook(JOBHOOK_X="…") as svc:` runs the real app under uvicorn on loopback.

    Defaults suit tests: a public URL pointing at itself, short poll intervals and grace.
    """

    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Service]:
        sock = free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        environ = {
            "JOBHOOK_DATABASE": database,
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
