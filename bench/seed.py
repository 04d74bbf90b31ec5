"""Seeding a jobhook database fast, straight through sqlite3, into a schema made by `jobhook migrate`.

Bulk inserts go in large transactions with `PRAGMA synchronous=OFF` on the seeding connection only
(the service itself then runs with FULL). The triggers stay on, so `job_counts` is kept exactly as the
service keeps it; `check_counts` compares it with a GROUP BY afterwards. Ids are ULID-shaped
(`job_` + 26 Crockford base-32 digits) in time order, as `service.ids.new_job_id()` makes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BATCH = 50_000
FAR = 30 * 86400.0  # "far away": a month from now

PROMPTS = (
    'A poster reading "SUMMER NIGHTS" in neon letters',
    'A coffee shop sign that says "OPEN LATE", hand-lettered',
    'Book cover, the title "THE QUIET HARBOUR" in serif capitals',
    'A birthday card reading "HAPPY 40TH, SAM" with balloons',
)


_PAIRS = [CROCKFORD[i >> 5] + CROCKFORD[i & 31] for i in range(1024)]  # 10 bits → 2 digits
_BYTE_TO_DIGIT = bytes(ord(CROCKFORD[i & 31]) for i in range(256))  # 5 random bits per random byte


def job_ids(times_ms: list[int]) -> list[str]:
    """One job id per millisecond timestamp: `job_` + a ULID (48-bit time in 10 Crockford digits,
    then 16 random digits), as `service.ids.new_job_id()` makes them. Made in bulk: the time by
    10-bit table lookups, the randomness by translating random bytes (each to one of 32 digits)."""
    digits = os.urandom(16 * len(times_ms)).translate(_BYTE_TO_DIGIT).decode()
    p = _PAIRS
    return [
        f"job_{p[ms >> 40 & 1023]}{p[ms >> 30 & 1023]}{p[ms >> 20 & 1023]}{p[ms >> 10 & 1023]}{p[ms & 1023]}"
        + digits[16 * i : 16 * i + 16]
        for i, ms in enumerate(times_ms)
    ]


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")  # seeding only; the service opens its own with FULL
    con.execute("PRAGMA cache_size = -524288")  # 512 MiB for the bulk load
    con.execute("PRAGMA temp_store = MEMORY")
    return con


JOB_COLUMNS = (
    "id, provider, provider_task_id, status, request, metadata, images, error, resolved_by, "
    "callback_url_registered, submitted_by_backend, submit_state, submit_attempts, idempotency_key, "
    "request_hash, created_at, submitted_at, updated_at, finished_at, cost_usd"
)
# metadata, submitted_by_backend, submit_state, submit_attempts and idempotency_key are the same for
# every seeded job: literals, so that only 15 values are bound per row.
INSERT_JOB = (
    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, 0, 'done', 1, NULL, ?, ?, ?, ?, ?, ?)"
)
INSERT_DUE = "INSERT INTO due (job_id, kind, provider, due_at, attempt) VALUES (?, ?, ?, ?, ?)"
INSERT_EVENT = "INSERT INTO job_events (job_id, at, type, outcome, detail) VALUES (?, ?, ?, ?, ?)"


@contextlib.contextmanager
def bulk_load(con: sqlite3.Connection) -> Iterator[dict[str, float]]:
    """One transaction in which the secondary indexes of jobs, job_events and due, and the trigger that
    counts inserted jobs, are dropped; afterwards they are re-created from their own SQL (building an
    index from sorted data is much faster than growing it row by row) and `job_counts` is recomputed
    with the GROUP BY the migration itself uses. The unique index is re-created too, so it is checked."""
    saved = con.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ('jobs', 'job_events', 'due') "
        "AND (type = 'index' OR name = 'jobs_count_insert')"
    ).fetchall()
    timings: dict[str, float] = {}
    con.execute("BEGIN")
    try:
        for kind, name, _sql in saved:
            con.execute(f"DROP {kind.upper()} {name}")
        started = time.perf_counter()
        yield timings
        timings["insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for _kind, _name, sql in saved:
            con.execute(sql)
        con.execute("DELETE FROM job_counts")
        con.execute(
            "INSERT INTO job_counts (provider, status, n) SELECT provider, status, COUNT(*) FROM jobs GROUP BY provider, status"
        )
        timings["indexes_s"] = time.perf_counter() - started
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    started = time.perf_counter()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    timings["checkpoint_s"] = time.perf_counter() - started


def task_ids(n: int) -> list[str]:
    """`n` random UUID-4-shaped task ids (as aivideoapi gives them), made in bulk."""
    raw = bytearray(os.urandom(16 * n))
    hexed = raw.hex()
    out = []
    for i in range(n):
        h = hexed[32 * i : 32 * i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}")
    return out


_REQUESTS = [json.dumps({"prompt": prompt, "aspect_ratio": "16:9"}) for prompt in PROMPTS]
_HASHES = [hashlib.sha256(request.encode()).hexdigest() for request in _REQUESTS]


@dataclasses.dataclass
class Seeded:
    ids: list[str]
    task_ids: list[str]  # provider task ids, in the order of `ids`
    seconds: float
    rows: dict[str, int]
    timings: dict[str, float]


def _batched(rows: Iterator[tuple], con: sqlite3.Connection, sql: str, size: int = BATCH) -> int:
    count = 0
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            con.executemany(sql, batch)
            count += len(batch)
            batch.clear()
    if batch:
        con.executemany(sql, batch)
        count += len(batch)
    return count


def seed_open_jobs(db: Path, n: int, *, now: float, poll_due_in: float = FAR, events: bool = True) -> Seeded:
    """`n` aivideoapi jobs waiting for their callback: status 'submitted', task id bound, callback URL
    registered, created over the last ten minutes; a 'poll' row due in `poll_due_in` s and a
    'deadline' row (lane '') far in the future each, and their history so far (three events)."""
    started = time.perf_counter()
    span_ms = 600_000
    start_ms = int(now * 1000) - max(span_ms, n)
    step = max(span_ms, n) / max(n, 1)
    times = [(start_ms + i * step) / 1000 for i in range(n)]
    ids = job_ids([int(t * 1000) for t in times])
    tasks = task_ids(n)
    con = connect(db)
    rows: dict[str, int] = {}
    try:
        with bulk_load(con) as timings:
            k = len(_REQUESTS)
            rows["jobs"] = _batched(
                (
                    (
                        job_id,
                        "aivideoapi",
                        tasks[i],
                        "submitted",
                        _REQUESTS[i % k],
                        None,
                        None,
                        None,
                        1,
                        _HASHES[i % k],
                        times[i],
                        times[i] + 0.4,
                        times[i] + 0.4,
                        None,
                        None,
                    )
                    for i, job_id in enumerate(ids)
                ),
                con,
                INSERT_JOB,
            )
            poll_at, deadline_at = now + poll_due_in, now + FAR
            rows["due"] = _batched(
                (
                    row
                    for job_id in ids
                    for row in ((job_id, "poll", "aivideoapi", poll_at, 0), (job_id, "deadline", "", deadline_at, 0))
                ),
                con,
                INSERT_DUE,
            )
            if events:
                rows["job_events"] = _batched(
                    (
                        row
                        for job_id, t in zip(ids, times, strict=True)
                        for row in (
                            (job_id, t, "created", None, '{"provider":"aivideoapi","submitted_by":"jobhook"}'),
                            (job_id, t + 0.4, "submit", "accepted", '{"http_status":200}'),
                            (job_id, t + 0.4, "status", "submitted", '{"from":"queued","by":"submit"}'),
                        )
                    ),
                    con,
                    INSERT_EVENT,
                )
    finally:
        con.close()
    return Seeded(ids, tasks, time.perf_counter() - started, rows, timings)


STATUS_MIX = (("completed", 0.85), ("failed", 0.08), ("timed_out", 0.02), ("submitted", 0.04), ("processing", 0.01))
PROVIDER_MIX = (("aivideoapi", 0.5), ("apiframe", 0.2), ("apiinone", 0.2), ("segmind", 0.1))
PRICES = {"aivideoapi": 0.14, "apiframe": 0.06, "apiinone": 0.12, "segmind": None}
_ERRORS = {
    "failed": '{"code":"provider_failed","message":"Image generation failed"}',
    "timed_out": '{"code":"timed_out","message":"no result within JOBHOOK_JOB_TIMEOUT"}',
}


def _choices(mix: tuple[tuple[str, float], ...], n: int, rng: random.Random) -> list[str]:
    names, weights = zip(*mix, strict=True)
    return rng.choices(names, weights, k=n)


def seed_history(db: Path, n: int, *, now: float, events: bool = False, seed: int = 7) -> Seeded:
    """`n` jobs of every provider and status, created over the last 90 days (the API's history):
    finished ones with their images or error, open ones with their due rows; with `events`, two
    events each (the reads measured never touch job_events, so they are off by default)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    span_ms = 90 * 86400 * 1000
    start_ms = int(now * 1000) - span_ms
    step_ms = span_ms // max(n, 1)
    times = [(start_ms + i * step_ms) / 1000 for i in range(n)]
    ids = job_ids([start_ms + i * step_ms for i in range(n)])
    statuses = _choices(STATUS_MIX, n, rng)
    providers = _choices(PROVIDER_MIX, n, rng)
    tasks = task_ids(n)
    k = len(_REQUESTS)

    def job(i: int) -> tuple:
        job_id, status, provider, created = ids[i], statuses[i], providers[i], times[i]
        task_id = None if provider == "segmind" else tasks[i]
        images = resolved = cost = finished = None
        error = _ERRORS.get(status)
        if status == "completed":
            images = f'["https://files.{provider}.invalid/{task_id or job_id}.png"]'
            resolved = "callback" if i % 10 else "poll"
            cost = PRICES[provider]
            finished = created + 25.0
        elif status == "failed":
            resolved, finished = "callback", created + 25.0
        elif status == "timed_out":
            finished = created + 1800.0
        return (
            job_id,
            provider,
            task_id,
            status,
            _REQUESTS[i % k],
            images,
            error,
            resolved,
            int(provider in ("aivideoapi", "apiframe")),
            _HASHES[i % k],
            created,
            created + 0.5,
            finished or created + 0.5,
            finished,
            cost,
        )

    con = connect(db)
    rows: dict[str, int] = {}
    try:
        with bulk_load(con) as timings:
            rows["jobs"] = _batched((job(i) for i in range(n)), con, INSERT_JOB)
            poll_at = deadline_at = now + FAR
            rows["due"] = _batched(
                (
                    row
                    for i in range(n)
                    if statuses[i] in ("submitted", "processing")
                    for row in ((ids[i], "poll", providers[i], poll_at, 0), (ids[i], "deadline", "", deadline_at, 0))
                ),
                con,
                INSERT_DUE,
            )
            if events:
                rows["job_events"] = _batched(
                    (
                        row
                        for i in range(n)
                        for row in (
                            (ids[i], times[i], "created", None, '{"submitted_by":"jobhook"}'),
                            (ids[i], times[i] + 25.0, "status", statuses[i], '{"from":"submitted"}'),
                        )
                    ),
                    con,
                    INSERT_EVENT,
                )
    finally:
        con.close()
    return Seeded(ids, tasks, time.perf_counter() - started, rows, timings)


def check_counts(db: Path) -> dict[str, object]:
    """`job_counts` (kept by the triggers) against a GROUP BY over `jobs`."""
    con = sqlite3.connect(db)
    try:
        kept = {(p, s): n for p, s, n in con.execute("SELECT provider, status, n FROM job_counts") if n}
        actual = {(p, s): n for p, s, n in con.execute("SELECT provider, status, COUNT(*) FROM jobs GROUP BY 1, 2")}
    finally:
        con.close()
    return {"match": kept == actual, "jobs": sum(actual.values())}


def make_due_now(db: Path, job_ids_: list[str], at: float) -> None:
    """Bring these jobs' 'poll' rows due at `at` (the poller finds them all at once)."""
    con = connect(db)
    try:
        con.execute("BEGIN")
        con.executemany("UPDATE due SET due_at = ? WHERE job_id = ? AND kind = 'poll'", ((at, j) for j in job_ids_))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
