"""jobhook's bench (issue #7): the real service against a bare Starlette app, same load, same run.

    .venv/bin/python bench/run.py                 # every phase (≈ 5 min on 2 cores)
    .venv/bin/python bench/run.py --quick         # smaller sizes, a smoke run (≈ 1.5 min)
    .venv/bin/python bench/run.py --only callbacks,api
    .venv/bin/python bench/run.py --only callbacks --profile /tmp/pyspy/bin/py-spy

Phases, each against its baseline measured in the same run with the same load generator:

- callbacks: 64 keep-alive connections replaying genuine, signed aivideoapi callbacks for existing
  jobs, a third of them duplicates; req/s, p50/p99, CPU; then jobhook is killed with SIGKILL and the
  database must hold every delivery answered 2xx. Baseline: the bare app.
- poller: 100,000 open jobs whose next poll is far away: the idle CPU (baseline: the bare app and
  jobhook with no jobs); then 10,000 due at once against a fake provider: polls/s and how the bounded
  concurrency is used (baseline: the load generator polling the fake with the same concurrency).
- api: 1,000,000 jobs; GET /v1/jobs/{id} (random ids) and a filtered list page. Baseline: the bare app
  answering the same paths with static JSON of the same size.
- submit: POST /v1/jobs to a fake provider that answers at once. Baseline: the bare app.
- postgresql: the callbacks phase's load against one and three replicas on one PostgreSQL database
  (bench/pg_phase.py; skipped, with a note, where no PostgreSQL server can be started).

Everything listens on and talks to 127.0.0.1 only. The load generator runs on the same machine as the
server (it is reported with its own CPU). Results: printed, and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import loadgen
import openloop_phase
import pg_phase
import procs
import seed
import workload
from procs import CPUSampler, Proc

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PHASES = ("callbacks", "poller", "api", "submit", "postgresql", "openloop")

TARGETS = {
    "callback_ratio": 0.25,  # × the bare ceiling, at 64 connections (issue 17; issue 7 had 0.6)
    "callback_cpu_us": 300.0,  # CPU per callback, all threads of the process, at 64 connections
    "idle_cpu_percent": 2.0,  # of one core, with 100,000 open jobs
    "api_p99_ms": 5.0,  # GET and list, with 1,000,000 jobs
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    callback_seconds: int = 20
    callback_connections: int = 64
    callback_lines: int = 90_000  # 60,000 distinct jobs + 30,000 repeats
    poller_open: int = 100_000
    poller_due: int = 10_000
    idle_seconds: int = 20
    poll_baseline_seconds: int = 5
    poller_timeout: float = 180.0
    api_jobs: int = 1_000_000
    api_seconds: int = 8
    api_connections: tuple[int, ...] = (1, 16)
    api_get_lines: int = 50_000
    submit_seconds: int = 10
    submit_connections: int = 64
    submit_lines: int = 40_000


FULL = Sizes()
QUICK = Sizes(
    callback_seconds=5,
    callback_lines=15_000,
    poller_open=10_000,
    poller_due=1_000,
    idle_seconds=5,
    poll_baseline_seconds=2,
    poller_timeout=60.0,
    api_jobs=100_000,
    api_seconds=3,
    api_get_lines=10_000,
    submit_seconds=3,
    submit_lines=10_000,
)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.generator = args.generator if args.generator != "auto" else ("wrk" if loadgen.WRK else "asyncio")
        if args.workdir is not None:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="jobhook-bench-", dir=args.workdir))
        self.running: list[Proc] = []

    # -- plumbing ----------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def step(self, text: str) -> None:
        print(f"  · {text}", file=sys.stderr, flush=True)

    def start(self, proc: Proc) -> Proc:
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc | None, *, kill: bool = False) -> None:
        if proc is None:
            return
        (proc.kill9 if kill else proc.stop)()
        with contextlib.suppress(ValueError):
            self.running.remove(proc)

    def jobhook(
        self, name: str, db: Path | str, provider_url: str | None = None, extra: dict[str, str] | None = None
    ) -> Proc:
        """`jobhook serve` with the settings the README recommends for production (a public URL for
        callbacks, API tokens, a secret, the provider's key; the simulator off), SQLite FULL; image
        mirroring off (the bench's image URLs lead nowhere) and no notification destinations."""
        port = procs.free_port()
        settings = {
            "JOBHOOK_SECRET": workload.SECRET,
            "JOBHOOK_API_TOKENS": workload.API_TOKEN,
            "JOBHOOK_AIVIDEOAPI_API_KEY": workload.API_KEY,
            # The provider is a local fake; where none is needed, a closed local port (nothing leaves 127.0.0.1).
            "JOBHOOK_AIVIDEOAPI_BASE_URL": provider_url or f"http://{procs.HOST}:9",
            "JOBHOOK_SQLITE_SYNCHRONOUS": self.args.sqlite_synchronous,
            **(extra or {}),
        }
        return self.start(procs.start_jobhook(self.workdir, name, db, port, settings))

    def bare(self, name: str, job_json: Path | None = None, list_json: Path | None = None) -> Proc:
        return self.start(procs.start_bare(self.workdir, name, procs.free_port(), job_json, list_json))

    def fake(self, name: str, latency: float) -> Proc:
        return self.start(procs.start_fake(self.workdir, name, procs.free_port(), latency))

    def new_db(self, name: str) -> Path:
        db = self.workdir / f"{name}.db"
        procs.migrate(db, self.workdir / "migrate.log")
        return db

    def load(
        self, target: Proc, request_file: Path, *, connections: int, seconds: int, watch: dict[str, Proc] | None = None
    ) -> dict[str, Any]:
        """One load run; CPU of the target (and `watch`) and of the generator over wrk's own window."""
        pids = {"server": target.pid, **{name: proc.pid for name, proc in (watch or {}).items()}}
        with CPUSampler(pids, threads_of="server") as sampler:
            result = loadgen.run(
                self.generator,
                target.url,
                request_file,
                connections=connections,
                duration=seconds,
                threads=self.args.threads,
                on_start=lambda popen: sampler.add("generator", popen.pid),
            )
        end = result.pop("ended_at")
        start = end - result["duration_s"]
        result["cpu_percent"] = {
            name: _round(sampler.percent(name, start, end), 1) for name in [*pids, "generator", "machine"]
        }
        # The server's threads: the main one runs the event loop; the others are aiosqlite's (one per
        # connection: the writer, opened first, then the reader) and any helper thread.
        threads = {}
        for key in sorted(k for k in sampler.names() if k.startswith("server:")):
            tid = int(key.split(":")[1])
            pct = sampler.percent(key, start, end)
            if pct is not None and (tid == target.pid or pct >= 0.5):
                threads["event loop (main thread)" if tid == target.pid else f"thread {tid}"] = round(pct, 1)
        result["server_threads_cpu_percent"] = threads
        others = result["cpu_percent"]["machine"]
        if others is not None:
            ours = sum(v or 0.0 for k, v in result["cpu_percent"].items() if k != "machine")
            result["cpu_percent"]["others"] = round(max(0.0, others - ours), 1)
        return result

    # -- callbacks ---------------------------------------------------------------------------------

    def callback_load(self, phase: str) -> tuple[Path, Path, dict[str, Any]]:
        """The callbacks load: a SQLite database seeded with the jobs it needs, its request file, and
        what is in them (the request mix, the jobs seeded and how long seeding took)."""
        s = self.sizes
        jobs_needed = s.callback_lines - s.callback_lines // 3
        self.step(f"{phase}: seeding {jobs_needed:,} submitted aivideoapi jobs")
        db = self.new_db(phase)
        seeded = seed.seed_open_jobs(db, jobs_needed, now=time.time())
        request_file = self.workdir / f"{phase}.txt"
        self.step(f"{phase}: signing {s.callback_lines:,} callbacks")
        mix = workload.callbacks(request_file, seeded.ids, seeded.task_ids, s.callback_lines)
        return db, request_file, {"jobs_seeded": jobs_needed, "seed_s": round(seeded.seconds, 1), "requests_file": mix}

    def phase_callbacks(self) -> dict[str, Any]:
        s = self.sizes
        db, request_file, seeded = self.callback_load("callbacks")
        mix = seeded["requests_file"]
        out: dict[str, Any] = {"connections": s.callback_connections, "seconds": s.callback_seconds, **seeded}
        self.step("callbacks: the bare app")
        bare = self.bare("bare-callbacks")
        out["bare"] = self.load(bare, request_file, connections=s.callback_connections, seconds=s.callback_seconds)
        self.stop(bare)
        self.step("callbacks: jobhook")
        server = self.jobhook("jobhook-callbacks", db)
        profiler = self.start_profiler(server)
        out["jobhook"] = self.load(server, request_file, connections=s.callback_connections, seconds=s.callback_seconds)
        self.finish_profiler(profiler, out)
        out["group_commit"] = _group_commit(server.url)
        # A crash, not a shutdown: whatever was answered 2xx must be in the database all the same.
        self.stop(server, kill=True)
        out["durability"] = self.check_callbacks(db, out["jobhook"], mix["x_timestamp"])
        out["ratio"] = _ratio(out["jobhook"]["rps"], out["bare"]["rps"])
        out["cpu_us_per_callback"] = _cpu_per_request(out["jobhook"])
        out["bare_cpu_us_per_request"] = _cpu_per_request(out["bare"])
        return out

    def check_callbacks(self, db: Path, run: dict[str, Any], stamped: int) -> dict[str, Any]:
        con = sqlite3.connect(db)
        try:
            by_outcome = dict(
                con.execute(
                    "SELECT outcome, COUNT(*) FROM job_events WHERE type = 'callback' GROUP BY outcome"
                ).fetchall()
            )
            receipts, deliveries = con.execute(
                "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM callback_receipts"
            ).fetchone()
            completed = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'completed' AND resolved_by = 'callback'"
            ).fetchone()[0]
            refused = dict(
                con.execute(
                    "SELECT json_extract(detail, '$.code'), COUNT(*) FROM job_events "
                    "WHERE type = 'callback' AND outcome = 'refused' GROUP BY 1"
                ).fetchall()
            )
            counts = seed.check_counts(db)
        finally:
            con.close()
        accepted, duplicate = by_outcome.get("accepted", 0), by_outcome.get("duplicate", 0)
        applied = accepted + duplicate
        ok = run["ok_2xx"]
        in_flight = max(0, run["sent"] - run["requests"])  # sent, and cut by the end of the run
        return {
            "answered_2xx": ok,
            "in_db_accepted": accepted,
            "in_db_duplicate": duplicate,
            "in_db_refused": refused,
            "receipts": receipts,
            "deliveries_counted_by_receipts": deliveries,
            "jobs_completed_by_callback": completed,
            "in_flight_at_stop": in_flight,
            "job_counts_match": counts["match"],
            # Every 2xx is in the database (after SIGKILL); the surplus can only be requests that were
            # committed but whose answer the generator never read when the run ended.
            "every_2xx_durable": ok <= applied <= ok + in_flight and deliveries == applied and completed == accepted,
            "duplicate_share": round(duplicate / applied, 3) if applied else None,
            "x_timestamp_age_at_end_s": round(time.time() - stamped, 1),
        }

    # -- PostgreSQL --------------------------------------------------------------------------------

    def phase_postgresql(self) -> dict[str, Any]:
        return pg_phase.phase(self)

    # -- open loop ---------------------------------------------------------------------------------

    def phase_openloop(self) -> dict[str, Any]:
        return openloop_phase.phase(self)

    # -- poller ------------------------------------------------------------------------------------

    def phase_poller(self) -> dict[str, Any]:
        s = self.sizes
        self.step(f"poller: seeding {s.poller_open:,} open jobs, next poll a month away")
        db = self.new_db("poller")
        seeded = seed.seed_open_jobs(db, s.poller_open, now=time.time(), events=False)
        empty_db = self.new_db("poller-empty")
        out: dict[str, Any] = {"open_jobs": s.poller_open, "seed_s": round(seeded.seconds, 1)}
        fake = self.fake("fake-provider", self.args.poll_latency)
        self.step(
            f"poller: idle CPU over {s.idle_seconds} s (jobhook with {s.poller_open:,} open jobs, jobhook empty, bare)"
        )
        server = self.jobhook("jobhook-poller", db, fake.url)
        empty = self.jobhook("jobhook-empty", empty_db, fake.url)
        bare = self.bare("bare-idle")
        time.sleep(3.0)  # past start-up
        pids = {"jobhook_open_jobs": server.pid, "jobhook_empty": empty.pid, "bare": bare.pid}
        with CPUSampler(pids, interval=0.5) as sampler:
            start = time.monotonic()
            time.sleep(s.idle_seconds)
            end = time.monotonic()
        out["idle_seconds"] = s.idle_seconds
        idle = {name: _round(sampler.percent(name, start, end), 3) for name in [*pids, "machine"]}
        if idle["machine"] is not None:
            idle["others"] = round(max(0.0, idle["machine"] - sum(idle[name] or 0.0 for name in pids)), 3)
        out["idle_cpu_percent"] = idle
        out["idle"] = {"cpu_percent": {"others": idle.get("others")}}  # for the other-load check
        for proc in (empty, bare, server):
            self.stop(proc)

        due = random.Random(3).sample(range(len(seeded.ids)), s.poller_due)
        seed.make_due_now(db, [seeded.ids[i] for i in due], time.time())
        _post(fake.url + "/_reset")
        self.step(
            f"poller: {s.poller_due:,} polls due at once, fake provider answering in {self.args.poll_latency * 1000:g} ms"
        )
        with CPUSampler({"fake": fake.pid}) as sampler:
            started = time.monotonic()
            server = self.jobhook("jobhook-poller-due", db, fake.url)
            sampler.add("jobhook", server.pid)
            profiler = self.start_profiler(server)
            deadline = started + s.poller_timeout
            done = 0
            while time.monotonic() < deadline:
                done = _count(db, "SELECT COUNT(*) FROM jobs WHERE status = 'completed' AND resolved_by = 'poll'")
                if done >= s.poller_due:
                    break
                time.sleep(0.5)
        stats = _get(fake.url + "/_stats")["polls"]
        self.finish_profiler(profiler, out)
        self.stop(server)
        drain: dict[str, Any] = {
            "due": s.poller_due,
            "completed_by_poll": done,
            "all_polled": done >= s.poller_due,
            "provider_latency_ms": self.args.poll_latency * 1000,
            "concurrency_setting": 8,
            **stats,
        }
        first, last = stats.get("first_mono"), stats.get("last_end_mono")
        window = (first, last) if first and last and last > first else (started, time.monotonic())
        cpu = {name: _round(sampler.percent(name, *window), 1) for name in ("jobhook", "fake", "machine")}
        if cpu["machine"] is not None:
            cpu["others"] = round(max(0.0, cpu["machine"] - (cpu["jobhook"] or 0.0) - (cpu["fake"] or 0.0)), 1)
        drain["cpu_percent"] = cpu
        out["due_now"] = drain

        self.step(
            f"poller baseline: the load generator polling the fake with 8 connections for {s.poll_baseline_seconds} s"
        )
        poll_file = self.workdir / "polls.txt"
        workload.polls(poll_file, [seeded.task_ids[i] for i in due])
        _post(fake.url + "/_reset")
        run = self.load(fake, poll_file, connections=8, seconds=s.poll_baseline_seconds)
        base_stats = _get(fake.url + "/_stats")["polls"]
        out["baseline"] = {"generator": run, **base_stats}
        self.stop(fake)
        out["ratio"] = _ratio(drain.get("per_s"), base_stats.get("per_s"))
        return out

    # -- api ---------------------------------------------------------------------------------------

    def phase_api(self) -> dict[str, Any]:
        s = self.sizes
        self.step(f"api: seeding {s.api_jobs:,} jobs of every provider and status")
        db = self.new_db("api")
        seeded = seed.seed_history(db, s.api_jobs, now=time.time())
        counts = seed.check_counts(db)
        out: dict[str, Any] = {
            "jobs": s.api_jobs,
            "seed_s": round(seeded.seconds, 1),
            "seed_timings_s": {k: round(v, 1) for k, v in seeded.timings.items()},
            "job_counts_match": counts["match"],
            "db_mb": round(db.stat().st_size / 1e6),
        }
        get_file, list_file = self.workdir / "gets.txt", self.workdir / "lists.txt"
        workload.gets(get_file, seeded.ids, s.api_get_lines)
        workload.lists(list_file)
        server = self.jobhook("jobhook-api", db)
        # The bare app's static answers: a real job (a completed aivideoapi one) and a real list page.
        sample_id = _count(
            db, "SELECT id FROM jobs WHERE status = 'completed' AND provider = 'aivideoapi' LIMIT 1 OFFSET 1000"
        )
        job_body = _fetch(server.url + f"/v1/jobs/{sample_id}")
        list_body = _fetch(server.url + workload.LIST_PATH)
        job_json, list_json = self.workdir / "job.json", self.workdir / "list.json"
        job_json.write_bytes(job_body)
        list_json.write_bytes(list_body)
        out["body_bytes"] = {"get": len(job_body), "list": len(list_body)}
        out["jobhook"], out["bare"] = {}, {}
        for connections in s.api_connections:
            self.step(f"api: jobhook, {connections} connection(s)")
            out["jobhook"][f"get_c{connections}"] = self.load(
                server, get_file, connections=connections, seconds=s.api_seconds
            )
            out["jobhook"][f"list_c{connections}"] = self.load(
                server, list_file, connections=connections, seconds=s.api_seconds
            )
        self.stop(server)
        bare = self.bare("bare-api", job_json, list_json)
        for connections in s.api_connections:
            self.step(f"api: bare app, {connections} connection(s)")
            out["bare"][f"get_c{connections}"] = self.load(
                bare, get_file, connections=connections, seconds=s.api_seconds
            )
            out["bare"][f"list_c{connections}"] = self.load(
                bare, list_file, connections=connections, seconds=s.api_seconds
            )
        self.stop(bare)
        return out

    # -- submit ------------------------------------------------------------------------------------

    def phase_submit(self) -> dict[str, Any]:
        s = self.sizes
        db = self.new_db("submit")
        submit_file = self.workdir / "submits.txt"
        workload.submits(submit_file, s.submit_lines, tag=str(int(time.time())))
        out: dict[str, Any] = {"connections": s.submit_connections, "seconds": s.submit_seconds}
        fake = self.fake("fake-provider-submit", 0.0)
        self.step("submit: jobhook → fake provider answering at once")
        server = self.jobhook("jobhook-submit", db, fake.url)
        profiler = self.start_profiler(server)
        out["jobhook"] = self.load(
            server, submit_file, connections=s.submit_connections, seconds=s.submit_seconds, watch={"fake": fake}
        )
        self.finish_profiler(profiler, out)
        self.stop(server)
        fake_stats = _get(fake.url + "/_stats")["submits"]
        self.stop(fake)
        con = sqlite3.connect(db)
        try:
            statuses = dict(con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
            accepted = _count(db, "SELECT COUNT(*) FROM job_events WHERE type = 'submit' AND outcome = 'accepted'")
        finally:
            con.close()
        out["check"] = {
            "answered_2xx": out["jobhook"]["ok_2xx"],
            "jobs_in_db": sum(statuses.values()),
            "jobs_by_status": statuses,
            "submissions_accepted": accepted,
            "provider_saw": fake_stats.get("count"),
            "wrapped": out["jobhook"]["sent"] > out["jobhook"]["lines"],
        }
        self.step("submit: the bare app")
        bare = self.bare("bare-submit")
        out["bare"] = self.load(bare, submit_file, connections=s.submit_connections, seconds=s.submit_seconds)
        self.stop(bare)
        out["ratio"] = _ratio(out["jobhook"]["rps"], out["bare"]["rps"])
        return out

    # -- profiling (--profile) ---------------------------------------------------------------------

    def start_profiler(self, server: Proc) -> dict[str, Any] | None:
        """With --profile: py-spy records `server` until finish_profiler (SIGINT); with
        --profile-strace instead, strace counts its fsync/fdatasync calls (one tracer at a time)."""
        if not self.args.profile and not self.args.profile_strace:
            return None
        name = server.name
        if self.args.profile_strace:
            out = self.workdir / f"{name}.strace.txt"
            argv = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p", str(server.pid)]
            popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return {"popen": popen, "strace": out}
        raw = self.workdir / f"{name}.pyspy.txt"
        argv = [self.args.profile, "record", "--pid", str(server.pid), "--rate", "200", "--format", "raw"]
        argv += ["--output", str(raw), "--threads"]
        # Native frames (SQLite, fdatasync, the GIL) need the process paused for each sample.
        argv.append("--native" if self.args.profile_native else "--nonblocking")
        if self.args.profile_idle:
            argv.append("--idle")
        log = (self.workdir / f"{name}.pyspy.log").open("wb")
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        return {"popen": popen, "raw": raw, "log": log}

    def finish_profiler(self, profiler: dict[str, Any] | None, out: dict[str, Any]) -> None:
        if profiler is None:
            return
        popen: subprocess.Popen[bytes] = profiler["popen"]
        popen.send_signal(signal.SIGINT)  # py-spy writes what it has; strace detaches and sums up
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        if "log" in profiler:
            profiler["log"].close()
        result: dict[str, Any] = {}
        if "strace" in profiler:
            result["strace"] = profiler["strace"].read_text(errors="replace") if profiler["strace"].exists() else ""
        elif profiler["raw"].exists():
            result.update(summarize_profile(profiler["raw"]))
            kept = RESULTS / f"profile-{profiler['raw'].name}"
            shutil.copyfile(profiler["raw"], kept)
            result["raw"] = str(kept)
        out["profile"] = result

    # -- the run -----------------------------------------------------------------------------------

    def run(self, phases: list[str]) -> dict[str, Any]:
        started = time.monotonic()
        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": self.args.quick,
            "machine": machine(self.workdir, self.generator, self.args.threads),
            "sqlite_synchronous": self.args.sqlite_synchronous,
            "targets": TARGETS,
            "phases": {},
        }
        print_machine(results["machine"], self.generator, self.args.threads)
        if self.args.sqlite_synchronous != "FULL":
            print(
                f"  DIAGNOSTIC RUN: JOBHOOK_SQLITE_SYNCHRONOUS={self.args.sqlite_synchronous}, not FULL: not for the record"
            )
        try:
            for phase in phases:
                phase_started = time.monotonic()
                results["phases"][phase] = getattr(self, f"phase_{phase}")()
                results["phases"][phase]["phase_seconds"] = round(time.monotonic() - phase_started, 1)
                PRINTERS[phase](results["phases"][phase])
        finally:
            for proc in list(self.running):
                self.stop(proc)
        results["total_seconds"] = round(time.monotonic() - started, 1)
        results["verdicts"] = verdicts(results["phases"], self.args.sqlite_synchronous)
        results["disturbed_by_other_load"] = disturbed_runs(results["phases"])
        print_verdicts(results["verdicts"], results["total_seconds"], results["disturbed_by_other_load"])
        return results

    def cleanup(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- helpers -------------------------------------------------------------------------------------


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _cpu_per_request(run: dict[str, Any]) -> float | None:
    """µs of the server's CPU (all its threads, from /proc over the load window) per request answered."""
    cpu = run["cpu_percent"].get("server")
    return round(10_000 * cpu / run["rps"], 1) if cpu and run["rps"] else None


def _count(db: Path, sql: str) -> Any:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers=workload.AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _group_commit(url: str) -> dict[str, Any]:
    """The writer's commits and the writes they held, from /metrics (writes / commits = mean group)."""
    found: dict[str, float] = {}
    for line in _fetch(f"{url}/metrics").decode().splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("jobhook_store_") and name.endswith("_total"):
            found[name.removeprefix("jobhook_store_").removesuffix("_total")] = float(value)
    commits, writes = found.get("commits"), found.get("writes")
    return {
        "commits": commits,
        "writes": writes,
        "mean_group": _round(_ratio(writes, commits), 1),
        "write_us": _round(_ratio(found.get("write_seconds", 0) * 1e6, writes), 1),
        "commit_ms": _round(_ratio(found.get("commit_seconds", 0) * 1e3, commits), 2),
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as response:
        return json.loads(response.read())


def fsync_probe(directory: Path, count: int = 200) -> dict[str, float]:
    """What one durable commit costs at least here: append 4 KiB and fdatasync, `count` times."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = os.urandom(4096)
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 3)}


def machine(workdir: Path, generator: str, threads: int) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("starlette", "uvicorn", "uvloop", "httptools", "aiosqlite", "httpx", "itsdangerous", "orjson"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    wrk_version = None
    if loadgen.WRK:
        probe = subprocess.run([loadgen.WRK, "-v"], capture_output=True, text=True)
        wrk_version = (probe.stdout + probe.stderr).splitlines()[0].strip() if (probe.stdout + probe.stderr) else None
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(workdir)], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    sum(range(10_000_000))  # a yardstick of this CPU for Python code, to compare machines
    loop_ms = (time.perf_counter() - started) * 1000
    git = subprocess.run(
        ["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(BENCH.parent), "status", "--porcelain", "--", "service", "pyproject.toml"],
        capture_output=True,
        text=True,
    )
    return {
        "commit": (git.stdout.strip() or "unknown")
        + (" + uncommitted changes to service/" if dirty.stdout.strip() else ""),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "load_generator": {"kind": generator, "threads": threads, "wrk": wrk_version, "same_machine": True},
        "workdir": str(workdir),
        "filesystem": fs,
        "fdatasync_4k": fsync_probe(workdir),
        "python_sum_range_1e7_ms": round(loop_ms),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


PROFILE_CATEGORIES = (
    # (name, substrings of a frame); a sample of the event loop thread goes to the innermost frame's
    # category, so a JSON parse called from jobhook's code counts as JSON.
    ("fsync (fdatasync in COMMIT)", ("fdatasync", "fsync")),
    ("itsdangerous (callback token)", ("itsdangerous",)),
    ("JSON (orjson, json)", ("orjson", "json/", "(json")),
    ("logging", ("logging/",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("httpx / httpcore / h11 (calls to the provider)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("aiosqlite on the loop (queueing statements, awaiting results)", ("aiosqlite/",)),
    ("psycopg / psycopg_pool (PostgreSQL round trips, rows)", ("psycopg",)),
    ("jobhook store (service/store: rows → Job, SQL text)", ("service/store/",)),
    ("jobhook other (engine, domain, routes)", ("service/",)),
    ("starlette (routing, middleware, request, response)", ("starlette/",)),
    ("uvicorn / httptools (HTTP/1.1)", ("uvicorn/", "httptools")),
    ("asyncio / uvloop internals (I/O, scheduling)", ("asyncio/", "uvloop", "Loop__", "uv_")),
)


def summarize_profile(raw: Path) -> dict[str, Any]:
    """py-spy's collapsed stacks → where the samples are: per thread (the event loop, aiosqlite's
    worker threads), by category (SQLite, aiosqlite's hops, JSON, itsdangerous, HTTP, logging, …),
    and the functions most often on top."""
    total = 0
    by_leaf: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if not frame.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += count
        by_leaf[frames[-1]] += count
        if "service/store/postgres.py" in stack and "concurrent/futures/thread.py" in stack:
            by_thread["PostgreSQL store threads"] += count
            category = next(
                (name for name, keys in PROFILE_CATEGORIES if any(k in frames[-1] for k in keys)),
                "PostgreSQL store threads: other (the Tx's Python, waiting for the GIL)",
            )
        elif "_connection_worker_thread" in stack:
            by_thread["aiosqlite worker threads"] += count
            worker = next(f for f in frames if "_connection_worker_thread" in f)
            line_no = worker.rsplit(":", 1)[-1].rstrip(")")
            if any("fdatasync" in f or "fsync" in f for f in frames):
                category = "fsync (fdatasync in COMMIT)"
            elif line_no == "59":  # future, function = tx.get()
                category = "aiosqlite worker: waking for the next statement (queue, GIL)"
            elif line_no == "63":  # result = function(): the statement itself
                category = "SQLite statements (in aiosqlite's threads)"
            else:  # call_soon_threadsafe(set_result, …) and the rest of the loop
                category = "aiosqlite worker: handing the result back to the loop"
        else:
            by_thread["event loop thread"] += count
            category = "other"
            for frame in reversed(frames):
                found = next((name for name, keys in PROFILE_CATEGORIES if any(k in frame for k in keys)), None)
                if found is not None:
                    category = found
                    break
        by_category[category] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "by_thread_percent": share(by_thread, 10),
        "by_category_percent": share(by_category, 20),
        "top_leaf_percent": share(by_leaf, 15),
    }


# -- printing ------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def row(label: str, run: dict[str, Any]) -> str:
    cpu = run["cpu_percent"]
    lat = run["latency_ms"]
    non2xx = run["requests"] - run["ok_2xx"]
    return (
        f"  {label:<22}{fmt(run['rps'], 0):>9}{fmt(lat['p50'], 2):>9}{fmt(lat['p99'], 2):>9}{fmt(lat['max'], 1):>9}"
        f"{fmt(cpu.get('server'), 0, '%'):>9}{fmt(cpu.get('generator'), 0, '%'):>8}{fmt(cpu.get('others'), 0, '%'):>8}"
        f"{fmt(run['requests']):>10}{fmt(non2xx):>8}" + ("  ← other load on the machine" if _disturbed(run) else "")
    )


OTHER_LOAD_LIMIT = 10.0  # % of a core used by processes outside the bench during a window


def _disturbed(run: dict[str, Any]) -> bool:
    others = run.get("cpu_percent", {}).get("others")
    return others is not None and others > OTHER_LOAD_LIMIT


HEADER = (
    f"  {'':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'server':>9}{'gen':>8}{'others':>8}"
    f"{'requests':>10}{'non-2xx':>8}"
)
CPU_NOTE = "  (CPU as % of one core over the load window: server, load generator, everything else on the machine)"


def print_machine(m: dict[str, Any], generator: str, threads: int) -> None:
    print("\njobhook bench")
    print(
        f"  machine     {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}; Python's sum(range(10**7)) in"
        f" {m['python_sum_range_1e7_ms']} ms; load average at start {' '.join(m['loadavg_at_start'])}"
    )
    p = m["packages"]
    print(
        f"  software    Python {m['python']}, SQLite {m['sqlite']}, uvicorn {p.get('uvicorn')} (uvloop {p.get('uvloop')},"
        f" httptools {p.get('httptools')}), starlette {p.get('starlette')}, aiosqlite {p.get('aiosqlite')}"
    )
    gen = (
        f"{m['load_generator']['wrk']}, {threads} thread(s)"
        if generator == "wrk"
        else "asyncio generator (bench/loadgen.py), 1 process"
    )
    print(f"  load        {gen}, on the same machine: it shares the {m['nproc']} cores with the server")
    f = m["fdatasync_4k"]
    print(
        f"  storage     {m['workdir']} ({m['filesystem']}); append 4 KiB + fdatasync: p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms"
    )
    print(
        f"  jobhook     commit {m['commit']}; every server is one uvicorn process, as `jobhook serve` runs it;"
        " all traffic on 127.0.0.1",
        flush=True,
    )


def print_callbacks(r: dict[str, Any]) -> None:
    mix = r["requests_file"]
    print(
        f"\ncallbacks — {r['connections']} keep-alive connections, {r['seconds']} s each; {mix['lines']:,} genuine signed"
        f" aivideoapi callbacks ({mix['first_deliveries']:,} first deliveries to distinct jobs + {mix['repeats']:,} repeats),"
        f" {r['jobs_seeded']:,} jobs seeded in {r['seed_s']} s"
    )
    print(HEADER)
    print(row("bare Starlette", r["bare"]))
    print(row("jobhook", r["jobhook"]))
    print(CPU_NOTE)
    print(f"  jobhook's threads: {_threads(r['jobhook'])}")
    print(f"  jobhook / bare: {fmt(r['ratio'], 3)}× the ceiling")
    print(
        f"  CPU per callback (jobhook, all threads): {fmt(r.get('cpu_us_per_callback'), 0)} µs;"
        f" the bare app per request: {fmt(r.get('bare_cpu_us_per_request'), 0)} µs"
    )
    g = r.get("group_commit") or {}
    if g.get("commits"):
        print(
            f"  group commit: {g['writes']:,.0f} writes in {g['commits']:,.0f} commits"
            f" ({fmt(g['mean_group'])} writes per commit and fsync); a write's statements {fmt(g['write_us'])} µs"
            f" in the event loop, a COMMIT {fmt(g['commit_ms'])} ms in the writer's thread"
        )
    d = r["durability"]
    print(
        f"  durability (after SIGKILL): {d['answered_2xx']:,} answered 2xx; the database holds {d['in_db_accepted']:,} accepted +"
        f" {d['in_db_duplicate']:,} duplicate deliveries = {d['in_db_accepted'] + d['in_db_duplicate']:,}"
        f" ({d['in_flight_at_stop']} requests were in flight when the load stopped); receipts count"
        f" {d['deliveries_counted_by_receipts']:,}; jobs completed by callback {d['jobs_completed_by_callback']:,};"
        f" refused {d['in_db_refused'] or 0} → every 2xx durable: {'yes' if d['every_2xx_durable'] else 'NO'}"
    )
    if d["duplicate_share"] is not None:
        print(f"  duplicates among the deliveries jobhook took: {100 * d['duplicate_share']:.1f} %")
    if r["jobhook"]["sent"] > r["jobhook"]["lines"]:
        print("  NOTE: the generator went past the end of the request file and replayed it (extra duplicates)")
    if "profile" in r:
        print_profile(r["profile"])


def print_profile(p: dict[str, Any]) -> None:
    if "samples" in p:
        print(
            f"  profile (py-spy, {p['samples']:,} samples of the jobhook process; the profiler slows it: figures above not for the record)"
        )
    for title, key in (
        ("by thread", "by_thread_percent"),
        ("by category", "by_category_percent"),
        ("top functions", "top_leaf_percent"),
    ):
        entries = p.get(key) or []
        if entries:
            print(f"    {title}:")
            for name, pct in entries:
                print(f"      {pct:5.1f} %  {name}")
    if p.get("strace"):
        print("  strace -c of the server (it slows the server: figures above not for the record):")
        for line in p["strace"].strip().splitlines():
            print(f"      {line}")


def print_poller(r: dict[str, Any]) -> None:
    idle = r["idle_cpu_percent"]
    print(f"\npoller — {r['open_jobs']:,} open jobs (seeded in {r['seed_s']} s), every next poll and deadline far away")
    print(f"  idle CPU over {r['idle_seconds']} s, % of one core (from /proc/<pid>/stat):")
    print(f"    jobhook, {r['open_jobs']:,} open jobs   {fmt(idle['jobhook_open_jobs'], 3, ' %')}")
    print(f"    jobhook, no jobs            {fmt(idle['jobhook_empty'], 3, ' %')}")
    print(f"    bare Starlette              {fmt(idle['bare'], 3, ' %')}")
    print(f"    (everything else meanwhile  {fmt(idle.get('others'), 1, ' %')})")
    d = r["due_now"]
    b = r["baseline"]
    print(
        f"  {d['due']:,} polls due at once (JOBHOOK_POLL_CONCURRENCY {d['concurrency_setting']}), fake provider answering"
        f" each poll after {d['provider_latency_ms']:g} ms:"
    )
    print(f"  {'':<30}{'polls/s':>9}{'max in flight':>15}{'mean in flight':>16}   time share at 0…8 in flight")
    print(
        f"  {'jobhook poller':<30}{fmt(d.get('per_s'), 0):>9}{fmt(d.get('max_in_flight')):>15}"
        f"{fmt(d.get('mean_in_flight'), 2):>16}   {_levels(d.get('time_share_by_level'))}"
    )
    print(
        f"  {'generator, 8 connections':<30}{fmt(b.get('per_s'), 0):>9}{fmt(b.get('max_in_flight')):>15}"
        f"{fmt(b.get('mean_in_flight'), 2):>16}   {_levels(b.get('time_share_by_level'))}"
    )
    cpu = d["cpu_percent"]
    print(
        f"  jobhook polled {d['count']:,} times in {fmt(d.get('window_s'), 1)} s, {d['completed_by_poll']:,} jobs completed by poll"
        f" ({'all' if d['all_polled'] else 'NOT all'}); CPU meanwhile: jobhook {fmt(cpu.get('jobhook'), 0, '%')},"
        f" fake {fmt(cpu.get('fake'), 0, '%')}, everything else {fmt(cpu.get('others'), 0, '%')}"
    )
    print(f"  jobhook / baseline: {fmt(r['ratio'], 3)}×")
    if "profile" in r:
        print_profile(r["profile"])


def _threads(run: dict[str, Any]) -> str:
    threads = run.get("server_threads_cpu_percent") or {}
    return ", ".join(f"{name} {pct:.0f}%" for name, pct in threads.items()) or "—"


def _levels(share: dict[str, float] | None) -> str:
    if not share:
        return "—"
    return " ".join(f"{k}:{100 * v:.0f}%" for k, v in share.items() if v >= 0.005)


def print_api(r: dict[str, Any]) -> None:
    print(
        f"\napi — {r['jobs']:,} jobs in the database ({r['db_mb']} MB, seeded in {r['seed_s']} s: {r['seed_timings_s']}),"
        f" answers of {r['body_bytes']['get']} B (GET) and {r['body_bytes']['list']:,} B (list page); the bare app answers"
        " the same paths with those bodies"
    )
    print(HEADER)
    for key in r["jobhook"]:
        what, conns = key.split("_c")
        print(row(f"bare    {what} c={conns}", r["bare"][key]))
        print(row(f"jobhook {what} c={conns}", r["jobhook"][key]))
    print(CPU_NOTE)
    ratios = ", ".join(
        f"{key.replace('_c', ' c=')} {fmt(_ratio(r['jobhook'][key]['rps'], r['bare'][key]['rps']), 3)}×"
        for key in r["jobhook"]
    )
    print(f"  jobhook / bare req/s: {ratios}")
    print(f"  get = GET /v1/jobs/{{random existing id}}, list = GET {workload.LIST_PATH}")


def print_submit(r: dict[str, Any]) -> None:
    print(
        f"\nsubmit — POST /v1/jobs, {r['connections']} connections, {r['seconds']} s; the fake provider answers at once"
    )
    print(HEADER)
    print(row("bare Starlette", r["bare"]))
    print(row("jobhook", r["jobhook"]))
    cpu = r["jobhook"]["cpu_percent"]
    print(f"{CPU_NOTE}; the fake provider used {fmt(cpu.get('fake'), 0, '%')} meanwhile")
    c = r["check"]
    print(
        f"  jobhook / bare: {fmt(r['ratio'], 3)}×; {c['answered_2xx']:,} answered 2xx, {c['jobs_in_db']:,} jobs in the database"
        f" {c['jobs_by_status']}, {c['submissions_accepted']:,} submissions accepted, the provider saw {c['provider_saw']}"
    )
    print(f"  jobhook's threads: {_threads(r['jobhook'])}")
    if "profile" in r:
        print_profile(r["profile"])


def print_postgresql(r: dict[str, Any]) -> None:
    pg_phase.print_phase(r)
    if "profile" in r.get("replicas_1", {}):
        print_profile(r["replicas_1"]["profile"])


PRINTERS = {
    "callbacks": print_callbacks,
    "poller": print_poller,
    "api": print_api,
    "submit": print_submit,
    "postgresql": print_postgresql,
    "openloop": openloop_phase.print_phase,
}


# -- verdicts ------------------------------------------------------------------------------------


def verdicts(phases: dict[str, Any], synchronous: str = "FULL") -> list[dict[str, Any]]:
    out = []

    def add(name: str, figure: str, target: str, met: bool | None) -> None:
        out.append({"target": name, "figure": figure, "wanted": target, "met": met})

    if "callbacks" in phases:
        r = phases["callbacks"]
        ratio = r["ratio"]
        add(
            "callback ingest vs the bare ceiling",
            f"{fmt(ratio, 3)}× ({fmt(r['jobhook']['rps'], 0)} / {fmt(r['bare']['rps'], 0)} req/s)",
            f"≥ {TARGETS['callback_ratio']}×",
            ratio is not None and ratio >= TARGETS["callback_ratio"],
        )
        cpu = r.get("cpu_us_per_callback")
        add(
            f"CPU per callback at {r['connections']} connections (all threads)",
            f"{fmt(cpu, 0)} µs",
            f"≤ {TARGETS['callback_cpu_us']:g} µs",
            cpu is not None and cpu <= TARGETS["callback_cpu_us"],
        )
        d = r["durability"]
        add(
            f"every 2xx durable (synchronous={synchronous}, checked after SIGKILL)",
            f"{d['answered_2xx']:,} 2xx, {d['in_db_accepted'] + d['in_db_duplicate']:,} in the database",
            "all",
            d["every_2xx_durable"] and synchronous in ("FULL", "EXTRA"),
        )
    if "poller" in phases:
        r = phases["poller"]
        idle = r["idle_cpu_percent"]["jobhook_open_jobs"]
        add(
            f"idle CPU with {r['open_jobs']:,} open jobs",
            f"{fmt(idle, 3)} % of a core",
            f"< {TARGETS['idle_cpu_percent']:g} %",
            idle is not None and idle < TARGETS["idle_cpu_percent"],
        )
    if "postgresql" in phases:
        out += pg_phase.verdicts(phases["postgresql"])
    if "api" in phases:
        r = phases["api"]
        for key, run in r["jobhook"].items():
            what, conns = key.split("_c")
            p99 = run["latency_ms"]["p99"]
            label = "GET /v1/jobs/{id}" if what == "get" else "list page"
            add(
                f"{label} p99 with {r['jobs']:,} jobs, {conns} connection(s)",
                f"{fmt(p99, 2)} ms",
                f"≤ {TARGETS['api_p99_ms']:g} ms",
                p99 <= TARGETS["api_p99_ms"] and run["ok_2xx"] == run["requests"],
            )
    if "openloop" in phases:
        for name, figure, wanted, met in openloop_phase.verdicts(phases["openloop"]):
            add(name, figure, wanted, met)
    return out


def disturbed_runs(phases: dict[str, Any]) -> list[str]:
    """Which measured windows had more than OTHER_LOAD_LIMIT % of a core used by something else."""
    found = []
    for phase, result in phases.items():
        for key, value in result.items():
            if isinstance(value, dict) and "cpu_percent" in value and _disturbed(value):
                found.append(f"{phase}/{key}")
            elif isinstance(value, dict):
                found += [f"{phase}/{key}/{k}" for k, v in value.items() if isinstance(v, dict) and _disturbed(v)]
    return found


def print_verdicts(items: list[dict[str, Any]], total: float, disturbed: list[str] | None = None) -> None:
    print("\ntargets")
    for item in items:
        mark = "met" if item["met"] else ("skipped" if item["met"] is None else "NOT met")
        print(f"  {mark:<8} {item['target']}: {item['figure']} (wanted {item['wanted']})")
    if disturbed:
        print(
            f"  WARNING: other processes used > {OTHER_LOAD_LIMIT:g} % of a core during {', '.join(disturbed)}: run again on a quiet machine"
        )
    print(f"\ntotal {total:.0f} s", flush=True)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="jobhook's bench: the service against a bare Starlette app.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (a smoke run)")
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases among {', '.join(PHASES)}")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "asyncio"), default="auto", help="auto: wrk when installed"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1–2: the generator shares the machine)")
    parser.add_argument("--poll-latency", type=float, default=0.02, help="seconds the fake provider takes per poll")
    parser.add_argument("--workdir", help="where the databases go (default: the system's temp directory)")
    parser.add_argument("--keep", action="store_true", help="keep the databases, request files and logs")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL", "EXTRA"),
        default="FULL",
        help="a diagnostic only: what fsync per commit costs (the targets are judged with FULL, the default)",
    )
    parser.add_argument(
        "--pg-general",
        action="store_true",
        help="postgresql: also one replica with JOBHOOK_POSTGRESQL_FAST_PATH=false (every callback through the general transaction)",
    )
    parser.add_argument(
        "--pg-settings",
        default="",
        metavar="NAME=VALUE,…",
        help="a diagnostic: PostgreSQL server settings for the postgresql and openloop phases "
        "(e.g. wal_compression=lz4); the targets are judged with PostgreSQL's defaults",
    )
    parser.add_argument("--profile", metavar="PY_SPY", help="record the callback phase's jobhook with this py-spy")
    parser.add_argument(
        "--profile-native", action="store_true", help="with --profile: native frames too (SQLite, fsync)"
    )
    parser.add_argument("--profile-idle", action="store_true", help="with --profile: idle (waiting) samples too")
    parser.add_argument(
        "--profile-strace",
        action="store_true",
        help="instead of py-spy: count the server's fsync/fdatasync with strace -c",
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; known: {', '.join(PHASES)}")
    if args.generator == "wrk" and not loadgen.WRK:
        parser.error("wrk is not installed; use --generator asyncio")
    bench = Bench(args)
    try:
        results = bench.run([p for p in PHASES if p in phases])
        if args.profile or args.profile_strace:
            results["profiled"] = True  # the profiler slows the server: these figures are not for the record
    finally:
        bench.cleanup()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
