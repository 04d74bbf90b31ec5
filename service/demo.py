"""`jobhook demo`: the whole flow on this machine, with the built-in simulator, in under a minute.

It starts the real service on a free loopback port, submits a batch whose `provider_options`
script the simulator (duplicates, a dropped callback, a stale timestamp, a failure), forges a
callback, and prints every event as it happens. It exits 0 only when each job ended as scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service import logs
from service.app import create_app
from service.config import Settings
from service.store.engines import database_label

FINISHED = ("completed", "failed", "timed_out")


@dataclasses.dataclass
class DemoJob:
    label: str
    prompt: str
    expect: str  # the status it must end in
    shows: str  # what this job demonstrates
    simulate: dict[str, Any] = dataclasses.field(default_factory=dict)
    aspect_ratio: str = "1:1"
    expect_by: str | None = None
    id: str = ""
    seen: int = 0


BATCH = [
    DemoJob(
        "poster",
        'A poster reading "SUMMER NIGHTS"',
        "completed",
        "a plain job, done by its callback",
        aspect_ratio="16:9",
        expect_by="callback",
    ),
    DemoJob(
        "logo",
        'A coffee shop logo with the word "BREW"',
        "completed",
        "the same callback delivered 3 times: applied once",
        {"duplicates": 2},
        expect_by="callback",
    ),
    DemoJob(
        "neon",
        'A neon sign saying "OPEN 24/7"',
        "completed",
        "4 copies of the callback at the same instant: applied once",
        {"concurrent_duplicates": 4},
        aspect_ratio="9:16",
        expect_by="callback",
    ),
    DemoJob(
        "label",
        'A vintage travel label, "LISBON"',
        "completed",
        "its callback never comes: caught by polling after the grace",
        {"drop_callback": True},
        aspect_ratio="3:4",
        expect_by="poll",
    ),
    DemoJob(
        "card",
        'A birthday card, "HAPPY 30TH, SAM"',
        "completed",
        "its callbacks carry a stale X-Timestamp: refused, finished by polling",
        {"stale_timestamp": True},
        aspect_ratio="4:3",
        expect_by="poll",
    ),
    DemoJob("cover", 'A book cover, "THE LAST ORBIT"', "failed", "the provider fails it", {"fail": True}),
]


class Out:
    """Terminal output, coloured only on a terminal that wants colour."""

    def __init__(self) -> None:
        self.color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.started = time.monotonic()

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def event(self, label: str, text: str, code: str = "0") -> None:
        elapsed = time.monotonic() - self.started
        self.line(f"  {elapsed:5.1f}s  {label:7} {self.paint(text, code)}")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def demo_environ(folder: Path, url: str, database: str | None = None) -> dict[str, str]:
    """Short timings so that every path shows within seconds; nothing from the user's environment."""
    return {
        "JOBHOOK_DATABASE": database or str(folder / "jobhook.db"),
        "JOBHOOK_MEDIA_DIR": str(folder / "media"),
        "JOBHOOK_PUBLIC_URL": url,
        "JOBHOOK_CALLBACK_GRACE": "3",
        "JOBHOOK_POLL_INTERVAL": "1",
        "JOBHOOK_POLL_MAX_INTERVAL": "2",
        "JOBHOOK_JOB_TIMEOUT": "60",
        "JOBHOOK_SIMULATOR_LATENCY": "1.5",
        "JOBHOOK_SIMULATOR_CALLBACK_RETRIES": "0,2,4",
        "JOBHOOK_SIMULATOR_SEED": "1",
        "JOBHOOK_LOG_FORMAT": "text",
    }


def demo_settings(folder: Path, url: str, database: str | None = None) -> Settings:
    return Settings.from_environ(demo_environ(folder, url, database))


def run_demo(
    directory: str,
    *,
    keep_serving: bool = False,
    lead_in: float | None = None,
    linger: float | None = None,
    database: str | None = None,
    replicas: int = 1,
) -> int:
    """`lead_in`/`linger`: seconds to wait before the batch and to stay up after it — by default 5 and
    60 when someone is at a terminal (time to open the dashboard and look around), none otherwise:
    with stdin or stdout not a terminal (a pipe, CI, `make demo < /dev/null`) nobody is there to look.

    `database`: JOBHOOK_DATABASE instead of a new SQLite file in `directory` (a PostgreSQL URL, say);
    `replicas`: that many jobhook processes on it, the batch spread over them."""
    folder = Path(directory).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    interactive = sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()
    return asyncio.run(
        _run(
            folder,
            keep_serving,
            lead_in if lead_in is not None else (5.0 if interactive else 0.0),
            linger if linger is not None else (60.0 if interactive else 0.0),
            database,
            replicas,
        )
    )


def jobhook_command() -> str:
    """How this shell reaches the `jobhook` that runs now: `jobhook` when it is on PATH, else its path
    (`.venv/bin/jobhook` after `make demo`), else `python -m service`."""
    script = Path(sys.executable).parent / "jobhook"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m service"
    found = shutil.which("jobhook")
    if found and Path(found).resolve() == script.resolve():
        return "jobhook"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.absolute().relative_to(Path.cwd())))
    return shlex.quote(str(script))


def serve_again(settings: Settings) -> str:
    """The command that serves the demo's jobs again, images included (they are in the demo's media
    folder), on the default port, with callbacks reaching it (the simulator calls back there)."""
    return (
        f"JOBHOOK_DATABASE={shlex.quote(database_label(settings))} "
        f"JOBHOOK_MEDIA_DIR={shlex.quote(str(settings.media_dir))} "
        f"JOBHOOK_PUBLIC_URL=http://127.0.0.1:8000 {jobhook_command()} serve"
    )


async def _run(
    folder: Path, keep_serving: bool, lead_in: float, linger: float, database: str | None, replicas: int
) -> int:
    out = Out()
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = demo_settings(folder, url, database)
    logs.setup("text", level=40)  # the demo narrates; the service's own log lines would repeat it
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, self_url=url), log_level="error", access_log=False, lifespan="on")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            return 1
        await asyncio.sleep(0.02)
    out.line(out.paint("jobhook demo", "1") + f" — the service is up on {url} with the built-in simulator provider")
    out.line(f"dashboard {url}/dashboard — open it now to watch the jobs move")
    out.line(f"database {database_label(settings)}\n")
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls = [url] + [
                await stack.enter_async_context(_replica(folder, url, database, n)) for n in range(1, replicas)
            ]
            for n, other in enumerate(urls[1:], start=1):
                out.line(f"replica {n + 1} of {replicas} is up on {other} (another process, the same database)")
            clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=30)) for u in urls]
            if replicas > 1:
                out.line(
                    "the batch is spread over the replicas, each job followed on another one than took it;\n"
                    f"callbacks come to the public URL, {url} (a load balancer's address in production)\n"
                )
            if lead_in:
                out.line(f"(starting in {lead_in:g} s: time to open the dashboard)\n")
                await asyncio.sleep(lead_in)
            ok = await _scenario(clients, out)
            _where_to_look(out, settings, url, ok, keep_serving)
            if keep_serving:
                out.line(f"\nstill serving on {url} — the dashboard: {url}/dashboard — press Ctrl-C to stop")
                await serving
            elif linger:
                out.line(
                    f"\nthe dashboard stays up for {linger:g} s more ({url}/dashboard) — Ctrl-C to stop now "
                    "(--linger 0 skips this wait)"
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(linger)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        sock.close()
    return 0 if ok else 1


def _where_to_look(out: Out, settings: Settings, url: str, ok: bool, keep_serving: bool) -> None:
    """Said as soon as the batch is over, before any wait: the verdict and how to go on."""
    out.line("")
    out.line("where to look:")
    out.line(f"  dashboard      {url}/dashboard  (live while the demo runs; --keep-serving keeps it up)")
    out.line(f"  database       {database_label(settings)}")
    out.line(f"  images         {settings.media_dir} (jobhook's own copies)")
    out.line(f"  serve it again {serve_again(settings)}")
    out.line(
        f"  then           {jobhook_command()} jobs   ·   curl localhost:8000/v1/jobs   ·   localhost:8000/dashboard"
    )
    if not keep_serving:
        out.line("  (jobhook demo --keep-serving leaves the API and the simulator's images up after the run)")
    out.line("")
    verdict = out.paint("every job ended as scripted", "32") if ok else out.paint("something went wrong", "31")
    out.line(f"demo finished in {time.monotonic() - out.started:.1f}s: {verdict}")


@contextlib.asynccontextmanager
async def _replica(folder: Path, first: str, database: str | None, n: int) -> AsyncIterator[str]:
    """Another `jobhook serve` process on the same database. The first replica's simulator plays the
    provider for all of them (a simulator keeps its tasks in memory), and its address is the public one."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    environ = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOOK_")}
    # JOBHOOK_PUBLIC_URL is the same for every replica (a load balancer's address in production): here
    # the first replica's, so that the providers' callbacks arrive there, whichever replica took the job.
    environ.update(demo_environ(folder, first, database))
    environ["JOBHOOK_SIMULATOR_BASE_URL"] = f"{first}/simulator"
    log = folder / f"replica-{n + 1}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port),
            env=environ, stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 30
            while True:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise DemoError(f"replica {n + 1} did not start: see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


class DemoError(Exception):
    """The demo cannot run as asked: one line for the user."""


async def _scenario(clients: list[httpx.AsyncClient], out: Out) -> bool:
    run = uuid.uuid4().hex[:8]  # the database may hold earlier demos' jobs: this run's keys are its own
    n = len(clients)

    def via(index: int) -> str:
        return f"  (via replica {index % n + 1})" if n > 1 else ""

    def follower(index: int) -> httpx.AsyncClient:
        return clients[(index + 1) % n]

    out.line("submitting a batch of 6 jobs:")
    for index, job in enumerate(BATCH):
        body: dict[str, Any] = {
            "provider": "simulator",
            "prompt": job.prompt,
            "aspect_ratio": job.aspect_ratio,
            "output_format": "png",
            "metadata": {"demo": job.label},
        }
        if job.simulate:
            body["provider_options"] = {"simulate": job.simulate}
        response = await clients[index % n].post(
            "/v1/jobs", json=body, headers={"Idempotency-Key": f"demo-{job.label}-{run}"}
        )
        response.raise_for_status()
        job.id = response.json()["id"]
        out.line(f"  {job.label:7} {job.id}  {out.paint(job.shows, '2')}{via(index)}")

    again = await follower(0).post(
        "/v1/jobs",
        json={
            "provider": "simulator",
            "prompt": BATCH[0].prompt,
            "aspect_ratio": "16:9",
            "output_format": "png",
            "metadata": {"demo": "poster"},
        },
        headers={"Idempotency-Key": f"demo-poster-{run}"},
    )
    same = again.json().get("id") == BATCH[0].id
    out.line(
        f"  the poster again with the same Idempotency-Key → the same job ({'yes' if same else 'NO'}), sent once"
        + via(1)
    )

    forged = await clients[-1].post(
        "/callbacks/eyJmb3JnZWQiOnRydWV9.not-our-signature",
        json={"id": "whatever", "status": "completed", "output": {"urls": ["https://evil.example/x.png"]}},
        headers={"X-Event": "task.completed", "X-Task-Id": "whatever", "X-Timestamp": str(int(time.time()))},
    )
    out.line(f"  a forged callback (bad token signature) → HTTP {forged.status_code}, refused, nothing revealed\n")

    out.line("what happens, as it happens:")
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        states = []
        for index, job in enumerate(BATCH):
            states.append(await _show_new_events(follower(index), out, job))
        if all(state in FINISHED for state in states):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # trailing duplicate deliveries, shown too
    for index, job in enumerate(BATCH):
        await _show_new_events(follower(index), out, job)

    out.line("\nwhere each job ended:")
    ok = same and forged.status_code == 404
    for index, job in enumerate(BATCH):
        data = (await follower(index).get(f"/v1/jobs/{job.id}")).json()
        events = (await follower(index).get(f"/v1/jobs/{job.id}/events")).json()["events"]
        callbacks = [e["outcome"] for e in events if e["type"] == "callback"]
        polls = sum(1 for e in events if e["type"] == "poll")
        good = data["status"] == job.expect and (job.expect_by is None or data["resolved_by"] == job.expect_by)
        ok = ok and good
        mark = out.paint("✓", "32") if good else out.paint("✗", "31")
        image = data["result"]["images"][0]["url"] if data.get("result") else (data.get("error") or {}).get("code", "")
        out.line(
            f"  {mark} {job.label:7} {data['status']:9} by {data['resolved_by'] or '-':8} "
            f"callbacks: {callbacks.count('accepted')} accepted, {callbacks.count('duplicate')} duplicate, "
            f"{callbacks.count('refused')} refused; polls: {polls}   {image}"
        )
    return ok


async def _show_new_events(client: httpx.AsyncClient, out: Out, job: DemoJob) -> str:
    response = await client.get(f"/v1/jobs/{job.id}/events")
    events = response.json()["events"]
    for event in events[job.seen :]:
        text, color = describe(event)
        if text:
            out.event(job.label, text, color)
    job.seen = len(events)
    status = (await client.get(f"/v1/jobs/{job.id}")).json()["status"]
    return str(status)


def describe(event: dict[str, Any]) -> tuple[str, str]:
    """One event as a line of the demo's narration, with its colour."""
    detail, outcome = event["detail"], event["outcome"]
    kind = event["type"]
    if kind == "submit":
        task = str(detail.get("provider_task_id") or "")[:8]
        return f"submitted to the provider, task {task}…", "0"
    if kind == "status":
        color = {"completed": "32", "failed": "31", "timed_out": "33"}.get(outcome, "36")
        return f"status → {outcome} (by {detail.get('by')})", color
    if kind == "callback":
        if outcome == "accepted":
            return "callback accepted", "0"
        if outcome == "duplicate":
            return 'callback again → answered "duplicate", job unchanged', "35"
        return f"callback refused: {detail.get('code')} ({detail.get('message')})", "33"
    if kind == "poll":
        return f"poll → provider says {outcome}", "34"
    if kind == "conflict":
        return f"conflict recorded: {detail.get('reported')} after {detail.get('kept')}", "33"
    return "", "0"
