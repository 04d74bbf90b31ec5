"""The aivideoapi adapter (PROVIDERS.md §1): strict on what it sends, tolerant on what it reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from service.domain.pricing import PriceTable
from service.domain.request import GenerationRequest
from service.domain.status import JobError, Observation, Status
from service.providers.aivideoapi import CAPABILITIES, PRICES_USD, AivideoapiAdapter
from service.providers.base import Answer, ProtocolError, Tracking, WireRequest, WireResponse

ADAPTER = AivideoapiAdapter()
TASK = "397ce9f2-2b1c-4c3b-9a63-0c3b8a2f7e11"
CALLBACK = "https://hooks.example.com/callbacks/tok.sig"
URL = "https://file.aivideoapi.ai/abc123.png"


def response(
    status: int, body: Any = None, headers: Mapping[str, str] | None = None, raw: bytes | None = None
) -> WireResponse:
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode()
    return WireResponse(status=status, headers=dict(headers or {}), body=raw)


def error_body(code: str, message: str = "something", type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": type_}}


# -- the adapter's shape ----------------------------------------------------------------------------


def test_identity() -> None:
    assert ADAPTER.name == "aivideoapi"
    assert ADAPTER.tracking is Tracking.CALLBACK
    assert ADAPTER.capabilities is CAPABILITIES
    assert ADAPTER.auth_headers("sk-abc") == {"Authorization": "Bearer sk-abc"}


def test_poll_request() -> None:
    assert ADAPTER.poll_request(TASK) == WireRequest("GET", f"/v1/tasks/{TASK}")


# -- submit_request ---------------------------------------------------------------------------------


def test_submit_request_documented_example() -> None:
    request = GenerationRequest(prompt="…", aspect_ratio="16:9", rendering_speed="TURBO", output_format="png")
    wire = ADAPTER.submit_request(request, CALLBACK)
    assert (wire.method, wire.path) == ("POST", "/v1/images/generations")
    assert wire.json == {
        "model": "ideogram-v4",
        "callback_url": CALLBACK,
        "input": {"prompt": "…", "size": "16:9", "rendering_speed": "TURBO", "output_format": "png"},
    }


def test_submit_request_sends_only_set_fields() -> None:
    wire = ADAPTER.submit_request(GenerationRequest(prompt="a cat"), CALLBACK)
    assert wire.json == {"model": "ideogram-v4", "callback_url": CALLBACK, "input": {"prompt": "a cat"}}


@pytest.mark.parametrize(
    ("field", "value", "wire_name"),
    [
        ("aspect_ratio", "3:4", "size"),
        ("rendering_speed", "QUALITY", "rendering_speed"),
        ("output_format", "jpeg", "output_format"),
    ],
)
def test_submit_request_each_field_alone(field: str, value: str, wire_name: str) -> None:
    fields: dict[str, Any] = {field: value}
    wire = ADAPTER.submit_request(GenerationRequest(prompt="p", **fields), None)
    assert wire.json is not None
    assert wire.json["input"] == {"prompt": "p", wire_name: value}


def test_submit_request_without_callback_url_has_no_such_key() -> None:
    wire = ADAPTER.submit_request(GenerationRequest(prompt="a cat"), None)
    assert wire.json == {"model": "ideogram-v4", "input": {"prompt": "a cat"}}
    assert "callback_url" not in wire.json


def test_submit_request_merges_provider_options_into_input() -> None:
    request = GenerationRequest(prompt="a cat", aspect_ratio="1:1", provider_options={"style": "vivid", "n": [1, 2]})
    wire = ADAPTER.submit_request(request, CALLBACK)
    assert wire.json is not None
    assert wire.json["input"] == {"prompt": "a cat", "size": "1:1", "style": "vivid", "n": [1, 2]}
    assert set(wire.json) == {"model", "callback_url", "input"}


def test_submit_request_is_json_serialisable_and_does_not_alias_options() -> None:
    options = {"k": "v"}
    wire = ADAPTER.submit_request(GenerationRequest(prompt="p", provider_options=options), None)
    assert wire.json is not None
    json.dumps(wire.json)
    wire.json["input"]["k"] = "changed"
    assert options == {"k": "v"}


# -- parse_submit -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "msg": "success", "data": {"taskId": TASK}},  # as documented
        {"code": 200, "msg": "success", "data": {"task_id": TASK}},
        {"code": 200, "data": {"id": TASK}},
        {"taskId": TASK},  # unwrapped
        {"task_id": TASK},
        {"id": TASK, "status": "pending"},
        {"code": 200, "msg": "success", "data": {"taskId": TASK, "extra": 1}, "request_id": "r1"},
    ],
)
@pytest.mark.parametrize("status", [200, 201, 202])
def test_parse_submit_accepted(body: dict[str, Any], status: int) -> None:
    answer = ADAPTER.parse_submit(response(status, body))
    assert answer.answer is Answer.OK
    assert answer.task_id == TASK
    assert answer.error is None
    assert answer.observation is None


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"code": 200, "msg": "success", "data": {}}).encode(),
        json.dumps({"code": 200, "msg": "success"}).encode(),
        json.dumps({"code": 200, "data": {"taskId": ""}}).encode(),
        json.dumps({"code": 200, "data": {"taskId": None}}).encode(),
        json.dumps({"code": 200, "data": {"taskId": 12345}}).encode(),
        json.dumps({"code": 200, "data": {"taskId": [TASK]}}).encode(),
        json.dumps([{"taskId": TASK}]).encode(),
        json.dumps("ok").encode(),
        b"",
        b"OK",
        b"<html>ok</html>",
    ],
)
def test_parse_submit_2xx_without_task_id(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ADAPTER.parse_submit(response(200, raw=raw))


# (HTTP status, provider code): PROVIDERS.md §1's error table, refusals for good
REJECTIONS = [
    (400, "invalid_request"),
    (401, "invalid_api_key"),
    (402, "insufficient_credits"),
    (403, "ip_not_allowed"),
    (404, "model_not_found"),
    (404, "task_not_found"),
]
RETRIES = [
    (429, "rate_limit_exceeded"),
    (429, "spend_limit_exceeded"),
    (500, "internal_error"),
    (503, "upstream_error"),
]


@pytest.mark.parametrize(("status", "code"), REJECTIONS)
def test_parse_submit_rejected(status: int, code: str) -> None:
    answer = ADAPTER.parse_submit(response(status, error_body(code, "balance too low")))
    assert answer.answer is Answer.REJECTED
    assert answer.task_id is None
    assert answer.error == JobError("provider_rejected", "balance too low", code)


@pytest.mark.parametrize(("status", "code"), RETRIES)
@pytest.mark.parametrize("retry_after", ["30", "Wed, 21 Oct 2026 07:28:00 GMT", None])
def test_parse_submit_retry(status: int, code: str, retry_after: str | None) -> None:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    answer = ADAPTER.parse_submit(response(status, error_body(code, "slow down"), headers))
    assert answer.answer is Answer.RETRY
    assert answer.task_id is None
    assert answer.error == JobError("provider_unavailable", "slow down", code)
    assert answer.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (400, Answer.REJECTED),
        (408, Answer.RETRY),
        (402, Answer.REJECTED),
        (429, Answer.RETRY),
        (500, Answer.RETRY),
        (502, Answer.RETRY),
        (503, Answer.RETRY),
        (504, Answer.RETRY),
    ],
)
@pytest.mark.parametrize("raw", [b"", b"<html>Bad Gateway</html>", b"null", b"[]", b'"oops"'])
def test_parse_submit_error_status_without_error_envelope(status: int, answer: Answer, raw: bytes) -> None:
    result = ADAPTER.parse_submit(response(status, raw=raw))
    assert result.answer is answer
    assert result.error is not None
    assert result.error.provider_code == f"http_{status}"
    assert str(status) in result.error.message


def test_parse_submit_error_envelope_without_code_or_message() -> None:
    result = ADAPTER.parse_submit(response(402, {"error": {}}))
    assert result.answer is Answer.REJECTED
    assert result.error == JobError("provider_rejected", "HTTP 402", "http_402")


def test_parse_submit_error_message_from_msg() -> None:
    result = ADAPTER.parse_submit(response(400, {"code": 400, "msg": "prompt is required"}))
    assert result.answer is Answer.REJECTED
    assert result.error == JobError("provider_rejected", "prompt is required", "http_400")


@pytest.mark.parametrize(
    ("body", "answer", "provider_code"),
    [
        ({"code": 402, "msg": "insufficient credits"}, Answer.REJECTED, "http_402"),
        ({"code": 401, "msg": "invalid api key"}, Answer.REJECTED, "http_401"),
        (
            {"code": 400, "msg": "bad", "error": {"code": "invalid_request", "message": "bad"}},
            Answer.REJECTED,
            "invalid_request",
        ),
        ({"code": 429, "msg": "rate limited"}, Answer.RETRY, "http_429"),
        ({"code": 500, "msg": "internal"}, Answer.RETRY, "http_500"),
        ({"code": 503, "data": None}, Answer.RETRY, "http_503"),
    ],
)
def test_parse_submit_http_200_with_an_error_code_in_the_body(
    body: dict[str, Any], answer: Answer, provider_code: str
) -> None:
    result = ADAPTER.parse_submit(response(200, body))
    assert result.answer is answer
    assert result.task_id is None
    assert result.error is not None
    assert result.error.provider_code == provider_code


@pytest.mark.parametrize("code", [200, 0, 201, "500", True, None, 399.0])
def test_parse_submit_http_200_with_harmless_body_code(code: Any) -> None:
    result = ADAPTER.parse_submit(response(200, {"code": code, "data": {"taskId": TASK}}))
    assert (result.answer, result.task_id) == (Answer.OK, TASK)


# -- parse_poll / parse_callback --------------------------------------------------------------------


def task(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": TASK, "status": status, "model": "ideogram-v4", "created_at": 1781000000, **fields}


COMPLETED = task(
    "completed", completed_at=1781000020, output={"urls": [URL], "metadata": {"model": "ideogram-ai/ideogram-v4"}}
)
FAILED = task("failed", error={"code": "upstream_error", "message": "Image generation failed"})

OBSERVATIONS: list[tuple[dict[str, Any], Observation]] = [
    (task("pending"), Observation(Status.SUBMITTED)),
    (task("processing"), Observation(Status.PROCESSING)),
    (COMPLETED, Observation(Status.COMPLETED, images=(URL,))),
    (
        FAILED,
        Observation(Status.FAILED, error=JobError("provider_failed", "Image generation failed", "upstream_error")),
    ),
    # tolerated synonyms
    (task("queued"), Observation(Status.SUBMITTED)),
    (task("waiting"), Observation(Status.SUBMITTED)),
    (task("PENDING"), Observation(Status.SUBMITTED)),
    (task("running"), Observation(Status.PROCESSING)),
    (task("in_progress"), Observation(Status.PROCESSING)),
    (task("Processing"), Observation(Status.PROCESSING)),
    (task("succeeded", output={"urls": [URL]}), Observation(Status.COMPLETED, images=(URL,))),
    (task("success", output={"urls": [URL]}), Observation(Status.COMPLETED, images=(URL,))),
    (task("COMPLETED", output={"urls": [URL]}), Observation(Status.COMPLETED, images=(URL,))),
    (task("error"), Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task"))),
    (task("canceled"), Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task"))),
    (task("cancelled"), Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task"))),
    # failure details in other shapes
    (
        task("failed", error="content policy"),
        Observation(Status.FAILED, error=JobError("provider_failed", "content policy")),
    ),
    (
        task("failed", error={"message": "nsfw"}),
        Observation(Status.FAILED, error=JobError("provider_failed", "nsfw")),
    ),
    (
        task("failed", error={"code": "nsfw"}),
        Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task", "nsfw")),
    ),
    (
        task("failed", error=None),
        Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task")),
    ),
    (
        task("failed", error=42),
        Observation(Status.FAILED, error=JobError("provider_failed", "the provider failed the task")),
    ),
    # output variants
    (task("completed", output={"urls": [URL, URL + "2"]}), Observation(Status.COMPLETED, images=(URL, URL + "2"))),
    (task("completed", output={"urls": [{"url": URL}]}), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output={"urls": URL}), Observation(Status.COMPLETED, images=(URL,))),
    (
        task("completed", output={"images": [{"url": URL}, {"url": URL + "2"}]}),
        Observation(Status.COMPLETED, images=(URL, URL + "2")),
    ),
    (task("completed", output={"image_urls": [URL]}), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output={"url": URL}), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output=[URL]), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output=[{"url": URL}]), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output=URL), Observation(Status.COMPLETED, images=(URL,))),
    (task("completed", output={"urls": [URL, 5, None, {"href": "x"}]}), Observation(Status.COMPLETED, images=(URL,))),
    # unknown fields are ignored
    (task("processing", progress=0.5, output=None, extra={"a": 1}), Observation(Status.PROCESSING)),
]


@pytest.mark.parametrize(("body", "expected"), OBSERVATIONS)
def test_parse_callback(body: dict[str, Any], expected: Observation) -> None:
    assert ADAPTER.parse_callback(body) == expected


@pytest.mark.parametrize(("body", "expected"), OBSERVATIONS)
def test_parse_poll(body: dict[str, Any], expected: Observation) -> None:
    answer = ADAPTER.parse_poll(response(200, body))
    assert answer.answer is Answer.OK
    assert answer.observation == expected
    assert answer.error is None


@pytest.mark.parametrize(("body", "expected"), OBSERVATIONS[:4])
def test_parse_poll_wrapped_in_data(body: dict[str, Any], expected: Observation) -> None:
    answer = ADAPTER.parse_poll(response(200, {"code": 200, "msg": "success", "data": body}))
    assert answer.observation == expected


@pytest.mark.parametrize(
    "output",
    [None, {}, {"urls": []}, {"urls": None}, {"urls": [None, 5]}, {"images": []}, [], {"metadata": {}}, 42],
    ids=repr,
)
def test_completed_without_urls_is_a_protocol_error(output: Any) -> None:
    body = task("completed", output=output)
    with pytest.raises(ProtocolError):
        ADAPTER.parse_callback(body)
    with pytest.raises(ProtocolError):
        ADAPTER.parse_poll(response(200, body))


@pytest.mark.parametrize(
    "output",
    ["", {"urls": [""]}, {"urls": ["", ""]}, {"urls": ""}, {"url": ""}, [{"url": ""}], {"images": [{"url": ""}]}],
    ids=repr,
)
def test_completed_with_only_empty_urls_is_a_protocol_error(output: Any) -> None:
    with pytest.raises(ProtocolError):
        ADAPTER.parse_callback(task("completed", output=output))


def test_empty_urls_are_dropped_beside_real_ones() -> None:
    observation = ADAPTER.parse_callback(task("completed", output={"urls": ["", URL, {"url": ""}]}))
    assert observation.images == (URL,)


def test_completed_without_output_key() -> None:
    with pytest.raises(ProtocolError):
        ADAPTER.parse_callback(task("completed"))


@pytest.mark.parametrize(
    "status", ["finished-ish", "unknown", "", "completed!", "task.completed", None, 1, True, ["completed"]]
)
def test_unknown_status_is_a_protocol_error(status: Any) -> None:
    body = task("x", output={"urls": [URL]})
    body["status"] = status
    with pytest.raises(ProtocolError):
        ADAPTER.parse_callback(body)
    with pytest.raises(ProtocolError):
        ADAPTER.parse_poll(response(200, body))


def test_missing_status_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ADAPTER.parse_callback({"id": TASK})


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'"completed"', b"null"])
def test_parse_poll_2xx_not_an_object(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ADAPTER.parse_poll(response(200, raw=raw))


@pytest.mark.parametrize(("status", "code"), REJECTIONS)
def test_parse_poll_rejected(status: int, code: str) -> None:
    answer = ADAPTER.parse_poll(response(status, error_body(code, "nope")))
    assert answer.answer is Answer.REJECTED
    assert answer.observation is None
    assert answer.error == JobError("provider_rejected", "nope", code)


@pytest.mark.parametrize(("status", "code"), RETRIES)
def test_parse_poll_retry_keeps_retry_after(status: int, code: str) -> None:
    answer = ADAPTER.parse_poll(response(status, error_body(code, "later"), {"retry-after": "17"}))
    assert answer.answer is Answer.RETRY
    assert answer.observation is None
    assert answer.retry_after == "17"
    assert answer.error == JobError("provider_unavailable", "later", code)


def test_parse_poll_http_200_with_error_code_in_body() -> None:
    answer = ADAPTER.parse_poll(response(200, {"code": 404, "msg": "task not found"}))
    assert answer.answer is Answer.REJECTED
    assert answer.error == JobError("provider_rejected", "task not found", "http_404")


# -- price ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "images", "price"),
    [
        ({"rendering_speed": "TURBO"}, 1, 0.08),
        ({"rendering_speed": "BALANCED"}, 1, 0.14),
        ({"rendering_speed": "QUALITY"}, 1, 0.22),
        ({}, 1, 0.14),  # BALANCED is the default
        ({"rendering_speed": None}, 1, 0.14),
        ({"prompt": "x", "aspect_ratio": "16:9"}, 1, 0.14),
        ({"rendering_speed": "TURBO"}, 3, 0.24),
        ({"rendering_speed": "QUALITY"}, 2, 0.44),
        ({"rendering_speed": "TURBO"}, 0, 0.0),
    ],
)
def test_price_usd(request_: dict[str, Any], images: int, price: float) -> None:
    assert ADAPTER.price_usd(request_, images) == pytest.approx(price, abs=1e-9)


def test_price_of_an_unknown_speed_is_unknown() -> None:
    assert ADAPTER.price_usd({"rendering_speed": "LUDICROUS"}, 1) is None


def test_documented_prices() -> None:
    assert PRICES_USD == {"TURBO": 0.08, "BALANCED": 0.14, "QUALITY": 0.22}


def test_custom_name_and_prices() -> None:
    simulator = AivideoapiAdapter(name="simulator", prices=PriceTable.of({"TURBO": 0.0, "BALANCED": 0.0}))
    assert simulator.name == "simulator"
    assert simulator.price_usd({"rendering_speed": "TURBO"}, 4) == 0.0
    assert simulator.price_usd({"rendering_speed": "QUALITY"}, 1) is None
