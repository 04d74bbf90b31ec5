"""The simulator over real HTTP, mounted under /simulator in a parent app as jobhook mounts it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from service.config import SimulatorSettings
from service.simulator import Simulator
from tests.conftest import eventually
from tests.fakes.server import serve_asgi

AUTH = {"Authorization": "Bearer sk-test"}
FAST = SimulatorSettings(latency=0.05, retry_delays=(0.0, 0.1, 0.2), seed=1)


@contextlib.asynccontextmanager
async def running(
    settings: SimulatorSettings = FAST,
    *,
    clock: Callable[[], float] = time.time,
    mount: str | None = "/simulator",
    mount_name: str | None = None,
) -> AsyncIterator[tuple[Simulator, str]]:
    """The simulator served like jobhook serves it: mounted, started and closed by the parent's lifespan."""
    simulator = Simulator(settings, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await simulator.start()
        try:
            yield
        finally:
            await simulator.aclose()

    if mount is None:
        # Unmounted: the simulator's own app is the whole server.
        await simulator.start()
        try:
            async with serve_asgi(simulator.app) as url:
                yield simulator, url
        finally:
            await simulator.aclose()
        return
    parent = Starlette(routes=[Mount(mount, app=simulator.app, name=mount_name)], lifespan=lifespan)
    async with serve_asgi(parent) as url:
        yield simulator, url + mount


@dataclasses.dataclass
class Delivery:
    at: float
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A callback endpoint that records each delivery.

    `?fail=N` answers 500 to the first N deliveries of each task; `?hold=S` keeps each request open S seconds
    (to see concurrent copies overlap). Per-task counts let one receiver serve several scenarios at once.
    """

    def __init__(self) -> None:
        self.received: list[Delivery] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.body()
            await asyncio.sleep(float(request.query_params.get("hold", 0)))
            delivery = Delivery(time.monotonic(), dict(request.headers), body)
            self.received.append(delivery)
            failing = len(self.of(delivery.headers["x-task-id"])) <= int(request.query_params.get("fail", 0))
            return Response(status_code=500 if failing else 204)
        finally:
            self.in_flight -= 1

    def of(self, task_id: str) -> list[Delivery]:
        return [delivery for delivery in self.received if delivery.headers["x-task-id"] == task_id]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} callbacks, expected {count}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    async with serve_asgi(hooks.app) as url:
        yield hooks, url + "/hook"


def generation(prompt: str = "a red fox in snow", callback_url: str | None = None, **options: Any) -> dict:
    body: dict[str, Any] = {"model": "ideogram-v4", "input": {"prompt": prompt, **options}}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


async def create(client: httpx.AsyncClient, base: str, body: dict) -> str:
    response = await client.post(f"{base}/v1/images/generations", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


async def poll_final(client: httpx.AsyncClient, base: str, task_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = (await client.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()
        if task["status"] in ("completed", "failed"):
            return dict(task)
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.02)


async def test_a_missing_or_malformed_key_is_refused() -> None:
    keys = [{}, {"Authorization": "Bearer abc"}, {"Authorization": "Token sk-abc"}, {"Authorization": "Bearer"}]
    async with running() as (_, base), httpx.AsyncClient() as client:
        for headers in keys:
            created = await client.post(f"{base}/v1/images/generations", json=generation(), headers=headers)
            polled = await client.get(f"{base}/v1/tasks/{uuid.uuid4()}", headers=headers)
            for response in (created, polled):
                assert response.status_code == 401, headers
                error = response.json()["error"]
                assert error["code"] == "invalid_api_key"
                assert error["type"] == "authentication_error"
                assert error["message"]


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("not json", b"{nope", "body"),
    ("not an object", [1, 2], "body"),
    ("too large", json.dumps(generation("x" * 300_000)).encode(), "body"),
    ("no model", {"input": {"prompt": "x"}}, "model"),
    ("no input", {"model": "ideogram-v4"}, "input"),
    ("input not an object", {"model": "ideogram-v4", "input": "x"}, "input"),
    ("no prompt", {"model": "ideogram-v4", "input": {}}, "input.prompt"),
    ("empty prompt", generation(""), "input.prompt"),
    ("prompt not a string", generation(42), "input.prompt"),  # type: ignore[arg-type]
    ("prompt too long", generation("x" * 5001), "input.prompt"),
    ("bad size", generation(size="2:1"), "input.size"),
    ("bad speed", generation(rendering_speed="turbo"), "input.rendering_speed"),
    ("bad format", generation(output_format="webp"), "input.output_format"),
    ("bad callback_url", generation(callback_url="ftp://x"), "callback_url"),
    ("simulate not an object", generation(simulate=True), "input.simulate"),
    ("simulate unknown key", generation(simulate={"fial": True}), "input.simulate.fial"),
    ("fail not a bool", generation(simulate={"fail": "yes"}), "input.simulate.fail"),
    ("drop not a bool", generation(simulate={"drop_callback": 1}), "input.simulate.drop_callback"),
    ("stale not a bool", generation(simulate={"stale_timestamp": None}), "input.simulate.stale_timestamp"),
    ("negative duplicates", generation(simulate={"duplicates": -1}), "input.simulate.duplicates"),
    ("bool duplicates", generation(simulate={"duplicates": True}), "input.simulate.duplicates"),
    ("float copies", generation(simulate={"concurrent_duplicates": 1.5}), "input.simulate.concurrent_duplicates"),
    ("latency not a number", generation(simulate={"latency": "1s"}), "input.simulate.latency"),
    ("negative latency", generation(simulate={"latency": -1}), "input.simulate.latency"),
    ("refuse: no such code", generation(simulate={"refuse": "out_of_credits"}), "input.simulate.refuse"),
    ("refuse: not for a creation", generation(simulate={"refuse": "task_not_found"}), "input.simulate.refuse"),
    ("refuse: a status", generation(simulate={"refuse": 402}), "input.simulate.refuse"),
    ("refuse: a list", generation(simulate={"refuse": ["insufficient_credits"]}), "input.simulate.refuse"),
    ("refuse: null", generation(simulate={"refuse": None}), "input.simulate.refuse"),
]


async def test_invalid_requests_are_refused_naming_the_field() -> None:
    # One server for the whole table: a server start costs a quarter of a second.
    async with running() as (simulator, base), httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{base}/v1/images/generations",
                    content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                    headers=AUTH,
                )
                for _, body, _ in BAD_REQUESTS
            )
        )
        for (case, _, field), response in zip(BAD_REQUESTS, responses, strict=True):
            assert response.status_code == 400, (case, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_request", case
            assert field in error["message"], (case, error)
            assert set(error) == {"code", "message", "type"}, case
    assert simulator.stats["created"] == 0


# aivideoapi's error reference (PROVIDERS.md §1, seed 002): the status, the code, the type, for each
# refusal of a creation; the message is the seed's own where it gives one.
REFUSALS = [
    (400, "invalid_request", "invalid_request_error", None),
    (401, "invalid_api_key", "authentication_error", None),
    (402, "insufficient_credits", "billing_error", "Your credit balance is too low. Please top up."),
    (403, "ip_not_allowed", "permission_error", None),
    (404, "model_not_found", "invalid_request_error", None),
    (429, "rate_limit_exceeded", "rate_limit_error", None),
    (429, "spend_limit_exceeded", "billing_error", None),
    (500, "internal_error", "api_error", None),
    (503, "upstream_error", "upstream_error", None),
]


async def test_a_task_told_to_refuse_is_refused_as_aivideoapi_refuses_and_never_made() -> None:
    async with running() as (simulator, base), httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{base}/v1/images/generations", json=generation(simulate={"refuse": code}), headers=AUTH)
            for _, code, _, _ in REFUSALS
        ]
        accepted = await create(client, base, generation(simulate={"latency": 0}))
    for (status, code, kind, message), answer in zip(REFUSALS, answers, strict=True):
        assert answer.status_code == status, (code, answer.text)
        assert answer.headers["content-type"] == "application/json"
        error = answer.json()["error"]
        assert set(answer.json()) == {"error"} and set(error) == {"code", "message", "type"}, code
        assert (error["code"], error["type"]) == (code, kind)
        assert error["message"].strip() and error["message"] == (message or error["message"]), code
    assert accepted  # only the task not told to refuse was made
    assert simulator.stats["refused"] == len(REFUSALS) and simulator.stats["created"] == 1


async def test_a_refusing_account_refuses_every_creation_until_it_takes_them_again() -> None:
    async with running() as (simulator, base), httpx.AsyncClient() as client:
        simulator.refuse("insufficient_credits")
        broke = [
            await client.post(f"{base}/v1/images/generations", json=generation(f"p{n}"), headers=AUTH) for n in range(2)
        ]
        simulator.refuse("invalid_api_key")
        revoked = await client.post(f"{base}/v1/images/generations", json=generation(), headers=AUTH)
        # A request that is not valid is refused for that first, whatever the account's state.
        invalid = await client.post(f"{base}/v1/images/generations", json=generation(size="2:1"), headers=AUTH)
        simulator.refuse(None)
        task_id = await create(client, base, generation())
        final = await poll_final(client, base, task_id)
    assert [answer.status_code for answer in broke] == [402, 402]
    assert {answer.json()["error"]["code"] for answer in broke} == {"insufficient_credits"}
    assert revoked.status_code == 401 and revoked.json()["error"]["type"] == "authentication_error"
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_request"
    assert final["status"] == "completed"
    assert simulator.stats["refused"] == 3 and simulator.stats["created"] == 1
    with pytest.raises(ValueError, match="insufficient_credits"):
        simulator.refuse("out_of_credits")


async def test_an_unknown_model_is_not_found() -> None:
    body = {"model": "ideogram-v3", "input": {"prompt": "x"}}
    async with running() as (_, base), httpx.AsyncClient() as client:
        response = await client.post(f"{base}/v1/images/generations", json=body, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_unknown_tasks_files_and_paths_are_not_found() -> None:
    async with running() as (_, base), httpx.AsyncClient() as client:
        task = await client.get(f"{base}/v1/tasks/{uuid.uuid4()}", headers=AUTH)
        image = await client.get(f"{base}/files/{uuid.uuid4()}.png")
        path = await client.get(f"{base}/v2/nothing", headers=AUTH)
    assert task.status_code == 404 and task.json()["error"]["code"] == "task_not_found"
    assert image.status_code == 404 and image.json()["error"]["code"] == "file_not_found"
    assert path.status_code == 404 and set(path.json()["error"]) == {"code", "message", "type"}


async def test_create_answers_with_a_task_id_and_unknown_input_keys_are_ignored() -> None:
    async with running() as (simulator, base), httpx.AsyncClient() as client:
        response = await client.post(
            f"{base}/v1/images/generations",
            json=generation(size="16:9", rendering_speed="TURBO", output_format="png", style="anime", seed=4),
            headers=AUTH,
        )
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200 and body["msg"] == "success"
    assert uuid.UUID(body["data"]["taskId"]).version == 4
    assert simulator.stats["created"] == 1


IMAGES = [
    ({}, (768, 768), "JPEG", "image/jpeg"),
    ({"size": "16:9", "output_format": "png"}, (768, 432), "PNG", "image/png"),
    ({"size": "3:4", "output_format": "jpeg"}, (576, 768), "JPEG", "image/jpeg"),
    ({"size": "9:16"}, (432, 768), "JPEG", "image/jpeg"),
    ({"size": "4:3", "output_format": "png"}, (768, 576), "PNG", "image/png"),
]


async def test_a_task_goes_pending_then_processing_then_completed() -> None:
    settings = SimulatorSettings(latency=0.3, seed=1)
    async with running(settings) as (simulator, base), httpx.AsyncClient() as client:
        started = time.monotonic()
        task_id = await create(client, base, generation())
        seen: list[dict] = []
        while not seen or seen[-1]["status"] not in ("completed", "failed"):
            seen.append((await client.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json())
            assert time.monotonic() - started < 5, seen
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    statuses = [task["status"] for task in seen]
    assert list(dict.fromkeys(statuses)) == ["pending", "processing", "completed"]
    assert elapsed >= 0.3
    first, final = seen[0], seen[-1]
    assert set(first) == {"id", "status", "model", "created_at"}
    assert final == {
        "id": task_id,
        "status": "completed",
        "model": "ideogram-v4",
        "created_at": first["created_at"],
        "completed_at": final["completed_at"],
        "output": {"urls": [f"{base}/files/{task_id}.jpeg"], "metadata": {"model": "ideogram-ai/ideogram-v4"}},
    }
    assert isinstance(final["created_at"], int) and final["completed_at"] >= final["created_at"]
    assert simulator.stats["completed"] == 1 and simulator.stats["failed"] == 0


IMAGES = [
    ({}, (768, 768), "JPEG", "image/jpeg"),
    ({"size": "16:9", "output_format": "png"}, (768, 432), "PNG", "image/png"),
    ({"size": "3:4", "output_format": "jpeg"}, (576, 768), "JPEG", "image/jpeg"),
    ({"size": "9:16"}, (432, 768), "JPEG", "image/jpeg"),
    ({"size": "4:3", "output_format": "png"}, (768, 576), "PNG", "image/png"),
]


async def test_the_image_has_the_requested_size_and_format() -> None:
    async with running() as (_, base), httpx.AsyncClient() as client:
        ids = [
            await create(client, base, generation(f"prompt {n}", **options)) for n, (options, *_) in enumerate(IMAGES)
        ]
        finals = [await poll_final(client, base, task_id) for task_id in ids]
        images = [await client.get(final["output"]["urls"][0]) for final in finals]
        jpg = await client.get(f"{base}/files/{ids[0]}.jpg")
        wrong = await client.get(f"{base}/files/{ids[0]}.png")
    for final, image, (_, size, fmt, content_type) in zip(finals, images, IMAGES, strict=True):
        assert image.status_code == 200 and image.headers["content-type"] == content_type
        picture = Image.open(io.BytesIO(image.content))
        assert picture.format == fmt and picture.size == size, final
    assert jpg.content == images[0].content and wrong.status_code == 404


@pytest.mark.parametrize(("mount", "mount_name"), [(None, None), ("/simulator", "simulator"), ("/a/b", None)])
async def test_image_urls_follow_the_mount(mount: str | None, mount_name: str | None) -> None:
    async with running(mount=mount, mount_name=mount_name) as (_, base), httpx.AsyncClient() as client:
        task_id = await create(client, base, generation(output_format="png"))
        final = await poll_final(client, base, task_id)
        image = await client.get(final["output"]["urls"][0])
    assert final["output"]["urls"] == [f"{base}/files/{task_id}.png"]
    assert image.status_code == 200


async def test_simulate_fail_gives_a_failed_task_without_output_and_a_failed_callback() -> None:
    async with receiver() as (hooks, hook_url), running() as (simulator, base), httpx.AsyncClient() as client:
        task_id = await create(client, base, generation(callback_url=hook_url, simulate={"fail": True}))
        final = await poll_final(client, base, task_id)
        await hooks.wait_for(1)
    assert final["status"] == "failed"
    assert final["error"] == {"code": "upstream_error", "message": "Image generation failed"}
    assert "output" not in final and isinstance(final["completed_at"], int)
    assert hooks.received[0].headers["x-event"] == "task.failed"
    assert json.loads(hooks.received[0].body) == final
    assert simulator.stats["failed"] == 1 and simulator.stats["completed"] == 0


async def test_the_callback_carries_the_task_object_and_headers() -> None:
    now = [1781000000.75]
    async with (
        receiver() as (hooks, hook_url),
        running(clock=lambda: now[0]) as (simulator, base),
        httpx.AsyncClient() as client,
    ):
        task_id = await create(client, base, generation(callback_url=hook_url))
        now[0] = 1781000020.25
        await hooks.wait_for(1)
        polled = (await client.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()
        await asyncio.sleep(0.1)
    assert len(hooks.received) == 1
    headers, task = hooks.received[0].headers, json.loads(hooks.received[0].body)
    assert headers["content-type"] == "application/json"
    assert headers["x-event"] == "task.completed"
    assert headers["x-task-id"] == task_id
    assert headers["x-timestamp"] == "1781000020"
    assert task == polled
    assert task["created_at"] == 1781000000 and task["completed_at"] == 1781000020
    assert task["status"] == "completed" and task["output"]["urls"][0].startswith(base)
    assert simulator.stats["callbacks_sent"] == 1 and simulator.stats["callback_attempts_failed"] == 0


async def test_deliveries_without_a_2xx_are_retried_after_the_configured_delays_then_given_up() -> None:
    async with receiver() as (hooks, hook_url), running() as (simulator, base):
        async with httpx.AsyncClient() as client:
            recovers = await create(client, base, generation(callback_url=f"{hook_url}?fail=2"))
            never = await create(client, base, generation(callback_url=f"{hook_url}?fail=10"))
            await create(client, base, generation(callback_url="http://127.0.0.1:9/unreachable"))
        await hooks.wait_for(6)
        await asyncio.sleep(0.15)
    for task_id in (recovers, never):
        deliveries = hooks.of(task_id)
        assert len(deliveries) == 3  # retry_delays (0, 0.1, 0.2): three attempts in all
        assert deliveries[1].at - deliveries[0].at >= 0.1 and deliveries[2].at - deliveries[1].at >= 0.2
        assert len({delivery.body for delivery in deliveries}) == 1
    # 2 refused for `recovers`, 3 for `never`, 3 connection errors for the unreachable URL.
    assert simulator.stats["callback_attempts_failed"] == 8 and simulator.stats["callbacks_sent"] == 1


async def test_a_dropped_callback_is_never_delivered() -> None:
    settings = dataclasses.replace(FAST, drop_rate=1.0)
    async with receiver() as (hooks, hook_url), running(settings) as (simulator, base):
        async with httpx.AsyncClient() as client:
            dropped = await create(client, base, generation(callback_url=hook_url))
            kept = await create(client, base, generation(callback_url=hook_url, simulate={"drop_callback": False}))
            assert (await poll_final(client, base, dropped))["status"] == "completed"
        await hooks.wait_for(1)
        await asyncio.sleep(0.15)
    assert [delivery.headers["x-task-id"] for delivery in hooks.received] == [kept]
    assert simulator.stats["callbacks_dropped"] == 1 and simulator.stats["callbacks_sent"] == 1


async def test_simulate_drop_callback_drops_even_at_a_zero_rate() -> None:
    async with receiver() as (hooks, hook_url), running() as (simulator, base):
        async with httpx.AsyncClient() as client:
            task_id = await create(client, base, generation(callback_url=hook_url, simulate={"drop_callback": True}))
            assert (await poll_final(client, base, task_id))["status"] == "completed"
        await asyncio.sleep(0.15)
    assert hooks.received == [] and simulator.stats["callbacks_dropped"] == 1


async def test_duplicates_repeat_the_same_event_after_the_first_success() -> None:
    settings = dataclasses.replace(FAST, duplicate_rate=1.0)
    cases = [({"duplicates": 2}, 3), ({}, 2), ({"duplicates": 0}, 1)]  # successful deliveries expected
    async with receiver() as (hooks, hook_url), running(settings) as (simulator, base):
        async with httpx.AsyncClient() as client:
            ids = [
                await create(client, base, generation(callback_url=f"{hook_url}?fail=1", simulate=simulate))
                for simulate, _ in cases
            ]
        await hooks.wait_for(sum(1 + sent for _, sent in cases))
        await asyncio.sleep(0.15)
    for task_id, (simulate, sent) in zip(ids, cases, strict=True):
        deliveries = hooks.of(task_id)
        assert len(deliveries) == 1 + sent, simulate  # the first was answered 500, then retried
        assert len({delivery.body for delivery in deliveries}) == 1
    assert simulator.stats["callbacks_sent"] == 6


async def test_concurrent_duplicates_arrive_at_once() -> None:
    async with receiver() as (hooks, hook_url), running() as (simulator, base):
        async with httpx.AsyncClient() as client:
            body = generation(callback_url=f"{hook_url}?hold=0.1", simulate={"concurrent_duplicates": 3})
            await create(client, base, body)
        await hooks.wait_for(3)
        await asyncio.sleep(0.15)
    assert len(hooks.received) == 3 and hooks.max_in_flight == 3
    assert len({delivery.body for delivery in hooks.received}) == 1
    assert simulator.stats["callbacks_sent"] == 3


async def test_a_stale_timestamp_is_an_hour_old() -> None:
    async with receiver() as (hooks, hook_url), running(clock=lambda: 1781000000.0) as (_, base):
        async with httpx.AsyncClient() as client:
            await create(client, base, generation(callback_url=hook_url, simulate={"stale_timestamp": True}))
        await hooks.wait_for(1)
    assert hooks.received[0].headers["x-timestamp"] == str(1781000000 - 3600)


async def test_simulate_latency_overrides_the_setting() -> None:
    async with running(SimulatorSettings(latency=60.0)) as (_, base), httpx.AsyncClient() as client:
        started = time.monotonic()
        task_id = await create(client, base, generation(simulate={"latency": 0.1}))
        final = await poll_final(client, base, task_id, timeout=2.0)
    assert final["status"] == "completed" and time.monotonic() - started >= 0.1


async def test_the_same_seed_makes_the_same_decisions() -> None:
    settings = SimulatorSettings(latency=0.0, failure_rate=0.5, seed=7)

    async def outcomes() -> list[str]:
        async with running(settings) as (_, base), httpx.AsyncClient() as client:
            ids = [await create(client, base, generation(f"prompt {n}")) for n in range(12)]
            finals = await asyncio.gather(*(poll_final(client, base, task_id) for task_id in ids))
            return [final["status"] for final in finals]

    first, second = await outcomes(), await outcomes()
    assert first == second
    assert set(first) == {"completed", "failed"}


async def test_only_the_newest_tasks_are_kept() -> None:
    async with running() as (simulator, base), httpx.AsyncClient() as client:
        simulator.max_tasks = 2
        ids = [await create(client, base, generation(output_format="png")) for _ in range(3)]
        final = await poll_final(client, base, ids[2])
        gone = await client.get(f"{base}/v1/tasks/{ids[0]}", headers=AUTH)
        kept = await client.get(f"{base}/v1/tasks/{ids[1]}", headers=AUTH)
        image = await client.get(final["output"]["urls"][0].replace(ids[2], ids[0]))
    assert gone.status_code == 404 and kept.status_code == 200 and image.status_code == 404


async def test_closing_cancels_deliveries_still_waiting_to_retry() -> None:
    settings = SimulatorSettings(latency=0.0, retry_delays=(0.0, 600.0), seed=1)
    async with receiver() as (hooks, hook_url):
        started = time.monotonic()
        async with running(settings) as (_, base), httpx.AsyncClient() as client:
            await create(client, base, generation(callback_url=f"{hook_url}?fail=10"))
            await hooks.wait_for(1)
        assert time.monotonic() - started < 5
    assert len(hooks.received) == 1


async def test_mounted_simulator_only_calls_back_to_jobhook(jobhook: Any) -> None:
    """On jobhook's public port the simulator must not POST to addresses a stranger chooses."""
    async with jobhook() as svc:
        body = {"model": "ideogram-v4", "callback_url": "http://169.254.169.254/latest", "input": {"prompt": "x"}}
        response = await svc.client.post(
            "/simulator/v1/images/generations", json=body, headers={"Authorization": "Bearer sk-anyone"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"
        assert "callback_url" in response.json()["error"]["message"]


# What jobhook makes of each refusal, read by its aivideoapi adapter as the real provider's would be.
REJECTED = ["invalid_request", "invalid_api_key", "insufficient_credits", "ip_not_allowed", "model_not_found"]
RETRIED = {"rate_limit_exceeded": 429, "spend_limit_exceeded": 429, "internal_error": 500, "upstream_error": 503}


def told_to(code: str, prompt: str = "a refused poster") -> dict[str, Any]:
    return {"provider": "simulator", "prompt": prompt, "provider_options": {"simulate": {"refuse": code}}}


async def test_jobhook_reads_each_refusal_of_the_simulator_as_aivideoapis(jobhook: Any) -> None:
    """A definite refusal fails the job at once (502, the provider's code kept); 429 and 5xx are retried."""
    # Circuits aside: this test is about how each answer is read, not about how many make a provider shut.
    async with jobhook(JOBHOOK_ROUTE_BREAKER_FAILURES="100") as svc:
        for code in REJECTED:
            response = await svc.client.post("/v1/jobs", json=told_to(code))
            assert response.status_code == 502, (code, response.text)
            error = response.json()["error"]
            assert (error["code"], error["provider_code"]) == ("provider_rejected", code)
            job = await svc.job(error["job_id"])
            assert job["status"] == "failed" and job["error"]["provider_code"] == code
            assert [(item["provider"], item["state"]) for item in job["attempts"]] == [("simulator", "rejected")]
        for code, status in RETRIED.items():
            job = await svc.submit(**told_to(code))
            assert job["status"] == "queued" and job["provider_task_id"] is None, job

            async def retried(job_id: str = job["id"]) -> list[dict[str, Any]]:
                events = await svc.events(job_id)
                return [event["detail"] for event in events if (event["type"], event["outcome"]) == ("submit", "retry")]

            [first, *_] = await eventually(retried)
            assert (first["http_status"], first["provider_code"]) == (status, code)
            assert (await svc.job(job["id"]))["status"] == "queued"


WRONG_SCRIPTS: list[tuple[Any, str]] = [
    ({"refuse": "out_of_credits"}, "provider_options.simulate.refuse"),
    ({"refuse": 402}, "provider_options.simulate.refuse"),
    ({"fail": "yes"}, "provider_options.simulate.fail"),
    ({"fial": True}, "provider_options.simulate.fial"),
    ({"latency": 1e9}, "provider_options.simulate.latency"),
    ("refuse", "provider_options.simulate"),
]


async def test_a_wrong_simulate_is_refused_422_naming_the_field_and_no_job_is_made(jobhook: Any) -> None:
    async with jobhook() as svc:
        for script, field in WRONG_SCRIPTS:
            body = {"provider": "simulator", "prompt": "x", "provider_options": {"simulate": script}}
            response = await svc.client.post("/v1/jobs", json=body)
            assert response.status_code == 422, (script, response.text)
            error = response.json()["error"]
            assert (error["code"], error["field"]) == ("invalid_field", field), script
            assert error["message"].startswith(field), error
        # Among candidates, the simulator cannot take such a job: left out, and said why.
        body = {"provider": ["simulator"], "prompt": "x", "provider_options": {"simulate": {"refuse": "nope"}}}
        response = await svc.client.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        [candidate] = response.json()["error"]["candidates"]
        assert (candidate["provider"], candidate["field"]) == ("simulator", "provider_options.simulate.refuse")
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []
