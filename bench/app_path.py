"""The callback's path through jobhook's ASGI app alone (no sockets, no uvicorn): CPU per callback.

    .venv/bin/python bench/app_path.py [--callbacks 30000] [--concurrency 64] [--rounds 3]

A diagnostic, not part of `make bench`: on a machine busy with other work, the HTTP bench's figures
move with everything else (a server that gets less of a core takes smaller groups per commit, and
spends more per callback); this one drives the bench's callbacks (workload.callbacks: genuine, signed,
a third repeats) straight into the app, `concurrency` at a time, on SQLite with synchronous=FULL, and
reads the process's CPU time (every thread: the event loop and the writer's COMMITs) per callback,
and the event loop's thread alone. It leaves out uvicorn's HTTP parsing and writing (the same for
every version of jobhook), so it suits comparing two versions of the app: run it with PYTHONPATH
pointing at each tree in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
import seed
import workload

from service.app import create_app
from service.config import Settings


def scopes(path: Path) -> list[tuple[dict[str, Any], bytes]]:
    """The request file's requests as ASGI scopes and bodies."""
    out = []
    for line in path.read_text().splitlines():
        method, target, body, *headers = line.split("\t")
        raw = [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
        for header in headers:
            name, _, value = header.partition(": ")
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": target,
            "raw_path": target.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        out.append((scope, body.encode()))
    return out


async def drive(db: Path, requests: list[tuple[dict[str, Any], bytes]], concurrency: int) -> dict[str, float]:
    settings = Settings.from_environ(
        {
            "JOBHOOK_DATABASE": str(db),
            "JOBHOOK_MEDIA_DIR": str(db.parent / "media"),
            "JOBHOOK_PUBLIC_URL": "http://127.0.0.1:8000",
            "JOBHOOK_SECRET": workload.SECRET,
            "JOBHOOK_API_TOKENS": workload.API_TOKEN,
            "JOBHOOK_AIVIDEOAPI_API_KEY": workload.API_KEY,
            "JOBHOOK_AIVIDEOAPI_BASE_URL": f"http://{procs.HOST}:9",
            "JOBHOOK_SIMULATOR": "false",
            "JOBHOOK_MIRROR_IMAGES": "false",
            "JOBHOOK_SQLITE_SYNCHRONOUS": "FULL",
        }
    )
    app = create_app(settings, self_url="http://127.0.0.1:8000")
    statuses: dict[int, int] = {}
    todo = iter(requests)

    async def one(scope: dict[str, Any], body: bytes) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(dict(scope), receive, send)

    async def worker() -> None:
        for scope, body in todo:
            await one(scope, body)

    async with app.router.lifespan_context(app):
        cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, loop_cpu, wall = time.process_time() - cpu, time.thread_time() - loop_cpu, time.perf_counter() - wall
    n = len(requests)
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected answers: {statuses}")
    return {"per_s": n / wall, "cpu_us": 1e6 * cpu / n, "loop_cpu_us": 1e6 * loop_cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import uvloop

    results = []
    with tempfile.TemporaryDirectory(prefix="jobhook-app-path-") as tmp:
        work = Path(tmp)
        for n in range(args.rounds):
            db = work / f"app-path-{n}.db"
            procs.migrate(db, work / "migrate.log")
            seeded = seed.seed_open_jobs(db, args.callbacks - args.callbacks // 3, now=time.time())
            request_file = work / f"callbacks-{n}.txt"
            workload.callbacks(request_file, seeded.ids, seeded.task_ids, args.callbacks)
            result = uvloop.run(drive(db, scopes(request_file), args.concurrency))
            results.append(result)
            print(
                f"round {n}: {result['per_s']:,.0f} callbacks/s, CPU per callback {result['cpu_us']:.1f} µs"
                f" (the event loop's thread {result['loop_cpu_us']:.1f} µs)",
                flush=True,
            )
    print(
        f"median CPU per callback {statistics.median(r['cpu_us'] for r in results):.1f} µs, the event loop's"
        f" {statistics.median(r['loop_cpu_us'] for r in results):.1f} µs ({args.callbacks:,} callbacks,"
        f" {args.concurrency} at a time, {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
