"""Storage faults under the running service: the database read-only, the disk full, the database locked.

For each fault, injected from outside into `jobhook serve` (a child process) while it runs: callbacks
answer 503 with a code and Retry-After, so that the provider retries; `/readyz` fails; submissions are
refused before anything reaches the provider; reads go on. When the fault goes, the service recovers
by itself, without a restart: `/readyz` is ready again and the retried deliveries are applied. Then,
with the service stopped, the database (read read-only) holds everything acknowledged before, during
and after the fault, and nothing that was refused.

How each fault is made real, on a root machine (here and in CI):
- read-only: chmod does not stop root, and even for an unprivileged process it changes nothing for
  files already open (SQLite keeps its descriptors, so a running service goes on writing); a remount
  read-only is refused while files are open for writing, and ext4's errors=remount-ro cannot be
  undone without closing them. So the filesystem's answer is injected at the system-call boundary:
  strace attaches to the process and makes every positional write and sync (the calls SQLite makes
  on the database and its WAL) fail with EROFS, as on a filesystem that went read-only; detaching
  ends the fault. Needs strace and ptrace; skipped, saying why, without them.
- disk full, two ways: (1) the service's RLIMIT_FSIZE soft limit is lowered from outside with
  prlimit, so that no write lands past the first byte of any file (EFBIG, or a short write: SQLite's
  "disk I/O error" / "database or disk is full"; Python ignores SIGXFSZ), then raised back; works
  wherever the test runs as the service's user. (2) where `mount` is allowed, the database lives on a
  small tmpfs that a filler file fills to the last page (ENOSPC), then the filler is deleted.
- locked: another process holds `BEGIN EXCLUSIVE` on the database (an operator's sqlite3 shell, a
  backup tool), then rolls back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import DeliveryRecord, FakeAivideoapi, TaskScript
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink

BOUND = 30.0  # "did not hang", never a timing assertion


class Fault:
    """A storage fault made real from outside the service: `env` before it starts, then `inject`
    and `remove` while it runs. A machine that cannot make it skips the test and says why."""

    name: ClassVar[str] = ""

    def env(self, tmp_path: Path) -> dict[str, str]:
        return {}

    async def inject(self, service: ServeProcess) -> None:
        raise NotImplementedError

    async def remove(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Undo whatever is left (the test failed half-way)."""


def _threads_traced_by(pid: int) -> set[int]:
    """The TracerPid of each thread of `pid` (0: not traced)."""
    tracers = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            match = re.search(r"^TracerPid:\s+(\d+)", status.read_text(), re.MULTILINE)
            if match:
                tracers.add(int(match.group(1)))
    return tracers


class SystemCallFault(Fault):
    """The kernel's answer to the database's I/O calls, injected by strace: `CALLS` fail with `ERROR`."""

    CALLS = ""
    ERROR = ""

    def __init__(self) -> None:
        self.strace: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.log = Path(os.devnull)

    def env(self, tmp_path: Path) -> dict[str, str]:
        if shutil.which("strace") is None:
            pytest.skip(f"strace is not installed (apt-get install strace): the {self.name} fault is injected with it")
        self.log = tmp_path / "strace.log"
        return {}

    async def inject(self, service: ServeProcess) -> None:
        assert service.process is not None
        self.pid = service.process.pid
        command = ["strace", "-f", "-qq", "-o", os.devnull, "-p", str(self.pid)]
        command += ["-e", f"trace={self.CALLS}", "-e", f"inject={self.CALLS}:error={self.ERROR}"]
        with self.log.open("wb") as log:  # strace keeps its own descriptor
            self.strace = subprocess.Popen(command, stderr=log)  # noqa: ASYNC220 - it starts; /proc tells when it holds
        deadline = time.monotonic() + BOUND
        while _threads_traced_by(self.pid) != {self.strace.pid}:
            if self.strace.poll() is not None:
                reason = self.log.read_text(errors="replace").strip()
                pytest.skip(f"strace cannot attach to the service here (ptrace not permitted?): {reason}")
            assert time.monotonic() < deadline, "strace did not attach"
            await asyncio.sleep(0.02)

    async def remove(self) -> None:
        assert self.strace is not None
        self.strace.send_signal(signal.SIGINT)  # strace detaches and lets the process run on
        await asyncio.to_thread(self.strace.wait, BOUND)
        deadline = time.monotonic() + BOUND
        while _threads_traced_by(self.pid) - {0}:
            assert time.monotonic() < deadline, "strace did not detach"
            await asyncio.sleep(0.02)

    def teardown(self) -> None:
        if self.strace is not None and self.strace.poll() is None:
            self.strace.kill()
            self.strace.wait()


class ReadOnly(SystemCallFault):
    """As on a filesystem remounted read-only: every positional write and sync fails (SQLite writes
    its database and WAL with pwrite, and syncs with fdatasync or fsync)."""

    name = "read_only"
    CALLS = "pwrite64,pwritev,pwritev2,fsync,fdatasync,ftruncate"
    ERROR = "EROFS"


class SyncFails(SystemCallFault):
    """A disk that takes writes but fails to flush them: a commit's frames are written, its sync fails."""

    name = "sync_fails"
    CALLS = "fsync,fdatasync"
    ERROR = "EIO"


class FileSizeLimit(Fault):
    name = "disk_full_fsize"
    LIMIT = 1  # bytes: a write past the first byte of any file fails (EFBIG), one across it is short

    def __init__(self) -> None:
        self.pid = 0
        self.before: tuple[int, int] | None = None

    async def inject(self, service: ServeProcess) -> None:
        assert service.process is not None
        self.limit(service.process.pid)

    def limit(self, pid: int) -> None:
        self.pid = pid
        self.before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.LIMIT, self.before[1]))

    async def remove(self) -> None:
        assert self.before is not None
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.before)
        self.before = None

    def teardown(self) -> None:
        if self.before is not None:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.before)


class FullFilesystem(Fault):
    name = "disk_full_tmpfs"

    def __init__(self) -> None:
        self.mountpoint: Path | None = None
        self.filler: Path | None = None

    def env(self, tmp_path: Path) -> dict[str, str]:
        mountpoint = tmp_path / "small-disk"
        mountpoint.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "jobhook-test", str(mountpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self.mountpoint = mountpoint
        return {"JOBHOOK_DATABASE": str(mountpoint / "jobhook.db"), "JOBHOOK_MEDIA_DIR": str(mountpoint / "media")}

    async def inject(self, service: ServeProcess) -> None:
        assert self.mountpoint is not None
        self.filler = self.mountpoint / "filler"
        await asyncio.to_thread(_fill, self.filler)
        assert os.statvfs(self.mountpoint).f_bavail == 0

    async def remove(self) -> None:
        assert self.filler is not None
        self.filler.unlink()

    def teardown(self) -> None:
        if self.mountpoint is not None:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, check=False)


def _fill(path: Path) -> None:
    """Write until the filesystem has not one free page left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


class Locked(Fault):
    name = "locked"

    def __init__(self) -> None:
        self.holder: sqlite3.Connection | None = None

    async def inject(self, service: ServeProcess) -> None:
        database = Path(service.env["JOBHOOK_DATABASE"])
        holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False, timeout=BOUND)
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        self.holder = holder

    async def remove(self) -> None:
        assert self.holder is not None
        await asyncio.to_thread(self.holder.execute, "ROLLBACK")
        self.holder.close()
        self.holder = None

    def teardown(self) -> None:
        if self.holder is not None:
            self.holder.close()


FAULTS = [ReadOnly, SyncFails, FileSizeLimit, FullFilesystem, Locked]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, fault: Fault, fake: FakeAivideoapi, sink: HTTPSink, **extra: str
) -> AsyncIterator[ServeProcess]:
    env = {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-faults",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_CALLBACK_GRACE": "600",  # no poll finishes a job behind the test's back
        "JOBHOOK_JOB_TIMEOUT": "600",
        "JOBHOOK_FORWARD_URL": sink.url,
        "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
        "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0,0.5,1,1,1,1,1,1,1,1",
        **fault.env(tmp_path),
        **extra,
    }
    service = ServeProcess(tmp_path, env)
    await service.start()
    try:
        yield service
    finally:
        service.stop()


def assert_unavailable(answer: tuple[int | None, Any, dict[str, str]], what: str) -> None:
    status, body, headers = answer
    assert status == 503, f"{what}: {status} {body}"
    assert body["error"]["code"] == "storage_unavailable", f"{what}: {body}"
    assert headers.get("retry-after", "").isdigit(), f"{what}: no Retry-After in {headers}"


def answer_of(record: DeliveryRecord) -> tuple[int | None, Any, dict[str, str]]:
    return record.status, record.answer, record.answer_headers


async def deliver(fake: FakeAivideoapi, task_id: str) -> DeliveryRecord:
    """The provider delivers the task's event (as it does on each retry) and records the answer."""
    await fake.deliver(task_id)
    return fake.deliveries_for(task_id)[-1]  # one delivery per task at a time here


async def notified(client: httpx.AsyncClient, sink: HTTPSink, count: int) -> None:
    """Until `count` notifications reached the sink and jobhook recorded them delivered (bounded)."""
    deadline = time.monotonic() + BOUND
    while True:
        recorded = (await client.get("/v1/outbox", params={"status": "delivered"})).json()["deliveries"]
        if len(sink.delivered()) >= count and len(recorded) >= count:
            return
        assert time.monotonic() < deadline, f"{len(sink.delivered())} sent, {len(recorded)} recorded, of {count}"
        await asyncio.sleep(0.05)


async def callbacks_counted(client: httpx.AsyncClient, **labels: str) -> float:
    """jobhook_callback_deliveries_total for aivideoapi with these labels, from /metrics."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    wanted = {"provider": "aivideoapi", **labels}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "jobhook_callback_deliveries_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


async def wait_ready(client: httpx.AsyncClient, ready: bool) -> dict[str, Any]:
    """/readyz until it says `ready` (bounded); its last answer."""
    deadline = time.monotonic() + BOUND
    while True:
        response = await client.get("/readyz")
        if (response.status_code == 200) == ready:
            return response.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"/readyz still {response.status_code}: {response.text}"
        await asyncio.sleep(0.1)


def read_back(database: Path) -> dict[str, Any]:
    """What the database holds, read read-only with the service stopped."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return {
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
            "jobs": {row["request"]: dict(row) for row in db.execute("SELECT * FROM jobs")},
            "receipts": {
                (row["job_id"], row["event_key"]): row["count"] for row in db.execute("SELECT * FROM callback_receipts")
            },
            "events": [dict(row) for row in db.execute("SELECT * FROM job_events ORDER BY id")],
            "outbox": [dict(row) for row in db.execute("SELECT * FROM outbox")],
        }
    finally:
        db.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("make_fault", FAULTS, ids=[fault.name for fault in FAULTS])
async def test_storage_fault_answers_503_and_recovers_without_restart(tmp_path: Path, make_fault: type[Fault]) -> None:
    started = time.monotonic()
    fault = make_fault()
    try:
        await fault_scenario(tmp_path, fault, started)
    finally:
        fault.teardown()


async def fault_scenario(tmp_path: Path, fault: Fault, started: float) -> None:
    async with (
        FakeAivideoapi(complete_after=0.1, callback_timeout=60) as fake,
        HTTPSink(verify=True) as sink,
        running(tmp_path, fault, fake, sink) as service,
        httpx.AsyncClient(base_url=service.url, timeout=60) as client,
    ):
        fake.default_script = TaskScript(drop_callback=True)  # the test delivers each callback itself
        jobs = []
        for n in range(6):
            response = await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"fault {n}"})
            assert response.status_code == 202, response.text
            jobs.append(response.json())
        tasks = [job["provider_task_id"] for job in jobs]
        for task_id in tasks:
            await fake.wait_final(task_id)
        before, during = tasks[:3], tasks[3:]
        for task_id in before:  # acknowledged before the fault
            record = await deliver(fake, task_id)
            assert (record.status, record.answer) == (200, {"status": "accepted"}), record
        # Their notifications are sent and recorded: no send is in flight when the fault comes.
        await notified(client, sink, 3)

        await fault.inject(service)
        injected = time.monotonic()
        readiness = await wait_ready(client, ready=False)
        assert readiness["checks"]["database"].startswith("failing"), readiness
        refused_submission = {"provider": "aivideoapi", "prompt": "during the fault"}
        creates = len(fake.creates)
        # At once, as they would come: the provider's deliveries (new events, and a duplicate of an
        # acknowledged one), a submission, a poll asked for, and reads.
        *deliveries, duplicate, posted, refreshed, read, health = await asyncio.gather(
            *(deliver(fake, task_id) for task_id in during),
            deliver(fake, before[0]),
            client.post("/v1/jobs", json=refused_submission, headers={"Idempotency-Key": "during"}),
            client.post(f"/v1/jobs/{jobs[3]['id']}/refresh"),
            client.get(f"/v1/jobs/{jobs[0]['id']}"),
            client.get("/healthz"),
        )
        for record in [*deliveries, duplicate]:
            assert_unavailable(answer_of(record), f"callback during {fault.name}")
        for response in (posted, refreshed):
            assert_unavailable((response.status_code, response.json(), dict(response.headers)), response.url.path)
        assert len(fake.creates) == creates, "a submission jobhook could not record reached the provider"
        assert (read.status_code, read.json()["status"]) == (200, "completed"), read.text  # reads go on
        assert health.status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        # Every delivery is counted (SPEC §4): those turned away too, so that an operator sees them.
        turned_away = await callbacks_counted(client, outcome="unavailable", reason="storage_unavailable")
        assert turned_away == len(during) + 1, f"{turned_away} deliveries counted as turned away by the fault"
        assert service.process is not None and service.process.poll() is None
        fault_seconds = time.monotonic() - injected

        await fault.remove()
        readiness = await wait_ready(client, ready=True)
        assert set(readiness["checks"].values()) == {"ok"}, readiness
        for task_id in during:  # the provider's retries
            record = await deliver(fake, task_id)
            assert (record.status, record.answer) == (200, {"status": "accepted"}), record
        posted = await client.post("/v1/jobs", json=refused_submission, headers={"Idempotency-Key": "during"})
        assert posted.status_code == 202 and "idempotent-replayed" not in posted.headers, posted.text
        assert len(fake.creates) == creates + 1
        for job in jobs:
            assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "completed"
        await notified(client, sink, 6)
        await asyncio.sleep(0.5)  # a duplicate would come by now
    stored = read_back(Path(service.env["JOBHOOK_DATABASE"]))
    assert stored["integrity"] == "ok"
    by_prompt = {json.loads(request)["prompt"]: job for request, job in stored["jobs"].items()}
    assert sorted(by_prompt) == sorted([*(f"fault {n}" for n in range(6)), "during the fault"])
    for n, job in enumerate(jobs):
        kept = by_prompt[f"fault {n}"]
        assert (kept["status"], kept["provider_task_id"]) == ("completed", job["provider_task_id"])
        # Once each: the duplicate refused during the fault left nothing behind.
        assert stored["receipts"][(job["id"], "task.completed")] == 1
        history = [(e["type"], e["outcome"]) for e in stored["events"] if e["job_id"] == job["id"]]
        assert history.count(("callback", "accepted")) == 1 and ("callback", "duplicate") not in history, history
    ids = [r.headers["webhook-id"] for r in sink.delivered()]
    assert len(ids) == len(set(ids)) == 6 and sink.rejected_signatures == 0
    assert {row["status"] for row in stored["outbox"]} == {"delivered"} and len(stored["outbox"]) == 6
    print(
        f"\n{fault.name}: fault held {fault_seconds:.1f} s, {len(during) + 3} writes refused with 503,"
        f" {len(during)} retried deliveries applied, test took {time.monotonic() - started:.1f} s"
    )


@pytest.mark.timeout(120)
async def test_disk_full_while_the_provider_takes_a_submission_never_submits_twice(tmp_path: Path) -> None:
    """The job is recorded, the provider takes it, and the disk fills before its answer is recorded.

    The backend is answered 503 (jobhook could not record what happened) although the provider has
    the job: retried with the same Idempotency-Key, it gets that job, never a second submission, and
    the provider's retried callback binds the job to its task and finishes it.
    """
    fault = FileSizeLimit()
    try:
        async with (
            FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0, 1.0, 2.0), callback_timeout=60) as fake,
            HTTPSink(verify=True) as sink,
            running(tmp_path, fault, fake, sink, JOBHOOK_SUBMIT_TIMEOUT="2") as service,
            httpx.AsyncClient(base_url=service.url, timeout=60) as client,
        ):
            assert service.process is not None
            pid = service.process.pid

            def fill_the_disk(body: dict[str, Any]) -> TaskScript:
                # Called by the fake while it creates the task, before it answers jobhook.
                fault.limit(pid)
                return TaskScript()

            fake.script_for = fill_the_disk
            submission = {"provider": "aivideoapi", "prompt": "taken while the disk fills"}
            key = {"Idempotency-Key": "order-1"}
            first = await client.post("/v1/jobs", json=submission, headers=key)
            assert_unavailable((first.status_code, first.json(), dict(first.headers)), "POST /v1/jobs")
            [create] = fake.creates
            task = await fake.wait_final(create.task_id)
            fake.script_for = None
            await wait_ready(client, ready=False)
            await fault.remove()
            await wait_ready(client, ready=True)
            await fake.wait_idle(timeout=BOUND)  # the provider's callback attempts, until one is answered 2xx
            answers = [d.status for d in fake.deliveries_for(task.id)]
            assert answers[-1] == 200 and set(answers[:-1]) <= {503}, answers
            retried = await client.post("/v1/jobs", json=submission, headers=key)
            assert retried.status_code == 202, retried.text
            assert retried.headers.get("idempotent-replayed") == "true"
            job = retried.json()
            assert (job["provider_task_id"], job["status"]) == (task.id, "completed")
            await notified(client, sink, 1)
            await asyncio.sleep(6)  # past the submission's lease (4 s): nothing is sent again
            assert len(fake.creates) == 1
            assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "completed"
    finally:
        fault.teardown()
    stored = read_back(Path(service.env["JOBHOOK_DATABASE"]))
    [kept] = stored["jobs"].values()
    assert (kept["id"], kept["status"], kept["provider_task_id"]) == (job["id"], "completed", task.id)
    history = [(e["type"], e["outcome"]) for e in stored["events"]]
    assert ("bound", None) in history and history.count(("status", "completed")) == 1, history


STORM = [ReadOnly, SyncFails, FileSizeLimit]  # made and undone at once, so that they can come and go quickly


@pytest.mark.timeout(180)
@pytest.mark.parametrize("make_fault", STORM, ids=[fault.name for fault in STORM])
async def test_faults_coming_and_going_under_load_lose_nothing_acknowledged(
    tmp_path: Path, make_fault: type[Fault]
) -> None:
    """Submissions and the provider's callbacks keep coming while the fault comes and goes five times
    (seeded): whatever was answered 2xx is kept and applied once, whatever was answered 503 gets
    through on a retry, and the service ends ready, every job in the provider's state."""
    started = time.monotonic()
    rng = random.Random(8)
    fault = make_fault()
    answers: collections.Counter[str] = collections.Counter()
    acknowledged: dict[str, str] = {}  # prompt → job id
    try:
        async with (
            FakeAivideoapi(
                complete_after=0.3, callback_retry_delays=(0.0, 0.5, *[1.0] * 12), callback_timeout=60
            ) as fake,
            HTTPSink(verify=True) as sink,
            running(tmp_path, fault, fake, sink, JOBHOOK_SUBMIT_TIMEOUT="5") as service,
            httpx.AsyncClient(base_url=service.url, timeout=60) as client,
        ):

            async def submit(prompt: str) -> None:
                while True:  # the backend: the same Idempotency-Key until it is answered
                    response = await client.post(
                        "/v1/jobs",
                        json={"provider": "aivideoapi", "prompt": prompt},
                        headers={"Idempotency-Key": prompt},
                    )
                    answers[str(response.status_code)] += 1
                    if response.status_code == 202:
                        acknowledged[prompt] = response.json()["id"]
                        return
                    assert_unavailable((response.status_code, response.json(), dict(response.headers)), prompt)
                    await asyncio.sleep(0.3)

            async def backend(stop: asyncio.Event) -> None:
                submissions = []
                while not stop.is_set():
                    submissions.append(asyncio.create_task(submit(f"storm {len(submissions)}")))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rng.uniform(0.02, 0.2))
                await asyncio.gather(*submissions)

            stop = asyncio.Event()
            load = asyncio.create_task(backend(stop))
            for _ in range(5):
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                await fault.inject(service)
                await asyncio.sleep(rng.uniform(0.5, 2.5))
                await fault.remove()
            stop.set()
            await load
            await fake.wait_idle(timeout=BOUND)  # every callback answered, after its retries
            readiness = await wait_ready(client, ready=True)
            assert set(readiness["checks"].values()) == {"ok"}, readiness
            for prompt, job_id in acknowledged.items():
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] == "completed", (prompt, job)
    finally:
        fault.teardown()
    stored = read_back(Path(service.env["JOBHOOK_DATABASE"]))
    assert stored["integrity"] == "ok"
    kept = {json.loads(request)["prompt"]: job for request, job in stored["jobs"].items()}
    assert {prompt: job["id"] for prompt, job in kept.items()} == acknowledged
    creates = collections.Counter(create.body["input"]["prompt"] for create in fake.creates)
    assert set(creates) == set(acknowledged) and set(creates.values()) == {1}, creates
    delivered: collections.Counter[str] = collections.Counter()
    for record in fake.deliveries:
        delivered[str(record.status)] += 1
        if record.status == 200:
            job = next(job for job in kept.values() if job["provider_task_id"] == record.task_id)
            assert stored["receipts"][(job["id"], "task.completed")] >= 1
        else:
            assert_unavailable(answer_of(record), f"callback for {record.task_id}")
    accepted = [(e["job_id"]) for e in stored["events"] if (e["type"], e["outcome"]) == ("callback", "accepted")]
    assert sorted(accepted) == sorted(acknowledged.values())  # each event applied once
    log = service.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    print(
        f"\n{fault.name} x5 under load: {len(acknowledged)} jobs, submissions {dict(answers)},"
        f" callbacks {dict(delivered)}, test took {time.monotonic() - started:.1f} s"
    )


@pytest.mark.timeout(120)
async def test_a_submission_refused_when_the_sync_fails_does_not_come_back_after_a_crash(tmp_path: Path) -> None:
    fault = SyncFails()
    try:
        async with (
            FakeAivideoapi(complete_after=0.2, callback_timeout=60) as fake,
            HTTPSink(verify=True) as sink,
            running(tmp_path, fault, fake, sink, JOBHOOK_SUBMIT_TIMEOUT="2", JOBHOOK_JOB_TIMEOUT="10") as service,
            httpx.AsyncClient(base_url=service.url, timeout=60) as client,
        ):
            submission = {"provider": "aivideoapi", "prompt": "refused, then retried"}
            key = {"Idempotency-Key": "order-2"}
            await fault.inject(service)
            refused = await client.post("/v1/jobs", json=submission, headers=key)
            assert_unavailable((refused.status_code, refused.json(), dict(refused.headers)), "POST /v1/jobs")
            assert not fake.creates
            service.kill()  # before anything else is written: a crash, or an operator's restart
            fault.teardown()
            await service.start()
            retried = await client.post("/v1/jobs", json=submission, headers=key)
            assert retried.status_code == 202, retried.text
            job_id = retried.json()["id"]
            deadline = time.monotonic() + BOUND
            while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, job
                await asyncio.sleep(0.2)
    finally:
        fault.teardown()
    # Told 503, the backend retried with the same key: its job must be submitted, once.
    assert len(fake.creates) == 1, f"submitted {len(fake.creates)} times; the job ended {job['status']} {job['error']}"
    assert job["status"] == "completed", job
