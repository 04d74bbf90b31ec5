"""The bench's PostgreSQL phase: callback ingest with one and with three replicas on one database.

The same load as the callbacks phase (genuine signed aivideoapi callbacks for existing jobs, a third
duplicates, 64 connections), against jobhook on a PostgreSQL server the bench starts in a temporary
directory with PostgreSQL's own durability defaults (fsync on, synchronous_commit on). With three
replicas the connections and the request file are dealt out to them (three generators at once, each
with its own part, a third repeats each): req/s is the sum, the latency the worst of the three. After each run every replica is killed with SIGKILL and the database
must hold every delivery answered 2xx.

Per callback (bench/pg_roundtrips.py): round trips (pg_stat_statements), CPU of the replicas and of
PostgreSQL, and one replica's ingest against SQLite's with the same load in the same run; with
`--pg-general`, one replica more with every callback through the general transaction (the before).
"""

from __future__ import annotations

import re
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import loadgen
import pg_roundtrips
import procs

sys.path.insert(0, str(procs.REPO))
from tests.postgres import PostgresServer, missing_reason

TABLES = ("jobs", "attempts", "job_events", "due")  # what the seeded SQLite database holds that the run needs


def add_attempts(db: Path) -> None:
    """Each seeded job's one attempt, accepted with its task id, as `POST /v1/jobs` leaves it (the
    seed makes none; a callback that completes a job ends its attempt too)."""
    lite = sqlite3.connect(db)
    try:
        with lite:
            lite.execute(
                "INSERT INTO attempts (job_id, seq, provider, provider_task_id, state, started_at) "
                "SELECT id, 1, provider, provider_task_id, 'accepted', created_at FROM jobs "
                "WHERE NOT EXISTS (SELECT 1 FROM attempts WHERE attempts.job_id = jobs.id)"
            )
    finally:
        lite.close()


def copy_to_postgresql(source: Path, url: str) -> None:
    """The seeded jobs, their events and due rows, into a migrated PostgreSQL database."""
    import psycopg

    lite = sqlite3.connect(source)
    try:
        with psycopg.connect(url) as pg:
            for table in TABLES:
                cursor = lite.execute(f"SELECT * FROM {table}")
                columns = ", ".join(d[0] for d in cursor.description)
                with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in cursor:
                        copy.write_row(row)
            pg.execute("SELECT setval(pg_get_serial_sequence('job_events', 'id'), (SELECT MAX(id) FROM job_events))")
            pg.execute("ANALYZE")
    finally:
        lite.close()


def server_options(bench: Any, options: str = "") -> str:
    """`-c` options for the bench's PostgreSQL server: `options`, and --pg-settings (a diagnostic)."""
    settings = [item.strip() for item in (getattr(bench.args, "pg_settings", "") or "").split(",") if item.strip()]
    for item in settings:
        if not re.fullmatch(r"[a-z_.]+=[A-Za-z0-9_.]+", item):
            raise SystemExit(f"--pg-settings: expected name=value, got {item!r}")
    return " ".join([options, *(f"-c {item}" for item in settings)]).strip()


# MB of WAL written, then recycled, before measuring (see warm_wal).
WARM_WAL_MB = 512


def warm_wal(server: PostgresServer, megabytes: int = WARM_WAL_MB) -> int:
    """Make the new cluster's WAL as a running server's is: segments recycled, not created.

    A new cluster creates each 16 MB WAL segment as it needs it, and writes it full of zeros first
    (`wal_init_zero`): on this disk every commit waited ~80 ms while one was made, every ~10 s at a few
    hundred callbacks a second — the open loop's p99 at a quarter of capacity was that (bench/README.md).
    A server that has been running renames the segments a checkpoint no longer needs into the next
    ones instead. So: write `megabytes` of WAL (a table made and dropped), then CHECKPOINT, which
    recycles them. Returns the segments in pg_wal afterwards."""
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as pg:
        pg.execute("CHECKPOINT")
        pg.execute("CREATE TABLE jobhook_bench_warm_wal (filler TEXT)")
        pg.execute(
            "INSERT INTO jobhook_bench_warm_wal SELECT repeat(md5(n::text), 30) FROM generate_series(1, %s) AS n",
            (megabytes * 1024 * 1024 // 1000,),
        )
        pg.execute("DROP TABLE jobhook_bench_warm_wal")
        pg.execute("CHECKPOINT")
        row = pg.execute("SELECT COUNT(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'").fetchone()
    return int(row[0]) if row else 0


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster and every process it started."""
    return sum(postgres_cpu_by_process(postmaster).values())


def postgres_cpu_by_process(postmaster: int, listeners: frozenset[int] = frozenset()) -> dict[str, float]:
    """CPU seconds of the server by kind of process, from the process titles: "backends" (the
    connections' processes), "listen" (the backends in `listeners`, the replicas' LISTEN connections),
    "postmaster", and PostgreSQL's own ("walwriter", "checkpointer", "autovacuum"…). A process that
    started and ended between two readings is in neither."""
    kinds: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid = int(entry.name)
            stat = (entry / "stat").read_bytes()
            parent = int(stat.rsplit(b")", 1)[1].split()[1])
            if pid != postmaster and parent != postmaster:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pid == postmaster:
                kind = "postmaster"
            elif pid in listeners:
                kind = "listen"
            elif "127.0.0.1(" in title or "[local]" in title:
                kind = "backends"
            else:
                kind = " ".join(title.partition(":")[2].split()[:1]) or "other"
            kinds[kind] = kinds.get(kind, 0.0) + procs.cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return kinds


def listen_backends(url: str) -> frozenset[int]:
    """The server processes of the connections that LISTEN (one per replica)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        rows = pg.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'").fetchall()
    return frozenset(int(pid) for (pid,) in rows)


def check(url: str, answered: int, in_flight: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        # A replica killed with SIGKILL leaves its last statements running in the server (a COMMIT, a
        # callback's function call): they finish, and commit, after the kill. Wait for them, then read
        # in one snapshot, so that the counts below are of one state of the database.
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and pg.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid != pg_backend_pid()"
            ).fetchone()[0]
        ):
            time.sleep(0.05)
    with psycopg.connect(url) as pg:
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        by_outcome = dict(
            pg.execute("SELECT outcome, COUNT(*) FROM job_events WHERE type = 'callback' GROUP BY outcome").fetchall()
        )
        receipts, deliveries = pg.execute("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM callback_receipts").fetchone()
        completed = pg.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'completed' AND resolved_by = 'callback'"
        ).fetchone()[0]
    accepted, duplicate = by_outcome.get("accepted", 0), by_outcome.get("duplicate", 0)
    applied = accepted + duplicate
    return {
        "answered_2xx": answered,
        "in_db_accepted": accepted,
        "in_db_duplicate": duplicate,
        "receipts": receipts,
        "in_flight_at_stop": in_flight,
        "every_2xx_durable": answered <= applied <= answered + in_flight
        and int(deliveries) == applied
        and completed == accepted,
    }


def split_requests(requests: Path, count: int) -> list[Path]:
    """The request file dealt out to `count` generators, one per replica, three lines at a time (two
    first deliveries and a repeat, as workload.callbacks writes them): each part keeps the file's third
    of repeats, and a repeat mostly reaches another replica than its first delivery did, as a
    provider's retries reach any replica behind a load balancer. Three generators replaying one file
    would instead send every callback three times."""
    if count == 1:
        return [requests]
    lines = requests.read_text().splitlines()
    parts: list[list[str]] = [[] for _ in range(count)]
    for start in range(0, len(lines), 3):
        parts[(start // 3) % count].extend(lines[start : start + 3])
    return [
        loadgen.write_requests(requests.with_suffix(f".{n + 1}-of-{count}.txt"), part) for n, part in enumerate(parts)
    ]


def run_replicas(
    bench: Any,
    server: PostgresServer,
    seeded_db: Path,
    requests: Path,
    count: int,
    settings: dict[str, str] | None = None,
    label: str = "",
) -> dict[str, Any]:
    s = bench.sizes
    name = f"replicas{count}{label}"
    server.admin(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    procs.migrate(url, bench.workdir / "migrate.log")
    copy_to_postgresql(seeded_db, url)
    segments = warm_wal(server)  # after the copy's own WAL: segments recycled for the run
    pg_roundtrips.enable(url)
    replicas = [bench.jobhook(f"jobhook-pg{count}{label}-{n}", url, extra=settings) for n in range(count)]
    shares = [s.callback_connections // count + (1 if n < s.callback_connections % count else 0) for n in range(count)]
    files = split_requests(requests, count)
    results: list[dict[str, Any]] = [{} for _ in replicas]
    generators: list[int] = []

    def load(n: int) -> None:
        results[n] = loadgen.run(
            bench.generator,
            replicas[n].url,
            files[n],
            connections=shares[n],
            duration=s.callback_seconds,
            threads=1,
            on_start=lambda popen: generators.append(popen.pid),
        )

    listeners = listen_backends(url)
    by_process = postgres_cpu_by_process(server.pid, listeners)
    cpu_before = {
        "replicas": sum(r.cpu() for r in replicas),
        "postgresql": sum(by_process.values()),
        "machine": procs.machine_busy_seconds(),
    }
    profiler = bench.start_profiler(replicas[0]) if count == 1 else None  # --profile: the lone replica
    pg_roundtrips.reset(url)
    wal_before = pg_roundtrips.wal(url)
    started = time.monotonic()
    threads = [threading.Thread(target=load, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    by_process_after = postgres_cpu_by_process(server.pid, listeners)
    cpu = {
        "replicas": sum(r.cpu() for r in replicas) - cpu_before["replicas"],
        "postgresql": sum(by_process_after.values()) - cpu_before["postgresql"],
        "machine": procs.machine_busy_seconds() - cpu_before["machine"],
    }
    postgresql_by_process = {
        kind: seconds - by_process.get(kind, 0.0) for kind, seconds in sorted(by_process_after.items())
    }
    statements = pg_roundtrips.statements(url)
    wal_after = pg_roundtrips.wal(url)
    wal_written = {key: wal_after[key] - wal_before[key] for key in wal_after}
    profiled: dict[str, Any] = {}
    bench.finish_profiler(profiler, profiled)
    for replica in replicas:
        bench.stop(replica, kill=True)
    answered = sum(r["ok_2xx"] for r in results)
    in_flight = sum(max(0, r["sent"] - r["requests"]) for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    out = {
        "replicas": count,
        "connections": shares,
        "wal_segments_ready": segments,
        "rps": round(sum(r["rps"] for r in results), 1),
        "latency_ms": {
            key: max(r["latency_ms"][key] for r in results) for key in ("p50", "p99")
        },  # the worst replica's
        "statuses": statuses,
        "errors": [r["errors"] for r in results],
        "cpu_percent": {key: round(100 * value / seconds, 1) for key, value in cpu.items()},
        "durability": check(url, answered, in_flight),
        "statements": statements,
        "per_callback": pg_roundtrips.per_callback(answered, cpu, statements["calls"], wal_written),
        # PostgreSQL's CPU per callback answered, ms, by kind of process
        "postgresql_cpu_ms_by_process": {
            kind: round(1000 * seconds / answered, 3) for kind, seconds in postgresql_by_process.items() if answered
        },
        **profiled,
    }
    server.admin(f'DROP DATABASE "{name}" WITH (FORCE)')
    return out


def phase(bench: Any) -> dict[str, Any]:
    reason = missing_reason()
    if reason is not None:
        return {"skipped": reason}
    s = bench.sizes
    db, requests, _ = bench.callback_load("postgresql")
    add_attempts(db)
    out: dict[str, Any] = {"connections": s.callback_connections, "seconds": s.callback_seconds}
    bench.step("postgresql: the bare app")
    bare = bench.bare("bare-pg")
    out["bare"] = bench.load(bare, requests, connections=s.callback_connections, seconds=s.callback_seconds)
    bench.stop(bare)
    bench.step("postgresql: SQLite with the same load (the reference of this run)")
    out["sqlite"] = pg_roundtrips.sqlite_reference(bench, db, requests)
    server = PostgresServer(durable=True, options=server_options(bench, pg_roundtrips.SERVER_OPTIONS))
    server.start()
    try:
        out["postgresql"] = _version(server)
        out["settings"] = (
            getattr(bench.args, "pg_settings", "") or "PostgreSQL's defaults, fsync and synchronous_commit on"
        )
        for count in (1, 3):
            bench.step(f"postgresql: {count} replica{'s' if count > 1 else ''} on one database")
            out[f"replicas_{count}"] = run_replicas(bench, server, db, requests, count)
            out[f"replicas_{count}"]["ratio"] = _ratio(out[f"replicas_{count}"]["rps"], out["bare"]["rps"])
            if count == 1 and getattr(bench.args, "pg_general", False):
                # Next to the one-replica run (the requests' X-Timestamp ages: 300 s is the tolerance).
                bench.step("postgresql: 1 replica, every callback through the general transaction")
                general = {"JOBHOOK_POSTGRESQL_FAST_PATH": "false"}
                out["replicas_1_general"] = run_replicas(bench, server, db, requests, 1, general, "general")
                out["replicas_1_general"]["ratio"] = _ratio(out["replicas_1_general"]["rps"], out["bare"]["rps"])
                out["general_to_sqlite"] = _ratio(out["replicas_1_general"]["rps"], out["sqlite"]["rps"])
    finally:
        server.stop()
    out["three_to_one"] = _ratio(out["replicas_3"]["rps"], out["replicas_1"]["rps"])
    out["one_to_sqlite"] = _ratio(out["replicas_1"]["rps"], out["sqlite"]["rps"])
    return out


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [] if "skipped" in r else pg_roundtrips.verdicts(r)


def _version(server: PostgresServer) -> str:
    import psycopg

    with psycopg.connect(server.url()) as pg:
        return str(pg.execute("SHOW server_version").fetchone()[0])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def print_phase(r: dict[str, Any]) -> None:
    print("\nPostgreSQL: callback ingest, one and three replicas on one database (fsync and synchronous_commit on)")
    if "skipped" in r:
        print(f"  NOTE: skipped: {r['skipped']}")
        return
    bare = r["bare"]
    print(f"  PostgreSQL {r['postgresql']}; {r['connections']} connections, {r['seconds']} s per run")
    ready = [r[key]["wal_segments_ready"] for key in ("replicas_1", "replicas_3") if key in r]
    print(f"  server settings: {r.get('settings')}; WAL segments ready (recycled) before each run: {ready}")
    print(
        f"  {'bare app':26} {bare['rps']:>9,.0f} req/s  p50 {bare['latency_ms']['p50']:.1f} ms  p99 {bare['latency_ms']['p99']:.1f} ms"
    )
    for key in ("replicas_1", "replicas_3", "replicas_1_general"):
        if key not in r:
            continue
        run = r[key]
        count = run["replicas"]
        cpu = run["cpu_percent"]
        title = f"jobhook × {count}" + (", general" if key.endswith("general") else "")
        non_2xx = {code: n for code, n in run["statuses"].items() if not code.startswith("2")}
        print(
            f"  {title:26} {run['rps']:>9,.0f} req/s  p50 {run['latency_ms']['p50']:.1f} ms  "
            f"p99 {run['latency_ms']['p99']:.1f} ms  ratio {run['ratio']}×  CPU: jobhook {cpu['replicas']:.0f} %, "
            f"PostgreSQL {cpu['postgresql']:.0f} %, machine {cpu['machine']:.0f} %"
        )
        durable = run["durability"]
        print(
            f"      every 2xx durable after SIGKILL: {'yes' if durable['every_2xx_durable'] else 'NO'} "
            f"({durable['answered_2xx']:,} answered 2xx, {durable['in_db_accepted']:,} accepted + "
            f"{durable['in_db_duplicate']:,} duplicate in the database); non-2xx answers: {non_2xx or 'none'}"
        )
    print(f"  three replicas / one: {r['three_to_one']}× (latency: the worst replica's)")
    pg_roundtrips.print_figures(r)
