"""Asking providers about jobs (SPEC §5): the poll of the attempt a job follows, and the late polls of
attempts it left that may still deliver (SPEC §8). Each poll reads the job, asks the provider through
its adapter, and hands what it saw to the store, which decides with `service.domain.report`."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from service.domain import backoff, report
from service.domain.job import Job
from service.domain.status import FINAL, Observation, Status
from service.domain.work import WorkKind
from service.errors import JobhookError
from service.providers.base import Answer, ProtocolError, Tracking
from service.providers.http import NotSent, Uncertain
from service.store.base import LatePoll

if TYPE_CHECKING:
    from service.engine import Engine, ProviderRuntime

log = logging.getLogger("jobhook")


class NotPollable(JobhookError):
    """The job has no task id at the provider yet, so there is nothing to ask about."""


@dataclasses.dataclass(frozen=True)
class Asked:
    """One poll's answer: what the provider said (None: nothing readable), its outcome, the next time."""

    observation: Observation | None
    outcome: str
    next_at: float


class Polling:
    """The engine's polls: `poll` (a job's 'poll' or 'confirm' row, or the API's refresh) and
    `poll_late` (a 'late_poll' row)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def poll(self, job_id: str, attempt: int, *, manual: bool = False, confirming: bool = False) -> Job | None:
        """Ask the provider about one job and record what it says; schedule the next poll.

        `confirming`: the poll that checks a bare webhook's claim (apiframe) before anything is applied.
        """
        kind = WorkKind.CONFIRM if confirming else WorkKind.POLL
        job = await self.engine.store.get_job(job_id)
        if job is None:
            return None
        runtime = self.pollable(job.provider)
        if job.provider_task_id is None or runtime is None:
            if manual:
                raise NotPollable("the job has no task id at the provider to ask about")
            await self.engine.store.unschedule(job_id, kind)
            return job
        now = self.engine.clock()
        if not manual and job.status in FINAL:
            await self.engine.store.unschedule(job_id, kind)
            return job
        current = job.current_attempt()
        since = max(job.created_at, current.started_at) if current is not None else job.created_at
        if not manual and job.status is Status.TIMED_OUT and now > since + 2 * self.engine.settings.job_timeout:
            await self.engine.store.unschedule(job_id, WorkKind.POLL)
            await self.engine.store.note(
                job_id, "poll", "stopped", {"reason": "no answer within twice JOBHOOK_JOB_TIMEOUT"}
            )
            return job
        detail: dict[str, Any] = {"manual": True} if manual else {"confirming": True} if confirming else {}
        asked = await self.ask(job.id, runtime, job.provider_task_id, attempt, detail)
        images = len(asked.observation.images) if asked.observation is not None else 0
        applied = await self.engine.store.record_poll(
            job_id,
            asked.observation,
            detail,
            outcome=asked.outcome,
            next_poll=(asked.next_at, attempt + 1),
            cost_if_completed=self.engine.cost(job) if images else None,
            confirming=confirming,
            seq=current.seq if current is not None else None,
        )
        self.engine._nudge(asked.next_at)
        return applied.job

    async def poll_late(self, job_id: str, lane: str, attempt: int) -> None:
        """A 'late_poll' row came due: ask about one attempt the job no longer follows but which may
        still deliver (SPEC §8), the one at the row's provider (or the next one round); the store then
        moves the row on to the next such attempt. Each attempt is given up after twice
        JOBHOOK_JOB_TIMEOUT from its start, as a timed-out job's polls are."""
        job = await self.engine.store.get_job(job_id)
        if job is None:
            return
        since = self.engine.clock() - 2 * self.engine.settings.job_timeout
        targets = report.late_targets(job, since=since)
        target = next((item for item in targets if item.provider == lane), targets[0] if targets else None)
        runtime = self.pollable(target.provider) if target is not None else None
        if target is None or runtime is None or target.provider_task_id is None:
            await self.engine.store.unschedule(job_id, WorkKind.LATE_POLL)
            if report.late_targets(job):
                reason = "no answer within twice JOBHOOK_JOB_TIMEOUT, or the provider cannot be polled"
                await self.engine.store.note(job_id, "poll", "stopped", {"late": True, "reason": reason})
            return
        detail: dict[str, Any] = {"late": True, "attempt": target.seq, "provider": target.provider}
        asked = await self.ask(job.id, runtime, target.provider_task_id, attempt, detail)
        images = len(asked.observation.images) if asked.observation is not None else 0
        await self.engine.store.record_poll(
            job_id,
            asked.observation,
            detail,
            outcome=asked.outcome,
            next_poll=(asked.next_at, attempt + 1),
            cost_if_completed=self.engine.cost(job, target.provider) if images else None,
            seq=target.seq,
            late=LatePoll(lane, since),
        )
        self.engine._nudge(asked.next_at)

    def pollable(self, provider: str) -> ProviderRuntime | None:
        """The provider's runtime, if it is configured and answers polls (a synchronous one does not)."""
        runtime = self.engine.providers.get(provider)
        if runtime is None or runtime.http is None or runtime.adapter.tracking is Tracking.SYNCHRONOUS:
            return None
        return runtime

    async def ask(
        self, job_id: str, runtime: ProviderRuntime, task_id: str, attempt: int, detail: dict[str, Any]
    ) -> Asked:
        """One poll of `task_id` at the provider: what it says (added to `detail`), and when to ask next."""
        assert runtime.http is not None
        now = self.engine.clock()
        next_delay = backoff.delay(
            attempt, self.engine.settings.poll_interval, self.engine.settings.poll_max_interval, self.engine.rng
        )
        observation = None
        try:
            response = await runtime.http.send(runtime.adapter.poll_request(task_id))
        except (NotSent, Uncertain) as exc:
            outcome, detail["message"] = "unreachable", str(exc)
        else:
            # The next poll counts from the answer: a Retry-After is "after this answer", not after
            # the moment the request was started (a slow answer would otherwise shorten the wait).
            now = self.engine.clock()
            detail["http_status"] = response.status
            try:
                answer = runtime.adapter.parse_poll(response)
            except ProtocolError as exc:
                outcome, detail["message"] = "unreadable", str(exc)
            else:
                if answer.answer is Answer.OK and answer.observation is not None:
                    observation = answer.observation
                    outcome = str(observation.status)
                else:
                    assert answer.error is not None
                    outcome = "rate_limited" if response.status == 429 else "error"
                    detail["provider_code"] = answer.error.provider_code
                    detail["message"] = answer.error.message
                    asked = backoff.retry_after(answer.retry_after, now)
                    if asked is not None:
                        next_delay = max(next_delay, asked)
                        self.engine.paused_until[runtime.name] = now + asked
        self.engine.metrics.polls.labels(runtime.name, outcome).inc()
        if outcome in ("rate_limited", "error", "unreachable", "unreadable"):
            log.warning("poll %s %s: %s %s", job_id, runtime.name, outcome, detail.get("message", ""))
        return Asked(observation, outcome, now + next_delay)
