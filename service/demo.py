"""`jobhook demo`: the whole flow on this machine, with the built-in simulator, in a few seconds.

It starts the real service on a free loopback port, submits a batch whose `provider_options`
script the simulator (duplicates, a dropped callback, a stale timestamp, a failure), forges a
callback, and prints every event as it happens. For failover and circuits (SPEC §8) it needs a second
provider: a second simulator, run by the demo on its own loopback port, plays `aivideoapi` (whose wire
format the simulator speaks), and the demo runs its account out of credits and later tops it up. The
demo also plays the user's backend, receiving what jobhook forwards (SPEC §6). It exits 0 only when each
job ended as scripted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
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
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import logs
from service.app import create_app
from service.config import Settings
from service.simulator import Simulator
from service.store.engines import database_label

FINISHED = ("completed", "failed", "timed_out")
# Short enough for the whole demo to take seconds; the defaults are 3 failures and 30 s (10 min without credits).
BREAKER_FAILURES = 2
COOLDOWN = 3
# The demo's second simulator plays aivideoapi; any `sk-` key is one it takes (it has no accounts).
AIVIDEOAPI_KEY = "sk-demo"
# The demo's backend checks the signatures of what jobhook forwards to it with this (base64 of 24 bytes).
BACKEND_SECRET = "whsec_am9iaG9vay1kZW1vLWJhY2tlbmQtc2VjcmV0"


@dataclasses.dataclass
class DemoJob:
    label: str
    prompt: str
    expect: str  # the status it must end in
    shows: str  # what this job demonstrates
    simulate: dict[str, Any] = dataclasses.field(default_factory=dict)
    aspect_ratio: str = "1:1"
    expect_by: str | None = None
    provider: str | list[str] = "simulator"
    # (provider, state) of each attempt it must end with, oldest first; None: not checked.
    expect_attempts: list[tuple[str, str]] | None = None
    id: str = ""
    seen: int = 0
    at: str = ""  # the provider of its current attempt, as its events tell


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

# Submitted one after another, in this order, while the demo's aivideoapi is out of credits.
BOTH = ["aivideoapi", "simulator"]
ROUTED = [
    DemoJob(
        "switch",
        'A menu board, "TODAY: RAMEN"',
        "completed",
        "aivideoapi refuses it (out of credits): done by the simulator, the next candidate",
        provider=BOTH,
        expect_attempts=[("aivideoapi", "rejected"), ("simulator", "completed")],
    ),
    DemoJob(
        "again",
        'A shop sign, "BOOKS & TEA"',
        "completed",
        f"refused too: {BREAKER_FAILURES} in a row open aivideoapi's circuit; done by the simulator",
        provider=BOTH,
        expect_attempts=[("aivideoapi", "rejected"), ("simulator", "completed")],
    ),
    DemoJob(
        "skip",
        'A race bib, "NO. 42"',
        "completed",
        "aivideoapi's circuit is open: tried last, so the simulator takes it and aivideoapi gets no request",
        provider=BOTH,
        expect_attempts=[("simulator", "completed")],
    ),
    DemoJob(
        "probe",
        'A festival wristband, "ALL ACCESS"',
        "completed",
        f"aivideoapi alone: waits queued while its circuit is open ({COOLDOWN} s), then probes it",
        provider="aivideoapi",
        expect_attempts=[("aivideoapi", "completed")],
    ),
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


def demo_environ(
    folder: Path, url: str, aivideoapi_url: str, backend_url: str, database: str | None = None
) -> dict[str, str]:
    """Short timings so that every path shows within seconds; nothing from the user's environment.

    `aivideoapi_url`: the demo's second simulator, playing aivideoapi. It is free (priced 0, so no
    `cost_usd` pretends otherwise) and on loopback, so its images are mirrored only because the demo
    allows 127.0.0.1 (JOBHOOK_MIRROR_ALLOW_NETWORKS; the built-in simulator's need no exception).
    `backend_url`: the demo's stand-in for the user's backend, where events are forwarded."""
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
        "JOBHOOK_AIVIDEOAPI_API_KEY": AIVIDEOAPI_KEY,
        "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi_url,
        "JOBHOOK_AIVIDEOAPI_PRICES": "0",
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.1/32",
        "JOBHOOK_ROUTE_BREAKER_FAILURES": str(BREAKER_FAILURES),
        "JOBHOOK_ROUTE_COOLDOWN": f"{COOLDOWN}s",
        "JOBHOOK_ROUTE_CREDITS_COOLDOWN": f"{COOLDOWN}s",
        "JOBHOOK_ROUTE_MAX_COOLDOWN": f"{4 * COOLDOWN}s",
        "JOBHOOK_FORWARD_URL": backend_url,
        "JOBHOOK_FORWARD_SECRET": BACKEND_SECRET,
    }


def demo_settings(
    folder: Path, url: str, aivideoapi_url: str, backend_url: str, database: str | None = None
) -> Settings:
    return Settings.from_environ(demo_environ(folder, url, aivideoapi_url, backend_url, database))


class Backend:
    """The user's backend, as the demo plays it: it takes each event jobhook forwards, checks its
    Standard Webhooks signature as any backend should, and keeps one of each `webhook-id` (a retry or a
    resend carries the same id)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.forged = 0
        self.shown = 0  # how many of `events` the narration has told
        self.arrived = asyncio.Event()
        self._ids: set[str] = set()
        self._webhook = Webhook(BACKEND_SECRET)
        self.app = Starlette(routes=[Route("/events", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            self._webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return Response(status_code=400)
        if request.headers["webhook-id"] not in self._ids:
            self._ids.add(request.headers["webhook-id"])
            self.events.append(json.loads(body))
            self.arrived.set()
        return Response(status_code=204)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [event["data"] for event in self.events if event["type"] == type_]


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
    sock, aivideoapi_sock, backend_sock = _free_socket(), _free_socket(), _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    aivideoapi_url = f"http://127.0.0.1:{aivideoapi_sock.getsockname()[1]}"
    backend_url = f"http://127.0.0.1:{backend_sock.getsockname()[1]}/events"
    settings = demo_settings(folder, url, aivideoapi_url, backend_url, database)
    logs.setup("text", level=40)  # the demo narrates; the service's own log lines would repeat it
    # The second provider: a simulator like the built-in one, calling back to jobhook's public URL only.
    aivideoapi = Simulator(settings.simulator, callback_prefix=f"{url}/callbacks/")
    backend = Backend()
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
    out.line(
        "simulated too, by this demo:\n"
        f"  a second provider, aivideoapi, on {aivideoapi_url}: another simulator, speaking aivideoapi's wire\n"
        "  format; no account, nothing charged (priced 0 here). The demo runs its account out of credits, then\n"
        "  tops it up: that is what jobhook fails over from, and what opens and closes its circuit\n"
        f"  your backend, on {backend_url}: it receives the events jobhook forwards and checks their signatures"
    )
    out.line(f"dashboard {url}/dashboard — open it now to watch the jobs move")
    out.line(f"database {database_label(settings)}\n")
    try:
        async with contextlib.AsyncExitStack() as stack:
            await aivideoapi.start()
            stack.push_async_callback(aivideoapi.aclose)
            await stack.enter_async_context(_serving(aivideoapi.app, aivideoapi_sock, "aivideoapi simulator"))
            await stack.enter_async_context(_serving(backend.app, backend_sock, "backend"))
            urls = [url] + [
                await stack.enter_async_context(_replica(folder, url, (aivideoapi_url, backend_url), database, n))
                for n in range(1, replicas)
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
            ok = await _scenario(clients, out, aivideoapi, backend)
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
        for each in (sock, aivideoapi_sock, backend_sock):
            each.close()
    return 0 if ok else 1


@contextlib.asynccontextmanager
async def _serving(app: Starlette, sock: socket.socket, name: str) -> AsyncIterator[None]:
    """One of the demo's own parts as a server on `sock`, for as long as the demo serves."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise DemoError(f"the demo's {name} did not start")
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving


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
async def _replica(
    folder: Path, first: str, peers: tuple[str, str], database: str | None, n: int
) -> AsyncIterator[str]:
    """Another `jobhook serve` process on the same database. The first replica's simulator plays the
    provider for all of them (a simulator keeps its tasks in memory), and its address is the public one."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    environ = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOOK_")}
    # JOBHOOK_PUBLIC_URL is the same for every replica (a load balancer's address in production): here
    # the first replica's, so that the providers' callbacks arrive there, whichever replica took the job.
    environ.update(demo_environ(folder, first, *peers, database))
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


async def _scenario(clients: list[httpx.AsyncClient], out: Out, aivideoapi: Simulator, backend: Backend) -> bool:
    run = uuid.uuid4().hex[:8]  # the database may hold earlier demos' jobs: this run's keys are its own
    n = len(clients)

    def via(index: int) -> str:
        return f"  (via replica {index % n + 1})" if n > 1 else ""

    def follower(index: int) -> httpx.AsyncClient:
        return clients[(index + 1) % n]

    jobs = [*BATCH, *ROUTED]
    out.line(f"submitting a batch of {len(BATCH)} jobs to the simulator:")
    for index, job in enumerate(BATCH):
        await _submit(clients[index % n], job, run)
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

    out.line(
        f"failover and circuits (for the demo, {BREAKER_FAILURES} failures in a row open a provider's circuit "
        f"for {COOLDOWN} s):"
    )
    circuit = await _circuit(clients[0], "aivideoapi")
    if circuit["state"] != "closed" or circuit["failures_in_a_row"]:
        out.line(
            f"  NOTE: this database already has aivideoapi's circuit {circuit['state']} "
            f"({circuit['failures_in_a_row']} failures in a row, from an earlier demo): what follows will not go as scripted"
        )
    aivideoapi.refuse("insufficient_credits")
    out.line("  the demo's aivideoapi runs out of credits: it answers every creation 402 insufficient_credits")
    for index, job in enumerate(ROUTED, start=len(BATCH)):
        await _submit(clients[index % n], job, run)
        shown = " → ".join(job.provider) if isinstance(job.provider, list) else job.provider
        out.line(f"  {job.label:7} {job.id}  {shown:23} {out.paint(job.shows, '2')}{via(index)}")
    aivideoapi.refuse(None)
    out.line(
        "  the demo tops up aivideoapi's credits; jobhook is not told: the circuit stays open until its cooldown\n"
        "  ends, then one job (the probe) tries aivideoapi again\n"
    )

    out.line("what happens, as it happens:")
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        states = []
        for index, job in enumerate(jobs):
            states.append(await _show_new_events(follower(index), out, job))
        _show_forwarded(out, backend)
        if all(state in FINISHED for state in states):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # trailing duplicate deliveries, shown too
    for index, job in enumerate(jobs):
        await _show_new_events(follower(index), out, job)
    _show_forwarded(out, backend)

    out.line("\nwhere each job ended:")
    ok = same and forged.status_code == 404
    for index, job in enumerate(jobs):
        ok = await _ended(follower(index), out, job) and ok
    ok = await _routing_checks(clients[0], out, aivideoapi) and ok
    return await _forwarding_checks(out, backend, jobs) and ok


async def _submit(client: httpx.AsyncClient, job: DemoJob, run: str) -> None:
    body: dict[str, Any] = {
        "provider": job.provider,
        "prompt": job.prompt,
        "aspect_ratio": job.aspect_ratio,
        "output_format": "png",
        "metadata": {"demo": job.label},
    }
    if job.simulate:
        body["provider_options"] = {"simulate": job.simulate}
    response = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"demo-{job.label}-{run}"})
    response.raise_for_status()
    job.id = response.json()["id"]


async def _ended(client: httpx.AsyncClient, out: Out, job: DemoJob) -> bool:
    """One line on where the job ended (and, for the routed jobs, its attempts); True if as scripted."""
    data = (await client.get(f"/v1/jobs/{job.id}")).json()
    events = (await client.get(f"/v1/jobs/{job.id}/events", params={"limit": 500})).json()["events"]
    callbacks = [e["outcome"] for e in events if e["type"] == "callback"]
    polls = sum(1 for e in events if e["type"] == "poll")
    attempts = [(item["provider"], item["state"]) for item in data["attempts"]]
    good = data["status"] == job.expect and (job.expect_by is None or data["resolved_by"] == job.expect_by)
    good = good and (job.expect_attempts is None or attempts == job.expect_attempts)
    mark = out.paint("✓", "32") if good else out.paint("✗", "31")
    image = data["result"]["images"][0]["url"] if data.get("result") else (data.get("error") or {}).get("code", "")
    line = f"  {mark} {job.label:7} {data['status']:9} by {data['resolved_by'] or '-':8} "
    if job.expect_attempts is None:
        line += (
            f"callbacks: {callbacks.count('accepted')} accepted, {callbacks.count('duplicate')} duplicate, "
            f"{callbacks.count('refused')} refused; polls: {polls}   {image}"
        )
    else:
        line += "attempts: " + ", ".join(_attempt(item) for item in data["attempts"]) + f"   {image}"
    out.line(line)
    return good


def _attempt(item: dict[str, Any]) -> str:
    """`aivideoapi rejected (insufficient_credits)`: one attempt of a job, as `jobhook job` lists it."""
    error = item.get("error") or {}
    why = error.get("provider_code") or error.get("code")
    return f"{item['provider']} {item['state']}" + (f" ({why})" if why else "")


async def _routing_checks(client: httpx.AsyncClient, out: Out, aivideoapi: Simulator) -> bool:
    """What the demo's aivideoapi saw, and where its circuit ended: closed again."""
    refused, created = aivideoapi.stats["refused"], aivideoapi.stats["created"]
    state = (await _circuit(client, "aivideoapi"))["state"]
    # 2 refused (switch, again), nothing while its circuit was open (skip, and probe until the cooldown's
    # end), then the probe, taken.
    good = (refused, created, state) == (BREAKER_FAILURES, 1, "closed")
    mark = out.paint("✓", "32") if good else out.paint("✗", "31")
    out.line(
        f"  {mark} aivideoapi received {refused + created} creations: {refused} refused, none while its circuit "
        f"was open, {created} accepted (the probe); its circuit is {state} again"
    )
    return good


async def _circuit(client: httpx.AsyncClient, provider: str) -> dict[str, Any]:
    """The provider's circuit as `GET /v1/providers` shows it."""
    providers = (await client.get("/v1/providers")).json()["providers"]
    [row] = [row for row in providers if row["provider"] == provider]
    return dict(row["circuit"])


def _show_forwarded(out: Out, backend: Backend) -> None:
    """The provider events the backend received since last asked (job events are summed up at the end)."""
    for event in backend.events[backend.shown :]:
        type_, data = event["type"], event["data"]
        if type_.startswith("job."):
            continue
        said = {
            "provider.circuit_opened": f", {data.get('reason')}, until {str(data.get('until'))[11:19]} UTC",
            "provider.credits_low": ", balance exhausted" if data.get("exhausted") else "",
        }.get(type_, "")
        out.event("backend", f"received {type_}: {data.get('provider')}{said} (signature checked)", "35")
    backend.shown = len(backend.events)


async def _forwarding_checks(out: Out, backend: Backend, jobs: list[DemoJob]) -> bool:
    """Every job's end and each circuit change reached the backend, signed (the outbox may lag a moment).

    `provider.credits_low` may come too (once per crossing: not again on a database where an earlier
    demo's aivideoapi ran out already)."""
    wanted = {
        "job.completed": sum(1 for job in jobs if job.expect == "completed"),
        "job.failed": sum(1 for job in jobs if job.expect == "failed"),
        "provider.circuit_opened": 1,
        "provider.circuit_closed": 1,
    }

    def counts() -> dict[str, int]:
        return {type_: len(backend.of_type(type_)) for type_ in wanted}

    deadline = time.monotonic() + 10
    while counts() != wanted and time.monotonic() < deadline:
        backend.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(backend.arrived.wait(), max(0.0, deadline - time.monotonic()))
    got = counts()
    others = len(backend.events) - sum(got.values()) - len(backend.of_type("provider.credits_low"))
    good = got == wanted and backend.forged == 0 and others == 0
    mark = out.paint("✓", "32") if good else out.paint("✗", "31")
    listed = ", ".join(
        f"{count} {type_}" for type_, count in collections.Counter(e["type"] for e in backend.events).items()
    )
    out.line(f"  {mark} your backend received {len(backend.events)} events, each signature checked: {listed}")
    return good


async def _show_new_events(client: httpx.AsyncClient, out: Out, job: DemoJob) -> str:
    response = await client.get(f"/v1/jobs/{job.id}/events", params={"limit": 500})
    events = response.json()["events"]
    for event in events[job.seen :]:
        if event["type"] == "created":
            job.at = event["detail"].get("provider", "")
        text, color = describe(event, job.at)
        if event["type"] == "failover":
            job.at = event["detail"].get("to", "")
        if text:
            out.event(job.label, text, color)
    job.seen = len(events)
    status = (await client.get(f"/v1/jobs/{job.id}")).json()["status"]
    return str(status)


def describe(event: dict[str, Any], provider: str = "simulator") -> tuple[str, str]:
    """One event as a line of the demo's narration, with its colour; `provider`: the current attempt's."""
    detail, outcome = event["detail"], event["outcome"]
    kind = event["type"]
    if kind == "created" and (detail.get("candidates") or provider != "simulator"):
        return "to try: " + ", then ".join([provider, *detail.get("candidates", [])]), "0"
    if kind == "submit":
        if outcome == "accepted":
            task = str(detail.get("provider_task_id") or "")[:8]
            return f"submitted to {provider}, task {task}…", "0"
        answer = f"HTTP {detail['http_status']} " if detail.get("http_status") else ""
        said = f"{answer}{detail.get('provider_code') or ''} ({detail.get('message')})"
        if outcome == "rejected":
            return f"{provider} refused it: {said}", "33"
        return f"submission to {provider}: {outcome}, {said}", "33"
    if kind == "failover":
        return (
            f"failover {detail['from']} → {detail['to']}: the attempt was {detail['reason']}, it cannot have been charged",
            "33",
        )
    if kind == "circuit":
        return _describe_circuit(outcome, detail)
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


def _describe_circuit(outcome: str, detail: dict[str, Any]) -> tuple[str, str]:
    """A provider's circuit, as the job that saw it change (or waits for it) tells it."""
    provider = detail.get("provider")
    if outcome == "opened":
        return (
            f"provider.circuit_opened: {provider} failed {detail.get('failures_in_a_row')} in a row "
            f"({detail.get('reason')}), so jobhook sends it nothing for {detail.get('cooldown'):g} s",
            "31",
        )
    if outcome == "closed":
        return f"provider.circuit_closed: {provider} took the probe, its circuit is closed again", "32"
    if outcome == "waiting":
        until = str(detail.get("until", ""))
        return f"waits queued, not sent: {provider}'s circuit is open until {until[11:19]} UTC", "33"
    return f"circuit of {provider}: {outcome}", "0"
