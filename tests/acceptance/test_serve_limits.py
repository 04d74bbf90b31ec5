"""`jobhook serve` itself (not the test fixture) bounds a request's head: a clean 431, never a 200."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.harness import ServeProcess
from tests.rawhttp import RawConnection, request_bytes


async def test_serve_refuses_a_huge_head_and_keeps_serving(tmp_path: Path) -> None:
    service = ServeProcess(tmp_path, {})
    await service.start()
    try:
        for raw in (
            request_bytes("GET", "/healthz", [("X-Pad", "a" * (1024 * 1024))]),
            request_bytes("GET", "/healthz", [(f"X-H{n}", "v") for n in range(20_000)]),
        ):
            async with await RawConnection.open(service.port) as connection:
                await connection.send(raw)
                answer = await connection.response()
                assert answer is None or answer.status == 431, answer
                assert await connection.closed_by_server()
        async with await RawConnection.open(service.port) as connection:
            await connection.send(request_bytes("GET", "/readyz", [("X-Pad", "a" * 16384)]))
            answer = await connection.response()
            assert answer is not None and answer.status == 200, answer
    finally:
        service.stop()
    assert "Traceback" not in service.log()
