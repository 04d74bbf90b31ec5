"""The PostgreSQL phase's per-callback figures (issue 17, item 1): round trips, CPU, and SQLite's ingest.

- Round trips: the server runs with `pg_stat_statements` (top-level statements only, BEGIN and COMMIT
  included): every statement a replica sends is one round trip, so the calls counted over the load
  window in the replicas' database, divided by the callbacks answered, are round trips per callback —
  everything included (the job's read, the write, and the background loops' own statements).
- CPU per callback: the replicas' (all their threads) and PostgreSQL's (the postmaster and every
  process it started), from /proc over the load window, divided by the callbacks answered.
- SQLite's ingest in the same run: the same seeded jobs and the same request file against one
  `jobhook serve` on SQLite, just before the replicas, so that the ratio is of one machine's minute.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

SERVER_OPTIONS = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
TARGETS = {
    "pg_replica_cpu_ms": 0.6,  # a replica's CPU per callback
    "pg_server_cpu_ms": 0.3,  # PostgreSQL's CPU per callback
    "pg_to_sqlite": 0.6,  # one replica's ingest ÷ SQLite's
}
TOP = 8  # statements shown by their calls


def enable(url: str) -> None:
    """The extension's view in the replicas' database (the library is loaded by SERVER_OPTIONS)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("SELECT pg_stat_statements_reset()")


def wal(url: str) -> dict[str, float]:
    """The server's WAL so far (pg_stat_wal, the whole cluster): records, full-page images, bytes."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        row = pg.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    return {"records": float(row[0]), "fpi": float(row[1]), "bytes": float(row[2])} if row else {}


def statements(url: str) -> dict[str, Any]:
    """Top-level statements run in this database since the reset: how many, and the most called."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        rows = pg.execute(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel "
            "AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
        ).fetchall()
    return {
        "calls": int(sum(row[0] for row in rows)),
        "exec_ms": round(sum(row[1] for row in rows), 1),
        "top": [{"calls": int(calls), "query": " ".join(query.split())[:90]} for calls, _, query in rows[:TOP]],
    }


def per_callback(
    answered: int, cpu_seconds: dict[str, float], calls: int | None, wal_written: dict[str, float] | None = None
) -> dict[str, Any]:
    """Round trips, CPU milliseconds and WAL per callback answered 2xx (repeats included)."""
    if not answered:
        return {}
    out = {
        "round_trips": round(calls / answered, 2) if calls is not None else None,
        "replica_cpu_ms": round(1000 * cpu_seconds["replicas"] / answered, 3),
        "postgresql_cpu_ms": round(1000 * cpu_seconds["postgresql"] / answered, 3),
    }
    if wal_written:
        out["wal_bytes"] = round(wal_written["bytes"] / answered)
        out["wal_records"] = round(wal_written["records"] / answered, 1)
        out["wal_full_page_images"] = round(wal_written["fpi"] / answered, 2)
    return out


def sqlite_reference(bench: Any, seeded_db: Path, requests: Path) -> dict[str, Any]:
    """The same load against one jobhook on SQLite (a copy of the seeded database), as the callbacks
    phase runs it: req/s and CPU per callback, for the ratio of this run."""
    s = bench.sizes
    db = seeded_db.with_name("postgresql-sqlite-reference.db")
    shutil.copy(seeded_db, db)
    server = bench.jobhook("jobhook-pg-sqlite-reference", db)
    run = bench.load(server, requests, connections=s.callback_connections, seconds=s.callback_seconds)
    bench.stop(server)
    cpu = run["cpu_percent"].get("server")
    answered = run["ok_2xx"]
    return {
        "rps": run["rps"],
        "latency_ms": run["latency_ms"],
        "ok_2xx": answered,
        "cpu_ms_per_callback": round(10 * cpu * run["duration_s"] / answered, 3) if cpu and answered else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's PostgreSQL targets, met or not, from the one-replica run."""
    one = r.get("replicas_1") or {}
    figures = one.get("per_callback") or {}
    if not figures:
        return []
    out = []
    for key, label, wanted in (
        ("replica_cpu_ms", "PostgreSQL: one replica's CPU per callback", "pg_replica_cpu_ms"),
        ("postgresql_cpu_ms", "PostgreSQL: the server's CPU per callback", "pg_server_cpu_ms"),
    ):
        value = figures.get(key)
        out.append(
            {
                "target": label,
                "figure": f"{value:.3f} ms ({figures.get('round_trips')} round trips per callback)",
                "wanted": f"≤ {TARGETS[wanted]:g} ms",
                "met": value is not None and value <= TARGETS[wanted],
            }
        )
    to_sqlite = r.get("one_to_sqlite")
    sqlite = (r.get("sqlite") or {}).get("rps")
    out.append(
        {
            "target": "PostgreSQL: one replica's ingest ÷ SQLite's (same run)",
            "figure": f"{to_sqlite}× ({one.get('rps', 0):,.0f} / {sqlite or 0:,.0f} req/s)",
            "wanted": f"≥ {TARGETS['pg_to_sqlite']}×",
            "met": to_sqlite is not None and to_sqlite >= TARGETS["pg_to_sqlite"],
        }
    )
    return out


def print_figures(r: dict[str, Any]) -> None:
    """Per callback, each run: round trips, CPU of the replicas and of PostgreSQL; the SQLite ratio."""
    sqlite = r.get("sqlite")
    if sqlite:
        print(
            f"  {'SQLite, same load':26} {sqlite['rps']:>9,.0f} req/s  p50 {sqlite['latency_ms']['p50']:.1f} ms  "
            f"p99 {sqlite['latency_ms']['p99']:.1f} ms  CPU {sqlite['cpu_ms_per_callback']} ms per callback"
        )
    print("  per callback (answered 2xx, repeats included), over the load window:")
    for key, label in (
        ("replicas_1", "one replica"),
        ("replicas_3", "three replicas"),
        ("replicas_1_general", "one replica, general path"),
    ):
        run = r.get(key)
        if not run or not run.get("per_callback"):
            continue
        f = run["per_callback"]
        print(
            f"      {label:26} {f['round_trips']} round trips, replica CPU {f['replica_cpu_ms']:.3f} ms "
            f"(target ≤ {TARGETS['pg_replica_cpu_ms']:g}), PostgreSQL CPU {f['postgresql_cpu_ms']:.3f} ms "
            f"(target ≤ {TARGETS['pg_server_cpu_ms']:g})"
        )
        if f.get("wal_bytes") is not None:
            print(
                f"          WAL: {f['wal_bytes']:,} bytes, {f['wal_records']} records, "
                f"{f['wal_full_page_images']} full-page images per callback"
            )
        parts = run.get("postgresql_cpu_ms_by_process") or {}
        if parts:
            print(
                "          PostgreSQL's, by process: "
                + ", ".join(f"{k} {v:.3f}" for k, v in parts.items() if v >= 0.001)
            )
    one = r.get("replicas_1") or {}
    statements_seen = one.get("statements")
    if statements_seen:
        top = ", ".join(f"{s['calls']:,}× {s['query'][:48]}" for s in statements_seen["top"][:4])
        print(f"      one replica's statements: {statements_seen['calls']:,} in all; most called: {top}")
    print(
        f"  one replica ÷ SQLite (same run): {r.get('one_to_sqlite')}× (target ≥ {TARGETS['pg_to_sqlite']}×)"
        + (f"; general path ÷ SQLite: {r['general_to_sqlite']}×" if r.get("general_to_sqlite") else "")
    )
