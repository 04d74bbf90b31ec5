"""Seeding a jobhook database fast, straight through sqlite3, into a schema made by `jobhook migrate`.

Bulk inserts go in large transactions with `PRAGMA synchronous=OFF` on the seeding connection only
(the service itself then runs with FULL). The triggers stay on, so `job_counts` is kept exactly as the
service keeps it; `check_counts` compares it with a GROUP BY afterwards. Ids are ULID-shaped
(`job_` + 26 Crockford base-32 digits) in time order, as `service.ids.new_job_id()` makes them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD)
BATCH = 50_000
FAR = 30 * 86400.0  # "far away": a month from now

PROMPTS = (
    'A poster reading "SUMMER NIGHTS" in neon letters',
    'A coffee shop sign that says "OPEN LATE", hand-lettered',
    'Book cover, the title "THE QUIET HARBOUR" in serif capitals',
    'A birthday card reading "HAPPY 40TH, SAM" with balloons',
)


def _time_part(ms: int) -> str:
    chars = []
    for _ in range(10):
        chars.append(CROCKFORD[ms & 31])
        ms >>= 5
    return "".join(reversed(chars))


def job_ids(n: int, start_ms: int) -> list[str]:
    """`n` strictly increasing job ids, one millisecond-timestamp apart from `start_ms` onwards."""
    rand = os.urandom(10 * n)
    b32 = base64.b32encode(rand).decode().translate(_FROM_RFC4648)  # 10 bytes → exactly 16 digits
    return ["job_" + _time_part(start_ms + i) + b32[16 * i : 16 * i + 16] for i in range(n)]


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
INSERT_JOB = f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * 20)})"
INSERT_DUE = "INSERT INTO due (job_id, kind, provider, due_at, attempt) VALUES (?, ?, ?, ?, ?)"
INSERT_EVENT = "INSERT INTO job_events (job_id, at, type, outcome, detail) VALUES (?, ?, ?, ?, ?)"


@dataclasses.dataclass
class Seeded:
    ids: list[str]
    task_ids: dict[str, str]  # job id → provider task id, for the jobs of `callback_provider`
    seconds: float
    rows: dict[str, int]


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
    registered; a 'poll' row due in `poll_due_in` s and a 'deadline' row far in the future each."""
    started = time.perf_counter()
    span_ms = 1000 * 600  # created over the last ten minutes, in order
    start_ms = int(now * 1000) - span_ms
    step = span_ms / max(n, 1)
    ids = job_ids(n, start_ms) if n * 1 <= span_ms else job_ids(n, start_ms - n)
    task_ids = {job_id: str(uuid.uuid4()) for job_id in ids}
    con = connect(db)
    rows: dict[str, int] = {}
    try:
        con.execute("BEGIN")

        def jobs() -> Iterator[tuple]:
            for i, job_id in enumerate(ids):
                created = (start_ms + i * step) / 1000
                request = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "aspect_ratio": "16:9"})
                digest = hashlib.sha256(job_id.encode()).hexdigest()
                yield (job_id, "aivideoapi", task_ids[job_id], "submitted", request, None, None, None, None,
                       1, 0, "done", 1, None, digest, created, created + 0.4, created + 0.4, None, None)

        rows["jobs"] = _batched(jobs(), con, INSERT_JOB)

        def due() -> Iterator[tuple]:
            for job_id in ids:
                yield (job_id, "poll", "aivideoapi", now + poll_due_in, 0)
                yield (job_id, "deadline", "", now + FAR, 0)

        rows["due"] = _batched(due(), con, INSERT_DUE)
        if events:

            def history() -> Iterator[tuple]:
                for i, job_id in enumerate(ids):
                    created = (start_ms + i * step) / 1000
                    yield (job_id, created, "created", None, '{"provider":"aivideoapi","submitted_by":"jobhook"}')
                    yield (job_id, created + 0.4, "submit", "accepted", '{"http_status":200}')
                    yield (job_id, created + 0.4, "status", "submitted", '{"from":"queued","by":"submit"}')

            rows["job_events"] = _batched(history(), con, INSERT_EVENT)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return Seeded(ids, task_ids, time.perf_counter() - started, rows)


STATUS_MIX = (("completed", 0.85), ("failed", 0.08), ("timed_out", 0.02), ("submitted", 0.04), ("processing", 0.01))
PROVIDER_MIX = (("aivideoapi", 0.5), ("apiframe", 0.2), ("apiinone", 0.2), ("segmind", 0.1))
PRICES = {"aivideoapi": 0.14, "apiframe": 0.06, "apiinone": 0.12, "segmind": None}


def _choices(mix: tuple[tuple[str, float], ...], n: int, rng: random.Random) -> list[str]:
    names, weights = zip(*mix, strict=True)
    return rng.choices(names, weights, k=n)


def seed_history(db: Path, n: int, *, now: float, events: bool = True, seed: int = 7) -> Seeded:
    """`n` jobs of every provider and status, created over the last 90 days (the API's history):
    finished ones with their images or error, open ones with their due rows; two events each."""
    started = time.perf_counter()
    rng = random.Random(seed)
    span_ms = 90 * 86400 * 1000
    start_ms = int(now * 1000) - span_ms
    step_ms = span_ms // max(n, 1)
    ids = job_ids(n, 0)  # random parts; the time parts are set below, spread over the span
    ids = ["job_" + _time_part(start_ms + i * step_ms) + job_id[14:] for i, job_id in enumerate(ids)]
    statuses = _choices(STATUS_MIX, n, rng)
    providers = _choices(PROVIDER_MIX, n, rng)
    con = connect(db)
    rows: dict[str, int] = {}
    try:
        con.execute("BEGIN")

        def jobs() -> Iterator[tuple]:
            for i, job_id in enumerate(ids):
                created = (start_ms + i * step_ms) / 1000
                status, provider = statuses[i], providers[i]
                finished = created + 25.0 if status in ("completed", "failed", "timed_out") else None
                task_id = None if provider == "segmind" else uuid.UUID(int=rng.getrandbits(128), version=4).hex
                request = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "aspect_ratio": "16:9"})
                images = error = resolved = cost = None
                if status == "completed":
                    images = json.dumps([f"https://files.{provider}.invalid/{task_id or job_id}.png"])
                    resolved = "callback" if i % 10 else "poll"
                    cost = PRICES[provider]
                elif status == "failed":
                    error = '{"code":"provider_failed","message":"Image generation failed"}'
                    resolved = "callback"
                elif status == "timed_out":
                    error = '{"code":"timed_out","message":"no result within JOBHOOK_JOB_TIMEOUT"}'
                digest = hashlib.sha256(job_id.encode()).hexdigest()
                yield (job_id, provider, task_id, status, request, None, images, error, resolved,
                       int(provider in ("aivideoapi", "apiframe")), 0, "done", 1, None, digest,
                       created, created + 0.5, finished or created + 0.5, finished, cost)

        rows["jobs"] = _batched(jobs(), con, INSERT_JOB)

        def due() -> Iterator[tuple]:
            for i, job_id in enumerate(ids):
                if statuses[i] in ("submitted", "processing"):
                    yield (job_id, "poll", providers[i], now + FAR, 0)
                    yield (job_id, "deadline", "", now + FAR, 0)

        rows["due"] = _batched(due(), con, INSERT_DUE)
        if events:

            def history() -> Iterator[tuple]:
                for i, job_id in enumerate(ids):
                    created = (start_ms + i * step_ms) / 1000
                    yield (job_id, created, "created", None, '{"submitted_by":"jobhook"}')
                    yield (job_id, created + 25.0, "status", statuses[i], '{"from":"submitted"}')

            rows["job_events"] = _batched(history(), con, INSERT_EVENT)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return Seeded(ids, {}, time.perf_counter() - started, rows)


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
