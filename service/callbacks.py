"""`POST /callbacks/{token}`: the providers' callbacks (public, no bearer token), SPEC §4.

`CallbackIntake` runs every check after the token's, in order, and commits what a genuine delivery
says; it answers with a value (`Taken`, or a `Refused` carrying the domain's refusal), which the
route turns into HTTP and counts, in one place, on /metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from service import loglimit
from service.domain import callbacks as verify
from service.domain import report
from service.domain.callbacks import MAX_BODY_BYTES
from service.domain.job import Job
from service.domain.status import Status
from service.errors import StorageError
from service.http import BodyTooLarge, read_body_asgi
from service.metrics import Metrics
from service.providers.base import ProtocolError, Tracking
from service.runtime import Runtime, runtime
from service.store.base import ReceiptKind, TaskIdConflict

if TYPE_CHECKING:
    from service.engine import Engine, ProviderRuntime

log = logging.getLogger("jobhook")

# Answered for a token that is not ours, a provider or a job that does not exist: nothing revealed.
NOT_FOUND = verify.Refusal(404, "not_found", "no such callback")


@dataclasses.dataclass(frozen=True)
class Taken:
    """A delivery committed: answered 200 with whether it was new or a duplicate."""

    provider: str
    receipt: ReceiptKind


@dataclasses.dataclass(frozen=True)
class Refused:
    """A delivery refused. `reason` is what /metrics counts (an unknown token counts as
    `invalid_token`, though it is answered like any other unknown URL)."""

    provider: str
    refusal: verify.Refusal
    reason: str


Verdict = Taken | Refused


class CallbackIntake:
    """The checks of SPEC §4 after the token's, and the writes of a genuine delivery."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings
        self.tokens = engine.tokens
        # Anyone can send refusals at will: a few lines per job and code a minute, the rest counted.
        self.refusal_log = loglimit.LogLimiter()

    async def refuse_token(self) -> Refused:
        """A delivery to a URL whose token is not ours: 404, and nothing about any job is revealed."""
        await self._refused_unknown("invalid_token", {})
        return Refused("unknown", NOT_FOUND, "invalid_token")

    async def take(self, claim: verify.TokenClaim, headers: Mapping[str, str], raw: bytes | None) -> Verdict:
        """Every check of SPEC §4 after the token's (the route verified it: `claim`), in order; the
        delivery is committed before this returns `Taken`.

        `headers` have lower-case names; `raw` is None when the body was over the size limit.
        """
        runtime = self.engine.providers.get(claim.provider)
        if runtime is None:
            await self._refused_unknown("invalid_token", {})
            return Refused("unknown", NOT_FOUND, NOT_FOUND.code)
        job = await self.store.get_job(claim.job_id)
        # The attempt it is about: the job's current one, or an earlier one whose results still count
        # (SPEC §8: a reroute left it alive). Known from the job as read: no query more.
        target = report.callback_target(job, claim.provider) if job is not None else None
        if job is None or target is None:
            await self._refused_unknown("unknown_job", {"job_id": claim.job_id})
            return Refused("unknown", NOT_FOUND, NOT_FOUND.code)
        body = verify.too_large() if raw is None else verify.parse_body(raw)
        if isinstance(body, verify.Refusal):
            return await self._refuse(job, target, body, {"bytes": len(raw) if raw is not None else None})
        now = self.engine.clock()
        if runtime.adapter.tracking is Tracking.CALLBACK:
            check = verify.check_task_headers(headers, body, target.task_id, now, self.settings.timestamp_tolerance)
            if isinstance(check, verify.Refusal):
                return await self._refuse(job, target, check, _delivery_detail(headers, body, target))
            event_key, bind = check.event, (check.task_id if check.binds else None)
        elif runtime.adapter.tracking is Tracking.WEBHOOK_CONFIRM:
            return await self._take_claim(job, target, runtime, body)
        else:
            refusal = verify.Refusal(400, "unsupported", "this provider does not send callbacks")
            return await self._refuse(job, target, refusal, {})
        detail = _delivery_detail(headers, body, target)
        try:
            observation = runtime.adapter.parse_callback(body)
        except ProtocolError as exc:
            return await self._refuse(job, target, verify.Refusal(400, "invalid_payload", str(exc)), detail)
        images = len(observation.images)
        try:
            result = await self.store.record_callback(
                job.id,
                report.event_key(event_key, target.seq),
                observation,
                detail,
                bind_task_id=bind,
                cost_if_completed=self.engine.cost(job, target.provider) if images else None,
                poll_if_bound=self.engine.first_poll_at(job, now)
                if target.current
                else now + self.settings.poll_interval,
                seq=target.seq,
                # The delivery is for the job's current attempt: an engine may write the plain case faster.
                seen=job if target.current else None,
            )
        except TaskIdConflict:
            refusal = verify.Refusal(409, "task_id_conflict", "this task id belongs to another job")
            return await self._refuse(job, target, refusal, detail)
        if result.kind is ReceiptKind.ACCEPTED and result.decision is not None and result.decision.applied:
            # DEBUG: at a retry storm's rate a line each costs more than the delivery; the job's events
            # and /metrics keep what happened.
            log.debug("callback %s %s: %s", job.id, target.provider, result.job.status)
            if result.job.status is Status.COMPLETED and images and self.settings.mirror_images:
                self.engine.nudge(now)  # its images are to be fetched now (a 'mirror' row came with it)
        return Taken(target.provider, result.kind)

    async def _take_claim(
        self, job: Job, target: report.Target, runtime: ProviderRuntime, body: Mapping[str, Any]
    ) -> Verdict:
        """A bare webhook (apiframe): the job id it names must be the job's, and what it claims is
        confirmed by one poll before it is applied (SPEC §4, check 4)."""
        task_id = runtime.adapter.callback_task_id(body)
        detail: dict[str, Any] = {"body_job_id": task_id[:200] if task_id else None}
        if not target.current:
            detail.update(attempt=target.seq, provider=target.provider)
        if task_id is None:
            refusal = verify.Refusal(400, "missing_task_id", "the body names no job id")
            return await self._refuse(job, target, refusal, detail)
        if target.task_id is not None and target.task_id != task_id:
            refusal = verify.Refusal(409, "task_id_conflict", "the body's job id is not this callback URL's job")
            return await self._refuse(job, target, refusal, detail)
        try:
            claim = runtime.adapter.parse_callback(body)
        except ProtocolError as exc:
            return await self._refuse(job, target, verify.Refusal(400, "invalid_payload", str(exc)), detail)
        detail["claim"] = str(claim.status)
        bind = task_id if target.task_id is None else None
        key = report.event_key(f"status.{claim.status}", target.seq)
        try:
            kind = await self.store.record_claim(job.id, key, detail, bind_task_id=bind, seq=target.seq)
        except TaskIdConflict:
            refusal = verify.Refusal(409, "task_id_conflict", "this job id belongs to another job")
            return await self._refuse(job, target, refusal, detail)
        self.engine.nudge(self.engine.clock())  # a confirming poll is due now (a duplicate may re-arm one)
        return Taken(target.provider, kind)

    async def _refuse(
        self, job: Job, target: report.Target, refusal: verify.Refusal, detail: dict[str, Any]
    ) -> Refused:
        self._log_refusal((job.id, refusal.code), "callback refused for %s: %s", job.id, refusal.code)
        await self.store.record_refusal(
            job.id, refusal.code, {**detail, "code": refusal.code, "message": refusal.message}
        )
        return Refused(target.provider, refusal, refusal.code)

    async def _refused_unknown(self, code: str, detail: dict[str, Any]) -> None:
        self._log_refusal(("", code), "callback refused: %s", code)
        await self.store.log_refused(code, detail)

    def _log_refusal(self, key: tuple[str, str], message: str, *args: object) -> None:
        """A few lines per job and code a minute, the rest counted (see `refusal_log`)."""
        left_out = self.refusal_log.admit(key)
        if left_out is not None:
            log.warning(message + "%s", *args, loglimit.note(left_out, self.refusal_log, key))


def _delivery_detail(headers: Mapping[str, str], body: Mapping[str, Any], target: report.Target) -> dict[str, Any]:
    """What the job's history keeps of a delivery: its headers of note and its claim, not the body; and,
    for an attempt the job no longer follows, which one."""
    detail: dict[str, Any] = {} if target.current else {"attempt": target.seq, "provider": target.provider}
    for name in ("x-event", "x-task-id", "x-timestamp"):
        if name in headers:
            detail[name] = headers[name][:200]
    status = body.get("status")
    if isinstance(status, str):
        detail["status"] = status[:50]
    return detail


# -- the route -----------------------------------------------------------------------------------------


async def take_callback(request: Request) -> Response:
    """The router's endpoint. The app answers `POST /callbacks/{token}` before its middleware and
    router (service.app.App, with `answer`), so this is reached only where that fast path stands aside
    (under a root path)."""
    token = request.path_params["token"]
    status, body = await answer(runtime(request), token, request.scope["headers"], request.receive)
    return Response(body, status, headers={"X-Content-Type-Options": "nosniff"}, media_type="application/json")


ANSWERS = {kind: orjson.dumps({"status": str(kind)}) for kind in ReceiptKind}


async def answer(
    rt: Runtime, token: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive
) -> tuple[int, bytes]:
    """A delivery to `/callbacks/{token}`: its answer's status and JSON body, once committed."""
    intake = rt.callbacks
    # The token is checked before the body is read: a forged URL learns nothing, not even the limit.
    claim = intake.tokens.verify(token)
    provider = claim.provider if claim is not None else "unknown"
    started: float | None = None
    try:
        if claim is None:
            verdict: Verdict = await intake.refuse_token()
        else:
            headers = combined_headers(raw_headers)
            raw: bytes | None
            try:
                raw = await read_body_asgi(receive, headers.get("content-length", "").encode() or None, MAX_BODY_BYTES)
            except BodyTooLarge:
                raw = None  # refused below, on the job's own history
            started = time.monotonic()
            verdict = await intake.take(claim, headers, raw)
    except StorageError:
        # Answered 503 by the app (the provider retries); counted all the same, since every delivery
        # is (SPEC §4) and a storage fault turning deliveries away is what an operator must see.
        count(rt.metrics, provider, "unavailable", "storage_unavailable")
        raise
    if isinstance(verdict, Taken):
        count(rt.metrics, verdict.provider, str(verdict.receipt), "", started)
        return 200, ANSWERS[verdict.receipt]
    count(rt.metrics, verdict.provider, "refused", verdict.reason, started)
    refusal = verdict.refusal
    return refusal.status, orjson.dumps({"error": {"code": refusal.code, "message": refusal.message}})


def count(metrics: Metrics, provider: str, outcome: str, reason: str, started: float | None = None) -> None:
    """Every delivery, by provider, outcome and refusal reason; and, for one whose token was ours,
    how long it took from its body to its answer."""
    metrics.callbacks.labels(provider, outcome, reason).inc()
    if started is not None:
        metrics.callback_seconds.labels(provider).observe(time.monotonic() - started)


def combined_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; a field sent several times is one comma-joined value (RFC 9110 §5.3).

    A dict built from the raw list would keep only the last `X-Task-Id` or `X-Timestamp` and ignore
    the others; joined, two copies are simply not a valid value, and the checks refuse them.
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


PREFIX = "/callbacks/"
routes = [Route(PREFIX + "{token}", take_callback, methods=["POST"])]


def fast_token(scope: Scope) -> str | None:
    """The token of a request the app answers at once (`POST /callbacks/{token}`, as the route matches it),
    or None: the request goes through the app's middleware and router."""
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.startswith(PREFIX) or scope.get("root_path"):
        return None
    segment = path[len(PREFIX) :]
    return segment if segment and "/" not in segment else None
