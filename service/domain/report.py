"""What a provider's report on one attempt (a callback, a poll, a submission's answer that already tells
the outcome) does to that attempt and to the job (SPEC §2, §8). Pure, no I/O.

The store reads the job and its attempts in the transaction, asks `decide`, and writes the decision as
given. The rules, for the attempt a report is about:

- The job follows one attempt, its *current* one (the attempt at the job's `provider`). A report on it
  runs the job's status machine as always: progress moves the job forward, a completion completes it. A
  failure moves the job to its next candidate (resellers refund failed tasks) unless the job timed out
  or no candidate is left; then, if an earlier attempt is still alive (the backend rerouted away from it
  while it was accepted or uncertain, so it may still deliver), the job follows that one again instead
  of failing; otherwise the job fails.
- An earlier attempt stays alive after a reroute. Its completion completes the job unless something
  completed it first (the first completed attempt's images are the job's, and the job follows that
  attempt from then on: `provider` and `provider_task_id` are the ones that delivered); its failure
  ends that attempt only; its progress changes nothing.
- Whatever the job's status, an attempt that is alive takes the final state its provider reports, with
  its cost when it completed: every attempt's cost is kept, and the job's `cost_usd` is their sum.
- A final attempt keeps its first final state; another one reported is a conflict. A second attempt that
  completes after the job completed is a conflict too, naming both: the first stands, both may charge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from service.domain import status as status_machine
from service.domain.job import AttemptRecord, Job
from service.domain.status import FINAL, JobError, Observation, Outcome, Source, Status
from service.domain.work import SubmitState

COMPLETED, FAILED = str(Status.COMPLETED), str(Status.FAILED)
PROVIDER_FAILED = JobError("provider_failed", "the provider reported the job failed")


@dataclasses.dataclass(frozen=True)
class Report:
    """What a provider said about one of the job's attempts."""

    observation: Observation
    source: Source
    seq: int | None = None  # the attempt reported on; None: the job's current attempt
    cost_usd: float | None = None  # what the attempt costs, should this report complete it


# -- the job's next step -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Nothing:
    """The job does not change (the report is recorded, and may end or finish its attempt)."""


@dataclasses.dataclass(frozen=True)
class Advance:
    """The job moves forward to `status` (submitted, processing), still unfinished."""

    status: Status


@dataclasses.dataclass(frozen=True)
class Complete:
    """The job completes with `images`. `follow`: an earlier attempt completed it, so the job follows
    that attempt from now on (its provider and task id become the job's)."""

    images: tuple[str, ...]
    follow: AttemptRecord | None = None


@dataclasses.dataclass(frozen=True)
class Fail:
    """The job ends `failed` with `error`."""

    error: JobError


@dataclasses.dataclass(frozen=True)
class NextCandidate:
    """The current attempt's task failed (refunded): the job moves to its next candidate."""


@dataclasses.dataclass(frozen=True)
class FallBack:
    """The current attempt ended with nothing left to try, but `to`, an earlier attempt, is still alive
    and may deliver: the job follows it again instead of failing. `status`: the job's new status
    (None: unchanged)."""

    to: AttemptRecord
    status: Status | None
    late_polls: LatePolls | None = None  # as `Decision.late_polls`: the attempt followed again leaves them


Step = Nothing | Advance | Complete | Fail | NextCandidate | FallBack


@dataclasses.dataclass(frozen=True)
class LatePolls:
    """Late polls start (`lane`: the provider asked first) or stop (None: no attempt is left for them)."""

    lane: str | None


@dataclasses.dataclass(frozen=True)
class AttemptEnd:
    """An attempt's final state, as its provider reported it (`ended_at` is the report's time)."""

    seq: int
    state: str  # completed or failed
    error: JobError | None = None
    cost_usd: float | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one report does: the store writes exactly this, in one transaction."""

    seq: int | None  # the attempt reported on (None: a job made before attempts were recorded)
    machine: status_machine.Decision  # the status machine's verdict (the images kept, how many ignored)
    step: Step
    effect: str  # the report's own event says what it did: applied, unchanged, conflict, attempt_ended
    attempt: AttemptEnd | None = None  # the attempt's end, when this report ends it
    cost_usd: float | None = None  # the job's cost (the sum of its attempts'), written when `cost_changed`
    cost_changed: bool = False
    conflict: Mapping[str, Any] | None = None  # the detail of a `conflict` event
    late_polls: LatePolls | None = None  # late polls start or stop (None: as they were)
    # The attempt the job followed until an earlier one completed it, never sent: it ends `not_sent`.
    abandon: int | None = None


def attempt_is_current(job: Job, seq: int | None) -> bool:
    """Is attempt `seq` the one the job follows (None, or a job without attempts: as good as)?"""
    current = job.current_attempt()
    return seq is None or current is None or current.seq == seq


def late_targets(job: Job, *, since: float | None = None) -> tuple[AttemptRecord, ...]:
    """The attempts that late polls follow: alive, with a task id to ask about, and not followed by the
    job's own poll (an earlier attempt, or any attempt once the job is completed or failed); `since`:
    only those started then or later (late polls give up on an attempt after a while)."""
    current = job.current_attempt()
    final = job.status in FINAL
    return tuple(
        item
        for item in job.attempts
        if item.alive
        and item.provider_task_id
        and (final or current is None or item.seq != current.seq)
        and (since is None or item.started_at >= since)
    )


def next_late_target(job: Job, after: int | None, *, since: float | None = None) -> AttemptRecord | None:
    """The attempt the job's late polls ask about after attempt `after`: the next one round the job's
    attempts to follow late, so that each is asked in turn (None: none is left)."""
    targets = late_targets(job, since=since)
    if not targets:
        return None
    later = [item for item in targets if after is None or item.seq > after]
    return (later or list(targets))[0]


def alive_elsewhere(job: Job) -> AttemptRecord | None:
    """The latest attempt other than the current one that may still deliver, if any."""
    current = job.current_attempt()
    for item in reversed(job.attempts):
        if item.alive and (current is None or item.seq != current.seq):
            return item
    return None


def fall_back(job: Job, end: AttemptEnd | None) -> FallBack | None:
    """The job's current attempt ends (`end`) with no candidate left: if an earlier attempt is still
    alive, the job follows it again rather than fail (None: none is, the job fails)."""
    earlier = alive_elsewhere(job)
    if earlier is None:
        return None
    status = Status.SUBMITTED if job.status is Status.QUEUED else None
    return FallBack(earlier, status, _late_change(job, _after(job, end, provider=earlier.provider)))


@dataclasses.dataclass(frozen=True)
class Unfollowed:
    """A submission's answer for an attempt the job stopped following while it was in flight (an
    earlier attempt completed the job first): the answer is written on that attempt alone."""

    end: AttemptEnd
    ended: bool  # the attempt is over (anything but accepted or uncertain)
    task_id: str | None
    cost_usd: float | None  # the job's cost (the sum of its attempts'), when this attempt completed
    late_polls: LatePolls | None


def unfollowed_answer(job: Job, state: str, *, task_id: str | None, cost_usd: float | None) -> Unfollowed | None:
    """The latest attempt's submission answered (`state`: the attempt state it means) after the job
    stopped following it: None unless that is so (then the answer only goes on the job's history)."""
    latest = job.attempts[-1] if job.attempts else None
    current = job.current_attempt()
    if latest is None or latest.state is not None or current is None or current.seq == latest.seq:
        return None
    end = AttemptEnd(latest.seq, state, cost_usd=cost_usd if state == COMPLETED else None)
    after = dataclasses.replace(latest, state=state, provider_task_id=task_id or latest.provider_task_id)
    later = _after(job, None, attempts=tuple(after if item.seq == latest.seq else item for item in job.attempts))
    cost = total_cost(job.attempts, end) if end.cost_usd is not None else None
    return Unfollowed(end, not after.alive, task_id, cost, _late_change(job, later))


def total_cost(attempts: tuple[AttemptRecord, ...], end: AttemptEnd | None = None) -> float | None:
    """The job's cost: the sum of its attempts' (after `end`); None when no attempt has a known cost."""
    costs = [end.cost_usd if end is not None and item.seq == end.seq else item.cost_usd for item in attempts]
    known = [cost for cost in costs if cost is not None]
    return round(sum(known), 6) if known else None


# Attempts that reached their provider: its callbacks for them are genuine (duplicates and late results).
SENT = frozenset({"accepted", "uncertain", COMPLETED, FAILED})


@dataclasses.dataclass(frozen=True)
class Target:
    """The attempt a delivery to the job's callback URL for one provider is about."""

    seq: int | None  # None: a job made before attempts were recorded
    provider: str
    task_id: str | None  # the task the attempt is bound to, if any (a callback may bind it)
    current: bool  # the attempt the job follows (the usual case)


def callback_target(job: Job, provider: str) -> Target | None:
    """Which of the job's attempts a delivery for `provider` is about (the callback URL's token names
    the job and the provider, and a job tries each provider once): the current attempt, or an earlier
    one that reached its provider, whose results still count (SPEC §8). None: none (never sent there)."""
    if provider == job.provider:
        current = job.current_attempt()
        return Target(current.seq if current is not None else None, provider, job.provider_task_id, True)
    for item in reversed(job.attempts):
        if item.provider == provider:
            return Target(item.seq, provider, item.provider_task_id, False) if item.state in SENT else None
    return None


def event_key(event: str, seq: int | None) -> str:
    """A delivery's dedupe key: the event, per attempt. The first attempt keeps the bare event (as every
    job had before there were several); each later one its own, since two providers may send the same
    event name (`task.completed`) for two different tasks of one job."""
    return event if seq is None or seq <= 1 else f"{event}#{seq}"


def decide(job: Job, report: Report) -> Decision:
    """What `report` does to `job` as the store holds it now (see the module's rules)."""
    current = job.current_attempt()
    seq = report.seq if report.seq is not None else (current.seq if current is not None else None)
    target = job.attempt(seq) if seq is not None else None
    if target is None or current is None or target.seq == current.seq:
        return _on_current(job, report, seq, target)
    return _on_earlier(job, report, target)


def _ended(target: AttemptRecord | None, report: Report, *, current: bool) -> AttemptEnd | None:
    """The attempt's end, when the report is final and the attempt still alive (or, for the current
    one, not yet written final: its submission's answer may have said so just before)."""
    seen = report.observation.status
    if target is None or seen not in FINAL:
        return None
    if target.state in (COMPLETED, FAILED) and not current:
        return None
    if seen is Status.COMPLETED:
        return AttemptEnd(target.seq, COMPLETED, cost_usd=report.cost_usd)
    return AttemptEnd(target.seq, FAILED, error=report.observation.error or PROVIDER_FAILED)


def _on_current(job: Job, report: Report, seq: int | None, target: AttemptRecord | None) -> Decision:
    observation = report.observation
    machine = status_machine.apply(job.status, observation, asked=status_machine.images_asked(job.request))
    effect = str(machine.outcome)
    if machine.applied and machine.status is Status.COMPLETED:
        end = _ended(target, report, current=True) if target is not None else None
        cost = total_cost(job.attempts, end) if target is not None else report.cost_usd
        late = _late_change(job, _after(job, end, status=Status.COMPLETED))
        return Decision(seq, machine, Complete(machine.images), effect, end, cost, True, late_polls=late)
    if machine.applied and machine.status is Status.FAILED:
        end = _ended(target, report, current=True)
        error = observation.error or PROVIDER_FAILED
        if job.candidates and job.status is not Status.TIMED_OUT:
            return Decision(seq, machine, NextCandidate(), effect, end)
        back = fall_back(job, end)
        if back is not None:
            return Decision(seq, machine, back, "fallback", end, late_polls=back.late_polls)
        late = _late_change(job, _after(job, end, status=Status.FAILED))
        return Decision(seq, machine, Fail(error), effect, end, late_polls=late)
    if machine.applied:
        return Decision(seq, machine, Advance(machine.status), effect)
    # Not applied: the job is final already (or the report is older news). The attempt still takes
    # the final state its provider reports if it had none, and its cost is counted.
    end = _ended(target, report, current=False) if target is not None and target.alive else None
    conflict = None
    if machine.outcome is Outcome.CONFLICT:
        conflict = {"kept": str(job.status), "reported": str(observation.status), "by": str(report.source)}
    if end is None:
        return Decision(seq, machine, Nothing(), effect, conflict=conflict)
    cost = total_cost(job.attempts, end)
    late = _late_change(job, _after(job, end))
    return Decision(seq, machine, Nothing(), effect, end, cost, end.cost_usd is not None, conflict, late)


def _on_earlier(job: Job, report: Report, target: AttemptRecord) -> Decision:
    """A report on an attempt the job no longer follows (a reroute left it alive, or the job follows
    another that completed first)."""
    observation = report.observation
    asked = status_machine.images_asked(job.request)
    # The attempt's own status machine: alive is "submitted" as far as it is concerned.
    own = {COMPLETED: Status.COMPLETED, FAILED: Status.FAILED}.get(target.state or "", Status.SUBMITTED)
    machine = status_machine.apply(own, observation, asked=asked)
    seq = target.seq
    if machine.outcome is Outcome.CONFLICT:
        # The attempt's first final state stands, as a job's does.
        disagreement = {
            "kept": str(own),
            "reported": str(observation.status),
            "by": str(report.source),
            "attempt": _named(target),
        }
        return Decision(seq, machine, Nothing(), str(Outcome.CONFLICT), conflict=disagreement)
    end = _ended(target, report, current=False) if machine.applied else None
    if end is None:
        # Progress of an earlier attempt tells nothing about the job.
        unchanged = status_machine.Decision(Outcome.UNCHANGED, job.status, "an earlier attempt's progress")
        return Decision(seq, unchanged, Nothing(), str(Outcome.UNCHANGED))
    cost = total_cost(job.attempts, end)
    if end.state == FAILED:
        ended = status_machine.Decision(Outcome.UNCHANGED, job.status, "an earlier attempt failed")
        return Decision(seq, ended, Nothing(), "attempt_ended", end, late_polls=_late_change(job, _after(job, end)))
    if job.status not in FINAL:
        # The first attempt to complete completes the job, which follows it from now on. The attempt the
        # job followed until now goes on if it was sent (it may deliver, and charge, too).
        late = _late_change(job, _after(job, end, provider=target.provider, status=Status.COMPLETED))
        step = Complete(machine.images, follow=target)
        current = job.current_attempt()
        unsent = (
            current is not None and current.state in (None, "not_sent") and job.submit_state is not SubmitState.SENDING
        )
        return Decision(
            seq,
            machine,
            step,
            str(Outcome.APPLIED),
            end,
            cost,
            True,
            late_polls=late,
            abandon=current.seq if unsent and current is not None else None,
        )
    # The job was completed (or failed) by another attempt: this one's result is kept on it, not on the job.
    first = next((item for item in job.attempts if item.state == COMPLETED), None)
    conflict: dict[str, Any] = {"kept": str(job.status), "reported": COMPLETED, "by": str(report.source)}
    if first is not None:
        conflict.update(first=_named(first), second=_named(target))
        conflict["message"] = (
            f"attempt {target.seq} at {target.provider} completed too, after attempt {first.seq} at "
            f"{first.provider} had completed the job: the first stands, and both may charge"
        )
    else:
        conflict["attempt"] = _named(target)
    unchanged = status_machine.Decision(Outcome.CONFLICT, job.status, "another attempt finished the job first")
    late = _late_change(job, _after(job, end))
    return Decision(seq, unchanged, Nothing(), str(Outcome.CONFLICT), end, cost, True, conflict, late)


def _named(item: AttemptRecord) -> dict[str, Any]:
    return {"seq": item.seq, "provider": item.provider, "provider_task_id": item.provider_task_id}


def _after(job: Job, end: AttemptEnd | None, **changes: Any) -> Job:
    """The job as it will be once `end` and `changes` (its provider, its status) are written."""
    if end is not None:
        attempts = tuple(
            dataclasses.replace(item, state=end.state) if item.seq == end.seq else item for item in job.attempts
        )
        changes["attempts"] = attempts
    return dataclasses.replace(job, **changes)


def _late_change(before: Job, after: Job) -> LatePolls | None:
    """Whether late polls start or stop being needed: None when that does not change, so that a report
    on a job with one attempt writes no more than it ever did."""
    had, has = late_targets(before), late_targets(after)
    if bool(had) == bool(has):
        return None
    return LatePolls(has[0].provider if has else None)
