"""The /v1 routes of SPEC §3: parse, call the engine or the store, answer. Errors → `{"error": …}`."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from service import ids, limits
from service.domain import attempt, budget, routing
from service.domain.job import Job, rfc3339
from service.domain.request import MAX_CANDIDATES, RequestError, parse_submission
from service.domain.status import FINISHED, Status
from service.engine import IdempotencyMismatch, NotBackendSubmitted, RerouteRefused
from service.http import ApiError, BodyTooLarge, JSONResponse, decode_cursor, encode_cursor, read_body
from service.media import MediaFile
from service.polling import NotPollable
from service.runtime import Runtime, runtime
from service.store.base import TaskIdConflict

MAX_API_BODY = 1024 * 1024
MAX_WAIT = 60.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A job's history is bounded (service.domain.history), but a page of it is smaller still.
DEFAULT_EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 500
MAX_IDEMPOTENCY_KEY = 255
MAX_TASK_ID = 200
# A job tries each of its candidates once: a larger attempt number names no attempt.
MAX_ATTEMPT_SEQ = MAX_CANDIDATES
# No provider's task id has control characters; one would only break the provider's URLs and the logs.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


async def json_body(request: Request) -> Any:
    try:
        raw = await read_body(request, MAX_API_BODY)
    except BodyTooLarge:
        raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_API_BODY} bytes") from None
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None


def job_json(request: Request, job: Job) -> dict[str, Any]:
    """The job as this reader sees it: jobhook's own image URLs on the address it used to reach us."""
    rt = runtime(request)
    callback_url = rt.engine.callback_url(job) if job.submitted_by_backend and job.callback_url_registered else None
    return job.to_json(base_url=str(request.base_url).rstrip("/"), callback_url=callback_url)


async def load_job(rt: Runtime, job_id: str) -> Job:
    job = await rt.store.get_job(job_id) if ids.is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return job


def _request_error(exc: RequestError) -> ApiError:
    return ApiError(422, exc.code, exc.message, field=exc.field, accepted=exc.accepted)


async def create_job(request: Request) -> JSONResponse:
    rt = runtime(request)
    key = request.headers.get("idempotency-key")
    if key is not None and (not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY):
        raise ApiError(400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    body = await json_body(request)
    try:
        submission = parse_submission(body)
        job, created = await rt.engine.create(submission, key)
    except RequestError as exc:
        raise _request_error(exc) from None
    except budget.BudgetExceeded as exc:
        # SPEC §9: nothing was sent and no job was made; the caps reset at the next UTC midnight.
        cap = exc.refusal
        raise ApiError(
            429,
            "budget_exceeded",
            exc.message,
            headers={"Retry-After": str(max(1, math.ceil(cap.reset_at - rt.engine.clock())))},
            scope=cap.scope,
            reset_at=rfc3339(cap.reset_at),
            candidates=[item.to_json() for item in exc.left_out] or None,
        ) from None
    except routing.NoProvider as exc:
        # Nothing was sent and no job was made: each candidate and why it was left out.
        raise ApiError(422, "no_provider", exc.message, candidates=[item.to_json() for item in exc.left_out]) from None
    except IdempotencyMismatch as exc:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
            job_id=exc.job.id,
        ) from None
    headers = {} if created else {"Idempotent-Replayed": "true"}
    refusal = attempt.refusal(job)
    if refusal is not None:
        # The provider refused it for good, now or when the job was made (a replay answers the same).
        raise ApiError(502, refusal.code, refusal.message, provider_code=refusal.provider_code, job_id=job.id)
    return JSONResponse(job_json(request, job), status_code=202, headers=headers)


async def get_job(request: Request) -> JSONResponse:
    rt = runtime(request)
    job_id = request.path_params["job_id"]
    wait = _wait_param(request)
    job = await load_job(rt, job_id)
    if wait > 0 and not job.finished:
        with rt.waiters.hold():  # past JOBHOOK_MAX_WAITERS: 503 with Retry-After, never queued
            waited = rt.engine.wait_until(job_id, lambda j: j.status in FINISHED, wait)
            found = await limits.while_connected(request, waited)
            job = found or job
    return JSONResponse(job_json(request, job))


def _wait_param(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT:
        raise ApiError(400, "invalid_wait", f"wait must be a number of seconds from 0 to {MAX_WAIT:g}, got {raw!r}")
    return value


def _limit_param(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if not raw:
        return default
    # ASCII digits only: str.isdigit() also takes "²" and "٣", and int() of 5,000 digits raises.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= most:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {most}, got {raw!r}")
    return int(raw)


async def list_jobs(request: Request) -> JSONResponse:
    rt = runtime(request)
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in Status}:
        raise ApiError(
            400, "invalid_status", f"status must be one of {', '.join(s.value for s in Status)}, got {status!r}"
        )
    provider = params.get("provider") or None
    if provider is not None and provider not in rt.engine.providers:
        raise ApiError(
            400,
            "invalid_provider",
            f"provider must be one of {', '.join(sorted(rt.engine.providers))}, got {provider!r}",
        )
    limit = _limit_param(request, DEFAULT_LIMIT, MAX_LIMIT)
    before = None
    cursor = params.get("cursor")
    if cursor:
        before = decode_cursor(cursor)
        if before is None or not ids.is_job_id(before):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out; start again without it")
    jobs = await rt.store.list_jobs(status=status, provider=provider, before_id=before, limit=limit + 1)
    page, more = jobs[:limit], len(jobs) > limit
    return JSONResponse(
        {"jobs": [job_json(request, job) for job in page], "next_cursor": encode_cursor(page[-1].id) if more else None}
    )


async def job_events(request: Request) -> JSONResponse:
    """The job's history, oldest first, a page at a time (`next_cursor`: the last event's id)."""
    rt = runtime(request)
    job = await load_job(rt, request.path_params["job_id"])
    limit = _limit_param(request, DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)
    after = 0
    cursor = request.query_params.get("cursor")
    if cursor:
        decoded = decode_cursor(cursor)
        if decoded is None or not (decoded.isascii() and decoded.isdigit() and len(decoded) <= 18):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out; start again without it")
        after = int(decoded)
    events = await rt.store.events(job.id, after_id=after, limit=limit + 1)
    page, more = events[:limit], len(events) > limit
    return JSONResponse(
        {
            "job_id": job.id,
            "events": [event.to_json() for event in page],
            "next_cursor": encode_cursor(str(page[-1].id)) if more else None,
        }
    )


async def refresh_job(request: Request) -> JSONResponse:
    rt = runtime(request)
    job = await load_job(rt, request.path_params["job_id"])
    try:
        polled = await rt.engine.polling.poll(job.id, 0, manual=True)
    except NotPollable as exc:
        raise ApiError(409, "not_pollable", str(exc)) from None
    return JSONResponse(job_json(request, polled or job))


def object_of_one(body: Any, field: str, verb: str) -> dict[str, Any]:
    """A body that must be a JSON object with at most the one field `field`: 422 otherwise."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object", field="body")
    unknown = sorted(set(body) - {field})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}; only {field} {verb}", field=unknown[0])
    return body


async def patch_job(request: Request) -> JSONResponse:
    rt = runtime(request)
    job = await load_job(rt, request.path_params["job_id"])
    body = await json_body(request)
    body = object_of_one(body, "provider_task_id", "can be set")
    task_id = body.get("provider_task_id")
    if task_id is None:
        raise ApiError(422, "missing_field", "provider_task_id is required", field="provider_task_id")
    if (
        not isinstance(task_id, str)
        or not task_id.strip()
        or len(task_id) > MAX_TASK_ID
        or CONTROL_CHARACTERS.search(task_id)
    ):
        raise ApiError(
            422,
            "invalid_field",
            f"provider_task_id must be a non-empty string of at most {MAX_TASK_ID} characters, without control"
            " characters",
            field="provider_task_id",
        )
    try:
        bound = await rt.engine.bind(job.id, task_id.strip())
    except NotBackendSubmitted as exc:
        raise ApiError(409, "not_backend_submitted", str(exc)) from None
    except TaskIdConflict:
        raise ApiError(
            409, "task_id_conflict", "the job already has another task id, or another job has this one"
        ) from None
    return JSONResponse(job_json(request, bound))


async def reroute_job(request: Request) -> JSONResponse:
    """`POST /v1/jobs/{id}/reroute` (SPEC §8): try the job's next candidate now, accepting that the
    attempt left, if it was sent, may still deliver and charge too. 202 with the job when it moved;
    200 with it unchanged when the attempt named (`from_attempt`) had been left already."""
    rt = runtime(request)
    job = await load_job(rt, request.path_params["job_id"])
    from_attempt = await _reroute_body(request)
    try:
        rerouted, moved = await rt.engine.reroute(job, from_attempt)
    except RerouteRefused as exc:
        refused = exc.refusal
        raise ApiError(refused.status, refused.code, refused.message, field=refused.field) from None
    refusal = attempt.refusal(rerouted) if moved else None
    if refusal is not None:
        # Every candidate left refused it for good, and no earlier attempt may deliver: as `POST /v1/jobs`.
        raise ApiError(502, refusal.code, refusal.message, provider_code=refusal.provider_code, job_id=job.id)
    return JSONResponse(job_json(request, rerouted), status_code=202 if moved else 200)


async def _reroute_body(request: Request) -> int | None:
    """The optional body `{"from_attempt": N}`: the attempt (its `seq`) the reroute leaves."""
    try:
        raw = await read_body(request, MAX_API_BODY)
    except BodyTooLarge:
        raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_API_BODY} bytes") from None
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    body = object_of_one(body, "from_attempt", "can be given")
    value = body.get("from_attempt")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ATTEMPT_SEQ:
        raise ApiError(
            422,
            "invalid_field",
            "from_attempt must be the seq of one of the job's attempts (a whole number from 1)",
            field="from_attempt",
        )
    return value


async def job_image(request: Request) -> Response:
    rt = runtime(request)
    job = await load_job(rt, request.path_params["job_id"])
    raw_index = request.path_params["index"]
    index = int(raw_index) if raw_index.isascii() and raw_index.isdigit() and len(raw_index) <= 3 else -1
    held = job.held(index)
    media = MediaFile.from_json(held) if held is not None else None
    path = rt.engine.media.path(job.id, media) if media is not None else None
    if media is None or path is None:
        if 0 <= index < job.image_count():
            raise ApiError(404, "image_not_held", f"jobhook holds no copy of image {index}; see the job's result URL")
        raise ApiError(404, "image_not_found", f"the job has no image {raw_index[:20]!r}")
    return FileResponse(path, media_type=media.content_type, headers={"Cache-Control": "private, max-age=86400"})


async def public_image(request: Request) -> Response:
    """`/media/{token}`: an image jobhook holds, by a signed link (public, for Slack and email)."""
    rt = runtime(request)
    claim = rt.engine.media_tokens.verify(request.path_params["token"])
    job = await rt.store.get_job(claim.job_id) if claim is not None else None
    index = claim.provider if claim is not None else ""
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses (jobhook signs str(int)).
    if job is None or not (index.isascii() and index.isdigit() and len(index) <= 3):
        raise ApiError(404, "not_found", "no such image")
    held = job.held(int(index))
    media = MediaFile.from_json(held) if held is not None else None
    path = rt.engine.media.path(job.id, media) if media is not None else None
    if media is None or path is None:
        raise ApiError(404, "not_found", "no such image")
    return FileResponse(path, media_type=media.content_type, headers={"Cache-Control": "public, max-age=86400"})


async def jobs(request: Request) -> JSONResponse:
    return await (create_job(request) if request.method == "POST" else list_jobs(request))


async def job(request: Request) -> JSONResponse:
    return await (patch_job(request) if request.method == "PATCH" else get_job(request))


# One Route per path, so that a 405 names every method the path has in its Allow header.
routes = [
    Route("/v1/jobs", jobs, methods=["GET", "POST"]),
    Route("/v1/jobs/{job_id}", job, methods=["GET", "PATCH"]),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
    Route("/v1/jobs/{job_id}/refresh", refresh_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}/reroute", reroute_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}/images/{index}", job_image, methods=["GET"]),
    Route("/media/{token}", public_image, methods=["GET"]),
]
