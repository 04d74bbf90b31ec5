"""The store's narrow interface: the values that cross it. One module per engine implements it."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

from service.domain.budget import Policy as BudgetPolicy
from service.domain.circuit import CircuitPolicy
from service.domain.job import Candidate, Job
from service.domain.status import Decision, Source
from service.domain.work import WorkKind

# A submission to this provider, sent now, is "sending" until then; None: the caller will not send to
# it, so the work queue does (a synchronous provider's call, which may take minutes, is never a request's).
LeaseFor = Callable[[str], float | None]


@dataclasses.dataclass(frozen=True)
class NewJob:
    id: str
    provider: str
    request: Mapping[str, Any]
    metadata: Mapping[str, Any] | None
    callback_url_registered: bool
    submitted_by_backend: bool
    idempotency_key: str | None
    request_hash: str | None
    deadline_at: float
    # Jobs jobhook submits itself at once start "sending": the lease on their 'submit' row expires at
    # this time, and a job found still "sending" after it is an uncertain submission, never re-sent.
    submit_lease_until: float | None
    # Jobs submitted by the work queue instead (synchronous providers: the call may take minutes).
    submit_at: float | None = None
    # SPEC §8: the providers to move to, in order, should an attempt end not_sent, rejected or failed.
    candidates: tuple[Candidate, ...] = ()
    max_price_usd: float | None = None


@dataclasses.dataclass(frozen=True)
class Due:
    job_id: str
    kind: WorkKind
    provider: str  # the lane: the provider's name, or a `Lane`
    due_at: float
    attempt: int


@dataclasses.dataclass(frozen=True)
class Applied:
    """What an observation did: the job after it, and the status machine's decision."""

    job: Job
    decision: Decision | None


@dataclasses.dataclass(frozen=True)
class LatePoll:
    """A late poll (SPEC §8: of an attempt the job no longer follows): the lane its row ran in, and the
    oldest start an attempt may have to be polled still (late polls give up on older ones)."""

    lane: str
    since: float


class ReceiptKind(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclasses.dataclass(frozen=True)
class CallbackResult:
    kind: ReceiptKind
    job: Job
    decision: Decision | None


@dataclasses.dataclass(frozen=True)
class OutboxPolicy:
    """What the store writes to the outbox in the same transaction as a change (SPEC §5, §6)."""

    destinations: tuple[str, ...] = ()
    notify_on: frozenset[str] = frozenset({"completed", "failed", "timed_out"})
    degraded_after: int = 3
    credits_low: float = 20.0
    base_url: str = ""  # where the job snapshots' links to jobhook's own images point
    circuits: CircuitPolicy = dataclasses.field(
        default_factory=CircuitPolicy
    )  # when a provider's circuit opens (SPEC §8)
    # JOBHOOK_POLL_INTERVAL: when an attempt the job follows again (or follows late) is first polled.
    poll_interval: float = 5.0
    # The daily caps and the prices an attempt reserves (SPEC §9).
    budget: BudgetPolicy = dataclasses.field(default_factory=BudgetPolicy)


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    id: int
    notification_id: str
    destination: str
    status: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None
    type: str
    job_id: str | None
    provider: str | None


@dataclasses.dataclass(frozen=True)
class StoredNotification:
    id: str
    type: str
    job_id: str | None
    provider: str | None
    payload: Mapping[str, Any]
    created_at: float


@dataclasses.dataclass
class WriterStats:
    """Write transactions and the writes they held, for the bench and /metrics (SQLite's group commit
    puts many writes in one commit; PostgreSQL commits each write on its own)."""

    commits: int = 0
    writes: int = 0
    largest: int = 0
    write_seconds: float = 0.0  # running the writes' statements
    commit_seconds: float = 0.0  # COMMIT and its fsync


def redact_url(url: str) -> str:
    """A database URL without its password, for messages and logs. The password runs to the authority's
    last `@`: an unescaped `@` in it (`u:a@b@host`) must not leave its tail showing."""
    return re.sub(r"(//[^:/@]*):[^/]*@", r"\1:***@", url)


class TaskIdConflict(Exception):
    """The task id is already bound to another job, or this job is bound to another task id."""


class JobNotFound(Exception):
    """No job has this id."""


__all__ = [
    "Applied",
    "CallbackResult",
    "Due",
    "JobNotFound",
    "LatePoll",
    "NewJob",
    "OutboxPolicy",
    "OutboxRow",
    "ReceiptKind",
    "Source",
    "StoredNotification",
    "TaskIdConflict",
    "WriterStats",
]


# What a purge may remove: finished jobs. `timed_out` is included: see `service.maintenance.purge`.
PURGEABLE = ("completed", "failed", "timed_out")


@dataclasses.dataclass
class PurgedRows:
    """Rows a purge removed (or would remove) beside the jobs themselves."""

    events: int = 0
    receipts: int = 0
    notifications: int = 0
    deliveries: int = 0

    def add(self, other: PurgedRows) -> None:
        self.events += other.events
        self.receipts += other.receipts
        self.notifications += other.notifications
        self.deliveries += other.deliveries
