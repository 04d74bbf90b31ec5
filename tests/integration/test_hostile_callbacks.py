"""Hostile callbacks and requests over real HTTP (raw sockets where httpx will not lie for us).

Each refusal is checked for its exact status and code, for leaving nothing applied on the job, and
for leaving the service healthy. Where the HTTP server itself refuses (uvicorn: a framing error) there
is no JSON code: the answer is a 4xx and the connection is closed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import itsdangerous
import pytest

from service.domain.callbacks import MAX_BODY_BYTES, MEDIA_SALT, CallbackTokens
from tests.conftest import Service, ServiceFactory, eventually
from tests.integration.hostile import (
    SIGNING_KEY,
    assert_healthy,
    assert_nothing_applied,
    callback_path,
    delivery_body,
    delivery_headers,
    metric,
    port,
    raw_delivery,
)
from tests.rawhttp import RawConnection, RawResponse, chunked, exchange, request_bytes

NOT_FOUND = {"error": {"code": "not_found", "message": "no such callback"}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextlib.asynccontextmanager
async def hostile_service(jobhook: ServiceFactory, **env: str) -> AsyncIterator[Service]:
    async with jobhook(
        JOBHOOK_SECRET=SIGNING_KEY, JOBHOOK_MIRROR_IMAGES="false", JOBHOOK_CALLBACK_GRACE="600", **env
    ) as svc:
        yield svc


async def tracked_job(svc: Service, prompt: str = "a target") -> dict[str, Any]:
    """A job the backend submits itself: queued, no task id yet, its callback URL in the answer."""
    return await svc.submit(provider="simulator", prompt=prompt, submit=False)


def refusals(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail"]["code"] for e in events if e["type"] == "callback" and e["outcome"] == "refused"]


# -- tokens -------------------------------------------------------------------------------------------


def _parts(token: str) -> list[str]:
    parts = token.split(".")
    assert len(parts) == 2, "an uncompressed payload and its signature"
    return parts


def one_bit_flips(token: str) -> list[str]:
    """Every token that differs from `token` in exactly one bit of its decoded payload or signature."""
    parts = _parts(token)
    out = []
    for index, part in enumerate(parts):
        raw = itsdangerous.encoding.base64_decode(part)
        for byte in range(len(raw)):
            for bit in range(8):
                flipped = bytearray(raw)
                flipped[byte] ^= 1 << bit
                candidate = parts.copy()
                candidate[index] = itsdangerous.encoding.base64_encode(bytes(flipped)).decode()
                out.append(".".join(candidate))
    return out


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def non_canonical_spellings(token: str) -> list[str]:
    """Other spellings of the same bytes: unpadded base64's last character carries unused bits."""
    parts = _parts(token)
    out = []
    for index, part in enumerate(parts):
        unused = {2: 4, 3: 2}.get(len(part) % 4, 0)
        if not unused:
            continue
        value = ALPHABET.index(part[-1])
        for low in range(1, 1 << unused):
            candidate = parts.copy()
            candidate[index] = part[:-1] + ALPHABET[value ^ low]
            # The same bytes: a verifier that does not insist on the canonical spelling would accept it.
            padded = candidate[index] + "=" * (-len(candidate[index]) % 4)
            assert base64.urlsafe_b64decode(padded) == itsdangerous.encoding.base64_decode(part)
            out.append(".".join(candidate))
    return out


def other_spellings(token: str) -> list[str]:
    payload, signature = _parts(token)
    spellings = [
        token + "=",
        payload + "==." + signature,
        payload + "." + signature + "==",
        payload.replace("-", "+").replace("_", "/") + "." + signature,
        token.upper(),
        token + ".",
        "." + token,
        token.replace(".", ".."),
        payload + "." + signature[:-1],
        payload + "." + signature + "A",
        payload,
        signature,
        "%20" + token,
        token + "%20",
        token + "%00",
    ]
    return [spelling for spelling in dict.fromkeys(spellings) if spelling != token]


async def test_forged_and_tampered_tokens_are_404_and_reveal_nothing(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook) as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        token = path.rsplit("/", 1)[1]
        signer = CallbackTokens([SIGNING_KEY])
        assert signer.verify(token) is not None, "the test signs as jobhook does"
        flips, spellings = one_bit_flips(token), non_canonical_spellings(token)
        assert len(flips) > 500 and spellings
        forged = [
            *flips,
            *spellings,
            *other_spellings(token),
            CallbackTokens(["another key"]).sign(job["id"], "simulator"),
            CallbackTokens([SIGNING_KEY], salt=MEDIA_SALT).sign(job["id"], "simulator"),  # a media link's token
            CallbackTokens([SIGNING_KEY], salt=MEDIA_SALT).sign(job["id"], "0"),
        ]
        assert token not in forged
        refused = collections.Counter()
        async with await RawConnection.open(port(svc)) as connection:
            for candidate in forged:
                assert await connection.send(raw_delivery(f"/callbacks/{candidate}", "task-forged"))
                response = await connection.response()
                assert response is not None
                key = (response.status, response.body)
                refused[key] += 1
                assert response.status == 404, (candidate, response)
                assert response.json() == NOT_FOUND, candidate
                assert job["id"] not in response.body.decode()
        events = await assert_nothing_applied(svc, job["id"])
        assert refusals(events) == [], "a forged URL names no job: nothing goes on the job's history"
        text = (await svc.client.get("/metrics")).text
        assert metric(
            text, "jobhook_callback_deliveries_total", provider="unknown", outcome="refused", reason="invalid_token"
        ) == len(forged)
        await assert_healthy(svc)
        # The same delivery on the genuine URL is accepted: the token alone made the difference.
        answer = await exchange(port(svc), raw_delivery(path, "task-forged"))
        assert answer is not None
        assert (answer.status, answer.json()) == (200, {"status": "accepted"})


async def test_tokens_of_another_job_or_provider(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook) as svc:
        owner, stranger = await tracked_job(svc, "owner"), await tracked_job(svc, "stranger")
        answer = await exchange(port(svc), raw_delivery(callback_path(owner), "task-owned", "processing"))
        assert answer is not None and answer.json() == {"status": "accepted"}
        # The owner's genuine task, delivered on the stranger's (genuine, unbound) URL: the task id is
        # the owner's, so it can neither bind the stranger nor change the owner.
        answer = await exchange(port(svc), raw_delivery(callback_path(stranger), "task-owned", "completed"))
        assert answer is not None
        assert (answer.status, answer.json()["error"]["code"]) == (409, "task_id_conflict")
        await assert_nothing_applied(svc, stranger["id"])
        assert (await svc.job(stranger["id"]))["provider_task_id"] is None
        owned = await svc.job(owner["id"])
        assert (owned["status"], owned["provider_task_id"]) == ("processing", "task-owned")
        # A genuinely signed token naming the job with another provider, or a provider that does not exist.
        signer = CallbackTokens([SIGNING_KEY])
        for provider in ("aivideoapi", "apiframe", "nobody", "SIMULATOR"):
            forged = signer.sign(stranger["id"], provider)
            answer = await exchange(port(svc), raw_delivery(f"/callbacks/{forged}", "task-other"))
            assert answer is not None
            assert (answer.status, answer.json()) == (404, NOT_FOUND), provider
        # A job that does not exist, signed correctly.
        answer = await exchange(
            port(svc), raw_delivery(f"/callbacks/{signer.sign('job_01ZZZZZZZZZZZZZZZZZZZZZZZZ', 'simulator')}", "t")
        )
        assert answer is not None and (answer.status, answer.json()) == (404, NOT_FOUND)
        await assert_nothing_applied(svc, stranger["id"])
        # Newest first: the missing job, then the unknown providers and the mismatched ones.
        codes = [e["code"] for e in await svc.runtime.store.refused_log()][:5]
        assert codes == ["unknown_job", "invalid_token", "invalid_token", "unknown_job", "unknown_job"]
        await assert_healthy(svc)


# -- headers ------------------------------------------------------------------------------------------


def _timestamp_cases(now: int, tolerance: int) -> list[str]:
    return [
        str(now - tolerance - 5),
        str(now + tolerance + 5),
        "0",
        "-1",
        "-0",
        "9" * 20,
        "9" * 4000,
        "1e10",
        f"{now}.0",
        f"{now}.",
        f"+{now}",
        f"{now}s",
        hex(now),
        f"{now * 1000}",
        "NaN",
        "inf",
        "١٧٨١٠٠٠٠٠٠".encode().decode("latin-1"),  # Arabic-Indic digits, as the bytes arrive
        f"{now}, {now}",
    ]


async def test_timestamps_that_are_stale_future_or_not_integers(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook, JOBHOOK_TIMESTAMP_TOLERANCE="60") as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        cases = _timestamp_cases(int(time.time()), 60)
        async with await RawConnection.open(port(svc)) as connection:
            for value in cases:
                headers = {**delivery_headers("task-ts"), "X-Timestamp": value}
                assert await connection.send(raw_delivery(path, "task-ts", headers=headers))
                response = await connection.response()
                assert response is not None
                assert response.status == 400, (value[:40], response)
                assert response.json()["error"]["code"] == "stale_timestamp", value[:40]
        events = await assert_nothing_applied(svc, job["id"])
        assert refusals(events) == ["stale_timestamp"] * len(cases)
        assert (await svc.job(job["id"]))["provider_task_id"] is None
        await assert_healthy(svc)


async def test_repeated_check_headers_are_refused_not_resolved_by_picking_one(jobhook: ServiceFactory) -> None:
    """Two X-Task-Id (or X-Timestamp, X-Event) fields are one comma-joined value (RFC 9110 §5.3):
    never silently the first or the last of them."""
    async with hostile_service(jobhook) as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        now = str(int(time.time()))
        genuine = list(delivery_headers("task-rep").items())
        cases = [
            ("X-Task-Id", "task-other", "task_id_mismatch"),
            ("X-Task-Id", "task-rep", "task_id_mismatch"),
            ("X-Timestamp", now, "stale_timestamp"),
            ("X-Timestamp", "0", "stale_timestamp"),
            ("X-Event", "task.failed", "event_mismatch"),
            ("X-Event", "task.completed", "event_mismatch"),
        ]
        for name, extra, code in cases:
            for headers in ([*genuine, (name, extra)], [(name, extra), *genuine]):
                answer = await exchange(port(svc), request_bytes("POST", path, headers, delivery_body("task-rep")))
                assert answer is not None
                assert (answer.status, answer.json()["error"]["code"]) == (400, code), (name, extra, headers[0])
        await assert_nothing_applied(svc, job["id"])
        await assert_healthy(svc)


# -- bodies -------------------------------------------------------------------------------------------


def padded_delivery(task_id: str, size: int) -> bytes:
    """A genuine completed delivery whose JSON is exactly `size` bytes."""
    bare = delivery_body(task_id, pad="")
    body = delivery_body(task_id, pad="x" * (size - len(bare)))
    assert len(body) == size
    return body


async def test_bodies_over_256_kib_however_framed(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook) as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        headers = delivery_headers("task-big")
        too_big = padded_delivery("task-big", MAX_BODY_BYTES + 1)
        huge = padded_delivery("task-big", 4 * MAX_BODY_BYTES)

        # Content-Length true, or declaring too much and never sending it: 413 before reading on.
        for body, declared in ((too_big, len(too_big)), (huge, len(huge)), (b"{}", 10 * MAX_BODY_BYTES)):
            answer = await exchange(port(svc), request_bytes("POST", path, headers, body, content_length=declared))
            assert answer is not None
            assert (answer.status, answer.json()["error"]["code"]) == (413, "payload_too_large")
        # Chunked: no length up front; counted while read.
        for body in (too_big, huge):
            raw = request_bytes(
                "POST", path, [*headers.items(), ("Transfer-Encoding", "chunked")], chunked(body), content_length=None
            )
            answer = await exchange(port(svc), raw)
            assert answer is not None
            assert (answer.status, answer.json()["error"]["code"]) == (413, "payload_too_large")
        # Content-Length lying small, or absent: the body is what the length says (a cut or no JSON at
        # all, refused on the job's history) and the rest is an invalid request: 400, connection closed.
        for declared in (100, None):
            async with await RawConnection.open(port(svc)) as connection:
                await connection.send(request_bytes("POST", path, headers, huge, content_length=declared))
                answer = await connection.response()
                assert answer is not None and answer.status == 400, answer
                assert await connection.closed_by_server()
        events = await eventually(
            lambda: _refusal_count(svc, job["id"], 7), timeout=10
        )  # the framing refusals are recorded once their handler has run
        assert sorted(refusals(events)) == sorted(["payload_too_large"] * 5 + ["invalid_json"] * 2)
        await assert_nothing_applied(svc, job["id"])
        # Smuggling attempts: both framings at once, or framings that cannot be read.
        for extra in (
            [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
            [("Content-Length", "5"), ("Content-Length", "500")],
            [("Content-Length", "-1")],
            [("Content-Length", "1e3")],
            [("Transfer-Encoding", "gzip, chunked")],
            [("Transfer-Encoding", "identity")],
        ):
            raw = request_bytes("POST", path, [*headers.items(), *extra], chunked(b"{}"), content_length=None)
            answer = await exchange(port(svc), raw)
            assert answer is None or 400 <= answer.status < 500, (extra, answer)
        await assert_nothing_applied(svc, job["id"])
        await assert_healthy(svc)
        # At the limit exactly, chunked: accepted (the refusals above are the size, not the framing).
        exact = padded_delivery("task-big", MAX_BODY_BYTES)
        raw = request_bytes(
            "POST",
            path,
            [*headers.items(), ("Transfer-Encoding", "chunked")],
            chunked(exact, 1000),
            content_length=None,
        )
        answer = await exchange(port(svc), raw)
        assert answer is not None and (answer.status, answer.json()) == (200, {"status": "accepted"})


async def _refusal_count(svc: Service, job_id: str, count: int) -> list[dict[str, Any]] | None:
    events = await svc.events(job_id)
    return events if len(refusals(events)) >= count else None


NOT_JSON_BODIES = {
    "deep array": b"[" * 200_000,
    "deep object in a genuine delivery": delivery_body("task-enc")[:-1]
    + b', "x": '
    + b'{"a":' * 2000
    + b"1"
    + b"}" * 2001,
    "nesting one past orjson's limit": b'{"id": "task-enc", "x": ' + b"[" * 1024 + b"]" * 1024 + b"}",
    "latin-1": delivery_body("task-enc")[:-1] + ', "note": "été"}'.encode("latin-1"),
    "utf-16 with BOM": delivery_body("task-enc").decode().encode("utf-16"),
    "utf-8 BOM": b"\xef\xbb\xbf" + delivery_body("task-enc"),
    "overlong dot": delivery_body("task-enc")[:-1] + b', "x": "\xc0\xae"}',
    "encoded surrogate": delivery_body("task-enc")[:-1] + b', "x": "\xed\xa0\x80"}',
    "escaped lone surrogate": delivery_body("task-enc")[:-1] + b', "x": "\\ud800"}',
    "NUL after the object": delivery_body("task-enc") + b"\x00",
    "two objects": delivery_body("task-enc") + delivery_body("task-enc"),
    "NaN": delivery_body("task-enc")[:-1] + b', "x": NaN}',
    "empty": b"",
    "an array": b'[{"id": "task-enc", "status": "completed"}]',
}


async def test_bodies_that_are_not_utf8_json_objects(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook) as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        async with await RawConnection.open(port(svc)) as connection:
            for name, body in NOT_JSON_BODIES.items():
                assert len(body) <= MAX_BODY_BYTES, name
                await connection.send(raw_delivery(path, "task-enc", body=body))
                answer = await connection.response()
                assert answer is not None, name
                assert (answer.status, answer.json()["error"]["code"]) == (400, "invalid_json"), name
        events = await assert_nothing_applied(svc, job["id"])
        assert refusals(events) == ["invalid_json"] * len(NOT_JSON_BODIES)
        await assert_healthy(svc)


# -- slow clients ---------------------------------------------------------------------------------


async def test_a_client_trickling_its_request_blocks_no_one(jobhook: ServiceFactory) -> None:
    """One byte at a time, the last one held back until other requests have been answered: those
    answers prove that nothing waited for the slow client (no timing involved)."""
    async with hostile_service(jobhook) as svc:
        slow_job, other_job = await tracked_job(svc, "slow"), await tracked_job(svc, "other")
        others_answered = asyncio.Event()
        slow_body = delivery_body("task-slow")
        head = request_bytes("POST", callback_path(slow_job), delivery_headers("task-slow"), slow_body)[
            : -len(slow_body)
        ]

        async def trickle(connection: RawConnection, data: bytes) -> RawResponse | None:
            for offset in range(len(data) - 1):
                assert await connection.send(data[offset : offset + 1])
                await asyncio.sleep(0.002)
            await others_answered.wait()
            assert await connection.send(data[-1:])
            return await connection.response()

        async def others() -> None:
            # Wait until the slow clients are well into their requests.
            await asyncio.sleep(0.3)
            assert (await svc.client.get("/healthz")).status_code == 200
            answer = await svc.client.post(
                callback_path(other_job),
                content=delivery_body("task-other"),
                headers=delivery_headers("task-other"),
            )
            assert answer.json() == {"status": "accepted"}
            assert (await svc.job(other_job["id"]))["status"] == "completed"
            assert (await svc.client.get("/readyz")).status_code == 200
            others_answered.set()

        async with (
            await RawConnection.open(port(svc)) as slow_body_client,
            await RawConnection.open(port(svc)) as slow_head_client,
        ):
            body_first = slow_body_client.send(head)
            assert await body_first
            slow_head_job = await tracked_job(svc, "slow head")
            slow_head_request = raw_delivery(callback_path(slow_head_job), "task-slow-head")
            trickled_body, trickled_head, _ = await asyncio.gather(
                trickle(slow_body_client, slow_body),
                trickle(slow_head_client, slow_head_request),
                others(),
            )
        assert trickled_body is not None and trickled_body.json() == {"status": "accepted"}
        assert trickled_head is not None and trickled_head.json() == {"status": "accepted"}
        assert (await svc.job(slow_job["id"]))["status"] == "completed"


# -- huge heads -----------------------------------------------------------------------------------


async def test_huge_headers_and_targets_are_refused_cleanly(jobhook: ServiceFactory) -> None:
    async with hostile_service(jobhook) as svc:
        job = await tracked_job(svc)
        path = callback_path(job)
        genuine = list(delivery_headers("task-head").items())
        body = delivery_body("task-head")
        cases = {
            "one 10 MiB header": request_bytes("POST", path, [*genuine, ("X-Pad", "a" * (10 * 1024 * 1024))], body),
            "one 1 MiB header": request_bytes("GET", "/healthz", [("X-Pad", "a" * (1024 * 1024))]),
            "20,000 small headers": request_bytes(
                "POST", path, genuine + [(f"X-H{n}", "v") for n in range(20_000)], body
            ),
            "a 1 MiB target": request_bytes("GET", "/healthz?" + "q" * (1024 * 1024)),
            "a 1 MiB header name": request_bytes("GET", "/healthz", [("X" * (1024 * 1024), "v")]),
        }
        for name, raw in cases.items():
            async with await RawConnection.open(port(svc)) as connection:
                await connection.send(raw)  # the server may close before it has read everything
                answer = await connection.response()
                # 431, or a reset when the server closed with the client's bytes still unread.
                assert answer is None or answer.status == 431, (name, answer)
                if answer is not None:
                    assert answer.json()["error"]["code"] == "headers_too_large"
                assert await connection.closed_by_server(), name
        await assert_nothing_applied(svc, job["id"])
        await assert_healthy(svc)
        # Within the bound: a 16 KiB header is normal HTTP, and a 256 KiB body in one write is no head.
        answer = await exchange(port(svc), request_bytes("GET", "/healthz", [("X-Pad", "a" * 16384)]))
        assert answer is not None and answer.status == 200
        answer = await exchange(
            port(svc), raw_delivery(path, "task-head", body=padded_delivery("task-head", MAX_BODY_BYTES))
        )
        assert answer is not None and (answer.status, answer.json()) == (200, {"status": "accepted"})
        # Whole requests with bodies larger than the bound, each in one write (often one read on the
        # server's side), on a kept-alive connection and on fresh ones: bodies, never heads.
        async with await RawConnection.open(port(svc)) as connection:
            for size in (70_000, 150_000, 200_000, 70_000):
                body = padded_delivery("task-head", size)
                assert await connection.send(raw_delivery(path, "task-head", body=body))
                answer = await connection.response()
                assert answer is not None and (answer.status, answer.json()) == (200, {"status": "duplicate"}), size
        for size in (70_000, 150_000, 200_000):
            body = padded_delivery("task-head", size)
            answer = await exchange(port(svc), raw_delivery(path, "task-head", body=body))
            assert answer is not None and answer.status == 200, size


# -- path traversal -------------------------------------------------------------------------------


def traversal_targets(job_id: str, media_token: str) -> list[str]:
    images = f"/v1/jobs/{job_id}/images"
    return [
        f"{images}/..",
        f"{images}/../../../../etc/passwd",
        f"{images}/%2e%2e",
        f"{images}/%2E%2E%2F%2E%2E%2Fjobhook.db",
        f"{images}/..%2f..%2f..%2fjobhook.db",
        f"{images}/%2fetc%2fpasswd",
        f"{images}//etc/passwd",
        f"{images}/0%00.png",
        f"{images}/0%00",
        f"{images}/%00",
        f"{images}/0/../0",
        f"{images}/0%2f..%2f0",
        f"{images}/0.png",
        f"{images}/%30",  # "0", percent-encoded: the same resource, fine either way
        f"{images}/\u0660".encode().decode("latin-1"),  # Arabic-Indic zero, as raw UTF-8 bytes
        f"{images}/%D9%A0",
        f"{images}/%C2%B2",  # superscript two: isdigit() but not int()
        "/v1/jobs/..%2fjobhook.db/images/0",
        "/v1/jobs/../../jobhook.db/images/0",
        "/v1/jobs/%2e%2e/images/0",
        f"/v1/jobs/{job_id}%2f..%2f..%2fjobhook.db/images/0",
        f"/v1/jobs/{job_id}/../../../jobhook.db",
        "/media/..",
        "/media/%2e%2e",
        "/media/..%2f..%2fjobhook.db",
        "/media//etc/passwd",
        "/media/%2fetc%2fpasswd",
        f"/media/{media_token}%00",
        f"/media/{media_token}/../../jobhook.db",
        f"/media/{media_token}%2f..%2f..%2fjobhook.db",
        f"/media/{media_token}/..",
        "/media/" + "%2e%2e%2f" * 20 + "etc%2fpasswd",
    ]


def signed_media_tokens(job_id: str) -> list[str]:
    """Links jobhook never makes, signed with its key: they must still serve nothing."""
    signer = CallbackTokens([SIGNING_KEY], salt=MEDIA_SALT)
    return [
        signer.sign(job_id, "../../jobhook.db"),
        signer.sign(job_id, "/etc/passwd"),
        signer.sign(job_id, "0/../0"),
        signer.sign(job_id, "²"),
        signer.sign(job_id, "٠"),
        signer.sign(job_id, "-1"),
        signer.sign(job_id, "9" * 5000),
        signer.sign("../../jobhook.db", "0"),
        signer.sign(f"{job_id}/../..", "0"),
    ]


async def test_path_traversal_in_image_routes(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_SECRET=SIGNING_KEY) as svc:  # mirroring on: jobhook holds the image
        job = await svc.submit(provider="simulator", prompt="an image to guard", output_format="png")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"

        async def held() -> bool:
            return any(e["type"] == "mirror" for e in await svc.events(job["id"]))

        await eventually(held)
        image = await svc.client.get(f"/v1/jobs/{job['id']}/images/0")
        assert image.status_code == 200 and image.content.startswith(PNG_MAGIC)
        media_token = CallbackTokens([SIGNING_KEY], salt=MEDIA_SALT).sign(job["id"], "0")
        assert (await svc.client.get(f"/media/{media_token}")).content == image.content
        secret_files = (b"SQLite format 3", b"root:", PNG_MAGIC)
        targets = traversal_targets(job["id"], media_token)
        targets += [f"/media/{token}" for token in signed_media_tokens(job["id"])]
        statuses = collections.Counter()
        for target in targets:
            answer = await exchange(port(svc), request_bytes("GET", target))
            assert answer is not None, target
            statuses[answer.status] += 1
            if answer.status == 200:
                # Only "0" spelt another way may serve image 0 itself; nothing else, ever.
                assert target.endswith(("/%30",)) or target.endswith("%D9%A0"), target
                assert answer.body == image.content, target
                continue
            assert answer.status in (400, 404), (target, answer)
            assert not any(marker in answer.body for marker in secret_files), target
            if answer.status == 404:
                assert answer.json()["error"]["code"] in ("not_found", "job_not_found", "image_not_found"), target
        assert statuses[404] > 30
        await assert_healthy(svc)


def test_helpers_build_what_they_claim() -> None:
    """Guards for the helpers above: each flip differs in one bit, each spelling decodes to the same bytes."""
    token = CallbackTokens(["k"]).sign("job_01JABCDEFGHJKMNPQRSTVWXYZ0", "simulator")
    original = [itsdangerous.encoding.base64_decode(part) for part in _parts(token)]
    flips = one_bit_flips(token)
    assert len(flips) == 8 * sum(len(raw) for raw in original) == len(set(flips))
    for flipped in flips:
        decoded = [itsdangerous.encoding.base64_decode(part) for part in _parts(flipped)]
        bits = sum(
            bin(x ^ y).count("1") for a, b in zip(original, decoded, strict=True) for x, y in zip(a, b, strict=True)
        )
        assert bits == 1, flipped
    for spelling in non_canonical_spellings(token):
        assert spelling != token
        assert [itsdangerous.encoding.base64_decode(part) for part in _parts(spelling)] == original
    assert request_bytes("GET", "/x", content_length=None) == b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert chunked(b"abc", 2) == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"


@pytest.mark.parametrize("size", [MAX_BODY_BYTES - 1, MAX_BODY_BYTES])
def test_padded_delivery_is_exact(size: int) -> None:
    assert len(padded_delivery("t", size)) == size
