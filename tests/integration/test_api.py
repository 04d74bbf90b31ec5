"""The HTTP API refuses with a status, a code and a message, and never answers 500 to a client.

Real HTTP against the real app (uvicorn on loopback), no mocks. The refusal tables share one service
per module (a start costs ~0.3 s); everything that needs its own settings or state starts its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service import ids
from service.app import create_app
from service.config import Settings
from service.http import server_protocol
from tests.conftest import Service, ServiceFactory
from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.server import free_socket, serve_asgi

# Tests on the module's shared services run in the module's event loop, where those services live.
shared_loop = pytest.mark.asyncio(loop_scope="module")

PROVIDERS = ["aivideoapi", "simulator"]  # the ones these tests configure
KNOWN_PROVIDERS = ["aivideoapi", "apiframe", "apiinone", "segmind", "simulator"]
ASPECT_RATIOS = ["1:1", "3:4", "9:16", "4:3", "16:9"]
RENDERING_SPEEDS = ["TURBO", "BALANCED", "QUALITY"]
OUTPUT_FORMATS = ["jpeg", "png"]
MiB = 1024 * 1024

_ANY = object()  # "the answer may or may not name a field"


def assert_error(response: httpx.Response, status: int, code: str, field: object = _ANY) -> dict[str, Any]:
    """`response` is the refusal `{"error": {"code", "message", …}}` with `status`; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"].strip(), error
    if field is not _ANY:
        assert error.get("field") == field, error
    return error  # type: ignore[no-any-return]


def assert_refusal_shape(response: httpx.Response, context: str) -> None:
    """Any 4xx from jobhook (or its mounted simulator) carries a JSON error with a code and a message."""
    assert response.headers.get("content-type", "").startswith("application/json"), context
    error = response.json().get("error")
    assert isinstance(error, dict), context
    assert isinstance(error.get("code"), str), context
    assert error["code"], context
    assert isinstance(error.get("message"), str), context
    assert error["message"].strip(), context


@contextlib.asynccontextmanager
async def serve_jobhook(folder: Path, **env: str) -> AsyncIterator[Service]:
    """The conftest `jobhook` service, startable from a module-scoped fixture (one start per table)."""
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    environ = {
        "JOBHOOK_DATABASE": str(folder / "jobhook.db"),
        "JOBHOOK_MEDIA_DIR": str(folder / "media"),
        "JOBHOOK_PUBLIC_URL": url,
        "JOBHOOK_CALLBACK_GRACE": "60",
        "JOBHOOK_POLL_INTERVAL": "0.2",
        "JOBHOOK_POLL_MAX_INTERVAL": "0.5",
        "JOBHOOK_SIMULATOR_LATENCY": "0.2",
        "JOBHOOK_SUBMIT_TIMEOUT": "2",
        **env,
    }
    settings = Settings.from_environ(environ)
    app = create_app(settings, self_url=url)
    async with (
        serve_asgi(app, sock=sock, http=server_protocol()) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield Service(url, client, settings, app.state.runtime)


@dataclasses.dataclass
class Blank:
    """A service with aivideoapi configured against a fake, in which no job must ever be created."""

    svc: Service
    fake: FakeAivideoapi

    async def assert_untouched(self) -> None:
        assert self.fake.creates == [], "a refused request reached the provider"
        listing = await self.svc.client.get("/v1/jobs")
        assert listing.status_code == 200, listing.text
        assert listing.json() == {"jobs": [], "next_cursor": None}, "a refused request left a job behind"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def blank(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Blank]:
    async with (
        FakeAivideoapi(complete_after=0.3) as fake,
        serve_jobhook(
            tmp_path_factory.mktemp("blank"),
            JOBHOOK_AIVIDEOAPI_API_KEY="sk-test",
            JOBHOOK_AIVIDEOAPI_BASE_URL=fake.base_url,
        ) as svc,
    ):
        yield Blank(svc, fake)


@dataclasses.dataclass
class Tracked:
    """A service holding one job the backend submits itself (no task id yet)."""

    svc: Service
    job_id: str

    async def assert_unchanged(self) -> None:
        job = await self.svc.job(self.job_id)
        assert (job["status"], job["provider_task_id"]) == ("queued", None), job


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tracked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tracked]:
    async with serve_jobhook(tmp_path_factory.mktemp("tracked")) as svc:
        job = await svc.submit(provider="simulator", prompt="the backend submits this one", submit=False)
        yield Tracked(svc, job["id"])


# --- POST /v1/jobs ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    """One refused submission: what is sent, and the refusal it must earn."""

    body: Any  # bytes: sent as is; anything else: sent as JSON
    status: int
    code: str
    field: str | None = None
    accepted: list[Any] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def _bodies() -> list[Any]:
    ok = {"provider": "simulator", "prompt": "a poster"}
    cases = [
        # Not a JSON object at all.
        pytest.param(Bad(b'{"provider": "simulator", ', 400, "invalid_json"), id="malformed-json"),
        pytest.param(Bad(b"", 400, "invalid_json"), id="empty-body"),
        pytest.param(Bad(b" \r\n\t ", 400, "invalid_json"), id="whitespace-body"),
        pytest.param(Bad(b"\xff\xfe\x00{", 400, "invalid_json"), id="not-utf8"),
        pytest.param(Bad(b'\xef\xbb\xbf{"provider": "simulator"}', 400, "invalid_json"), id="utf8-bom"),
        pytest.param(Bad(b'{"provider": "simulator", "prompt": "\\ud800"}', 400, "invalid_json"), id="lone-surrogate"),
        pytest.param(Bad(b'{"provider": "simulator", "prompt": "x", "seed": NaN}', 400, "invalid_json"), id="nan"),
        pytest.param(Bad(b"[" * 5000 + b"]" * 5000, 400, "invalid_json"), id="nested-array-5000"),
        pytest.param(Bad([ok], 422, "invalid_body", "body"), id="json-array"),
        pytest.param(Bad("a poster", 422, "invalid_body", "body"), id="json-string"),
        pytest.param(Bad(42, 422, "invalid_body", "body"), id="json-number"),
        pytest.param(Bad(None, 422, "invalid_body", "body"), id="json-null"),
        # Provider.
        pytest.param(Bad({"prompt": "a poster"}, 422, "missing_field", "provider"), id="missing-provider"),
        pytest.param(Bad({**ok, "provider": None}, 422, "missing_field", "provider"), id="null-provider"),
        pytest.param(Bad({**ok, "provider": ""}, 422, "invalid_field", "provider"), id="empty-provider"),
        pytest.param(Bad({**ok, "provider": [1]}, 422, "invalid_field", "provider"), id="list-of-non-names-provider"),
        pytest.param(Bad({**ok, "provider": []}, 422, "invalid_field", "provider"), id="empty-list-provider"),
        pytest.param(
            Bad({**ok, "provider": "midjourney"}, 422, "unknown_provider", "provider", KNOWN_PROVIDERS),
            id="unknown-provider",
        ),
        pytest.param(
            Bad({**ok, "provider": "SIMULATOR"}, 422, "unknown_provider", "provider", KNOWN_PROVIDERS),
            id="provider-wrong-case",
        ),
        # Prompt.
        pytest.param(Bad({"provider": "simulator"}, 422, "missing_field", "prompt"), id="missing-prompt"),
        pytest.param(Bad({**ok, "prompt": None}, 422, "missing_field", "prompt"), id="null-prompt"),
        pytest.param(Bad({**ok, "prompt": ""}, 422, "invalid_field", "prompt"), id="empty-prompt"),
        pytest.param(Bad({**ok, "prompt": " \n\t "}, 422, "invalid_field", "prompt"), id="whitespace-prompt"),
        pytest.param(Bad({**ok, "prompt": 42}, 422, "invalid_field", "prompt"), id="number-prompt"),
        pytest.param(Bad({**ok, "prompt": ["a", "b"]}, 422, "invalid_field", "prompt"), id="list-prompt"),
        # Wrong types (checked before any provider is asked).
        pytest.param(Bad({**ok, "seed": "42"}, 422, "invalid_field", "seed"), id="seed-string"),
        pytest.param(Bad({**ok, "seed": True}, 422, "invalid_field", "seed"), id="seed-true"),
        pytest.param(Bad({**ok, "seed": 4.2}, 422, "invalid_field", "seed"), id="seed-float"),
        pytest.param(Bad({**ok, "num_images": 1.5}, 422, "invalid_field", "num_images"), id="num-images-float"),
        pytest.param(Bad({**ok, "num_images": "1"}, 422, "invalid_field", "num_images"), id="num-images-string"),
        pytest.param(
            Bad(
                b'{"provider": "simulator", "prompt": "x", "num_images": 123456789012345678901234567890}',
                422,
                "invalid_field",
                "num_images",
            ),
            id="num-images-huge",
        ),
        pytest.param(Bad({**ok, "metadata": [1, 2]}, 422, "invalid_field", "metadata"), id="metadata-list"),
        pytest.param(Bad({**ok, "metadata": "order 1"}, 422, "invalid_field", "metadata"), id="metadata-string"),
        pytest.param(
            Bad({**ok, "metadata": {"pad": "x" * 20_000}}, 422, "invalid_field", "metadata"), id="metadata-too-big"
        ),
        pytest.param(
            Bad({**ok, "provider_options": "fast"}, 422, "invalid_field", "provider_options"), id="options-string"
        ),
        pytest.param(Bad({**ok, "provider_options": [1]}, 422, "invalid_field", "provider_options"), id="options-list"),
        pytest.param(Bad({**ok, "submit": "yes"}, 422, "invalid_field", "submit"), id="submit-string"),
        pytest.param(Bad({**ok, "submit": 1}, 422, "invalid_field", "submit"), id="submit-number"),
        pytest.param(Bad({**ok, "magic_prompt": "false"}, 422, "invalid_field", "magic_prompt"), id="magic-string"),
        pytest.param(Bad({**ok, "aspect_ratio": 1.78}, 422, "invalid_field", "aspect_ratio"), id="aspect-number"),
        pytest.param(
            Bad({**ok, "rendering_speed": ["TURBO"]}, 422, "invalid_field", "rendering_speed"), id="speed-list"
        ),
        pytest.param(
            Bad({**ok, "reference_image_url": "ftp://example.com/a.png"}, 422, "invalid_field", "reference_image_url"),
            id="reference-not-http",
        ),
        pytest.param(
            Bad({**ok, "reference_image_url": 7}, 422, "invalid_field", "reference_image_url"), id="reference-number"
        ),
        # Unknown top-level field.
        pytest.param(Bad({**ok, "colour": "red"}, 422, "unknown_field", "colour"), id="unknown-field"),
        pytest.param(Bad({**ok, "input": {"prompt": "x"}}, 422, "unknown_field", "input"), id="wire-field"),
        # Idempotency-Key.
        pytest.param(Bad(ok, 400, "invalid_idempotency_key", headers={"Idempotency-Key": ""}), id="idem-key-empty"),
        pytest.param(
            Bad(ok, 400, "invalid_idempotency_key", headers={"Idempotency-Key": "k" * 256}), id="idem-key-256-chars"
        ),
        # Too deep to store (orjson stops at 255 levels, though JSON parsing allows 1024), or too big.
        pytest.param(Bad({**ok, "metadata": nested(300)}, 422, "invalid_field", "metadata"), id="metadata-nested-300"),
        pytest.param(
            Bad({**ok, "provider_options": nested(300)}, 422, "invalid_field", "provider_options"),
            id="options-nested-300",
        ),
        pytest.param(
            Bad({**ok, "provider_options": {"pad": "x" * 20_000}}, 422, "invalid_field", "provider_options"),
            id="options-too-big",
        ),
    ]
    # What aivideoapi (and the simulator, which speaks its wire) cannot honour, or honours otherwise.
    unsupported = {
        "seed": 42,
        "negative_prompt": "blurry",
        "style_type": "DESIGN",
        "magic_prompt": False,
        "reference_image_url": "https://example.com/a.png",
    }
    bad_values = [
        ("aspect_ratio", "2:1", ASPECT_RATIOS),
        ("rendering_speed", "FAST", RENDERING_SPEEDS),
        ("rendering_speed", "turbo", RENDERING_SPEEDS),
        ("output_format", "webp", OUTPUT_FORMATS),
        ("num_images", 2, [1]),
        ("num_images", 0, [1]),
    ]
    for provider in PROVIDERS:
        base = {"provider": provider, "prompt": "a poster"}
        for field, value in unsupported.items():
            cases.append(
                pytest.param(
                    Bad({**base, field: value}, 422, "unsupported_field", field), id=f"{provider}-unsupported-{field}"
                )
            )
        for field, value, accepted in bad_values:
            cases.append(
                pytest.param(
                    Bad({**base, field: value}, 422, "unsupported_value", field, accepted),
                    id=f"{provider}-{field}-{value}",
                )
            )
        cases.append(
            pytest.param(
                Bad({**base, "prompt": "p" * 5001}, 422, "unsupported_value", "prompt"), id=f"{provider}-prompt-5001"
            )
        )
    return cases


@shared_loop
@pytest.mark.parametrize("bad", _bodies())
async def test_submission_refusals(blank: Blank, bad: Bad) -> None:
    headers = {"Content-Type": "application/json", **bad.headers}
    response = await blank.svc.client.post("/v1/jobs", content=bad.content(), headers=headers)
    error = assert_error(response, bad.status, bad.code, bad.field)
    if bad.status == 422 and bad.field is not None:
        assert bad.field in error["message"], error  # the message names the field, not only `field`
    if bad.accepted is not None:
        assert error["accepted"] == bad.accepted, error
        for value in bad.accepted:  # and says what the provider accepts, in words too
            assert str(value) in error["message"], error
    if bad.code == "unknown_field":
        assert "prompt" in error["accepted"], error
        assert bad.field not in error["accepted"], error
    if bad.field == "prompt" and bad.code == "unsupported_value":
        assert "5000" in error["message"], error
    await blank.assert_untouched()


@shared_loop
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_submission_over_one_mib_is_refused_413(blank: Blank, chunked: bool) -> None:
    body = b'{"provider": "simulator", "prompt": "' + b"p" * MiB + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    content: Any = chunks() if chunked else body
    response = await blank.svc.client.post("/v1/jobs", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large", None)
    await blank.assert_untouched()


async def test_unconfigured_provider_is_refused_naming_the_variable(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:  # no JOBHOOK_AIVIDEOAPI_API_KEY
        for submit in (True, False):
            body = {"provider": "aivideoapi", "prompt": "a poster", "submit": submit}
            response = await svc.client.post("/v1/jobs", json=body)
            error = assert_error(response, 422, "provider_not_configured", "provider")
            assert "JOBHOOK_AIVIDEOAPI_API_KEY" in error["message"], error
        assert (await svc.client.get("/v1/jobs")).json()["jobs"] == []
        # The simulator needs no key: the service itself is fine.
        await svc.submit(provider="simulator", prompt="a poster", submit=False)


async def test_limits_themselves_are_accepted_and_a_reused_key_is_refused(jobhook: ServiceFactory) -> None:
    async with jobhook() as svc:
        prompt = await svc.submit(provider="simulator", prompt="p" * 5000, submit=False)
        assert len(prompt["request"]["prompt"]) == 5000
        metadata = {"pad": "m" * 16_000}
        assert (await svc.submit(provider="simulator", prompt="x", metadata=metadata, submit=False))["metadata"] == (
            metadata
        )
        key = {"Idempotency-Key": "k" * 255}
        first = await svc.submit(headers=key, provider="simulator", prompt="keyed", submit=False)
        again = await svc.client.post(
            "/v1/jobs", json={"provider": "simulator", "prompt": "keyed", "submit": False}, headers=key
        )
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = await svc.client.post(
            "/v1/jobs", json={"provider": "simulator", "prompt": "other", "submit": False}, headers=key
        )
        error = assert_error(other, 422, "idempotency_key_reused")
        assert error["job_id"] == first["id"]
        assert len((await svc.client.get("/v1/jobs")).json()["jobs"]) == 3


# --- GET /v1/jobs/{id}, its events, refresh, PATCH ------------------------------------------------

UNKNOWN_IDS = [
    pytest.param(ids.new_job_id(), id="well-formed"),
    pytest.param("job_123", id="short"),
    pytest.param("nope", id="word"),
    pytest.param("job_" + "é" * 26, id="non-ascii"),
    pytest.param("☃\u202e🙂", id="odd-unicode"),
    pytest.param("%00", id="nul"),
    pytest.param("x" * 3000, id="long"),
]


@shared_loop
@pytest.mark.parametrize("job_id", UNKNOWN_IDS)
async def test_unknown_job_is_404_on_every_job_route(blank: Blank, job_id: str) -> None:
    client = blank.svc.client
    for response in (
        await client.get(f"/v1/jobs/{job_id}"),
        await client.get(f"/v1/jobs/{job_id}", params={"wait": "0.5"}),
        await client.get(f"/v1/jobs/{job_id}/events"),
        await client.post(f"/v1/jobs/{job_id}/refresh"),
        await client.patch(f"/v1/jobs/{job_id}", json={"provider_task_id": "task-1"}),
        await client.patch(f"/v1/jobs/{job_id}", content=b"not json"),
    ):
        assert_error(response, 404, "job_not_found")
    await blank.assert_untouched()


@shared_loop
@pytest.mark.parametrize("wait", ["abc", "-1", "61", "60.001", "nan", "inf", "-inf", "1e400", "0x10", "5s"])
async def test_bad_wait_is_400(blank: Blank, wait: str) -> None:
    response = await blank.svc.client.get(f"/v1/jobs/{ids.new_job_id()}", params={"wait": wait})
    error = assert_error(response, 400, "invalid_wait")
    assert "60" in error["message"]


@shared_loop
@pytest.mark.parametrize("wait", ["0", "0.5", ""])
async def test_good_wait_holds_a_pending_job_that_long(tracked: Tracked, wait: str) -> None:
    started = time.monotonic()
    response = await tracked.svc.client.get(f"/v1/jobs/{tracked.job_id}", params={"wait": wait})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["id"] == tracked.job_id
    held = float(wait or 0)
    assert held - 0.05 <= elapsed < held + 10  # it held the answer, and did not hang


@shared_loop
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        pytest.param(b"{", 400, "invalid_json", None, id="not-json"),
        pytest.param(b"", 400, "invalid_json", None, id="empty"),
        pytest.param(b"\xff", 400, "invalid_json", None, id="not-utf8"),
        pytest.param(b"[]", 422, "invalid_body", "body", id="array"),
        pytest.param(b'"task-1"', 422, "invalid_body", "body", id="string"),
        pytest.param(b"null", 422, "invalid_body", "body", id="null"),
        pytest.param(b'{"provider_task_id": "t", "status": "completed"}', 422, "unknown_field", "status", id="unknown"),
        pytest.param(b"{}", 422, "missing_field", "provider_task_id", id="missing"),
        pytest.param(b'{"provider_task_id": null}', 422, "missing_field", "provider_task_id", id="null-task-id"),
        pytest.param(b'{"provider_task_id": ""}', 422, "invalid_field", "provider_task_id", id="empty-task-id"),
        pytest.param(b'{"provider_task_id": "  "}', 422, "invalid_field", "provider_task_id", id="blank-task-id"),
        pytest.param(b'{"provider_task_id": 42}', 422, "invalid_field", "provider_task_id", id="number-task-id"),
        pytest.param(b'{"provider_task_id": ["t"]}', 422, "invalid_field", "provider_task_id", id="list-task-id"),
        pytest.param(
            json.dumps({"provider_task_id": "t" * 201}).encode(),
            422,
            "invalid_field",
            "provider_task_id",
            id="long-task-id",
        ),
        pytest.param(b'{"provider_task_id": "' + b"t" * MiB + b'"}', 413, "payload_too_large", None, id="over-1-mib"),
    ],
)
async def test_patch_refusals(tracked: Tracked, body: bytes, status: int, code: str, field: str | None) -> None:
    response = await tracked.svc.client.patch(
        f"/v1/jobs/{tracked.job_id}", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, status, code, field)
    await tracked.assert_unchanged()


async def test_conflicts_answer_409(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_CALLBACK_GRACE="60") as svc:
        own = await svc.submit(provider="simulator", prompt="the backend submits this", submit=False)
        other = await svc.submit(provider="simulator", prompt="and this", submit=False)
        sent = await svc.submit(provider="simulator", prompt="jobhook submits this")
        # Nothing to poll yet.
        error = assert_error(await svc.client.post(f"/v1/jobs/{own['id']}/refresh"), 409, "not_pollable")
        assert "task id" in error["message"]
        # A job jobhook submitted itself: its task id is not the backend's to set.
        response = await svc.client.patch(f"/v1/jobs/{sent['id']}", json={"provider_task_id": "task-x"})
        assert_error(response, 409, "not_backend_submitted")
        # Binding is idempotent for the same id, and refuses another.
        for _ in range(2):
            response = await svc.client.patch(f"/v1/jobs/{own['id']}", json={"provider_task_id": " task-1 "})
            assert response.status_code == 200, response.text
            assert (response.json()["provider_task_id"], response.json()["status"]) == ("task-1", "submitted")
        response = await svc.client.patch(f"/v1/jobs/{own['id']}", json={"provider_task_id": "task-2"})
        assert_error(response, 409, "task_id_conflict")
        # Another job cannot take a task id that is already bound.
        response = await svc.client.patch(f"/v1/jobs/{other['id']}", json={"provider_task_id": "task-1"})
        assert_error(response, 409, "task_id_conflict")
        assert (await svc.job(other["id"]))["provider_task_id"] is None
        # With a task id, refresh asks the provider (the simulator does not know task-1: nothing changes).
        response = await svc.client.post(f"/v1/jobs/{own['id']}/refresh")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "submitted"


# --- GET /v1/jobs ---------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@shared_loop
@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"status": "done"}, "invalid_status", id="status-unknown"),
        pytest.param({"status": "COMPLETED"}, "invalid_status", id="status-case"),
        pytest.param({"status": "completed,failed"}, "invalid_status", id="status-list"),
        pytest.param({"provider": "midjourney"}, "invalid_provider", id="provider-unknown"),
        pytest.param({"provider": "☃"}, "invalid_provider", id="provider-unicode"),
        pytest.param({"limit": "0"}, "invalid_limit", id="limit-0"),
        pytest.param({"limit": "201"}, "invalid_limit", id="limit-201"),
        pytest.param({"limit": "ten"}, "invalid_limit", id="limit-ten"),
        pytest.param({"limit": "-1"}, "invalid_limit", id="limit-negative"),
        pytest.param({"limit": "1.5"}, "invalid_limit", id="limit-float"),
        pytest.param({"limit": " 5"}, "invalid_limit", id="limit-space"),
        pytest.param(
            {"limit": "²"},
            "invalid_limit",
            id="limit-superscript-digit",
        ),
        pytest.param(
            {"limit": "9" * 5000},
            "invalid_limit",
            id="limit-5000-digits",
        ),
        pytest.param({"cursor": "garbage!!"}, "invalid_cursor", id="cursor-garbage"),
        pytest.param({"cursor": "☃"}, "invalid_cursor", id="cursor-unicode"),
        pytest.param({"cursor": "=" * 1000}, "invalid_cursor", id="cursor-padding"),
        pytest.param({"cursor": _b64("hello world")}, "invalid_cursor", id="cursor-other-base64"),
        pytest.param({"cursor": _b64("v1:not-a-job")}, "invalid_cursor", id="cursor-not-a-job-id"),
        pytest.param({"cursor": _b64(f"v2:{ids.new_job_id()}")}, "invalid_cursor", id="cursor-other-version"),
        pytest.param({"cursor": base64.b64encode(b"\xff\xfe\xfd").decode()}, "invalid_cursor", id="cursor-not-utf8"),
    ],
)
async def test_list_refusals(blank: Blank, params: dict[str, str], code: str) -> None:
    response = await blank.svc.client.get("/v1/jobs", params=params)
    error = assert_error(response, 400, code)
    if code != "invalid_cursor":
        assert next(iter(params)) in error["message"]


@shared_loop
@pytest.mark.parametrize("params", [{"limit": "1"}, {"limit": "200"}, {"status": "", "provider": "", "cursor": ""}])
async def test_list_accepts_its_bounds(blank: Blank, params: dict[str, str]) -> None:
    response = await blank.svc.client.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == {"jobs": [], "next_cursor": None}


async def walk(client: httpx.AsyncClient, limit: int = 5, **params: str) -> list[list[str]]:
    """Every page of `GET /v1/jobs` from the start, as lists of job ids."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([job["id"] for job in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages[-1]) == limit, "a page before the last one is short"
        assert len(pages) <= 100, "the walk does not end"


def flat(pages: list[list[str]]) -> list[str]:
    return [job_id for page in pages for job_id in page]


async def test_pagination_walks_every_job_once_newest_first(jobhook: ServiceFactory) -> None:
    env = {"JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test", "JOBHOOK_AIVIDEOAPI_BASE_URL": "http://127.0.0.1:9"}
    async with jobhook(JOBHOOK_CALLBACK_GRACE="60", **env) as svc:
        created: list[dict[str, Any]] = []
        for n in range(23):
            provider = "aivideoapi" if n % 3 == 0 else "simulator"
            created.append(await svc.submit(provider=provider, prompt=f"job {n}", submit=False))
        bound = [job["id"] for n, job in enumerate(created) if n % 4 == 0]
        for job_id in bound:
            response = await svc.client.patch(f"/v1/jobs/{job_id}", json={"provider_task_id": f"task-{job_id}"})
            assert response.status_code == 200, response.text
        newest_first = [job["id"] for job in reversed(created)]
        provider_of = {job["id"]: job["provider"] for job in created}

        pages = await walk(svc.client, limit=5)
        assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
        assert flat(pages) == newest_first
        assert flat(await walk(svc.client, limit=1)) == newest_first
        assert await walk(svc.client, limit=200) == [newest_first]
        assert await walk(svc.client, limit=23) == [newest_first]  # a full last page: no empty page after it

        for provider in PROVIDERS:
            expected = [job_id for job_id in newest_first if provider_of[job_id] == provider]
            pages_ = await walk(svc.client, limit=5, provider=provider)
            assert flat(pages_) == expected
            assert all(pages_), "an empty page"
        submitted = [job_id for job_id in newest_first if job_id in bound]
        assert flat(await walk(svc.client, limit=5, status="submitted")) == submitted
        assert flat(await walk(svc.client, limit=5, status="queued")) == [
            job_id for job_id in newest_first if job_id not in bound
        ]
        assert flat(await walk(svc.client, limit=2, status="submitted", provider="aivideoapi")) == [
            job_id for job_id in submitted if provider_of[job_id] == "aivideoapi"
        ]
        assert await walk(svc.client, limit=5, status="completed") == [[]]

        # Jobs created while a walk is under way break nothing: no job skipped, none seen twice.
        seen: list[str] = []
        cursor = None
        extra: list[str] = []
        while True:
            query = {"limit": "5", **({"cursor": cursor} if cursor else {})}
            body = (await svc.client.get("/v1/jobs", params=query)).json()
            seen.extend(job["id"] for job in body["jobs"])
            extra.append((await svc.submit(provider="simulator", prompt="meanwhile", submit=False))["id"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert [job_id for job_id in seen if job_id not in extra] == newest_first
        assert flat(await walk(svc.client, limit=7)) == [*reversed(extra), *newest_first]


# --- routes, methods, auth, health ----------------------------------------------------------------


@shared_loop
@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/v1/jobs/x/y/z", "/callbacks", "/☃", "/%00"])
async def test_unknown_route_is_404_json(blank: Blank, path: str) -> None:
    assert_error(await blank.svc.client.get(path), 404, "not_found")


@shared_loop
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/jobs"),
        ("PUT", "/v1/jobs"),
        ("PATCH", "/v1/jobs"),
        ("DELETE", f"/v1/jobs/{ids.new_job_id()}"),
        ("POST", f"/v1/jobs/{ids.new_job_id()}"),
        ("GET", f"/v1/jobs/{ids.new_job_id()}/refresh"),
        ("POST", f"/v1/jobs/{ids.new_job_id()}/events"),
        ("GET", "/callbacks/token"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
    ],
)
async def test_wrong_method_is_405_json(blank: Blank, method: str, path: str) -> None:
    response = await blank.svc.client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers.get("allow")


@shared_loop
async def test_405_allow_header_lists_every_method_of_the_path(blank: Blank) -> None:
    response = await blank.svc.client.delete("/v1/jobs")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
    response = await blank.svc.client.put(f"/v1/jobs/{ids.new_job_id()}")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "PATCH"}


@shared_loop
async def test_health_and_readiness(blank: Blank) -> None:
    response = await blank.svc.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = await blank.svc.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "poller": "ok", "outbox": "ok"}}


@shared_loop
async def test_without_tokens_the_api_is_open(blank: Blank) -> None:
    response = await blank.svc.client.get("/v1/jobs", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 200, response.text
    assert (await blank.svc.client.get("/v1/jobs")).status_code == 200


def genuine_delivery(task_id: str, status: str = "processing") -> dict[str, Any]:
    """What aivideoapi would send for `task_id` (a task in `status`), as httpx.post keywords."""
    headers = {
        "Content-Type": "application/json",
        "X-Task-Id": task_id,
        "X-Event": f"task.{status}",
        "X-Timestamp": str(int(time.time())),
    }
    return {"content": json.dumps({"id": task_id, "status": status}).encode(), "headers": headers}


async def test_bearer_tokens(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS="tok-a,tok-b", JOBHOOK_CALLBACK_GRACE="60") as svc:
        client = svc.client
        job = (
            await client.post(
                "/v1/jobs",
                json={"provider": "simulator", "prompt": "authorised", "submit": False},
                headers={"Authorization": "Bearer tok-b"},
            )
        ).json()
        job_id = job["id"]
        refused: dict[str, dict[str, str | bytes]] = {
            "no header": {},
            "wrong scheme": {"Authorization": "Basic dG9rLWE6"},
            "token alone": {"Authorization": "tok-a"},
            "wrong token": {"Authorization": "Bearer tok-c"},
            "token prefix": {"Authorization": "Bearer tok-"},
            "token extended": {"Authorization": "Bearer tok-ab"},
            "both tokens": {"Authorization": "Bearer tok-a,tok-b"},
            "empty bearer": {"Authorization": "Bearer"},
            "non-ascii": {"Authorization": b"Bearer tok-\xe9"},
        }
        routes = [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", f"/v1/jobs/{job_id}"),
            ("PATCH", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/events"),
            ("POST", f"/v1/jobs/{job_id}/refresh"),
            ("GET", f"/v1/jobs/{ids.new_job_id()}"),  # 401, not 404: nothing is revealed
            ("GET", "/v1/nope"),
        ]
        for name, headers in refused.items():
            for method, path in routes:
                response = await client.request(method, path, headers=headers, json={"provider_task_id": "t"})
                assert_error(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer"), (name, method, path)
        for token in ("tok-a", "tok-b"):
            for scheme in ("Bearer", "bearer"):
                response = await client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"{scheme} {token}"})
                assert response.status_code == 200, response.text
        assert (await svc.runtime.store.get_job(job_id)).provider_task_id is None  # type: ignore[union-attr]
        # Public routes take no token.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert_error(await client.post("/callbacks/not-a-token", json={}), 404, "not_found")
        callback = job["callback_url"].removeprefix(svc.url)
        response = await client.post(callback, **genuine_delivery("task-public"))
        assert (response.status_code, response.json()) == (200, {"status": "accepted"})


# --- storage failure ------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # locks the SQLite file from another connection
async def test_a_locked_database_answers_503_then_recovers(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_CALLBACK_GRACE="60") as svc:
        job = await svc.submit(provider="simulator", prompt="before the lock", submit=False)
        callback = job["callback_url"].removeprefix(svc.url)
        delivery = genuine_delivery("task-held")
        await asyncio.sleep(0.3)  # let the poller's tick (it writes) finish before the lock is taken
        blocker = sqlite3.connect(svc.settings.database, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            try:
                # One writer at a time inside jobhook: the two writes wait out the busy timeout in turn.
                post, delivered, listing = await asyncio.gather(
                    svc.client.post("/v1/jobs", json={"provider": "simulator", "prompt": "during", "submit": False}),
                    svc.client.post(callback, **delivery),
                    svc.client.get("/v1/jobs"),
                )
            finally:
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
        finally:
            blocker.close()
        for response in (post, delivered):
            assert_error(response, 503, "storage_unavailable")
            assert response.headers["retry-after"]
        assert listing.status_code == 200, listing.text  # reads go on (WAL)
        assert [j["id"] for j in listing.json()["jobs"]] == [job["id"]]
        # Released: everything works again, and the refused writes left nothing behind.
        assert [j["id"] for j in (await svc.client.get("/v1/jobs")).json()["jobs"]] == [job["id"]]
        response = await svc.client.post(callback, **delivery)  # the provider's retry
        assert (response.status_code, response.json()) == (200, {"status": "accepted"})
        after = await svc.job(job["id"])
        assert (after["provider_task_id"], after["status"]) == ("task-held", "processing")
        await svc.submit(provider="simulator", prompt="after the lock", submit=False)
        ready = await svc.client.get("/readyz")
        assert ready.status_code == 200, ready.text


# --- sweep ----------------------------------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ODD_SEGMENTS = [
    "☃",
    "\u202e\u200d\ufeff",
    "🙂" * 50,
    "%00",
    "%ED%A0%80",  # UTF-8 of a lone surrogate
    "%ff%fe",
    "..%2F..%2Fetc",
    "job_" + "é" * 26,
    "job_" + "Z" * 26,
    "x" * 4000,
]
HOSTILE_QUERIES = [
    "q=" + "x" * 60_000,
    "&".join(f"p{n}={n}" for n in range(3000)),
    "wait=" + "9" * 5000,
    "wait=1e-400",
    "wait=0&wait=61",
    "limit=5&limit=abc",
    "status=%00&provider=%ff",
    "cursor=" + "%E2%98%83" * 500,
    "cursor=" + _b64("v1:job_" + "Z" * 26 + "\n"),
]
HOSTILE_BODIES: list[tuple[bytes, str]] = [
    (b"\xff\xfe{", "application/json"),
    (b'{"provider": "simulator", "prompt": "x", "submit": false}', "text/plain"),
    (b"provider=simulator&prompt=x", "application/x-www-form-urlencoded"),
    (b'--b\r\nContent-Disposition: form-data; name="p"\r\n\r\nx\r\n--b--\r\n', "multipart/form-data; boundary=b"),
    ('{"provider_task_id": "t"}'.encode("utf-16"), "application/json; charset=utf-16"),
    (b'{"provider_task_id": "\\u0000\\u202e\xf0\x9f\x99\x82"}', "application/json"),
    (json.dumps({"id": "t", "status": "completed", "output": {"urls": [None, 1, {"url": 2}]}}).encode(), "image/png"),
    (b"[" * 100_000, "application/json"),
    (json.dumps({"provider": "simulator", "prompt": "x", "metadata": nested(300)}).encode(), "application/json"),
]


async def test_no_route_answers_5xx_to_hostile_input(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_CALLBACK_GRACE="60") as svc:
        bound = await svc.submit(provider="simulator", prompt="bound", submit=False)
        response = await svc.client.patch(f"/v1/jobs/{bound['id']}", json={"provider_task_id": "task-sweep"})
        assert response.status_code == 200, response.text
        unbound = await svc.submit(provider="simulator", prompt="unbound", submit=False)
        token = unbound["callback_url"].rsplit("/", 1)[1]
        job_ids = [bound["id"], unbound["id"], ids.new_job_id(), *ODD_SEGMENTS]
        paths = [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1",
            "/v1/jobs",
            "/v1/jobs/",
            *(f"/v1/jobs/{job_id}{tail}" for job_id in job_ids for tail in ("", "/events", "/refresh", "/images/0")),
            f"/v1/jobs/{bound['id']}/images/{ODD_SEGMENTS[0]}",
            f"/callbacks/{token}",
            *(f"/callbacks/{segment}" for segment in ODD_SEGMENTS),
            "/callbacks/" + "A" * 5000,
            "/simulator/v1/images/generations",
            *(f"/simulator/v1/tasks/{segment}" for segment in ODD_SEGMENTS[:4]),
            "/simulator/files/☃.png",
        ]
        answered = 0

        async def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
            nonlocal answered
            response = await svc.client.request(method, url, **kwargs)
            context = f"{method} {url[:120]} {str(kwargs)[:120]} → {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, context
            if response.status_code >= 400 and method != "HEAD":
                assert_refusal_shape(response, context)
            answered += 1
            return response

        for n, path in enumerate(paths):
            for m, method in enumerate(METHODS):
                body, content_type = HOSTILE_BODIES[(n + m) % len(HOSTILE_BODIES)]
                kwargs: dict[str, Any] = {}
                if method not in ("GET", "HEAD", "OPTIONS"):
                    kwargs = {"content": body, "headers": {"Content-Type": content_type}}
                await send(method, path, **kwargs)
        for query in HOSTILE_QUERIES:
            for path in ("/v1/jobs", f"/v1/jobs/{unbound['id']}", f"/v1/jobs/{bound['id']}/events", "/readyz"):
                await send("GET", f"{path}?{query}")
        for body, content_type in HOSTILE_BODIES:
            for method, path in (
                ("POST", "/v1/jobs"),
                ("PATCH", f"/v1/jobs/{unbound['id']}"),
                ("POST", f"/callbacks/{token}"),
            ):
                await send(method, path, content=body, headers={"Content-Type": content_type})
        # Odd headers on a genuine callback and a submission.
        for headers in (
            {"X-Task-Id": "t" * 10_000, "X-Event": "task.processing", "X-Timestamp": "9" * 5000},
            {"X-Task-Id": "t", "X-Event": "task.processing, task.completed", "X-Timestamp": "-0"},
            {"X-Task-Id": "\xe9\xff", "X-Event": "task.\xe9", "X-Timestamp": "1e10"},
        ):
            latin1 = {name: value.encode("latin-1") for name, value in headers.items()}
            await send("POST", f"/callbacks/{token}", json={"id": "t", "status": "processing"}, headers=latin1)
        for key in ("\xe9" * 10, "k" * 8000, "x \t y"):
            await send(
                "POST",
                "/v1/jobs",
                json={"provider": "simulator", "prompt": "k", "submit": False},
                headers={"Idempotency-Key": key.encode("latin-1")},
            )
        # Genuine deliveries whose bodies are odd where the provider's task object is free-form.
        victim = await svc.submit(provider="simulator", prompt="odd deliveries", submit=False)
        victim_path = victim["callback_url"].removeprefix(svc.url)
        answers = []
        for status, extra in (
            ("processing", {"extra": nested(300), "output": "☃"}),
            ("failed", {"error": {"code": nested(300), "message": ["not", "a", "string"]}}),
            ("completed", {"output": {"urls": [nested(300), None, 7]}}),
            ("completed", {"output": {"urls": ["https://e.example/" + "x" * 200_000]}}),
        ):
            delivery = genuine_delivery("task-odd", status)
            body = {**json.loads(delivery["content"]), **extra}
            response = await send("POST", victim_path, content=json.dumps(body).encode(), headers=delivery["headers"])
            answers.append(response.status_code)
        assert answers == [200, 200, 400, 200]  # bound, failed, no usable URL, a conflict recorded
        for path in (f"/v1/jobs/{victim['id']}", f"/v1/jobs/{victim['id']}/events", "/v1/jobs?limit=200"):
            await send("GET", path)
        assert answered > 500
        ready = await svc.client.get("/readyz")
        assert ready.status_code == 200, ready.text
