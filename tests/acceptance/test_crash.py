"""SIGKILL at seeded random moments under a stream of work; afterwards the ledger of answers holds.

The real service (`jobhook serve`, a child process) takes submissions for a fake aivideoapi that
counts every create it receives, the provider's own genuine callbacks (retried when unanswered,
duplicated, some dropped so that polling must finish the job) and extra re-deliveries, and owes
notifications to a Standard Webhooks backend, Slack and email. It is killed with SIGKILL at random
moments and restarted on the same database. Every answer the test (or the fake provider, for the
callbacks) got is in a ledger. After a last restart and a drain, the service is stopped and the
database is read read-only, and the ledger is checked against it and against the receivers.

`JOBHOOK_CRASH_SEED=<n>` replays another kill schedule and other task scripts; `pytest -s` shows the
figures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import random
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.sinks import HTTPSink, SMTPSink, notify_env, sinks

SEED = int(os.environ.get("JOBHOOK_CRASH_SEED", "20240608"))
KILLS = 6
UPTIME = (1.0, 3.5)  # seconds from "ready" to the SIGKILL
DOWNTIME = (0.0, 1.0)  # seconds from the SIGKILL to the restart
STARTUP_KILLS = 0.4  # the share of restarts killed again before they are ready…
STARTING = (0.05, 1.0)  # …this long after the process started
SUBMIT_EVERY = (0.05, 0.35)
REPLAY_EVERY = (0.1, 0.5)
CREATE_DELAY = 0.3  # the provider's answer to a create: a kill in it leaves the submission uncertain
SINK_DELAY = 0.15  # the receivers' answers: a kill in it leaves a notification sent but not recorded
# Work claimed when the last kill came is leased for 45 s (polls, notifications): it comes due again
# after that. An uncertain submission ends at JOBHOOK_JOB_TIMEOUT; a timed-out job is polled on until
# twice that, which must outlast two polls cut by kills in a row (45 s leases) on a slow machine.
JOB_TIMEOUT = 60
DRAIN_LIMIT = 100.0  # "did not hang", not a timing assertion
FINAL = ("completed", "failed")
JOB_ID = re.compile(r"job_[0-9A-Z]{26}")


@dataclasses.dataclass
class Post:
    """One POST /v1/jobs attempt of the backend, and what came back."""

    prompt: str
    attempt: int
    sent: float
    status: int | None = None  # None: no answer (the service died, or was down)
    job_id: str | None = None
    error: str | None = None


@dataclasses.dataclass
class Ledger:
    posts: list[Post] = dataclasses.field(default_factory=list)
    kills: list[float] = dataclasses.field(default_factory=list)
    replays: int = 0
    startup_kills: int = 0

    def answered(self) -> dict[str, list[Post]]:
        by_prompt: dict[str, list[Post]] = collections.defaultdict(list)
        for post in self.posts:
            by_prompt[post.prompt].append(post)
        return by_prompt

    def kill_between(self, start: float, end: float) -> bool:
        return any(start <= kill <= end for kill in self.kills)


def script_for(body: dict[str, Any]) -> TaskScript:
    """Each task's behaviour, drawn from the seed and its prompt (not from the order of arrival)."""
    rng = random.Random(f"{SEED}/{body['input']['prompt']}")
    return TaskScript(
        outcome="failed" if rng.random() < 0.2 else "completed",
        complete_after=rng.uniform(0.3, 2.5),
        drop_callback=rng.random() < 0.1,
        duplicates=rng.choice((0, 0, 1, 2)),
        concurrent_duplicates=2 if rng.random() < 0.25 else 0,
    )


class Backend:
    """The backend: submits jobs with an Idempotency-Key, and retries one until it is answered."""

    def __init__(self, url: str, ledger: Ledger, rng: random.Random) -> None:
        self.url = url
        self.ledger = ledger
        self.rng = rng
        self.pending: set[asyncio.Task[None]] = set()
        self.prompts: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            prompt = f"crash {len(self.prompts):03d}"
            self.prompts.append(prompt)
            task = asyncio.create_task(self.submit(prompt))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*SUBMIT_EVERY))

    async def submit(self, prompt: str) -> None:
        body = {"provider": "aivideoapi", "prompt": prompt, "metadata": {"seed": SEED}}
        headers = {"Idempotency-Key": f"crash-{SEED}-{prompt}"}
        for attempt in range(1, 1000):
            post = Post(prompt, attempt, time.monotonic())
            self.ledger.posts.append(post)
            try:
                # A fresh connection each time: a pooled one may belong to a process that is gone.
                async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
                    response = await client.post("/v1/jobs", json=body, headers=headers)
            except httpx.HTTPError as exc:
                post.error = type(exc).__name__
            else:
                post.status = response.status_code
                if response.status_code == 202:
                    post.job_id = response.json()["id"]
                    return
                post.error = response.text[:300]
                if response.status_code != 503:
                    return  # a wrong answer: the checks report it
            await asyncio.sleep(0.3)


async def replay(fake: FakeAivideoapi, ledger: Ledger, rng: random.Random, stop: asyncio.Event) -> None:
    """A provider re-delivering finished events (they do, PROVIDERS.md §1): genuine duplicates."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*REPLAY_EVERY))
        finished = sorted(task.id for task in fake.tasks.values() if task.final and task.callback_url)
        if finished:
            ledger.replays += 1
            await fake.deliver(rng.choice(finished))


async def all_jobs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "200"}
    while True:
        page = (await client.get("/v1/jobs", params=params)).json()
        jobs += page["jobs"]
        if not page["next_cursor"]:
            return jobs
        params["cursor"] = page["next_cursor"]


async def left_to_do(client: httpx.AsyncClient, backend: Backend) -> str | None:
    """What is not finished yet (None: nothing): answers owed to the backend, jobs, notifications."""
    if backend.pending:
        return f"{len(backend.pending)} submissions not answered yet"
    unfinished = {job["id"]: job["status"] for job in await all_jobs(client) if job["status"] not in FINAL}
    if unfinished:
        return f"{len(unfinished)} jobs not final: {unfinished}"
    pending = (await client.get("/v1/outbox", params={"status": "pending", "limit": "200"})).json()["deliveries"]
    if pending:
        return f"{len(pending)} notifications pending: {[(row['id'], row['destination']) for row in pending][:10]}"
    return None


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def wire_ids(received: list[tuple[str, float]]) -> dict[str, list[float]]:
    """notification id → the times it arrived on the wire."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    for notification_id, at in received:
        times[notification_id].append(at)
    return times


def check_wire(name: str, times: dict[str, list[float]], expected: dict[str, str], ledger: Ledger) -> int:
    """Each notification arrived at least once; a second copy only across a kill (sent, not yet
    recorded when jobhook died: at least once, same id). Returns how many extra copies came."""
    missing = sorted(set(expected) - set(times))
    unknown = sorted(set(times) - set(expected))
    assert not missing, f"{name}: {len(missing)} notifications never arrived: {missing[:5]}"
    assert not unknown, f"{name}: ids jobhook never recorded: {unknown[:5]}"
    for notification_id, arrivals in times.items():
        for first, second in itertools.pairwise(arrivals):
            assert ledger.kill_between(first, second), (
                f"{name}: {notification_id} arrived twice ({second - first:.2f} s apart) with no kill between"
            )
    return sum(len(arrivals) - 1 for arrivals in times.values())


@pytest.mark.timeout(240)
async def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    started = time.monotonic()
    ledger = Ledger()
    async with (
        FakeAivideoapi(callback_retry_delays=(0.0, 1.0, 2.5), callback_timeout=10, create_delay=CREATE_DELAY) as fake,
        sinks() as (slack, backend_sink, smtp),
    ):
        fake.script_for = script_for
        # Answers that take a while, so that kills fall between a send and its record.
        slack.delay = backend_sink.delay = smtp.delay = SINK_DELAY
        env = {
            "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-crash",
            "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
            "JOBHOOK_CALLBACK_GRACE": "2",
            "JOBHOOK_POLL_INTERVAL": "0.5",
            "JOBHOOK_POLL_MAX_INTERVAL": "2",
            "JOBHOOK_SUBMIT_TIMEOUT": "2",
            "JOBHOOK_JOB_TIMEOUT": str(JOB_TIMEOUT),
            **notify_env(slack, backend_sink, smtp, JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,0.5,1,1,1,1,1,1,1,1"),
        }
        service = ServeProcess(tmp_path, env)
        backend = Backend(service.url, ledger, random.Random(f"{SEED}/submit"))
        await service.start()
        try:
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(backend.run(stop)),
                asyncio.create_task(replay(fake, ledger, random.Random(f"{SEED}/replay"), stop)),
            ]
            kills = random.Random(f"{SEED}/kill")
            for _ in range(KILLS):
                await asyncio.sleep(kills.uniform(*UPTIME))
                ledger.kills.append(time.monotonic())
                service.kill()
                await asyncio.sleep(kills.uniform(*DOWNTIME))
                if kills.random() < STARTUP_KILLS:  # killed again while it starts (recovery, migrations)
                    service.spawn()
                    await asyncio.sleep(kills.uniform(*STARTING))
                    ledger.kills.append(time.monotonic())
                    ledger.startup_kills += 1
                    service.kill()
                await service.start()
            chaos_seconds = time.monotonic() - started
            stop.set()
            await asyncio.gather(*workers)
            # The last restart: everything owed must now finish by itself.
            drain_started = time.monotonic()
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                while (left := await left_to_do(client, backend)) is not None:
                    assert time.monotonic() - drain_started < DRAIN_LIMIT, (
                        f"not drained: {left}\n{service.log()[-3000:]}"
                    )
                    await asyncio.sleep(0.5)
            drain_seconds = time.monotonic() - drain_started
            await asyncio.sleep(1.0)  # a stray copy of a notification or a callback would come by now
            await fake.wait_idle(timeout=15)
        finally:
            service.stop()
        database = tmp_path / "jobhook.db"
        with read_only(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            jobs = {row["id"]: dict(row) for row in db.execute("SELECT * FROM jobs")}
            receipts = {
                (row["job_id"], row["event_key"]): row["count"] for row in db.execute("SELECT * FROM callback_receipts")
            }
            events: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
            for row in db.execute("SELECT * FROM job_events ORDER BY id"):
                events[row["job_id"]].append({**dict(row), "detail": json.loads(row["detail"])})
            notifications = {row["id"]: dict(row) for row in db.execute("SELECT * FROM notifications")}
            outbox = [dict(row) for row in db.execute("SELECT * FROM outbox")]
        figures = check_everything(
            ledger, fake, backend, jobs, receipts, events, notifications, outbox, slack, backend_sink, smtp
        )
    figures.update(
        seed=SEED,
        kills=len(ledger.kills),
        of_which_while_starting=ledger.startup_kills,
        chaos_s=round(chaos_seconds, 1),
        drain_s=round(drain_seconds, 1),
        total_s=round(time.monotonic() - started, 1),
    )
    print("\ncrash test figures:", json.dumps(figures, indent=1))


def check_everything(
    ledger: Ledger,
    fake: FakeAivideoapi,
    backend: Backend,
    jobs: dict[str, dict[str, Any]],
    receipts: dict[tuple[str, str], int],
    events: dict[str, list[dict[str, Any]]],
    notifications: dict[str, dict[str, Any]],
    outbox: list[dict[str, Any]],
    slack: HTTPSink,
    webhook: HTTPSink,
    smtp: SMTPSink,
) -> dict[str, Any]:
    checks = 0

    # -- submissions: every acknowledged one is kept, and none reached the provider twice -------------
    by_key = {job["idempotency_key"]: job for job in jobs.values()}
    assert len(by_key) == len(jobs), "a job without the backend's Idempotency-Key"
    creates: dict[str, list[Any]] = collections.defaultdict(list)
    for create in fake.creates:
        creates[create.body["input"]["prompt"]].append(create)
    uncertain = 0
    for prompt, posts in ledger.answered().items():
        wrong = [post for post in posts if post.status not in (None, 202, 503)]
        assert not wrong, f"{prompt}: answers that are neither 202 nor 503: {wrong}"
        answers = {post.job_id for post in posts if post.status == 202}
        assert len(answers) == 1, f"{prompt}: answered with jobs {answers} over {len(posts)} attempts"
        job = by_key.get(f"crash-{SEED}-{prompt}")
        assert job is not None and job["id"] in answers, f"{prompt}: acknowledged as {answers}, not in the database"
        assert len(creates[prompt]) <= 1, f"{prompt}: submitted {len(creates[prompt])} times to the provider"
        checks += 4
        if job["provider_task_id"] is None:
            # Cut by a kill before the provider's answer was recorded, and no callback bound it since.
            error = json.loads(job["error"] or "null")
            assert (job["status"], error and error["code"]) == ("failed", "submission_uncertain"), job
            assert job["submit_state"] == "uncertain", job
            uncertain += 1
        else:
            [create] = creates[prompt]
            assert create.task_id == job["provider_task_id"], f"{prompt}: bound to another task"
            truth = fake.tasks[create.task_id].status
            assert job["status"] == truth, f"{prompt}: {job['status']}, the provider says {truth}"
        checks += 2
    assert len(jobs) == len(ledger.answered()), "a job that no submission asked for"

    # -- callbacks: every delivery answered 2xx is applied, each event once ---------------------------
    by_task = {job["provider_task_id"]: job for job in jobs.values() if job["provider_task_id"]}
    answered: dict[tuple[str, str], list[Any]] = collections.defaultdict(list)
    statuses: collections.Counter[str] = collections.Counter()
    for delivery in fake.deliveries:
        statuses[str(delivery.status)] += 1
        if delivery.status is not None and 200 <= delivery.status < 300:
            answered[(delivery.task_id, delivery.headers["X-Event"])].append(delivery)
        else:
            assert delivery.status in (None, 503), f"a genuine delivery refused: {delivery}"
        checks += 1
    for (task_id, event), deliveries in answered.items():
        job = by_task.get(task_id)
        assert job is not None, f"{task_id}: {len(deliveries)} deliveries answered 2xx, no job holds the task"
        count = receipts.get((job["id"], event), 0)
        assert count >= len(deliveries), f"{job['id']} {event}: {len(deliveries)} answered 2xx, {count} recorded"
        accepted = [d for d in deliveries if d.answer == {"status": "accepted"}]
        assert len(accepted) <= 1, f"{job['id']} {event}: accepted {len(accepted)} times"
        assert all(d.answer in ({"status": "accepted"}, {"status": "duplicate"}) for d in deliveries)
        checks += 4
    for (job_id, event), count in receipts.items():
        history = [e for e in events[job_id] if e["type"] == "callback" and e["detail"].get("event") == event]
        assert [e["outcome"] for e in history].count("accepted") == 1, (job_id, event, history)
        assert [e["outcome"] for e in history].count("duplicate") == count - 1, (job_id, event, count, history)
        checks += 2
    for job in jobs.values():
        finals = [e for e in events[job["id"]] if e["type"] == "status" and e["outcome"] in FINAL]
        assert len(finals) == 1, f"{job['id']}: final status events {finals}"
        checks += 1

    # -- notifications: written with the change, delivered to each destination at least once --------
    per_job: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for notification in notifications.values():
        if notification["job_id"] is not None:
            per_job[notification["job_id"]][notification["type"]] += 1
    for job in jobs.values():
        passed = {e["outcome"] for e in events[job["id"]] if e["type"] == "status"}
        owed = {f"job.{status}" for status in passed & {"completed", "failed", "timed_out"}}
        assert set(per_job[job["id"]]) == owed, f"{job['id']}: went through {passed}, notified {per_job[job['id']]}"
        assert all(n == 1 for n in per_job[job["id"]].values()), f"{job['id']}: {per_job[job['id']]}"
        checks += 2
    undelivered = [row for row in outbox if row["status"] != "delivered"]
    assert not undelivered, undelivered[:5]
    assert len(outbox) == 3 * len(notifications)
    assert webhook.rejected_signatures == 0
    expected = {notification_id: row["type"] for notification_id, row in notifications.items()}
    webhook_times = wire_ids([(r.headers["webhook-id"], r.time) for r in webhook.delivered()])
    for received in webhook.delivered():
        assert received.json()["type"] == expected[received.headers["webhook-id"]]
    email_times = wire_ids(
        [(str(m["X-Jobhook-Event-Id"]), at) for m, at in zip(smtp.messages, smtp.received_at, strict=True)]
    )
    duplicates = {
        "webhook": check_wire("webhook", webhook_times, expected, ledger),
        "email": check_wire("email", email_times, expected, ledger),
    }
    # Slack carries no event id: count its messages per job (a provider event names no job).
    slack_per_job = collections.Counter(
        (match.group(0) if (match := JOB_ID.search(r.body.decode())) else None) for r in slack.delivered()
    )
    owed_per_job = collections.Counter({job_id: sum(types.values()) for job_id, types in per_job.items()})
    owed_per_job[None] = sum(1 for n in notifications.values() if n["job_id"] is None)
    short = {job_id: (slack_per_job[job_id], n) for job_id, n in owed_per_job.items() if slack_per_job[job_id] < n}
    assert not short, f"slack: (messages, owed) per job: {short}"
    duplicates["slack"] = len(slack.delivered()) - len(notifications)
    checks += len(notifications) * 3

    posts = ledger.posts
    return {
        "jobs": len(jobs),
        "submissions": {
            "attempts": len(posts),
            "202": sum(p.status == 202 for p in posts),
            "503": sum(p.status == 503 for p in posts),
            "no_answer": sum(p.status is None for p in posts),
            "retried_prompts": sum(len(ps) > 1 for ps in ledger.answered().values()),
            "provider_creates": len(fake.creates),
            # The provider's answer never recorded: the kill fell between the send and the record.
            "cut_by_a_kill": sum(
                not any(e["type"] == "submit" and e["outcome"] == "accepted" for e in events[job_id]) for job_id in jobs
            ),
            "bound_by_a_callback": sum(
                any(e["type"] == "bound" and e["detail"].get("by") == "callback" for e in events[job_id])
                for job_id in jobs
            ),
            "ended_submission_uncertain": uncertain,
        },
        "callbacks": {
            "deliveries": len(fake.deliveries),
            "by_answer": dict(statuses),
            "answered_2xx": sum(len(ds) for ds in answered.values()),
            "replays": ledger.replays,
            "receipts": len(receipts),
        },
        "notifications": {
            "ids": len(notifications),
            "wire_copies": {
                "webhook": len(webhook.delivered()),
                "email": len(smtp.messages),
                "slack": len(slack.delivered()),
            },
            "wire_duplicates": duplicates,
        },
        "final_statuses": dict(collections.Counter(job["status"] for job in jobs.values())),
        "checks": checks,
    }
