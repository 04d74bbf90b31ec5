"""Providers that misbehave, at the adapters and at the HTTP sender (httpx.MockTransport).

An adapter reads whatever a provider answers without ever failing in any way but ProtocolError (the
engine turns that into a clear event on the job); the sender tells "never sent" from "sent, no whole
answer", bounds an answer's size and the whole exchange's time, and puts a task id on the wire as one
path segment whatever it holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.domain.status import Status
from service.providers.base import Adapter, ProtocolError, Tracking, WireRequest, WireResponse, path_segment
from service.providers.http import MAX_POLL_ANSWER_BYTES, NotSent, ProviderHTTP, Uncertain, deadline
from service.providers.registry import adapters

ASYNC = {name: adapter for name, adapter in adapters().items() if adapter.tracking is not Tracking.SYNCHRONOUS}
ALL = adapters()

# -- adapters: nothing but ProtocolError --------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "",
    "x",
    "\x00",
    "completed",
    "COMPLETED",
    [],
    [None],
    [[["x"]]],
    {},
    {"a": 1},
    {"urls": 5},
    {"code": {"x": 1}, "message": []},
    ["https://files.example/a.png"],
]
KEYS = ["id", "taskId", "task_id", "jobId", "job_id", "status", "output", "result", "urls", "images", "data", "error"]
RAW_BODIES = [b"", b"not json", b"<html>502</html>", b"null", b"[]", b"1", b'"x"', b"\xff\xfe", b"{" * 10]


def odd_bodies() -> list[bytes]:
    bodies = list(RAW_BODIES)
    for key in KEYS:
        for value in ODD_VALUES:
            for shape in (
                {key: value},
                {"data": {key: value}},
                {"status": "completed", key: value},
                {"status": "failed", key: value},
                {"code": 200, "data": {"taskId": "t", key: value}},
            ):
                bodies.append(json.dumps(shape).encode())
    return bodies


BODIES = odd_bodies()


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("status", [200, 202, 400, 402, 406, 429, 500, 503])
def test_odd_answers_are_read_or_refused_with_protocol_error_only(name: str, status: int) -> None:
    adapter = ALL[name]
    answered = refused = 0
    for body in BODIES:
        for content_type in ("application/json", "text/plain", "image/png", ""):
            headers = {"content-type": content_type, "retry-after": "soon", "x-remaining-credits": "NaN"}
            response = WireResponse(status, headers, body)
            for parse in (adapter.parse_submit, adapter.parse_poll):
                try:
                    parse(response)
                except ProtocolError:
                    refused += 1
                else:
                    answered += 1
    assert answered + refused == len(BODIES) * 4 * 2
    if status >= 400 and name != "segmind":
        assert answered >= len(BODIES) * 4  # an error status is an answer, whatever its body says


@pytest.mark.parametrize("name", sorted(ALL))
def test_odd_callback_bodies_raise_protocol_error_only(name: str) -> None:
    adapter = ALL[name]
    for body in BODIES:
        try:
            data = json.loads(body)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        task_id = adapter.callback_task_id(data)
        assert task_id is None or (isinstance(task_id, str) and task_id)
        try:
            observation = adapter.parse_callback(data)
        except ProtocolError:
            continue
        if observation.status is Status.COMPLETED:
            assert observation.images and all(isinstance(url, str) for url in observation.images)


def _response(status: int, body: Any, content_type: str = "application/json") -> WireResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WireResponse(status, {"content-type": content_type}, raw)


# (adapter, a 2xx answer to a submission) → it cannot be read: the task may exist, so never re-sent.
UNREADABLE_SUBMITS: list[tuple[str, WireResponse]] = [
    ("aivideoapi", _response(200, b"<html>ok</html>", "text/html")),
    ("aivideoapi", _response(200, {"code": 200, "msg": "success", "data": {}})),
    ("aivideoapi", _response(200, {"code": 200, "msg": "success", "data": {"taskId": 12345}})),
    ("aivideoapi", _response(200, {"code": 200, "msg": "success", "data": {"taskId": ["t"]}})),
    ("aivideoapi", _response(200, [{"taskId": "t"}])),
    ("apiframe", _response(202, {"status": "QUEUED"})),
    ("apiframe", _response(202, {"jobId": None, "status": "QUEUED"})),
    ("apiframe", _response(202, b"accepted", "text/plain")),
    ("apiinone", _response(200, {"status": "pending"})),
    ("apiinone", _response(200, {"task_id": {"id": "t"}})),
    ("apiinone", _response(200, {"task_id": "t", "status": "teleported"})),
    ("segmind", _response(200, b"GIF89a not a png", "image/png")),
    ("segmind", _response(200, {"images": ["not base64!"]})),
    ("segmind", _response(200, {"images": []})),
]


@pytest.mark.parametrize(("name", "response"), UNREADABLE_SUBMITS)
def test_unreadable_accepted_submissions_are_protocol_errors(name: str, response: WireResponse) -> None:
    with pytest.raises(ProtocolError):
        ALL[name].parse_submit(response)


UNREADABLE_POLLS: list[tuple[str, WireResponse]] = [
    ("aivideoapi", _response(200, b"", "text/plain")),
    ("aivideoapi", _response(200, {"id": "t"})),
    ("aivideoapi", _response(200, {"id": "t", "status": 7})),
    ("aivideoapi", _response(200, {"id": "t", "status": "completed"})),  # completed without images
    ("aivideoapi", _response(200, {"id": "t", "status": "completed", "output": {"urls": ["ftp://x/y.png"]}})),
    ("apiframe", _response(200, {"jobId": "t", "status": "DONE-ISH"})),
    ("apiframe", _response(200, {"jobId": "t", "status": "COMPLETED", "result": {"urls": "not a list"}})),
    ("apiinone", _response(200, {"data": {"task_id": "t"}})),
    ("apiinone", _response(200, {"data": {"task_id": "t", "status": None}})),
]


@pytest.mark.parametrize(("name", "response"), UNREADABLE_POLLS)
def test_unreadable_polls_are_protocol_errors(name: str, response: WireResponse) -> None:
    with pytest.raises(ProtocolError):
        ALL[name].parse_poll(response)


def test_a_provider_failure_without_details_still_fails_with_a_message() -> None:
    for name, adapter in ASYNC.items():
        body = {"id": "t", "jobId": "t", "task_id": "t", "status": "failed", "error": {"code": ["x"], "message": 5}}
        observation = adapter.parse_poll(_response(200, body)).observation
        assert observation is not None and observation.status is Status.FAILED, name
        assert observation.error is not None and observation.error.message, name


# -- task ids on the wire ------------------------------------------------------------------------------

HOSTILE_TASK_IDS = ["../../v1/account", "..", ".", "a/b", "a?b=1", "a#b", "%2e%2e", "a b", "é", "a\r\nX-Evil: 1"]


@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS)
def test_path_segment_is_one_segment(task_id: str) -> None:
    segment = path_segment(task_id)
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert segment not in (".", "..")
    assert segment.isascii() and " " not in segment and "\r" not in segment


@pytest.mark.parametrize("name", sorted(ASYNC))
@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS)
async def test_a_task_id_never_leaves_its_path_segment(name: str, task_id: str) -> None:
    """Whatever a provider (or a callback, or the backend) gave as a task id, the poll asks the
    provider about that task, at the task path: never another path, query or fragment."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "pending"})

    adapter: Adapter = ASYNC[name]
    sender = ProviderHTTP("https://provider.example/base", {}, timeout=1, submit_timeout=1, transport=_mock(answer))
    try:
        await sender.send(adapter.poll_request(task_id))
    finally:
        await sender.aclose()
    [request] = seen
    prefix = adapter.poll_request("TASK").path.removesuffix("TASK")
    assert request.url.raw_path == f"/base{prefix}{path_segment(task_id)}".encode()
    assert request.url.query == b""
    assert request.url.fragment == ""


def test_ordinary_task_ids_are_unchanged() -> None:
    for task_id in ("397ce9f2-2b1c-4c3b-9a63-0c3b8a2f7e11", "b2c3d4e5", "task_01J-x_y~z"):
        assert path_segment(task_id) == task_id


# -- the sender --------------------------------------------------------------------------------------


def _mock(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def _send(handler: Any, *, submission: bool = False, timeout: float = 1.0) -> WireResponse:
    sender = ProviderHTTP(
        "https://provider.example",
        {"Authorization": "Bearer sk-x"},
        timeout=timeout,
        submit_timeout=timeout,
        transport=_mock(handler),
    )
    try:
        return await sender.send(WireRequest("POST", "/v1/x", {"a": 1}), submission=submission)
    finally:
        await sender.aclose()


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (httpx.ConnectError("refused"), NotSent),
        (httpx.ConnectTimeout("no connection"), NotSent),
        (httpx.PoolTimeout("pool"), NotSent),
        (httpx.ReadTimeout("no answer"), Uncertain),
        (httpx.WriteTimeout("half sent"), Uncertain),
        (httpx.RemoteProtocolError("server hung up"), Uncertain),
        (httpx.ReadError("reset"), Uncertain),
    ],
)
@pytest.mark.parametrize("submission", [True, False])
async def test_failures_are_never_sent_or_uncertain(error: Exception, raised: type, submission: bool) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(raised):
        await _send(fail, submission=submission)


async def test_an_answer_of_any_shape_is_handed_to_the_adapter() -> None:
    answer = await _send(lambda request: httpx.Response(200, content=b"\xff\x00 not json", headers={"X-A": "1"}))
    assert (answer.status, answer.body, answer.headers["x-a"]) == (200, b"\xff\x00 not json", "1")
    assert answer.json() is None


class Trickle(httpx.AsyncByteStream):
    """A body that never ends: one byte, then another, well within any per-read timeout."""

    def __init__(self, every: float, total: int | None = None) -> None:
        self.every = every
        self.total = total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while self.total is None or sent < self.total:
            await asyncio.sleep(self.every)
            sent += 1
            yield b" "


async def test_a_provider_trickling_its_answer_is_cut_at_the_deadline() -> None:
    """httpx's timeout is per read: without a deadline this call would never end."""
    with pytest.raises(Uncertain) as cut:
        await _send(lambda request: httpx.Response(200, stream=Trickle(0.01)), timeout=0.2)
    assert "no whole answer" in str(cut.value)
    assert deadline(0.2) < 0.2 + min(30.0, max(1.0, 0.2))  # within the submission's lease


async def test_an_answer_over_the_bound_is_refused_declared_or_not() -> None:
    big = b"x" * (MAX_POLL_ANSWER_BYTES + 1)
    with pytest.raises(Uncertain, match="declares"):
        await _send(lambda request: httpx.Response(200, content=big))

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunk = b"x" * 65536
            for _ in range(MAX_POLL_ANSWER_BYTES // len(chunk) + 2):
                yield chunk

    with pytest.raises(Uncertain, match="exceeds"):
        await _send(lambda request: httpx.Response(200, stream=Endless()))


@pytest.mark.parametrize("timeout", [0.1, 0.5, 2, 30, 300])
def test_deadlines_fit_within_the_leases(timeout: float) -> None:
    assert timeout < deadline(timeout) < timeout + min(30.0, max(1.0, timeout))
    if timeout <= 30:
        assert deadline(timeout) < 45.0  # service.engine.POLL_LEASE


def test_every_async_adapter_is_covered() -> None:
    assert sorted(ASYNC) == ["aivideoapi", "apiframe", "apiinone"]


async def test_an_answer_quoting_our_api_key_is_scrubbed_before_anyone_reads_it() -> None:
    key = "sk-LIVE-0123456789abcdef"
    quoted = {"error": {"code": "invalid_api_key", "message": f"Invalid API key {key} (Bearer {key})"}}
    sender = ProviderHTTP(
        "https://provider.example",
        {"Authorization": f"Bearer {key}", "X-API-Key": "afk_second_key_42"},
        timeout=1,
        submit_timeout=1,
        transport=_mock(
            lambda request: (
                httpx.Response(401, json=quoted)
                if request.url.path == "/json"
                else httpx.Response(200, content=b"\x89PNG" + key.encode(), headers={"Content-Type": "image/png"})
            )
        ),
    )
    try:
        answer = await sender.send(WireRequest("GET", "/json"))
        image = await sender.send(WireRequest("GET", "/image"))
    finally:
        await sender.aclose()
    assert key.encode() not in answer.body
    assert answer.json()["error"]["message"] == "Invalid API key [redacted] ([redacted])"
    refusal = ALL["aivideoapi"].parse_poll(answer)
    assert refusal.error is not None and key not in refusal.error.message
    assert image.body == b"\x89PNG" + key.encode()  # image bytes are never rewritten
