"""The fake apiframe, segmind and apiinone providers speak PROVIDERS.md §2, §3 and §4 over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import apiframe, apiinone, segmind
from tests.fakes.aivideoapi import ForcedResponse
from tests.fakes.apiframe import FakeApiframe, JobScript
from tests.fakes.apiinone import FakeApiinone, TaskScript
from tests.fakes.segmind import FakeSegmind, RequestScript, segmind_image
from tests.fakes.server import serve_asgi

AF_KEY = "afk_test-key"
AIO_KEY = "aio_test-key"
SEG_KEY = "seg-test-key"


# ------------------------------------------------------------------------------------------ helpers


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
    """A webhook receiver: records every POST, answers `fail_status` the first `fail_first` times."""

    fail_first: int = 0
    fail_status: int = 500
    answer_delay: float = 0.0
    calls: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    base_url: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, token: str = "tok") -> str:
        return f"{self.base_url}/hooks/{token}"

    def calls_to(self, token: str) -> list[Received]:
        return [c for c in self.calls if c.path == f"/hooks/{token}"]

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
        return Starlette(routes=[Route("/hooks/{token}", self._hook, methods=["POST"])])

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


async def eventually(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def assert_error(resp: httpx.Response, status: int, code: str, keys: set[str]) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert set(payload) == {"error"} and set(payload["error"]) == keys
    assert payload["error"]["code"] == code
    error: dict[str, Any] = payload["error"]
    return error


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# ====================================================================================== apiframe

AF_ERROR_KEYS = {"code", "message", "type"}


@pytest.fixture
async def af() -> AsyncIterator[FakeApiframe]:
    async with FakeApiframe(complete_after=0.1, webhook_retry_delays=(0.0, 0.1, 0.25)) as fake:
        yield fake


@pytest.fixture
async def af_api(af: FakeApiframe) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=af.base_url, headers={"X-API-Key": AF_KEY}, timeout=3.0) as client:
        yield client


def af_body(model: str = "ideogram-v4-balanced", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": "A poster that says HELLO", "model": model}
    if params:
        body["ideogramParams"] = params
    return body


async def af_create(api: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    resp = await api.post("/v2/images/generate", json=payload)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer == {"jobId": answer["jobId"], "status": "QUEUED"}
    job_id: str = answer["jobId"]
    assert uuid.UUID(job_id).version == 4
    return job_id


async def test_apiframe_requires_an_afk_key(af: FakeApiframe) -> None:
    for key in [None, "", "afk_", "sk-abc", "AFK_abc", "Bearer afk_abc"]:
        headers = {} if key is None else {"X-API-Key": key}
        async with httpx.AsyncClient(base_url=af.base_url, headers=headers) as client:
            resp = await client.post("/v2/images/generate", json=af_body())
            assert assert_error(resp, 401, "invalid_api_key", AF_ERROR_KEYS)["type"] == "authentication_error"
            assert_error(await client.get(f"/v2/jobs/{uuid.uuid4()}"), 401, "invalid_api_key", AF_ERROR_KEYS)
        async with httpx.AsyncClient(base_url=af.base_url, headers={"Authorization": f"Bearer {AF_KEY}"}) as client:
            assert (await client.post("/v2/images/generate", json=af_body())).status_code == 401
    assert af.jobs == {}
    assert {c.status for c in af.creates} == {401} and {q.status for q in af.queries} == {401}


AF_INVALID: list[tuple[Any, str]] = [
    ({"model": "ideogram-v4-turbo"}, "prompt"),
    ({**af_body(), "prompt": ""}, "prompt"),
    ({**af_body(), "prompt": 7}, "prompt"),
    ({"prompt": "x"}, "model"),
    ({**af_body(), "model": None}, "model"),
    ({**af_body(), "input": {"prompt": "x"}}, "input"),
    ({**af_body(), "aspect_ratio": "16:9"}, "aspect_ratio"),  # only inside ideogramParams
    ({**af_body(), "webhook_url": "ftp://x"}, "webhook_url"),
    ({**af_body(), "webhook_url": None}, "webhook_url"),
    ({**af_body(), "ideogramParams": "AUTO"}, "ideogramParams"),
    (af_body(style_type="auto"), "ideogramParams.style_type"),
    (af_body(style_type="ANIME"), "ideogramParams.style_type"),
    (af_body(magic_prompt_option="ON"), "ideogramParams.magic_prompt_option"),
    (af_body(magic_prompt_option=True), "ideogramParams.magic_prompt_option"),
    (af_body(image="not a url"), "ideogramParams.image"),
    (af_body(image=["https://x/a.png"]), "ideogramParams.image"),
    (af_body(negative_prompt=3), "ideogramParams.negative_prompt"),
    (af_body(seed=1.5), "ideogramParams.seed"),
    (af_body(seed="42"), "ideogramParams.seed"),
    (af_body(seed=True), "ideogramParams.seed"),
    (af_body(aspect_ratio="2:3"), "ideogramParams.aspect_ratio"),
    (af_body(rendering_speed="DEFAULT"), "ideogramParams.rendering_speed"),
    (af_body(num_images=1), "ideogramParams.num_images"),
    (af_body("ideogram-v4-turbo", rendering_speed="default"), "ideogramParams.rendering_speed"),
    (af_body("ideogram-v4-balanced", rendering_speed="turbo"), "ideogramParams.rendering_speed"),
    (af_body("ideogram-v4-quality", rendering_speed="default"), "ideogramParams.rendering_speed"),
    (["not", "an", "object"], "object"),
]


async def test_apiframe_validates_the_body(af: FakeApiframe, af_api: httpx.AsyncClient) -> None:
    for payload, name in AF_INVALID:
        resp = await af_api.post("/v2/images/generate", json=payload)
        error = assert_error(resp, 400, "invalid_request", AF_ERROR_KEYS)
        assert name in error["message"], (payload, error)
    resp = await af_api.post("/v2/images/generate", content=json.dumps(af_body()).encode())
    assert_error(resp, 400, "invalid_request", AF_ERROR_KEYS)  # no Content-Type: application/json
    for model in ["ideogram-v4", "ideogram-v3-turbo", "IDEOGRAM-V4-TURBO"]:
        resp = await af_api.post("/v2/images/generate", json=af_body(model))
        assert_error(resp, 404, "model_not_found", AF_ERROR_KEYS)
    assert af.jobs == {}
    full = {
        "style_type": "DESIGN",
        "magic_prompt_option": "Off",
        "image": "https://example.com/ref.jpg",
        "negative_prompt": "blur",
        "seed": 42,
        "aspect_ratio": "16:9",
    }
    for model, speed in apiframe.MODELS.items():
        payload = {**af_body(model, **full, rendering_speed=speed), "webhook_url": "https://hooks.example/x"}
        job_id = await af_create(af_api, payload)
        assert af.jobs[job_id].body == payload and af.jobs[job_id].params["seed"] == 42
    await af_create(af_api, af_body("ideogram-v4-quality"))  # rendering_speed is optional
    await af_create(af_api, {**af_body(), "ideogramParams": {}})
    assert [c.status for c in af.creates][-5:] == [202] * 5
    assert af.creates[-5].headers["x-api-key"] == AF_KEY


async def test_apiframe_unknown_fields_can_be_allowed() -> None:
    async with (
        FakeApiframe(reject_unknown_fields=False) as fake,
        httpx.AsyncClient(base_url=fake.base_url, headers={"X-API-Key": AF_KEY}) as api,
    ):
        job_id = await af_create(api, {**af_body(foo=1), "extra": True})
        assert fake.jobs[job_id].body["extra"] is True
        resp = await api.post("/v2/images/generate", json=af_body(style_type="NOPE"))
        assert resp.status_code == 400  # known fields are still checked


async def test_apiframe_job_lifecycle_and_default_result(af: FakeApiframe, af_api: httpx.AsyncClient) -> None:
    af.next_scripts.append(JobScript(complete_after=0.4))
    job_id = await af_create(af_api, af_body(aspect_ratio="16:9"))
    assert (await af_api.get(f"/v2/jobs/{job_id}")).json() == {"jobId": job_id, "status": "QUEUED"}
    await asyncio.sleep(af.jobs[job_id].created_mono + 0.3 - time.monotonic())
    assert (await af_api.get(f"/v2/jobs/{job_id}")).json() == {"jobId": job_id, "status": "PROCESSING"}
    await af.wait_final(job_id, 1.0)
    url = f"{af.base_url}/files/{job_id}.png"
    done = (await af_api.get(f"/v2/jobs/{job_id}")).json()
    assert done == {"jobId": job_id, "status": "COMPLETED", "result": {"urls": [url]}}
    image = await af_api.get(url)
    assert image.headers["content-type"] == "image/png" and open_image(image.content).size == (16, 9)
    assert_error(await af_api.get(f"/v2/jobs/{uuid.uuid4()}"), 404, "job_not_found", AF_ERROR_KEYS)
    assert [q.status for q in af.queries] == [200, 200, 200, 404]
    assert af.queries[0].job_id == job_id and af.queries[0].headers["x-api-key"] == AF_KEY
    assert af.deliveries == []  # no webhook_url, no webhook


async def test_apiframe_result_and_error_shapes(af: FakeApiframe, af_api: httpx.AsyncClient) -> None:
    urls = ["https://cdn.example/1.png", "https://cdn.example/2.png"]
    expected: dict[str, Any] = {
        "urls": {"urls": urls},
        "list": urls,
        "string": urls[0],
        "images": {"images": urls},
        "images_objects": {"images": [{"url": u} for u in urls]},
    }
    af.default_script = JobScript(outcome="never", complete_after=10)
    ids = {}
    for shape in expected:
        af.next_scripts.append(JobScript(result_shape=shape, urls=urls))  # type: ignore[arg-type]
        ids[shape] = await af_create(af_api, af_body())
    for shape, result in expected.items():
        await af.wait_final(ids[shape], 1.0)
        job = (await af_api.get(f"/v2/jobs/{ids[shape]}")).json()
        assert job == {"jobId": ids[shape], "status": "COMPLETED", "result": result}
    obj_default = await af_create(af_api, af_body())
    af.next_scripts.append(JobScript(outcome="never", complete_after=10, error_shape="string"))
    str_default = await af_create(af_api, af_body())
    af.next_scripts.append(JobScript(outcome="never", complete_after=10, error_shape="string"))
    str_custom = await af_create(af_api, af_body())
    manual = await af_create(af_api, af_body())
    af.fail(obj_default)
    af.fail(str_default)
    af.fail(str_custom, {"code": "nsfw", "message": "Prompt rejected"})
    af.complete(manual, urls=["https://cdn.example/m.png"])
    assert (await af_api.get(f"/v2/jobs/{obj_default}")).json() == {
        "jobId": obj_default,
        "status": "FAILED",
        "error": {"code": "upstream_error", "message": "Image generation failed"},
    }
    assert (await af_api.get(f"/v2/jobs/{str_default}")).json()["error"] == "Image generation failed"
    assert (await af_api.get(f"/v2/jobs/{str_custom}")).json()["error"] == "Prompt rejected"
    assert (await af_api.get(f"/v2/jobs/{manual}")).json()["result"] == {"urls": ["https://cdn.example/m.png"]}
    with pytest.raises(RuntimeError):
        af.complete(obj_default)
    af.script_for = lambda b: JobScript(outcome="failed") if "FAIL" in b["prompt"] else None
    failing = await af_create(af_api, {**af_body(), "prompt": "please FAIL"})
    assert (await af.wait_final(failing, 1.0)).status == "FAILED"


async def test_apiframe_webhook_is_one_plain_post(
    af: FakeApiframe, af_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    af.next_scripts.extend([JobScript(), JobScript(outcome="failed", error_shape="string")])
    ok = await af_create(af_api, {**af_body(), "webhook_url": receiver.url("ok")})
    bad = await af_create(af_api, {**af_body(), "webhook_url": receiver.url("bad")})
    await receiver.wait_calls(2)
    await af.wait_idle(1.0)
    [ok_call], [bad_call] = receiver.calls_to("ok"), receiver.calls_to("bad")
    assert ok_call.headers["content-type"] == "application/json"
    assert set(ok_call.headers) <= {"host", "content-type", "content-length", "accept", "accept-encoding"} | {
        "connection",
        "user-agent",
    }
    assert ok_call.json == (await af_api.get(f"/v2/jobs/{ok}")).json()
    assert ok_call.json["status"] == "COMPLETED"
    assert bad_call.json == {"jobId": bad, "status": "FAILED", "error": "Image generation failed"}
    by_job = {d.job_id: d for d in af.deliveries}
    assert len(af.deliveries) == 2
    assert by_job[ok].headers == {"Content-Type": "application/json"}
    assert (by_job[ok].kind, by_job[ok].attempt, by_job[ok].status, by_job[ok].done) == ("scheduled", 1, 200, True)
    assert by_job[ok].body == ok_call.json and by_job[ok].url == receiver.url("ok")
    assert by_job[ok].answer["ok"] is True


async def test_apiframe_webhook_is_not_retried_unless_scripted(
    af: FakeApiframe, af_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_first = 100
    af.next_scripts.extend([JobScript(duplicates=2), JobScript(retry_on_failure=True)])
    once = await af_create(af_api, {**af_body(), "webhook_url": receiver.url("once")})
    await af.wait_final(once, 1.0)
    retried = await af_create(af_api, {**af_body(), "webhook_url": receiver.url("retried")})
    await af.wait_idle(2.0)
    assert [d.status for d in af.deliveries_for(once)] == [500]  # no retry, no duplicates without a 2xx
    chain = af.deliveries_for(retried)
    assert [(d.attempt, d.status) for d in chain] == [(1, 500), (2, 500), (3, 500)]
    gaps = [b.time - a.time for a, b in itertools.pairwise(chain)]
    assert 0.09 <= gaps[0] < 0.25 and 0.24 <= gaps[1] < 0.45  # delays (0, 0.1, 0.25)
    receiver.fail_first = len(receiver.calls) + 1  # the next one fails, then 2xx
    af.next_scripts.append(JobScript(retry_on_failure=True))
    healed = await af_create(af_api, {**af_body(), "webhook_url": receiver.url("healed")})
    await af.wait_final(healed, 1.0)
    await af.wait_idle(2.0)
    assert [d.status for d in af.deliveries_for(healed)] == [500, 200]


async def test_apiframe_webhook_scripts(af: FakeApiframe, af_api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answer_delay = 0.1
    other = str(uuid.uuid4())
    af.next_scripts.extend(
        [
            JobScript(drop_webhook=True),
            JobScript(duplicates=2),
            JobScript(concurrent_duplicates=3),
            JobScript(body_overrides={"jobId": other}),
            JobScript(body_overrides={"status": "FAILED"}, header_overrides={"User-Agent": "apiframe-hooks"}),
        ]
    )
    tokens = ["drop", "dup", "conc", "other", "contra"]
    ids = {t: await af_create(af_api, {**af_body(), "webhook_url": receiver.url(t)}) for t in tokens}
    for job_id in ids.values():
        await af.wait_final(job_id, 1.0)
    await af.wait_idle(2.0)
    assert receiver.calls_to("drop") == [] and af.deliveries_for(ids["drop"]) == []
    assert (await af_api.get(f"/v2/jobs/{ids['drop']}")).json()["status"] == "COMPLETED"
    assert [(d.kind, d.attempt) for d in af.deliveries_for(ids["dup"])] == [
        ("scheduled", 1),
        ("duplicate", 1),
        ("duplicate", 2),
    ]
    assert len({c.raw for c in receiver.calls_to("dup")}) == 1 and len(receiver.calls_to("dup")) == 3
    conc = af.deliveries_for(ids["conc"])
    assert sorted(d.chain for d in conc) == [0, 1, 2]
    assert max(d.time for d in conc) - min(d.time for d in conc) < 0.1  # all sent before any was answered
    [moved] = receiver.calls_to("other")
    assert moved.json["jobId"] == other and af.deliveries_for(ids["other"])[0].body["jobId"] == other
    [contra] = receiver.calls_to("contra")
    assert contra.json["status"] == "FAILED" and contra.headers["user-agent"] == "apiframe-hooks"
    assert (await af_api.get(f"/v2/jobs/{ids['contra']}")).json()["status"] == "COMPLETED"
    status, answer = await af.deliver(ids["drop"], body_overrides={"status": "PROCESSING"})
    assert status == 200 and answer["ok"] is True
    [manual] = receiver.calls_to("drop")
    assert manual.json["jobId"] == ids["drop"] and manual.json["status"] == "PROCESSING"
    assert af.deliveries_for(ids["drop"])[0].kind == "manual"


AF_FORCED = [
    apiframe.forced_error(400, "invalid_request"),
    apiframe.forced_error(401, "invalid_api_key"),
    apiframe.forced_error(402, "insufficient_credits"),
    apiframe.forced_error(429, "rate_limit_exceeded", headers={"Retry-After": "7"}),
    apiframe.forced_error(500, "internal_error"),
    apiframe.forced_error(503, "upstream_error"),
]


async def test_apiframe_forced_answers(af: FakeApiframe, af_api: httpx.AsyncClient, receiver: Receiver) -> None:
    af.create_responses.extend(AF_FORCED)
    for forced in AF_FORCED:
        resp = await af_api.post("/v2/images/generate", json=af_body())
        assert resp.status_code == forced.status and resp.json() == forced.body
        assert resp.headers.get("retry-after") == forced.headers.get("Retry-After")
    assert af.jobs == {} and [c.status for c in af.creates] == [f.status for f in AF_FORCED]
    job_id = await af_create(af_api, af_body())
    af.query_responses.extend([ForcedResponse(502, "<html>Bad Gateway</html>"), "disconnect"])
    resp = await af_api.get(f"/v2/jobs/{job_id}")
    assert resp.status_code == 502 and resp.text == "<html>Bad Gateway</html>"
    with pytest.raises(httpx.RemoteProtocolError):
        await af_api.get(f"/v2/jobs/{job_id}")
    assert (await af_api.get(f"/v2/jobs/{job_id}")).status_code == 200
    assert [q.status for q in af.queries] == [502, None, 200]
    af.create_responses.append("hang")
    with pytest.raises(httpx.ReadTimeout):
        await af_api.post("/v2/images/generate", json={**af_body(), "webhook_url": receiver.url()}, timeout=0.3)
    record = af.creates[-1]
    assert record.status is None and record.job_id in af.jobs
    [call] = await receiver.wait_calls(1)  # the provider went on with it
    assert call.json["jobId"] == record.job_id


# ====================================================================================== segmind


@pytest.fixture
async def sg() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(latency=0.05, credits=100.0, price_per_image=2.5) as fake:
        yield fake


@pytest.fixture
async def sg_api(sg: FakeSegmind) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sg.base_url, headers={"x-api-key": SEG_KEY}, timeout=3.0) as client:
        yield client


def sg_body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "A poster that says HELLO", **fields}


async def test_segmind_auth_method_and_path(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    for headers in [{}, {"x-api-key": ""}, {"Authorization": f"Bearer {SEG_KEY}"}]:
        async with httpx.AsyncClient(base_url=sg.base_url, headers=headers) as client:
            resp = await client.post("/v1/ideogram-4", json=sg_body())
            assert resp.status_code == 401 and resp.json() == {"error": "Unauthorized"}
    resp = await sg_api.get("/v1/ideogram-4")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST" and "error" in resp.json()
    assert (await sg_api.put("/v1/ideogram-4", json=sg_body())).status_code == 405
    for path in ["/v1/ideogram-3", "/v2/ideogram-4", "/v1/ideogram-4/x"]:
        resp = await sg_api.post(path, json=sg_body())
        assert resp.status_code == 404 and resp.json() == {"error": "Not Found"}
    assert [(c.method, c.path, c.status) for c in sg.calls][3:6] == [
        ("GET", "/v1/ideogram-4", 405),
        ("PUT", "/v1/ideogram-4", 405),
        ("POST", "/v1/ideogram-3", 404),
    ]
    assert [c.status for c in sg.creates] == [401, 401, 401]
    assert sg.credits == 100.0 and sg.images == {}


SG_INVALID: list[tuple[Any, str]] = [
    ({}, "prompt"),
    (sg_body(prompt=""), "prompt"),
    (sg_body(prompt=["x"]), "prompt"),
    (sg_body(rendering_speed="turbo"), "rendering_speed"),
    (sg_body(rendering_speed="DEFAULT"), "rendering_speed"),
    (sg_body(image_size="1:1"), "image_size"),
    (sg_body(image_size="portrait_3_4"), "image_size"),
    (sg_body(num_images=0), "num_images"),
    (sg_body(num_images=9), "num_images"),
    (sg_body(num_images=2.0), "num_images"),
    (sg_body(num_images=True), "num_images"),
    (sg_body(enable_prompt_expansion="true"), "enable_prompt_expansion"),
    (sg_body(enable_safety_checker=1), "enable_safety_checker"),
    (sg_body(output_format="webp"), "output_format"),
    (sg_body(output_format="PNG"), "output_format"),
    (sg_body(seed=-2), "seed"),
    (sg_body(seed=2147483648), "seed"),
    (sg_body(seed="1"), "seed"),
    (sg_body(aspect_ratio="1:1"), "aspect_ratio"),
    ({"model": "ideogram-4", **sg_body()}, "model"),
    ([sg_body()], "object"),
]


async def test_segmind_validates_the_body(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    for payload, name in SG_INVALID:
        resp = await sg_api.post("/v1/ideogram-4", json=payload)
        assert resp.status_code == 400 and name in resp.json()["error"], (payload, resp.text)
    resp = await sg_api.post("/v1/ideogram-4", content=json.dumps(sg_body()).encode())
    assert resp.status_code == 400  # no Content-Type: application/json
    sg.next_scripts.append(RequestScript(error_format="text"))
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body(seed=-5))
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/plain") and "seed" in resp.text
    assert sg.credits == 100.0 and sg.images == {}
    ok = {
        "prompt": "x",
        "rendering_speed": "TURBO",
        "image_size": "landscape_16_9",
        "num_images": 1,
        "enable_prompt_expansion": False,
        "output_format": "png",
        "seed": -1,
        "enable_safety_checker": False,
    }
    for seed in (-1, 0, 2147483647):
        assert (await sg_api.post("/v1/ideogram-4", json={**ok, "seed": seed})).status_code == 200
    assert sg.creates[-1].body == {**ok, "seed": 2147483647}


async def test_segmind_answers_image_bytes_and_remaining_credits(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    started = time.monotonic()
    first = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert time.monotonic() - started >= 0.05  # the latency
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content == segmind_image("A poster that says HELLO")  # jpeg, square_hd by default
    assert first.headers["x-remaining-credits"] == "97.5"
    assert open_image(first.content).format == "JPEG" and open_image(first.content).size == (24, 24)
    again = await sg_api.post("/v1/ideogram-4", json=sg_body(seed=1))
    assert again.content == first.content  # deterministic per prompt
    assert again.headers["x-remaining-credits"] == "95"
    png = await sg_api.post(
        "/v1/ideogram-4", json=sg_body(prompt="other", output_format="png", image_size="portrait_16_9")
    )
    assert png.headers["content-type"] == "image/png" and png.content != first.content
    assert png.content == segmind_image("other", "portrait_16_9", "png")
    assert open_image(png.content).size == (9, 16)
    assert sg.credits == 92.5
    assert [sg.images[i] for i in range(3)] == [[first.content], [again.content], [png.content]]
    record = sg.creates[2]
    assert (record.index, record.status, record.charged, record.remaining_credits) == (2, 200, 2.5, "92.5")
    assert record.content_type == "image/png" and record.headers["x-api-key"] == SEG_KEY
    assert record.answered_at is not None and record.answered_at - record.time >= 0.05
    served = await sg_api.get(f"{sg.base_url}/files/2-0.png")
    assert served.content == png.content and served.headers["content-type"] == "image/png"
    assert (await sg_api.get(f"{sg.base_url}/files/2-1.png")).status_code == 404


async def test_segmind_multi_image_json_and_prices(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    sg.price_per_image = {"TURBO": 0.5, "BALANCED": 1.0, "QUALITY": 2.0}
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body(num_images=3, rendering_speed="TURBO", output_format="png"))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.headers["x-remaining-credits"] == "98.5"
    images = [base64.b64decode(b, validate=True) for b in resp.json()["images"]]
    assert set(resp.json()) == {"images"} and len(images) == 3
    assert images == [segmind_image("A poster that says HELLO", output_format="png", index=i) for i in range(3)]
    assert len(set(images)) == 3 and images == sg.images[0]
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body(num_images=8))  # QUALITY by default
    assert len(resp.json()["images"]) == 8 and resp.headers["x-remaining-credits"] == "82.5"
    assert all(open_image(img).format == "JPEG" for img in sg.images[1])


async def test_segmind_406_500_and_script(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    sg.credits = 6.0
    assert (await sg_api.post("/v1/ideogram-4", json=sg_body(num_images=2))).headers["x-remaining-credits"] == "1"
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())  # 2.5 > 1
    assert resp.status_code == 406 and resp.json() == {"error": "Not enough credits"}
    assert "x-remaining-credits" not in resp.headers and sg.credits == 1.0 and 1 not in sg.images
    sg.credits = 50.0
    sg.next_scripts.extend(
        [
            RequestScript(outcome="no_credits", error_format="text"),
            RequestScript(outcome="server_error"),
            RequestScript(outcome="server_error", error_format="text", error_message="CUDA out of memory"),
            RequestScript(header_overrides={"x-remaining-credits": None}),
            RequestScript(header_overrides={"x-remaining-credits": "n/a"}),
            RequestScript(latency=0.3),
        ]
    )
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 406 and resp.text == "Not enough credits"
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 500 and resp.json() == {"error": "Internal Server Error"}
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 500 and resp.text == "CUDA out of memory"
    assert sg.credits == 50.0  # nothing charged so far
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 200 and "x-remaining-credits" not in resp.headers and sg.credits == 47.5
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.headers["x-remaining-credits"] == "n/a"
    slow = asyncio.create_task(sg_api.post("/v1/ideogram-4", json=sg_body()))
    await eventually(lambda: len(sg.calls) == 8)
    with pytest.raises(TimeoutError):
        await sg.wait_idle(0.1)
    await sg.wait_idle(1.0)
    assert (await slow).status_code == 200
    assert [c.status for c in sg.creates] == [200, 406, 406, 500, 500, 200, 200, 200]


async def test_segmind_forced_and_hang(sg: FakeSegmind, sg_api: httpx.AsyncClient) -> None:
    sg.create_responses.extend(
        [
            segmind.forced_error(500, "upstream timeout", text=True),
            segmind.forced_error(429, "Too many requests", headers={"Retry-After": "3"}),
            segmind.forced_error(406, "Not enough credits"),
            ForcedResponse(503, {"detail": "maintenance"}),
        ]
    )
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 500 and resp.text == "upstream timeout"
    resp = await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    assert (await sg_api.post("/v1/ideogram-4", json=sg_body())).status_code == 406
    assert (await sg_api.post("/v1/ideogram-4", headers={"x-api-key": ""}, json={})).status_code == 503
    assert sg.credits == 100.0
    sg.create_responses.append("hang")
    with pytest.raises(httpx.ReadTimeout):
        await sg_api.post("/v1/ideogram-4", json=sg_body(), timeout=0.3)
    record = sg.creates[-1]
    assert record.status is None and record.charged == 2.5 and sg.credits == 97.5  # accepted, never answered
    assert sg.images[record.index] == [segmind_image("A poster that says HELLO")]
    sg.create_responses.append("disconnect")
    with pytest.raises(httpx.RemoteProtocolError):
        await sg_api.post("/v1/ideogram-4", json=sg_body())
    assert (await sg_api.post("/v1/ideogram-4", json=sg_body())).status_code == 200


async def test_segmind_pending_answers_are_dropped_when_the_fake_closes() -> None:
    async with httpx.AsyncClient(headers={"x-api-key": SEG_KEY}) as client:
        async with FakeSegmind(latency=30) as fake:
            slow = asyncio.create_task(client.post(f"{fake.base_url}/v1/ideogram-4", json=sg_body()))
            await eventually(lambda: len(fake.calls) == 1)
            fake.create_responses.append("hang")
            hung = asyncio.create_task(client.post(f"{fake.base_url}/v1/ideogram-4", json=sg_body()))
            await eventually(lambda: len(fake.calls) == 2)
        for pending in (slow, hung):
            with pytest.raises(httpx.RemoteProtocolError):
                await asyncio.wait_for(pending, 2.0)
        assert [c.status for c in fake.calls] == [None, None]


# ====================================================================================== apiinone

AIO_ERROR_KEYS = {"code", "message"}


@pytest.fixture
async def aio() -> AsyncIterator[FakeApiinone]:
    async with FakeApiinone(complete_after=0.1) as fake:
        yield fake


@pytest.fixture
async def aio_api(aio: FakeApiinone) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {AIO_KEY}"}
    async with httpx.AsyncClient(base_url=aio.base_url, headers=headers, timeout=3.0) as client:
        yield client


def aio_body(**fields: Any) -> dict[str, Any]:
    return {"model": "ideogram-v4", "prompt": "A poster that says HELLO", **fields}


async def aio_create(api: httpx.AsyncClient, payload: dict[str, Any]) -> Any:
    resp = await api.post("/api/v1/images/generations", json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_apiinone_requires_a_bearer_aio_key(aio: FakeApiinone) -> None:
    for authorization in [None, "Bearer aio_", "Bearer sk-abc", "aio_abc", "Token aio_abc", "Bearer  aio_abc"]:
        headers = {} if authorization is None else {"Authorization": authorization}
        async with httpx.AsyncClient(base_url=aio.base_url, headers=headers) as client:
            resp = await client.post("/api/v1/images/generations", json=aio_body())
            assert_error(resp, 401, "invalid_api_key", AIO_ERROR_KEYS)
            assert_error(await client.get(f"/api/v1/tasks/{uuid.uuid4()}"), 401, "invalid_api_key", AIO_ERROR_KEYS)
    assert aio.tasks == {}


AIO_INVALID: list[tuple[Any, str]] = [
    ({"prompt": "x"}, "model"),
    (aio_body(model=4), "model"),
    ({"model": "ideogram-v4"}, "prompt"),
    (aio_body(prompt=""), "prompt"),
    (aio_body(prompt=None), "prompt"),
    (aio_body(size="1024x1024"), "size"),
    (aio_body(size="5:4"), "size"),
    (aio_body(rendering_speed="turbo"), "rendering_speed"),
    (aio_body(output_format="gif"), "output_format"),
    (aio_body(output_format="jpg"), "output_format"),
    (aio_body(callback_url="https://hooks.example/x"), "callback_url"),  # not for this model
    (aio_body(input={"prompt": "x"}), "input"),
    (aio_body(n=1), "n"),
    ("prompt", "object"),
]


async def test_apiinone_validates_the_body(aio: FakeApiinone, aio_api: httpx.AsyncClient) -> None:
    for payload, name in AIO_INVALID:
        resp = await aio_api.post("/api/v1/images/generations", json=payload)
        assert name in assert_error(resp, 400, "invalid_request", AIO_ERROR_KEYS)["message"], payload
    for model in ["ideogram-v3", "ideogram-v4-turbo", "IDEOGRAM-V4"]:
        resp = await aio_api.post("/api/v1/images/generations", json=aio_body(model=model))
        assert_error(resp, 404, "model_not_found", AIO_ERROR_KEYS)
    assert aio.tasks == {}
    for size, speed, fmt in zip(
        apiinone.SIZES,
        itertools.cycle(apiinone.RENDERING_SPEEDS),
        itertools.cycle(apiinone.OUTPUT_FORMATS),
        strict=False,
    ):
        answer = await aio_create(aio_api, aio_body(size=size, rendering_speed=speed, output_format=fmt))
        assert aio.tasks[answer["task_id"]].body["size"] == size
    assert len(aio.tasks) == 9 and aio.creates[-1].headers["authorization"] == f"Bearer {AIO_KEY}"


async def test_apiinone_plain_task_lifecycle(aio: FakeApiinone, aio_api: httpx.AsyncClient) -> None:
    aio.next_scripts.append(TaskScript(complete_after=0.4))
    answer = await aio_create(aio_api, aio_body(output_format="webp", size="21:9"))
    task_id = answer["task_id"]
    assert answer == {"task_id": task_id, "status": "pending"}
    assert (await aio_api.get(f"/api/v1/tasks/{task_id}")).json() == {"task_id": task_id, "status": "pending"}
    await asyncio.sleep(aio.tasks[task_id].created_mono + 0.3 - time.monotonic())
    assert (await aio_api.get(f"/api/v1/tasks/{task_id}")).json()["status"] == "processing"
    await aio.wait_final(task_id, 1.0)
    url = f"{aio.base_url}/files/{task_id}.webp"
    done = (await aio_api.get(f"/api/v1/tasks/{task_id}")).json()
    assert done == {"task_id": task_id, "status": "completed", "output": {"urls": [url]}}
    image = await aio_api.get(url)
    assert image.headers["content-type"] == "image/webp" and open_image(image.content).size == (21, 9)
    jpeg_id = (await aio_create(aio_api, aio_body(output_format="jpeg")))["task_id"]
    png_id = (await aio_create(aio_api, aio_body()))["task_id"]
    await aio.wait_idle(1.0)
    [jpeg_url] = (await aio_api.get(f"/api/v1/tasks/{jpeg_id}")).json()["output"]["urls"]
    [png_url] = (await aio_api.get(f"/api/v1/tasks/{png_id}")).json()["output"]["urls"]
    assert jpeg_url.endswith(".jpg") and (await aio_api.get(jpeg_url)).content.startswith(b"\xff\xd8")
    assert png_url.endswith(".png") and (await aio_api.get(png_url)).content.startswith(b"\x89PNG")
    assert_error(await aio_api.get(f"/api/v1/tasks/{uuid.uuid4()}"), 404, "task_not_found", AIO_ERROR_KEYS)
    assert aio.queries[-1].status == 404 and aio.queries[0].answer == {"task_id": task_id, "status": "pending"}


async def test_apiinone_wrapped_and_status_words(aio: FakeApiinone, aio_api: httpx.AsyncClient) -> None:
    aio.next_scripts.extend(
        [
            TaskScript(wrapped=True, completed_word="succeeded"),
            TaskScript(wrapped=True, wrap_query=False, completed_word="success"),
            TaskScript(wrap_query=True, outcome="failed", failed_word="error"),
            TaskScript(outcome="failed", failed_word="canceled"),
            TaskScript(outcome="never", complete_after=0.02),
            TaskScript(outcome="never", complete_after=0.02, failed_word="error"),
        ]
    )
    answers = [await aio_create(aio_api, aio_body()) for _ in range(6)]
    assert answers[0] == {"data": {"task_id": answers[0]["data"]["task_id"], "status": "pending"}}
    assert set(answers[1]) == {"data"} and set(answers[2]) == {"task_id", "status"}
    ids = [a["data"]["task_id"] if "data" in a else a["task_id"] for a in answers]
    await aio.wait_idle(1.0)
    aio.complete(ids[4], urls=["https://cdn.example/a.png"])
    aio.fail(ids[5], {"code": "content_policy", "message": "blocked"})
    got = [(await aio_api.get(f"/api/v1/tasks/{i}")).json() for i in ids]
    urls = [f"{aio.base_url}/files/{i}.png" for i in ids]
    failed = {"code": "upstream_error", "message": "Image generation failed"}
    assert got == [
        {"data": {"task_id": ids[0], "status": "succeeded", "output": {"urls": [urls[0]]}}},
        {"task_id": ids[1], "status": "success", "output": {"urls": [urls[1]]}},
        {"data": {"task_id": ids[2], "status": "error", "error": failed}},
        {"task_id": ids[3], "status": "canceled", "error": failed},
        {"task_id": ids[4], "status": "completed", "output": {"urls": ["https://cdn.example/a.png"]}},
        {"task_id": ids[5], "status": "error", "error": {"code": "content_policy", "message": "blocked"}},
    ]
    with pytest.raises(RuntimeError):
        aio.fail(ids[4])


async def test_apiinone_direct_answers(aio: FakeApiinone, aio_api: httpx.AsyncClient) -> None:
    urls = ["https://cdn.example/1.png", "https://cdn.example/2.png"]
    aio.next_scripts.extend(
        [
            TaskScript(direct="urls", urls=urls),
            TaskScript(direct="images", urls=urls, completed_word="succeeded"),
            TaskScript(direct="output.urls", urls=urls, wrapped=True),
            TaskScript(direct="data[].url", urls=urls, wrapped=True),  # data[] is never wrapped again
            TaskScript(direct="urls", urls=urls, direct_task_id=False, wrapped=True),
            TaskScript(direct="output.urls", outcome="never"),  # direct wins: completed at once
        ]
    )
    answers = [await aio_create(aio_api, aio_body(output_format="jpeg")) for _ in range(6)]
    ids = [str(r.task_id) for r in aio.creates]
    assert all(aio.tasks[i].status == "completed" for i in ids)
    assert answers[0] == {"task_id": ids[0], "status": "completed", "urls": urls}
    assert answers[1] == {"task_id": ids[1], "status": "succeeded", "images": urls}
    assert answers[2] == {"data": {"task_id": ids[2], "status": "completed", "output": {"urls": urls}}}
    assert answers[3] == {"created": answers[3]["created"], "data": [{"url": u} for u in urls]}
    assert abs(answers[3]["created"] - time.time()) <= 2
    assert answers[4] == {"data": {"urls": urls}}
    [own_url] = answers[5]["output"]["urls"]
    assert own_url == f"{aio.base_url}/files/{ids[5]}.jpg"
    assert (await aio_api.get(own_url)).headers["content-type"] == "image/jpeg"
    polled = (await aio_api.get(f"/api/v1/tasks/{ids[0]}")).json()
    assert polled == {"task_id": ids[0], "status": "completed", "output": {"urls": urls}}
    assert [c.answer for c in aio.creates] == answers
    await aio.wait_idle(0.5)


async def test_apiinone_forced_answers(aio: FakeApiinone, aio_api: httpx.AsyncClient) -> None:
    forced = [
        apiinone.forced_error(400, "invalid_request"),
        apiinone.forced_error(401, "invalid_api_key"),
        apiinone.forced_error(402, "insufficient_credits"),
        apiinone.forced_error(404, "model_not_found"),
        apiinone.forced_error(429, "rate_limit_exceeded", headers={"Retry-After": "2"}),
        apiinone.forced_error(500, "internal_error"),
        apiinone.forced_error(503, "upstream_error"),
    ]
    aio.create_responses.extend(forced)
    for f in forced:
        resp = await aio_api.post("/api/v1/images/generations", json=aio_body())
        error = assert_error(resp, f.status, f.body["error"]["code"], AIO_ERROR_KEYS)  # type: ignore[index]
        assert error["message"]
        assert resp.headers.get("retry-after") == f.headers.get("Retry-After")
    assert aio.tasks == {}
    task_id = (await aio_create(aio_api, aio_body()))["task_id"]
    aio.query_responses.extend([ForcedResponse(502, "Bad Gateway"), apiinone.forced_error(500, "internal_error")])
    assert (await aio_api.get(f"/api/v1/tasks/{task_id}")).text == "Bad Gateway"
    assert (await aio_api.get(f"/api/v1/tasks/{task_id}")).status_code == 500
    assert (await aio_api.get(f"/api/v1/tasks/{task_id}")).status_code == 200
    aio.create_responses.append("hang")
    with pytest.raises(httpx.ReadTimeout):
        await aio_api.post("/api/v1/images/generations", json=aio_body(), timeout=0.3)
    record = aio.creates[-1]
    assert record.status is None and record.answer is None
    assert (await aio.wait_final(str(record.task_id), 1.0)).status == "completed"  # it went on all the same
    aio.query_responses.append("hang")
    with pytest.raises(httpx.ReadTimeout):
        await aio_api.get(f"/api/v1/tasks/{task_id}", timeout=0.2)
    assert aio.queries[-1].status is None
