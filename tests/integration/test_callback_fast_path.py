"""`POST /callbacks/{token}` is answered before the app's middleware and router (service.app.App);
where that fast path stands aside (a root path, as behind a proxy that strips a prefix), the router's
endpoint answers every delivery the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.app import create_app
from service.config import Settings
from service.http import server_protocol
from tests.conftest import Service
from tests.fakes.server import free_socket, serve_asgi
from tests.integration.hostile import callback_path, delivery_body, delivery_headers

ROOT = "/behind-a-proxy"


async def answers(tmp_path: Path, database: str, root_path: str, task_id: str) -> list[tuple[Any, ...]]:
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings.from_environ(
        {
            "JOBHOOK_DATABASE": database,
            "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"),
            "JOBHOOK_PUBLIC_URL": url,
            "JOBHOOK_CALLBACK_GRACE": "600",
            "JOBHOOK_SIMULATOR_SEED": "7",
        }
    )
    app = create_app(settings, self_url=url)
    async with (
        serve_asgi(app, sock=sock, http=server_protocol(), root_path=root_path) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        svc = Service(url, client, settings, app.state.runtime)
        job = await svc.submit(provider="simulator", prompt="a fast path", submit=False)
        path = callback_path(job)
        delivery = {"content": delivery_body(task_id), "headers": delivery_headers(task_id)}
        stale = {"content": delivery_body(task_id), "headers": delivery_headers(task_id, timestamp=1)}
        sent = [
            await client.post(path, **stale),  # refused: 400 stale_timestamp
            await client.post(path, **delivery),  # accepted
            await client.post(path, **delivery),  # duplicate
            await client.post(path, content=b"x" * (256 * 1024 + 1), headers=delivery_headers(task_id)),  # 413
            await client.post(f"/callbacks/{'x' * 40}", json={}),  # a forged token: 404
            await client.post(path + "/more", **delivery),  # not the route: the router's 404
            await client.get(path),  # the route, another method: 405
        ]
        out: list[tuple[Any, ...]] = [
            (r.status_code, r.json(), r.headers["content-type"], r.headers.get("x-content-type-options")) for r in sent
        ]
        final = await svc.job(job["id"])
        out.append((final["status"], final["resolved_by"]))
        metrics = (await client.get("/metrics")).text
        out.append(tuple(line for line in metrics.splitlines() if line.startswith("jobhook_callback_deliveries_total")))
        return out


async def test_the_fast_path_and_the_router_answer_every_delivery_the_same(tmp_path: Path, database: str) -> None:
    # Both on the same database (PostgreSQL) or on a file each (SQLite); a task id each: a task is one job's.
    fast = await answers(tmp_path / "fast", _db(database, tmp_path, "fast"), "", "task-fast")
    routed = await answers(tmp_path / "routed", _db(database, tmp_path, "routed"), ROOT, "task-routed")
    assert [answer[0] for answer in fast[:7]] == [400, 200, 200, 413, 404, 404, 405]
    assert fast[1][1] == {"status": "accepted"} and fast[2][1] == {"status": "duplicate"}
    assert fast[0][1]["error"]["code"] == "stale_timestamp" and fast[3][1]["error"]["code"] == "payload_too_large"
    assert all(answer[2] == "application/json" and answer[3] == "nosniff" for answer in fast[:7])
    assert fast[7] == ("completed", "callback")
    assert routed == fast


def _db(database: str, tmp_path: Path, name: str) -> str:
    return database if "://" in database else str(tmp_path / f"{name}.db")
