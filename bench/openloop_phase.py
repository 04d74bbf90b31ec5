"""The bench's open-loop phase: latency at a fixed arrival rate, at 25 %, 50 % and 80 % of capacity.

For each of three loads — callbacks on SQLite, `GET /v1/jobs/{id}` on SQLite, callbacks on one
PostgreSQL replica — jobhook's own capacity is measured first with the closed loop of the other phases
(64 connections for callbacks, 16 for GET, as the callbacks and api phases measure them), then
`openloop.py` sends requests at a constant rate of 25 %, 50 % and 80 % of it, each on a fresh part of
the request file (a first delivery stays a first delivery: nothing is replayed), with the latency
counted from each request's due time (see openloop.py: a stall is not hidden). Targets at 50 %: callback
p99 ≤ 10 ms on SQLite, ≤ 25 ms on PostgreSQL, GET p99 ≤ 5 ms.

The callbacks are the bench's usual mix (workload.callbacks: two thirds first deliveries of distinct
jobs, a third repeats), signed just before each run (X-Timestamp must be within 300 s). GETs are of
random jobs of the same database (the jobs the callbacks are for, and the callbacks phase's size).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import openloop
import pg_phase
import procs
import seed
import workload
from procs import CPUSampler, Proc

FRACTIONS = (0.25, 0.5, 0.8)
TARGETS_P99_MS = {"sqlite_callbacks": 10.0, "postgresql_callbacks": 25.0, "sqlite_get": 5.0}
TARGET_FRACTION = 0.5  # the targets are judged at this share of capacity
LABELS = {
    "sqlite_callbacks": "callbacks, SQLite",
    "sqlite_get": "GET /v1/jobs/{id}, SQLite",
    "postgresql_callbacks": "callbacks, PostgreSQL (one replica)",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    capacity_seconds: int = 8  # the closed-loop run that measures capacity
    seconds: float = 10.0  # of arrivals per open-loop run (the first `warmup` not counted)
    warmup: float = 1.0
    sqlite_jobs: int = 200_000  # enough first deliveries for the capacity run and the three rates
    postgresql_jobs: int = 40_000
    # Requests per second of capacity run written for the closed loop (past them it replays the file).
    sqlite_capacity_lines_per_s: int = 12_000
    postgresql_capacity_lines_per_s: int = 3_000
    get_lines: int = 150_000


FULL = Sizes()
QUICK = Sizes(capacity_seconds=3, seconds=4.0, warmup=0.5, sqlite_jobs=80_000, postgresql_jobs=15_000, get_lines=60_000)


class Jobs:
    """The seeded jobs, dealt out to the runs in order so that no two runs deliver for the same job."""

    def __init__(self, seeded: seed.Seeded) -> None:
        self.ids, self.task_ids = seeded.ids, seeded.task_ids
        self.next = 0

    def callbacks(self, path: Path, lines: int) -> Path:
        firsts = lines - lines // 3
        if self.next + firsts > len(self.ids):
            # More than were seeded: a shorter file (the generator stops at its end; the run says how
            # many it sent), never a first delivery sent twice.
            firsts = len(self.ids) - self.next
            lines = firsts + firsts // 2
            if firsts <= 0:
                raise RuntimeError("the open-loop phase ran out of seeded jobs")
        part = slice(self.next, self.next + firsts)
        workload.callbacks(path, self.ids[part], self.task_ids[part], lines, min_gap=min(128, lines // 8))
        self.next += firsts
        return path


def phase(bench: Any) -> dict[str, Any]:
    sizes = QUICK if bench.args.quick else FULL
    out: dict[str, Any] = {
        "fractions": list(FRACTIONS),
        "seconds": sizes.seconds,
        "warmup_s": sizes.warmup,
        "capacity_seconds": sizes.capacity_seconds,
        "targets_p99_ms": TARGETS_P99_MS,
        "target_fraction": TARGET_FRACTION,
    }
    bench.step(f"openloop: seeding {sizes.sqlite_jobs:,} submitted aivideoapi jobs (SQLite)")
    db = bench.new_db("openloop")
    seeded = seed.seed_open_jobs(db, sizes.sqlite_jobs, now=time.time())
    jobs = Jobs(seeded)
    server = bench.jobhook("jobhook-openloop", db)
    try:
        out["sqlite_callbacks"] = measure(
            bench, server, "sqlite_callbacks", jobs.callbacks, 64, sizes, sizes.sqlite_capacity_lines_per_s
        )
        get_file = bench.workdir / "openloop-gets.txt"
        workload.gets(get_file, seeded.ids, sizes.get_lines)
        out["sqlite_get"] = measure(bench, server, "sqlite_get", lambda p, n: get_file, 16, sizes, 0)
    finally:
        bench.stop(server)
    out["postgresql_callbacks"] = postgresql(bench, sizes)
    return out


def postgresql(bench: Any, sizes: Sizes) -> dict[str, Any]:
    reason = pg_phase.missing_reason()
    if reason is not None:
        return {"skipped": reason}
    bench.step(
        f"openloop: seeding {sizes.postgresql_jobs:,} jobs, then PostgreSQL (durable: fsync, synchronous_commit)"
    )
    source = bench.new_db("openloop-pg-seed")
    jobs = Jobs(seed.seed_open_jobs(source, sizes.postgresql_jobs, now=time.time()))
    server = pg_phase.PostgresServer(durable=True, options=pg_phase.server_options(bench))
    server.start()
    try:
        server.admin('CREATE DATABASE "openloop"')
        url = server.url("openloop")
        procs.migrate(url, bench.workdir / "migrate.log")
        pg_phase.copy_to_postgresql(source, url)
        segments = pg_phase.warm_wal(server)  # after the copy's own WAL: segments recycled for the runs
        replica = bench.jobhook("jobhook-openloop-pg", url)
        try:
            return {"wal_segments_ready": segments} | measure(
                bench,
                replica,
                "postgresql_callbacks",
                jobs.callbacks,
                64,
                sizes,
                sizes.postgresql_capacity_lines_per_s,
                watch_postgresql=server.pid,
            )
        finally:
            bench.stop(replica)
    finally:
        server.stop()


def measure(
    bench: Any,
    server: Proc,
    name: str,
    requests: Any,
    connections: int,
    sizes: Sizes,
    capacity_lines_per_s: int,
    *,
    watch_postgresql: int | None = None,
) -> dict[str, Any]:
    """Capacity (closed loop), then the open-loop runs at each fraction of it. `requests(path, lines)`
    writes (or returns) a request file of `lines` requests (fewer only when the seeded jobs run out)."""
    label = LABELS[name]
    bench.step(f"openloop: {label}: capacity, {connections} connections, {sizes.capacity_seconds} s (closed loop)")
    # The closed loop may send more than this many; the file is then replayed (extra duplicates for the
    # callbacks: capacity is then, if anything, overstated, and so are the rates below).
    capacity_file = requests(bench.workdir / f"{name}-capacity.txt", capacity_lines_per_s * sizes.capacity_seconds)
    capacity = bench.load(server, capacity_file, connections=connections, seconds=sizes.capacity_seconds)
    out: dict[str, Any] = {"capacity": capacity, "connections": connections, "runs": {}}
    rps = capacity["rps"]
    for fraction in FRACTIONS:
        rate = max(1.0, round(rps * fraction))
        lines = int(rate * sizes.seconds) + 1
        bench.step(f"openloop: {label}: {fraction:.0%} of capacity = {rate:,.0f} req/s for {sizes.seconds:g} s")
        path = requests(bench.workdir / f"{name}-{int(fraction * 100)}.txt", lines)
        out["runs"][f"{int(fraction * 100)}"] = run_one(bench, server, path, rate, sizes, watch_postgresql)
    return out


def run_one(
    bench: Any, server: Proc, path: Path, rate: float, sizes: Sizes, watch_postgresql: int | None
) -> dict[str, Any]:
    with CPUSampler({"server": server.pid}) as sampler:
        pg_before = pg_phase.postgres_cpu_seconds(watch_postgresql) if watch_postgresql else None
        t0 = time.monotonic()
        result = openloop.run(
            server.url,
            path,
            rate=rate,
            duration=sizes.seconds,
            warmup=sizes.warmup,
            on_start=lambda popen: sampler.add("generator", popen.pid),
        )
        pg_after = pg_phase.postgres_cpu_seconds(watch_postgresql) if watch_postgresql else None
    end = result.pop("ended_at")
    start = max(t0, end - sizes.seconds - 1.0)
    cpu = {key: sampler.percent(key, start, end) for key in ("server", "generator", "machine")}
    if pg_before is not None and pg_after is not None:
        cpu["postgresql"] = 100.0 * (pg_after - pg_before) / max(1e-9, end - t0)
    if cpu["machine"] is not None:  # everything else on the machine meanwhile
        ours = (cpu["server"] or 0.0) + (cpu["generator"] or 0.0) + (cpu.get("postgresql") or 0.0)
        cpu["others"] = max(0.0, cpu["machine"] - ours)
    result["cpu_percent"] = {key: None if value is None else round(value, 1) for key, value in cpu.items()}
    server_cpu = cpu["server"]
    result["server_cpu_us_per_request"] = (
        round(10_000 * server_cpu / result["achieved_rate"], 1) if server_cpu and result["achieved_rate"] else None
    )
    return result


# -- printing and verdicts ---------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_phase(r: dict[str, Any]) -> None:
    print(
        f"\nopen loop — latency at a fixed arrival rate ({', '.join(f'{f:.0%}' for f in r['fractions'])} of jobhook's"
        f" capacity measured just before, closed loop, {r['capacity_seconds']} s); {r['seconds']:g} s of arrivals per"
        f" rate, the first {r['warmup_s']:g} s not counted; latency from each request's due time"
    )
    print(
        f"  {'':<38}{'rate/s':>8}{'reached':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}"
        f"{'non-2xx':>8}{'gen lag p99':>12}{'CPU µs/req':>11}"
    )
    for name, label in LABELS.items():
        result = r.get(name) or {}
        if "skipped" in result:
            print(f"  {label:<38}skipped: {result['skipped']}")
            continue
        if not result:
            continue
        cap = result["capacity"]
        print(
            f"  {label + ': capacity':<38}{_fmt(cap['rps'], 0):>8}{'':>9}{_fmt(cap['latency_ms']['p50']):>9}"
            f"{_fmt(cap['latency_ms']['p99']):>9}{'':>10}{_fmt(cap['latency_ms']['max'], 1):>9}"
            f"{cap['requests'] - cap['ok_2xx']:>8}   (closed loop, {result['connections']} connections)"
        )
        for key, run in result["runs"].items():
            lat = run["latency_ms"]
            non_2xx = run["measured"] - run["ok_2xx"]
            print(
                f"  {f'  at {key} %':<38}{_fmt(run['rate'], 0):>8}{_fmt(run['achieved_rate'], 0):>9}{_fmt(lat['p50']):>9}"
                f"{_fmt(lat['p99']):>9}{_fmt(lat['p999']):>10}{_fmt(lat['max'], 1):>9}{non_2xx:>8}"
                f"{_fmt(run['generator_lag_ms']['p99']):>12}{_fmt(run['server_cpu_us_per_request'], 0):>11}"
            )
    print(
        "  (gen lag: how late the generator itself sent, included in the latencies; CPU: the jobhook process,"
        " all threads, per request answered)"
    )


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, figure, wanted, met) for each p99 target at TARGET_FRACTION of capacity."""
    out = []
    key = str(int(TARGET_FRACTION * 100))
    for name, target in TARGETS_P99_MS.items():
        result = r.get(name) or {}
        what = f"{LABELS[name]} p99 at {key} % of capacity (open loop)"
        if "skipped" in result or key not in result.get("runs", {}):
            out.append((what, "skipped", f"≤ {target:g} ms", None))
            continue
        run = result["runs"][key]
        p99 = run["latency_ms"]["p99"]
        all_ok = run["ok_2xx"] == run["measured"]
        figure = f"{_fmt(p99)} ms at {_fmt(run['rate'], 0)} req/s (capacity {_fmt(result['capacity']['rps'], 0)})"
        if not all_ok:
            figure += f", {run['measured'] - run['ok_2xx']} non-2xx"
        out.append((what, figure, f"≤ {target:g} ms", p99 is not None and p99 <= target and all_ok))
    return out
