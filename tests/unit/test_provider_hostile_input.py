"""What reaches the adapters from outside cannot make them raise anything but ProtocolError (found by
the route fuzz and its follow-up probes).

A task id is one path segment at the provider, whatever it holds: the backend's `PATCH /v1/jobs/{id}`
and a provider's callback both set task ids, and one with a control character made every poll of that
job raise, and `POST /v1/jobs/{id}/refresh` answer 500. A callback's or poll's body nested a thousand
levels deep exhausted the stack while looking for image URLs: a 500 on `POST /callbacks/{token}`.
"""

from __future__ import annotations

import pytest

from service.providers.base import ProtocolError, Tracking, WireRequest, image_urls
from service.providers.http import NotSent, ProviderHTTP
from service.providers.registry import adapters

POLLED = {name: adapter for name, adapter in adapters().items() if adapter.tracking is not Tracking.SYNCHRONOUS}
PREFIXES = {"aivideoapi": "/v1/tasks/", "apiframe": "/v2/jobs/", "apiinone": "/api/v1/tasks/"}


def test_every_polled_provider_is_covered() -> None:
    assert set(POLLED) == set(PREFIXES)


@pytest.mark.parametrize("name", sorted(POLLED))
@pytest.mark.parametrize(
    ("task_id", "sent"),
    [
        ("397ce9f2-2b1c-4c3b-9a63-0c3b8a2f7e11", "397ce9f2-2b1c-4c3b-9a63-0c3b8a2f7e11"),
        ("a/../../balance", "a%2F..%2F..%2Fbalance"),
        ("x?y=1#z", "x%3Fy%3D1%23z"),
        ("tab\there\x13", "tab%09here%13"),
        ("é ü", "%C3%A9%20%C3%BC"),
    ],
)
def test_a_task_id_is_one_quoted_segment(name: str, task_id: str, sent: str) -> None:
    assert POLLED[name].poll_request(task_id) == WireRequest("GET", PREFIXES[name] + sent)


async def test_a_url_that_cannot_be_built_was_never_sent() -> None:
    http = ProviderHTTP("http://127.0.0.1:9", {}, timeout=1, submit_timeout=1)
    try:
        with pytest.raises(NotSent, match="InvalidURL"):
            await http.send(WireRequest("GET", "/v1/tasks/bad\x13id"))
    finally:
        await http.aclose()


def nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = {"urls": leaf}
    return leaf


def test_image_urls_are_found_in_the_documented_shapes_only() -> None:
    url = "https://file.example/a.png"
    assert image_urls({"images": [{"url": url}]}) == (url,)
    assert image_urls(nested(2, [url])) == (url,)
    assert image_urls(nested(50, url)) == ()


@pytest.mark.parametrize("name", sorted(POLLED))
def test_a_body_nested_past_the_stack_is_a_protocol_error(name: str) -> None:
    body = {"id": "t", "jobId": "t", "status": "completed", "output": nested(5000, "https://file.example/a.png")}
    body["result"] = body["output"]
    with pytest.raises(ProtocolError):
        POLLED[name].parse_callback(body)
