"""PostgreSQL: a callback in one round trip (schema 8's `jobhook_callback`, schema 12's batches).

The general transaction of a genuine callback (service.store.common's `record_callback`: the job's
locked read, its receipt, the provider's callback health, the status machine's writes, the job's
read again, `pg_notify`, COMMIT) is a dozen statements, each a round trip from a thread of the pool.
Most callbacks are the plain case, and that one is planned here instead, in Python, from the job as
the route read it, and written by one call of a server-side function (prepared, from the event
loop; in one statement and one transaction with the other plain callbacks that arrived meanwhile:
service.store.pg_batches):

- planned: a delivery for the job's current attempt (no task id to bind; the attempt's provider and
  task id are the job's, and it was submitted), which the status machine (service.domain.status, the
  one copy of its rules) moves forward, and which does not fail the job over to another candidate;
- the function writes the plan only if the job's row is still the version that was read (`xmin`),
  and the provider's callback health needs no reset; a repeat of a recorded event it takes whole;
- anything else — a conflict, an unchanged status, a bind, a failover, an earlier attempt's result,
  the job changed since it was read, a history past its bound — is written by the general
  transaction, so that every rule but the plain forward move stays in one piece of code.

The plan writes the same rows as the general transaction would (tests/integration/
test_pg_callback.py runs both over every (status, observation) pair and compares the tables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from service.domain import history
from service.domain import status as status_machine
from service.domain.job import Job
from service.domain.status import FINAL, Decision, JobError, Observation, Source, Status
from service.domain.work import TRACKING_KINDS, Lane
from service.ids import new_message_id
from service.store.base import OutboxPolicy
from service.store.tx import Dialect, Tx, dumps

# The call's 28 parameters are in the function's order (see the migration); service.store.pg_batches
# sends them, with other calls', as one JSON array. Lists go as text (JSON, or comma-joined names).
UNSCHEDULE = ",".join(str(kind) for kind in TRACKING_KINDS)


class _NoConnection:
    """A planned write runs no statement of its own: its `Tx` only collects what it changed."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        raise AssertionError("a planned callback executes no statement")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The rows of one first delivery, as the function's parameters, and what follows their COMMIT."""

    decision: Decision
    job: Job  # the job after the write
    tx: Tx  # what it changed (jobs, outbox, attempts ended, jobs finished), for the listeners
    columns: tuple[Any, ...]  # p_status … p_mirror_lane


def plan(
    seen: Job,
    event_key: str,
    observation: Observation,
    detail: Mapping[str, Any],
    cost_if_completed: float | None,
    *,
    now: float,
    dialect: Dialect,
    policy: OutboxPolicy,
    mirror_images: bool,
) -> Plan | None:
    """The first delivery of `event_key` for `seen` (the job as read), if it is the plain case; None
    when the general transaction must write it."""
    if seen.version is None or seen.provider_task_id is None or seen.submitted_at is None:
        return None
    # A job made before attempts were kept (schema 6) has none: its task is the job's own.
    current = seen.attempts[-1] if seen.attempts else None
    if current is not None and (current.provider, current.provider_task_id) != (seen.provider, seen.provider_task_id):
        return None  # not plainly the current attempt
    if any(item.alive or item.cost_usd is not None for item in seen.attempts[:-1]):
        # An earlier attempt may still deliver, or has a cost: the job's cost is a sum, its late polls
        # may change (SPEC §8, service.domain.report): the general transaction decides.
        return None
    decision = status_machine.apply(seen.status, observation, asked=status_machine.images_asked(seen.request))
    if not decision.applied:
        return None
    new = decision.status
    if new is Status.FAILED:
        # A failure fails over, falls back to an earlier attempt, or releases the attempt's budget
        # reservation (SPEC §8, §9): the general transaction writes each of those.
        return None
    tx = Tx(_NoConnection(), now, dialect=dialect, mirror_images=mirror_images, policy=policy)
    source = str(Source.CALLBACK)
    final = new in FINAL
    error: JobError | None = None  # the plain case never fails the job (above)
    error_text = None
    events: list[tuple[str, str, str]] = [
        ("callback", "accepted", dumps({**detail, "event": event_key, "effect": str(decision.outcome)}))
    ]

    attempts = seen.attempts
    attempt: tuple[Any, ...] = (None, None, None, None)
    if final and current is not None:
        cost = cost_if_completed if new is Status.COMPLETED else None
        ended = dataclasses.replace(current, state=str(new), cost_usd=cost, error=error, ended_at=now)
        attempts = (*attempts[:-1], ended)
        attempt = (current.seq, str(new), cost, error_text)
        tx.attempt_ends.append((current.provider, str(new)))

    after = dataclasses.replace(
        seen,
        status=new,
        updated_at=now,
        images=tuple(decision.images) if decision.images else seen.images,
        error=None if new is Status.COMPLETED else seen.error,
        cost_usd=cost_if_completed if new is Status.COMPLETED else seen.cost_usd,
        finished_at=now if final else seen.finished_at,
        resolved_by=source if final else seen.resolved_by,
        attempts=attempts,
        version=None,
    )
    tx.changed.add(seen.id)
    if final:
        tx.finished.append((seen.id, str(new), source))
    events.append(("status", str(new), dumps({"from": str(seen.status), "by": source})))
    if decision.ignored:
        kept = len(decision.images)
        ignored = {"offered": kept + decision.ignored, "kept": kept, "ignored": decision.ignored, "by": source}
        events.append(("images", "ignored", dumps(ignored)))
    notification: tuple[Any, ...] = (None, None, None, None)
    if final and tx.wants(f"job.{new}"):
        notification_id = new_message_id()
        payload = dumps({"job": after.to_json(base_url=policy.base_url)})
        notification = (notification_id, f"job.{new}", payload, ",".join(policy.destinations))
        queued = {"type": f"job.{new}", "id": notification_id, "destinations": list(policy.destinations)}
        events.append(("notification", "queued", dumps(queued)))
        tx.outbox_changed = True
    mirror = str(Lane.MIRROR) if new is Status.COMPLETED and decision.images and mirror_images else None
    columns = (
        str(new),
        bool(decision.images),
        dumps(list(decision.images)) if decision.images else None,
        new in FINAL,
        error_text,
        new is Status.COMPLETED,
        cost_if_completed if new is Status.COMPLETED else None,
        source if final else None,
        *attempt,
        dumps(events),
        UNSCHEDULE if final else None,
        *notification,
        mirror,
    )
    return Plan(decision, after, tx, columns)


def parameters(
    job_id: str,
    event_key: str,
    detail: Mapping[str, Any],
    *,
    now: float,
    version: int | None,
    provider: str,
    planned: Plan | None,
    channel: str,
    announcement: str | None,
) -> tuple[Any, ...]:
    """The function's 28 parameters: the delivery, a repeat's event, and the plan (if any)."""
    duplicate = dumps({**detail, "event": event_key})
    head = (job_id, event_key, now, duplicate, history.NOISE_EVENTS_PER_JOB)
    if planned is None:
        return (*head, None, provider, *([None] * 19), channel, None)
    return (*head, version, provider, *planned.columns, channel, announcement)


def _provider_failed() -> JobError:
    return JobError("provider_failed", "the provider reported the job failed")
