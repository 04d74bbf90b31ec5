"""The callback's write path alone, without HTTP: how fast can the store take callbacks?

    .venv/bin/python bench/write_path.py [--jobs 2000] [--postgresql]

Seeds jobs like the bench's callback phase, then calls what the route calls for each callback,
`store.get_job` and `store.record_callback` (the genuine first delivery of `task.completed`), from
1, 16 and 64 concurrent coroutines, with JOBHOOK_SQLITE_SYNCHRONOUS=FULL and NORMAL (NORMAL: no
fsync per commit in WAL mode; a diagnostic, not a setting to run with). It counts the commits the
writer made for them (group commit: writes queued during a commit share the next) and the CPU the
process used per callback. `--postgresql`: the same on PostgreSQL (one transaction per write, on a pool
of ten connections), with the one-round-trip callback (service/store/pg_callback.py) and without it,
with PostgreSQL's own CPU per callback too. Not part of `make bench`.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_phase
import procs
import seed

from service.domain.status import Observation, Status
from service.store.common import Store
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore
from tests.postgres import PostgresServer


async def measure(
    workdir: Path,
    synchronous: str,
    jobs: int,
    concurrency: int,
    postgres: PostgresServer | None = None,
    fast: bool = True,
) -> dict[str, float]:
    """`postgres`: on a database of that server instead (`synchronous` is then only a label); `fast`:
    PostgreSQL's one-round-trip callback (JOBHOOK_POSTGRESQL_FAST_PATH)."""
    db = workdir / f"write-path-{synchronous}-{concurrency}-{fast}.db"
    procs.migrate(db, workdir / "migrate.log")
    seeded = seed.seed_open_jobs(db, jobs, now=time.time(), events=True)
    pg_phase.add_attempts(db)
    store: Store
    if postgres is None:
        store = SQLiteStore(db, synchronous=synchronous)
    else:
        name = f"write_path_{concurrency}_{fast}"
        postgres.admin(f'CREATE DATABASE "{name}"')
        url = postgres.url(name)
        procs.migrate(url, workdir / "migrate.log")
        pg_phase.copy_to_postgresql(db, url)
        store = PostgresStore(url, fast_callbacks=fast)
    await store.open()
    observation = Observation(Status.COMPLETED, images=("https://files.aivideoapi.invalid/x.png",))
    todo = iter(seeded.ids)

    async def worker() -> None:
        for job_id in todo:
            seen = await store.get_job(job_id)
            await store.record_callback(
                job_id, "task.completed", observation, {}, bind_task_id=None, cost_if_completed=0.14, seen=seen
            )

    try:
        server_cpu = pg_phase.postgres_cpu_seconds(postgres.pid) if postgres is not None else 0.0
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if postgres is not None:
            server_cpu = pg_phase.postgres_cpu_seconds(postgres.pid) - server_cpu
        stats = store.write_stats
    finally:
        await store.close()
    return {
        "per_s": jobs / elapsed,
        "ms_each": 1000 * elapsed / jobs,
        "cpu_us": 1e6 * cpu / jobs,
        "group": stats.writes / max(1, stats.commits),
        "server_cpu_us": 1e6 * server_cpu / jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="also on a PostgreSQL server started in a temporary directory (fsync and synchronous_commit on)",
    )
    args = parser.parse_args()
    run: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="jobhook-write-path-") as tmp:
        workdir = Path(tmp)
        for synchronous in ("FULL", "NORMAL"):
            for concurrency in (1, 16, 64):
                r = run(measure(workdir, synchronous, args.jobs, concurrency))
                print(
                    f"synchronous={synchronous:<6} {concurrency:>2} at once: {r['per_s']:6.0f} callbacks/s,"
                    f" {r['ms_each']:.2f} ms each, {r['cpu_us']:.0f} µs of CPU each, {r['group']:.1f} writes per commit"
                )
        if not args.postgresql:
            return
        server = PostgresServer(durable=True)
        server.start()
        try:
            for concurrency in (1, 16, 64):
                for fast in (True, False):
                    r = run(measure(workdir, "PostgreSQL", args.jobs, concurrency, server, fast))
                    print(
                        f"PostgreSQL {'1 round trip' if fast else 'general':<12} {concurrency:>2} at once: "
                        f"{r['per_s']:6.0f} callbacks/s, {r['ms_each']:.2f} ms each, {r['cpu_us']:.0f} µs of "
                        f"jobhook's CPU and {r['server_cpu_us']:.0f} µs of PostgreSQL's each"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
