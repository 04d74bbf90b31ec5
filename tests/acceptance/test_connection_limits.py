"""`jobhook serve` bounds what connections can hold (issue 14, item 3): a request head's time, idle
kept-alive connections, the number of connections, `?wait=` waiters. Against the real process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.acceptance.harness import ServeProcess
from tests.rawhttp import RawConnection, RawResponse, request_bytes

# Generous "did not hang" bound for an answer the issue wants within 2 s on a quiet machine.
ANSWERS_WITHIN = 10.0
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *, graceful: bool = True, **env: str) -> AsyncIterator[ServeProcess]:
    """`graceful=False`: SIGKILL at the end, not to wait out the held `?wait=` requests at shutdown."""
    service = ServeProcess(tmp_path, {"JOBHOOK_SIMULATOR_LATENCY": "0.2", **env})
    await service.start()
    try:
        yield service
    finally:
        service.stop() if graceful else service.kill()
        assert "Traceback" not in service.log()


def assert_refusal(answer: RawResponse | None, status: int, code: str) -> None:
    assert answer is not None and answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"].isdigit()
    error = answer.json()["error"]
    assert error["code"] == code and error["message"], error


async def open_slow(port: int) -> RawConnection:
    connection = await RawConnection.open(port)
    await connection.send(SLOW_HEAD)
    return connection


async def callback_accepted(client: httpx.AsyncClient) -> None:
    """A simulator job completes through its callback (polled without ?wait=, whose holders may be full)."""
    job = (await client.post("/v1/jobs", json={"provider": "simulator", "prompt": "under siege"})).json()
    deadline = time.monotonic() + 20
    while (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] != "completed":
        assert time.monotonic() < deadline, "the job did not complete"
        await asyncio.sleep(0.1)
    events = (await client.get(f"/v1/jobs/{job['id']}/events")).json()["events"]
    assert {"type": "callback", "outcome": "accepted"}.items() <= next(
        event for event in events if event["type"] == "callback"
    ).items()


async def test_slow_heads_and_a_crowd_of_waiters_leave_health_and_callbacks_answered(tmp_path: Path) -> None:
    """1,500 never-finished heads and 2,000 `?wait=` requests, against caps lowered to 1,000 connections
    and 100 waiters: the connections past the cap close the slow ones, the waiters past theirs get a 503,
    and /healthz and a provider's callback are answered."""
    async with serving(
        tmp_path,
        graceful=False,
        JOBHOOK_MAX_CONNECTIONS="1000",
        JOBHOOK_MAX_WAITERS="100",
        JOBHOOK_HEAD_TIMEOUT="120",
    ) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            waited = await client.post("/v1/jobs", json={"provider": "simulator", "prompt": "x", "submit": False})
            job_id = waited.json()["id"]
        slow = [await open_slow(service.port) for _ in range(1500)]
        waiters = []
        for _ in range(2000):
            connection = await RawConnection.open(service.port)
            await connection.send(request_bytes("GET", f"/v1/jobs/{job_id}?wait=60"))
            waiters.append(connection)

        answers = await asyncio.gather(*(_answer_or_none(waiter, 3) for waiter in waiters))
        refused = [answer for answer in answers if isinstance(answer, RawResponse)]
        held = [waiter for waiter, answer in zip(waiters, answers, strict=True) if answer == "held"]
        for answer in refused:
            assert_refusal(answer, 503, "too_many_waiters")
        assert len(held) <= 100
        assert len(refused) >= 1500  # 2,000 asked, at most 100 held, a few closed for room unanswered
        closed = await asyncio.gather(*(connection.closed_by_server(0.2) for connection in slow))
        assert sum(closed) >= 1500 + 2000 - 1000 - len(refused) - 100  # the server kept to its cap

        async with httpx.AsyncClient(base_url=service.url, timeout=ANSWERS_WITHIN) as client:
            start = time.monotonic()
            health = await client.get("/healthz")
            assert health.status_code == 200 and time.monotonic() - start < ANSWERS_WITHIN
            await callback_accepted(client)
        for connection in (*waiters, *slow):
            await connection.close()


async def _answer_or_none(connection: RawConnection, timeout: float) -> RawResponse | str | None:
    """The answer, "held" when none came within `timeout` on an open connection, None when closed."""
    try:
        return await connection.response(timeout)
    except TimeoutError:
        return "held"
    except ConnectionError:
        return None


async def test_a_head_must_arrive_in_time_and_an_idle_connection_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, JOBHOOK_HEAD_TIMEOUT="1") as service:
        async with await RawConnection.open(service.port) as started:  # part of a head, then nothing
            await started.send(SLOW_HEAD)
            answer = await started.response(ANSWERS_WITHIN)
            assert answer is not None and answer.status == 408, answer
            assert answer.json()["error"]["code"] == "request_timeout"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert await started.closed_by_server(ANSWERS_WITHIN)
        async with await RawConnection.open(service.port) as silent:  # nothing at all: closed, unanswered
            assert await silent.response(ANSWERS_WITHIN) is None
        async with await RawConnection.open(service.port) as slow_but_in_time:
            raw = request_bytes("GET", "/healthz")
            await slow_but_in_time.send(raw[:10])
            await asyncio.sleep(0.3)
            await slow_but_in_time.send(raw[10:])
            answer = await slow_but_in_time.response(ANSWERS_WITHIN)
            assert answer is not None and answer.status == 200, answer
            # Kept alive, then idle: closed by the server (uvicorn's timeout_keep_alive, 5 s).
            assert await slow_but_in_time.closed_by_server(15)


async def test_past_the_cap_with_every_connection_busy_a_new_one_gets_503_and_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, graceful=False, JOBHOOK_MAX_CONNECTIONS="16") as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            waited = await client.post("/v1/jobs", json={"provider": "simulator", "prompt": "x", "submit": False})
        busy = []
        for _ in range(16):
            connection = await RawConnection.open(service.port)
            await connection.send(request_bytes("GET", f"/v1/jobs/{waited.json()['id']}?wait=60"))
            busy.append(connection)
        await asyncio.sleep(0.5)  # every one of them is now waiting, none waits for a head
        async with await RawConnection.open(service.port) as refused:
            await refused.send(request_bytes("GET", "/healthz"))
            assert_refusal(await refused.response(ANSWERS_WITHIN), 503, "too_many_connections")
            assert await refused.closed_by_server(ANSWERS_WITHIN)
        for connection in busy:
            await connection.close()
        async with httpx.AsyncClient(base_url=service.url, timeout=ANSWERS_WITHIN) as client:
            deadline = time.monotonic() + ANSWERS_WITHIN
            while True:  # the closed waiters leave as the server notices them gone
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "/healthz never came back"
                await asyncio.sleep(0.1)
