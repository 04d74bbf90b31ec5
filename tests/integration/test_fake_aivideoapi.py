"""The fake aivideoapi provider speaks PROVIDERS.md §1 over real loopback HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.server import free_socket, serve_asgi

KEY = "sk-test-key"
TASK_KEYS_PENDING = {"id", "status", "model", "created_at"}


@dataclass
class Received:
    time: float
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Receiver:
    """A callback receiver: records every POST, answers `fail_status` the first `fail_first` times."""

    fail_first: int = 0
    fail_status: int = 500
    answer_delay: float = 0.0
    calls: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    base_url: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, token: str = "tok") -> str:
        return f"{self.base_url}/callbacks/{token}"

    async def _hook(self, request: Request) -> Response:
        self.calls.append(Received(time.monotonic(), request.url.path, dict(request.headers), await request.body()))
        self._changed.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            if len(self.calls) <= self.fail_first:
                return JSONResponse({"error": "nope"}, self.fail_status)
            return JSONResponse({"ok": True, "n": len(self.calls)})
        finally:
            self.in_flight -= 1

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/callbacks/{token}", self._hook, methods=["POST"])])

    async def wait_calls(self, n: int, timeout: float = 2.0) -> list[Received]:
        async def _wait() -> None:
            while len(self.calls) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.calls


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve_asgi(rec.app) as url:
        rec.base_url = url
        yield rec


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.1, callback_retry_delays=(0.0, 0.15, 0.4)) as f:
        yield f


@pytest.fixture
async def api(fake: FakeAivideoapi) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers, timeout=3.0) as client:
        yield client


def body(**input_: Any) -> dict[str, Any]:
    return {"model": "ideogram-v4", "input": {"prompt": "A poster that says HELLO", **input_}}


async def create(api: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    resp = await api.post("/v1/images/generations", json=payload)
    assert resp.status_code == 200, resp.text
    task_id: str = resp.json()["data"]["taskId"]
    return task_id


async def eventually(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message", "type"}
    assert payload["error"]["code"] == code


# ------------------------------------------------------------------------------------------ create


async def test_create_and_query_require_a_bearer_sk_key(fake: FakeAivideoapi) -> None:
    for authorization in [None, "Bearer sk-", "Bearer pk-abc", "sk-abc", "Token sk-abc", "Bearer  sk-abc"]:
        headers = {} if authorization is None else {"Authorization": authorization}
        async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as client:
            resp = await client.post("/v1/images/generations", json=body())
            assert_error(resp, 401, "invalid_api_key")
            assert resp.json()["error"]["type"] == "authentication_error"
            assert_error(await client.get(f"/v1/tasks/{uuid.uuid4()}"), 401, "invalid_api_key")
    assert fake.tasks == {}
    assert {c.status for c in fake.creates} == {401}
    assert {q.status for q in fake.queries} == {401}


INVALID_BODIES: list[Any] = [
    {"input": {"prompt": "x"}},  # no model
    {"model": "ideogram-v4"},  # no input
    {"model": "ideogram-v4", "input": "x"},
    body(prompt=None),
    body(prompt=""),
    body(prompt="   "),
    body(prompt=42),
    body(prompt="x" * 5001),
    {"model": "ideogram-v4", "input": {"size": "1:1"}},
    body(size="2:3"),
    body(size="16x9"),
    body(size=None),
    body(rendering_speed="turbo"),
    body(rendering_speed="FAST"),
    body(output_format="webp"),
    body(output_format="PNG"),
    {**body(), "callback_url": None},
    {**body(), "callback_url": "ftp://x"},
    {**body(), "prompt": "a top-level prompt is not the wire format"},
    ["not", "an", "object"],
]


async def test_create_rejects_invalid_requests_with_400(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    for payload in INVALID_BODIES:
        resp = await api.post("/v1/images/generations", json=payload)
        assert resp.status_code == 400, payload
        assert_error(resp, 400, "invalid_request")
        assert resp.json()["error"]["type"] == "invalid_request_error"
    assert fake.tasks == {}
    assert [(c.status, c.task_id) for c in fake.creates] == [(400, None)] * len(INVALID_BODIES)


async def test_create_rejects_non_json(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/images/generations", content=b"{", headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "invalid_request")
    resp = await api.post("/v1/images/generations", content=json.dumps(body()).encode())
    assert_error(resp, 400, "invalid_request")  # no Content-Type: application/json


async def test_create_unknown_model_is_404(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/images/generations", json={**body(), "model": "ideogram-v3"})
    assert_error(resp, 404, "model_not_found")
    assert fake.tasks == {}


async def test_create_success_shape_and_record(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    payload = {
        "model": "ideogram-v4",
        "callback_url": "https://hooks.example.com/callbacks/abc",
        "input": {
            "prompt": "p" * 5000,
            "size": "16:9",
            "rendering_speed": "TURBO",
            "output_format": "png",
            "style_hint": "anything",  # provider_options merged into input: accepted
        },
    }
    resp = await api.post("/v1/images/generations", json=payload)
    assert resp.status_code == 200
    answer = resp.json()
    assert answer == {"code": 200, "msg": "success", "data": {"taskId": answer["data"]["taskId"]}}
    task_id = answer["data"]["taskId"]
    assert uuid.UUID(task_id).version == 4
    [record] = fake.creates
    assert record.task_id == task_id and record.status == 200
    assert record.body == payload
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert fake.tasks[task_id].input["style_hint"] == "anything"
    assert fake.tasks[task_id].callback_url == "https://hooks.example.com/callbacks/abc"


# ------------------------------------------------------------------------------------------ query


async def test_query_pending_processing_completed(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    fake.next_scripts.append(TaskScript(complete_after=0.6))
    before = int(time.time())
    task_id = await create(api, body(output_format="png", size="16:9"))
    first = (await api.get(f"/v1/tasks/{task_id}")).json()
    assert first == {"id": task_id, "status": "pending", "model": "ideogram-v4", "created_at": first["created_at"]}
    assert before <= first["created_at"] <= int(time.time())
    await asyncio.sleep(fake.tasks[task_id].created_mono + 0.45 - time.monotonic())  # processing: 0.3-0.6 s
    second = (await api.get(f"/v1/tasks/{task_id}")).json()
    assert second["status"] == "processing" and set(second) == TASK_KEYS_PENDING
    await fake.wait_final(task_id, 1.0)
    done = (await api.get(f"/v1/tasks/{task_id}")).json()
    url = f"{fake.base_url}/files/{task_id}.png"
    assert done == {
        "id": task_id,
        "status": "completed",
        "model": "ideogram-v4",
        "created_at": first["created_at"],
        "completed_at": done["completed_at"],
        "output": {"urls": [url], "metadata": {"model": "ideogram-ai/ideogram-v4"}},
    }
    assert isinstance(done["completed_at"], int) and done["completed_at"] >= done["created_at"]
    image = await api.get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert [q.status for q in fake.queries] == [200, 200, 200]


async def test_query_failed_shape_and_default_jpeg_url(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    fake.next_scripts.extend([TaskScript(outcome="failed"), TaskScript()])
    failed_id = await create(api, body())
    ok_id = await create(api, body())
    await fake.wait_final(failed_id, 1.0)
    await fake.wait_final(ok_id, 1.0)
    failed = (await api.get(f"/v1/tasks/{failed_id}")).json()
    assert failed == {
        "id": failed_id,
        "status": "failed",
        "model": "ideogram-v4",
        "created_at": failed["created_at"],
        "error": {"code": "upstream_error", "message": "Image generation failed"},
    }
    [url] = (await api.get(f"/v1/tasks/{ok_id}")).json()["output"]["urls"]
    assert url.endswith(f"/files/{ok_id}.jpg")  # output_format defaults to jpeg
    image = await api.get(url)
    assert image.headers["content-type"] == "image/jpeg" and image.content.startswith(b"\xff\xd8")


async def test_query_unknown_task_is_404(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/v1/tasks/{uuid.uuid4()}"), 404, "task_not_found")
    assert fake.queries[0].status == 404


async def test_never_outcome_and_forced_final_states(
    fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.default_script = TaskScript(outcome="never", complete_after=0.05)
    a = await create(api, {**body(), "callback_url": receiver.url()})
    b = await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_idle(1.0)
    assert (await api.get(f"/v1/tasks/{a}")).json()["status"] == "processing"
    assert receiver.calls == []
    fake.complete(a, urls=["https://cdn.example/x.png"])
    fake.fail(b, error={"code": "upstream_error", "message": "content policy"})
    calls = await receiver.wait_calls(2)
    by_id = {c.headers["x-task-id"]: c for c in calls}
    assert by_id[a].headers["x-event"] == "task.completed"
    assert by_id[a].json["output"]["urls"] == ["https://cdn.example/x.png"]
    assert by_id[b].headers["x-event"] == "task.failed"
    assert by_id[b].json["error"] == {"code": "upstream_error", "message": "content policy"}
    with pytest.raises(RuntimeError):
        fake.complete(b)


async def test_script_for_chooses_by_body(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    fake.script_for = lambda b: TaskScript(outcome="failed") if "FAIL" in b["input"]["prompt"] else None
    bad = await create(api, body(prompt="please FAIL"))
    good = await create(api, body())
    assert (await fake.wait_final(bad, 1.0)).status == "failed"
    assert (await fake.wait_final(good, 1.0)).status == "completed"


# ------------------------------------------------------------------------------------------ callbacks


async def test_callback_headers_and_body(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    task_id = await create(api, {**body(output_format="png"), "callback_url": receiver.url("tok-1")})
    [call] = await receiver.wait_calls(1)
    await fake.wait_idle(1.0)
    assert call.path == "/callbacks/tok-1"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["x-event"] == "task.completed"
    assert call.headers["x-task-id"] == task_id
    assert call.headers["x-timestamp"].isdigit()
    assert abs(int(call.headers["x-timestamp"]) - time.time()) <= 2
    assert not [h for h in call.headers if "signature" in h]
    assert call.json == (await api.get(f"/v1/tasks/{task_id}")).json()
    assert call.json["status"] == "completed"
    [delivery] = fake.deliveries
    assert (delivery.task_id, delivery.attempt, delivery.kind, delivery.status) == (task_id, 1, "scheduled", 200)
    assert delivery.answer == {"ok": True, "n": 1}
    assert delivery.body == call.json
    assert delivery.headers["X-Timestamp"] == call.headers["x-timestamp"]


async def test_failed_callback(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    fake.next_scripts.append(TaskScript(outcome="failed"))
    task_id = await create(api, {**body(), "callback_url": receiver.url()})
    [call] = await receiver.wait_calls(1)
    assert call.headers["x-event"] == "task.failed"
    assert call.json == {
        "id": task_id,
        "status": "failed",
        "model": "ideogram-v4",
        "created_at": call.json["created_at"],
        "error": {"code": "upstream_error", "message": "Image generation failed"},
    }


async def test_non_2xx_is_retried_on_schedule(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.fail_first = 2
    task_id = await create(api, {**body(), "callback_url": receiver.url()})
    calls = await receiver.wait_calls(3)
    await fake.wait_idle(2.0)
    assert len(receiver.calls) == 3
    assert [d.status for d in fake.deliveries] == [500, 500, 200]
    assert [d.attempt for d in fake.deliveries] == [1, 2, 3]
    gaps = [b.time - a.time for a, b in itertools.pairwise(calls)]
    assert 0.14 <= gaps[0] < 0.38 and 0.39 <= gaps[1] < 0.7  # delays (0, 0.15, 0.4)
    assert all(c.headers["x-task-id"] == task_id for c in calls)
    assert len({c.raw for c in calls}) == 1  # same event every time


async def test_three_attempts_in_all_then_gives_up(
    fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_first, receiver.fail_status = 10, 404
    fake.next_scripts.append(TaskScript(duplicates=2))  # no duplicates without a 2xx
    await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_idle(2.0)
    assert len(receiver.calls) == 3
    assert [d.status for d in fake.deliveries] == [404, 404, 404]


async def test_no_answer_is_retried(api: httpx.AsyncClient, receiver: Receiver) -> None:
    sock = free_socket()  # bound, never listening: connection refused
    dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/callbacks/x"
    try:
        async with FakeAivideoapi(complete_after=0.0, callback_retry_delays=(0, 0.05, 0.05)) as fake:
            async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}) as c:
                await create(c, {**body(), "callback_url": dead_url})
                await fake.wait_idle(2.0)
            assert [d.status for d in fake.deliveries] == [None, None, None]
            assert all(d.error for d in fake.deliveries)
    finally:
        sock.close()
    receiver.answer_delay = 0.3  # slower than callback_timeout: a timeout, retried
    receiver.fail_first = 1
    async with FakeAivideoapi(complete_after=0.0, callback_retry_delays=(0, 0.05), callback_timeout=0.15) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            await create(c, {**body(), "callback_url": receiver.url()})
            await fake.wait_idle(2.0)
        assert [d.status for d in fake.deliveries] == [None, None]
        assert "Timeout" in (fake.deliveries[0].error or "")


async def test_drop_callback(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    fake.next_scripts.append(TaskScript(drop_callback=True))
    task_id = await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_idle(1.0)
    assert receiver.calls == [] and fake.deliveries == []
    assert (await api.get(f"/v1/tasks/{task_id}")).json()["status"] == "completed"


async def test_sequential_duplicates(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.fail_first = 1
    fake.next_scripts.append(TaskScript(duplicates=2))
    await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_idle(2.0)
    assert [(d.kind, d.attempt, d.status) for d in fake.deliveries] == [
        ("scheduled", 1, 500),
        ("scheduled", 2, 200),
        ("duplicate", 1, 200),
        ("duplicate", 2, 200),
    ]
    assert len({c.json["id"] for c in receiver.calls}) == 1
    assert all(c.headers["x-event"] == "task.completed" for c in receiver.calls)


async def test_concurrent_duplicates(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answer_delay = 0.1
    fake.next_scripts.append(TaskScript(concurrent_duplicates=3))
    await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_idle(2.0)
    assert len(receiver.calls) == 3 and receiver.max_in_flight == 3
    assert sorted(d.chain for d in fake.deliveries) == [0, 1, 2]
    assert len({c.raw for c in receiver.calls}) == 1


@pytest.mark.parametrize("offset", [-3600.0, 3600.0])
async def test_timestamp_offset(
    fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver, offset: float
) -> None:
    fake.next_scripts.append(TaskScript(timestamp_offset=offset))
    await create(api, {**body(), "callback_url": receiver.url()})
    [call] = await receiver.wait_calls(1)
    assert abs(int(call.headers["x-timestamp"]) - (time.time() + offset)) <= 2


async def test_header_and_body_overrides(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    other = str(uuid.uuid4())
    fake.next_scripts.append(
        TaskScript(
            header_overrides={"x-task-id": other, "X-Event": "task.failed", "X-Timestamp": None},
            body_overrides={"id": other},
        )
    )
    task_id = await create(api, {**body(), "callback_url": receiver.url()})
    [call] = await receiver.wait_calls(1)
    await fake.wait_idle(1.0)
    assert call.headers["x-task-id"] == other and call.headers["x-event"] == "task.failed"
    assert "x-timestamp" not in call.headers
    assert call.json["id"] == other and call.json["status"] == "completed"
    assert fake.deliveries[0].task_id == task_id


async def test_manual_deliver(fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver) -> None:
    fake.next_scripts.append(TaskScript(drop_callback=True))
    task_id = await create(api, {**body(), "callback_url": receiver.url()})
    await fake.wait_final(task_id, 1.0)
    assert await fake.deliver(task_id) == (200, {"ok": True, "n": 1})
    status, answer = await fake.deliver(task_id, timestamp_offset=-600, url=receiver.url("other"))
    assert (status, answer) == (200, {"ok": True, "n": 2})
    assert receiver.calls[1].path == "/callbacks/other"
    assert int(receiver.calls[1].headers["x-timestamp"]) <= time.time() - 590
    assert [d.kind for d in fake.deliveries] == ["manual", "manual"]


# ------------------------------------------------------------------------------------------ forced answers


FORCED = [
    (ForcedResponse.error(429, "rate_limit_exceeded", headers={"Retry-After": "7"}), "rate_limit_exceeded"),
    (ForcedResponse.error(429, "spend_limit_exceeded"), "spend_limit_exceeded"),
    (ForcedResponse.error(500, "internal_error"), "internal_error"),
    (ForcedResponse.error(503, "upstream_error"), "upstream_error"),
    (ForcedResponse.error(402, "insufficient_credits"), "insufficient_credits"),
    (ForcedResponse.error(403, "ip_not_allowed"), "ip_not_allowed"),
    (ForcedResponse.error(400, "invalid_request"), "invalid_request"),
]


async def test_forced_create_responses(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    for forced, code in FORCED:
        fake.create_responses.append(forced)
        resp = await api.post("/v1/images/generations", json=body())
        assert_error(resp, forced.status, code)
        assert resp.headers.get("retry-after") == forced.headers.get("Retry-After")
    assert fake.tasks == {}
    assert [c.status for c in fake.creates] == [f.status for f, _ in FORCED]
    assert fake.creates[0].body == body()  # recorded all the same
    await create(api, body())  # the next call behaves normally
    assert len(fake.tasks) == 1


async def test_forced_query_responses(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    task_id = await create(api, body())
    fake.query_responses.extend([ForcedResponse(502, "<html>Bad Gateway</html>"), ForcedResponse.error(500, "x")])
    resp = await api.get(f"/v1/tasks/{task_id}")
    assert resp.status_code == 502 and resp.text == "<html>Bad Gateway</html>"
    assert (await api.get(f"/v1/tasks/{task_id}")).status_code == 500
    assert (await api.get(f"/v1/tasks/{task_id}")).status_code == 200
    assert [q.status for q in fake.queries] == [502, 500, 200]


async def test_hang_on_create_still_creates_the_task(
    fake: FakeAivideoapi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.create_responses.append("hang")
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/v1/images/generations", json={**body(), "callback_url": receiver.url()}, timeout=0.3)
    [record] = fake.creates
    assert record.status is None and record.task_id in fake.tasks
    [call] = await receiver.wait_calls(1)  # the provider went on with it
    assert call.headers["x-task-id"] == record.task_id
    await create(api, body())  # the next call is answered


async def test_hang_is_released_when_the_fake_closes() -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as client:
        async with FakeAivideoapi() as fake:
            fake.query_responses.append("hang")
            pending = asyncio.create_task(client.get(f"{fake.base_url}/v1/tasks/x"))
            await eventually(lambda: bool(fake.queries))
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(pending, 2.0)
        assert fake.queries[0].status is None


async def test_disconnect(fake: FakeAivideoapi, api: httpx.AsyncClient) -> None:
    fake.create_responses.append("disconnect")
    fake.query_responses.append("disconnect")
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("/v1/images/generations", json=body())
    [record] = fake.creates
    assert record.status is None and record.task_id in fake.tasks
    with pytest.raises(httpx.RemoteProtocolError):
        await api.get(f"/v1/tasks/{record.task_id}")
    assert (await api.get(f"/v1/tasks/{record.task_id}")).status_code == 200
