"""The callback's write path alone, without HTTP: how fast can the store take callbacks?

    .venv/bin/python bench/write_path.py [--jobs 2000]

Seeds jobs like the bench's callback phase, then calls what the route calls for each callback,
`store.get_job` and `store.record_callback` (the genuine first delivery of `task.completed`), from
1 and from 16 concurrent coroutines, with JOBHOOK_SQLITE_SYNCHRONOUS=FULL and NORMAL (NORMAL: no
fsync per commit in WAL mode; a diagnostic, not a setting to run with). It counts the aiosqlite round
trips (each statement goes to aiosqlite's thread and its result comes back through the event loop)
and times a bare round trip (`SELECT 1`). Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
import seed

from service.domain.status import Observation, Status
from service.store.sqlite import SQLiteStore


async def measure(workdir: Path, synchronous: str, jobs: int, concurrency: int) -> dict[str, float]:
    db = workdir / f"write-path-{synchronous}-{concurrency}.db"
    procs.migrate(db, workdir / "migrate.log")
    seeded = seed.seed_open_jobs(db, jobs, now=time.time(), events=True)
    store = SQLiteStore(db, synchronous=synchronous)
    await store.open()
    hops = 0
    original = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
    observation = Observation(Status.COMPLETED, images=("https://files.aivideoapi.invalid/x.png",))
    todo = iter(seeded.ids)

    async def worker() -> None:
        for job_id in todo:
            await store.get_job(job_id)
            await store.record_callback(
                job_id, "task.completed", observation, {}, bind_task_id=None, cost_if_completed=0.14
            )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]
        await store.close()
    return {"per_s": jobs / elapsed, "hops": hops / jobs, "ms_each": 1000 * elapsed / jobs}


async def round_trip(workdir: Path, count: int = 5000) -> float:
    async with aiosqlite.connect(workdir / "hop.db") as db:
        started = time.perf_counter()
        for _ in range(count):
            await db.execute("SELECT 1")
        return 1e6 * (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    run: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="jobhook-write-path-") as tmp:
        workdir = Path(tmp)
        print(f"one aiosqlite round trip (SELECT 1, nothing else running): {run(round_trip(workdir)):.0f} µs")
        for synchronous in ("FULL", "NORMAL"):
            for concurrency in (1, 16):
                r = run(measure(workdir, synchronous, args.jobs, concurrency))
                print(
                    f"synchronous={synchronous:<6} {concurrency:>2} at once: {r['per_s']:6.0f} callbacks/s,"
                    f" {r['ms_each']:.2f} ms each, {r['hops']:.0f} aiosqlite round trips per callback"
                )


if __name__ == "__main__":
    main()
