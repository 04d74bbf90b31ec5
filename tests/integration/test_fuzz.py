"""A property-based fuzz of every route against /openapi.json (Schemathesis over real HTTP).

The real app runs under uvicorn on loopback with JOBHOOK_API_TOKENS set. Each documented operation is
fuzzed twice: with a valid bearer token, and with no credentials. The properties, for every answer:
no 5xx, the status is documented for the operation, the content type is one it documents, the
documented headers are there, and the body matches the documented schema. Cases that break the
schema on purpose (Schemathesis's negative mode) must also be refused with a 4xx.

Generated ids almost never name a real job, so positive cases are sometimes pointed at the jobs,
tokens and tasks the fixture made: that is how the fuzz gets past the 404s into the routes' logic.
Bounded: a fixed number of examples per operation, derandomized, no example database, so that a
run is repeatable and takes a few seconds of the suite.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service import openapi
from service.app import create_app
from service.config import Settings
from tests.conftest import Service
from tests.fakes.server import free_socket, serve_asgi

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "fuzz-token-0123456789abcdef"
# Enough to find what a first pass over a route finds; the whole fuzz stays well under a minute.
# To search harder by hand: FUZZ_EXAMPLES=500 FUZZ_SEED=1 pytest tests/integration/test_fuzz.py
EXAMPLES = {"bearer": 40, "anonymous": 12}
if os.environ.get("FUZZ_EXAMPLES"):
    EXAMPLES = dict.fromkeys(EXAMPLES, int(os.environ["FUZZ_EXAMPLES"]))
SEED = int(os.environ["FUZZ_SEED"]) if os.environ.get("FUZZ_SEED") else None
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# segmind is not configured here: it answers provider_not_configured.
PROVIDERS = ["simulator", "simulator", "aivideoapi", "apiframe", "apiinone", "segmind"]
# Configured, at a closed port: their jobs are made (and their callbacks taken) but never reach them.
CLOSED_PROVIDERS = ["aivideoapi", "apiframe", "apiinone"]

SCHEMA = schemathesis.openapi.from_dict(openapi.DOCUMENT)
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (result.ok() for result in SCHEMA.get_all_operations())}
# The stream never ends by itself: with a token it is tested in test_operations, not here.
CASES = [
    pytest.param(name, mode, id=f"{mode}:{name}")
    for name in OPERATIONS
    for mode in EXAMPLES
    if (name, mode) != ("GET /v1/stream", "bearer")
]


@dataclasses.dataclass
class Target:
    """The service under fuzz and the real things in it that generated cases may name."""

    svc: Service
    finished_ids: list[str]  # jobs that will not make `?wait=` hold
    tracked_id: str  # a job the backend submits itself
    other_ids: list[str]  # the same, one per real provider
    callbacks: dict[str, tuple[str, str | None]]  # callback token → its job's provider and task id
    media_token: str
    task_id: str  # the finished job's task at the simulator, whose image it serves
    delivery_ids: list[int]

    def known(self, operation: str) -> dict[str, list[Any]]:
        """Real values for the path parameters of `operation`."""
        if operation == "GET /v1/jobs/{job_id}":
            return {"job_id": self.finished_ids}
        if operation.startswith("POST /callbacks/"):
            return {"token": list(self.callbacks)}
        if operation.startswith("GET /media/"):
            return {"token": [self.media_token]}
        if operation == "GET /v1/jobs/{job_id}/images/{index}":
            return {"job_id": self.finished_ids[:1], "index": [0]}
        return {
            "job_id": [*self.finished_ids, self.tracked_id, *self.other_ids],
            "task_id": [self.task_id],
            "index": [0],
            "ext": ["jpeg"],
            "path": ["app.js", "app.css", "index.html"],
        }


@contextlib.asynccontextmanager
async def serve(folder: Path) -> AsyncIterator[Service]:
    """jobhook as the conftest `jobhook` fixture starts it, with API tokens, for a whole module.

    Forwarding goes to a closed loopback port with one attempt, so that the outbox holds dead deliveries;
    the real providers are configured at that port too, so that their jobs exist but never finish.
    """
    sock, closed = free_socket(), free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    settings = Settings.from_environ(
        {
            "JOBHOOK_DATABASE": str(folder / "jobhook.db"),
            "JOBHOOK_MEDIA_DIR": str(folder / "media"),
            "JOBHOOK_PUBLIC_URL": url,
            "JOBHOOK_API_TOKENS": TOKEN,
            "JOBHOOK_CALLBACK_GRACE": "0.5",
            "JOBHOOK_POLL_INTERVAL": "0.2",
            "JOBHOOK_POLL_MAX_INTERVAL": "0.5",
            "JOBHOOK_SIMULATOR_LATENCY": "0.2",
            "JOBHOOK_SUBMIT_TIMEOUT": "2",
            "JOBHOOK_FORWARD_URL": f"{closed_url}/hook",
            "JOBHOOK_FORWARD_SECRET": "whsec_" + base64.b64encode(b"fuzz" * 8).decode(),
            "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0",
            **{f"JOBHOOK_{name.upper()}_API_KEY": "sk-fuzz" for name in CLOSED_PROVIDERS},
            **{f"JOBHOOK_{name.upper()}_BASE_URL": closed_url for name in CLOSED_PROVIDERS},
        }
    )
    app = create_app(settings, self_url=url)
    try:
        async with serve_asgi(app, sock=sock) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield Service(url, client, settings, app.state.runtime)
    finally:
        closed.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    async with serve(tmp_path_factory.mktemp("fuzz")) as svc:
        svc.client.headers["Authorization"] = f"Bearer {TOKEN}"
        # Finished by a poll: the poller then mirrors its image at once (after a callback, on its next wake).
        done = await svc.submit(
            provider="simulator", prompt="a finished poster", provider_options={"simulate": {"drop_callback": True}}
        )
        failed = await svc.submit(
            provider="simulator", prompt="a failed poster", provider_options={"simulate": {"fail": True}}
        )
        tracked = await svc.submit(provider="simulator", prompt="the backend submits this one", submit=False)
        # The backend's own submissions to each real provider: their callbacks go through every adapter.
        others = [await svc.submit(provider=name, prompt="a poster", submit=False) for name in CLOSED_PROVIDERS]
        finished = [await svc.wait_finished(job["id"]) for job in (done, failed)]
        assert [job["status"] for job in finished] == ["completed", "failed"], finished
        engine = svc.runtime.engine
        media_url = engine.public_image_url(await _mirrored(svc, done["id"]), 0)
        assert media_url is not None and "/media/" in media_url, media_url
        deliveries = await _dead_deliveries(svc, 2)
        yield Target(
            svc=svc,
            finished_ids=[job["id"] for job in finished],
            tracked_id=tracked["id"],
            other_ids=[job["id"] for job in others],
            callbacks={
                engine.tokens.sign(job["id"], job["provider"]): (job["provider"], job["provider_task_id"])
                for job in [tracked, *others, *finished]
            },
            media_token=media_url.rsplit("/", 1)[1],
            task_id=finished[0]["provider_task_id"],
            delivery_ids=deliveries,
        )


async def _mirrored(svc: Service, job_id: str) -> Any:
    """The job once jobhook holds its image (mirroring follows completion)."""
    deadline = time.monotonic() + 10
    while True:
        job = await svc.runtime.store.get_job(job_id)
        if job is not None and job.held(0) is not None:
            return job
        assert time.monotonic() < deadline, "the image was never mirrored"
        await asyncio.sleep(0.05)


async def _dead_deliveries(svc: Service, count: int) -> list[int]:
    """The ids of the finished jobs' webhook deliveries, once their one attempt has failed."""
    deadline = time.monotonic() + 10
    while True:
        dead = (await svc.client.get("/v1/outbox", params={"status": "dead"})).json()["deliveries"]
        if len(dead) >= count:
            return [row["id"] for row in dead]
        assert time.monotonic() < deadline, f"no {count} dead deliveries: {dead}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("name", "mode"), CASES)
async def test_every_answer_is_documented_and_none_is_a_server_error(target: Target, name: str, mode: str) -> None:
    operation = OPERATIONS[name]
    headers = {"Authorization": f"Bearer {TOKEN}"} if mode == "bearer" else {}
    if mode == "bearer" and name.startswith(("POST /simulator/", "GET /simulator/v1/")):
        headers = {"Authorization": "Bearer sk-fuzz"}  # the simulator's own kind of key
    started = time.monotonic()
    statuses = await asyncio.to_thread(_fuzz, operation, target, headers, EXAMPLES[mode])
    # Not an assertion: what each operation answered and cost, for whoever tunes EXAMPLES (-rA shows it).
    tally = ", ".join(f"{status}×{count}" for status, count in sorted(statuses.items()))
    print(f"{name} [{mode}]: {statuses.total()} cases in {time.monotonic() - started:.2f} s: {tally}")


def _fuzz(operation: Any, target: Target, headers: dict[str, str], examples: int) -> collections.Counter[int]:
    """Run the bounded Hypothesis search for one operation; returns the statuses it was answered."""
    name = f"{operation.method.upper()} {operation.path}"
    positive = operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
    negative = operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    cases = st.one_of(_pointed(positive, target.known(name), name, target), negative)
    statuses: collections.Counter[int] = collections.Counter()

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        print_blob=False,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.seed(SEED)
    @hypothesis.given(case=cases)
    def run(case: schemathesis.Case) -> None:
        with requests.Session() as session:
            response = case.call(base_url=target.svc.url, session=session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    return statuses


def _pointed(
    cases: st.SearchStrategy[Any], known: dict[str, list[Any]], name: str, target: Target
) -> st.SearchStrategy[Any]:
    """Positive cases, some of them pointed at real jobs, tokens, tasks and files, with bodies that get
    past the first check (a known provider, a valid sign-in token, a genuine callback's headers)."""

    def point(case: Any, pick: Callable[[list[Any]], Any] | None) -> Any:
        if pick is None:
            return case
        for param, values in known.items():
            if param in case.path_parameters and values:
                case.path_parameters[param] = pick(values)
        body = case.body if isinstance(case.body, dict) else None
        if body is not None and name == "POST /v1/jobs":
            keep = ("prompt", "metadata", "submit", "provider_options")
            case.body = {"provider": pick(PROVIDERS), **{key: body[key] for key in keep if key in body}}
        elif body is not None and name == "POST /dashboard/login":
            body["token"] = TOKEN
        elif body is not None and name == "POST /v1/outbox/resend" and "ids" in body:
            body["ids"] = target.delivery_ids[: 1 + pick([0, 1])]
        elif body is not None and name == "POST /callbacks/{token}":
            provider, task_id = target.callbacks.get(case.path_parameters["token"], ("simulator", None))
            _genuine(case, body, provider, task_id, pick)
        return case

    pick = st.integers(0, 1000).map(lambda n: lambda values: values[n % len(values)])
    picks = st.one_of(st.none(), pick, pick)  # two in three positive cases are pointed
    return st.tuples(cases, picks).map(lambda pair: point(*pair))


def _genuine(
    case: Any, body: dict[str, Any], provider: str, task_id: str | None, pick: Callable[[list[Any]], Any]
) -> None:
    """The claim (and headers) a real delivery of `provider` carries, so that the later checks are reached."""
    given = next((body[key] for key in ("id", "jobId") if isinstance(body.get(key), str) and body[key].strip()), None)
    task_id = task_id or given or "fuzz-task"
    status = pick(["completed", "failed", "processing", "pending", body.get("status")])
    if provider == "apiframe":  # a bare webhook: the job object, statuses in capitals
        body.update(jobId=task_id, status=status.upper() if isinstance(status, str) else status)
        return
    body.update(id=task_id, status=status)
    case.headers = {
        **(case.headers or {}),
        "X-Task-Id": task_id,
        "X-Timestamp": str(int(time.time())),
        "X-Event": f"task.{status}" if isinstance(status, str) else "task.completed",
    }
