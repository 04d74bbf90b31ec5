"""The store's named operations, written once for every engine (SQLite, PostgreSQL).

Each operation that changes state is one transaction: a plain function of a `Tx` handed to the
engine's `_write`, which returns only after COMMIT. Reads go through the engine's `_read` (and
`_lookup_one` for a read by primary key). Listeners hear which jobs changed after each commit (for
`?wait=N`, the dashboard's stream) and when notifications were queued (the outbox worker).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from service.domain import attempt, budget, measure, report
from service.domain import circuit as circuits
from service.domain import reroute as rerouting
from service.domain import status as status_machine
from service.domain.attempt import SubmitResult
from service.domain.job import AttemptRecord, Event, Job, rfc3339
from service.domain.status import FINAL, Observation, Source, Status
from service.domain.work import Lane, SubmitState, WorkKind
from service.ids import job_id_floor
from service.media import MediaFile
from service.store.base import (
    Applied,
    CallbackResult,
    Due,
    LatePoll,
    LeaseFor,
    NewJob,
    OutboxPolicy,
    ReceiptKind,
    TaskIdConflict,
    WriterStats,
)
from service.store.budget_queries import BudgetQueries
from service.store.budget_queries import exhausted as ledger_exhausted
from service.store.outbox_queries import OutboxQueries
from service.store.purge_queries import PurgeQueries
from service.store.session_queries import SessionQueries
from service.store.tx import (
    ATTEMPTS_SQL,
    REFUSED_LOG_SIZE,
    Dialect,
    Listener,
    Row,
    Tx,
    attempt_from_row,
    circuit_from_row,
    dumps,
    job_from_row,
    loads,
    probe,
)

log = logging.getLogger("jobhook")
# (provider, state) of each attempt a commit ended; (from, to, reason) of each failover it made.
AttemptListener = Callable[[Sequence[tuple[str, str]], Sequence[tuple[str, str, str]]], None]

T = TypeVar("T")


# A provider's newest finished attempts, by the `attempts_finished` index (migration 10 / PostgreSQL 7).
MEASURE_SQL = (
    "SELECT state, ended_at - started_at AS seconds FROM attempts "
    "WHERE provider = ? AND state IN ('completed', 'failed') AND ended_at IS NOT NULL "
    "ORDER BY ended_at DESC LIMIT ?"
)


def claim(tx: Tx, job: Job, lease_for: LeaseFor) -> Job | None:
    """Mark the queued job "sending" at its provider, or at the first of its candidates that its circuit
    lets it try now (SPEC §8); None when it is not sent now.

    A provider whose circuit is open (no probe for this job) is passed over while a later candidate's
    is not: its attempt ends `not_sent` with an error saying until when, and the job moves on. When
    every one left is shut, the job waits `queued` for the first to half-open (a single provider waits
    for its own). A provider `lease_for` gives no lease is left to the work queue, due now."""
    while True:
        lease_until = lease_for(job.provider)
        if lease_until is None:
            tx.schedule(job.id, WorkKind.SUBMIT, job.provider, tx.now, 0)
            tx.wake(tx.now)
            return None
        permission = tx.permit(job.id, job.provider, job.request, lease_until)
        if isinstance(permission, budget.Refusal):
            # A daily cap refuses it (SPEC §9): nothing is sent; the job waits for the reset.
            tx.budget_wait(job.id, job.provider, permission)
            return None
        if not isinstance(permission, circuits.Blocked):
            tx.mark_sending(job.id, job.provider, lease_until)
            return tx.job(job.id)
        later = [
            (item.provider, circuits.may_try(tx.circuit(item.provider), tx.now, job.id)) for item in job.candidates
        ]
        step = circuits.when_shut(job.provider, permission.until, later)
        if isinstance(step, circuits.WaitFor):
            tx.circuit_wait(job.id, step.provider, step.until, lane=job.provider)
            return None
        tx.end_attempt(job.id, str(attempt.AttemptState.NOT_SENT), error=dumps(step.error.to_json()))
        tx.failover(job, circuits.CIRCUIT_OPEN_CODE, wake=False)
        job = tx.job(job.id)


class Store(OutboxQueries, PurgeQueries, SessionQueries, BudgetQueries, abc.ABC):
    """jobhook's state; one subclass per engine provides the connections and the schema."""

    dialect: Dialect

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        mirror_images: bool = False,
        policy: OutboxPolicy | None = None,
    ) -> None:
        """`mirror_images`: a job completed with provider URLs gets a 'mirror' row in the same commit;
        `policy`: which events go to the outbox, and the provider health thresholds."""
        self.mirror_images = mirror_images
        self.policy = policy or OutboxPolicy()
        self.degraded: set[str] = set()
        self._clock = clock
        self._outbox_listeners: list[Callable[[], None]] = []
        self._due_listeners: list[Callable[[float], None]] = []
        self._listeners: list[Listener] = []
        self._attempt_listeners: list[AttemptListener] = []

    # -- what each engine provides ----------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Apply the migrations this database lacks; return the schema version."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def _write(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in a write transaction; return its value once committed (StorageError if not)."""

    @abc.abstractmethod
    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def _lookup_one(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """A read by primary key; an engine may make it cheaper than `_read`."""
        return await self._read(sql, params)

    @property
    def write_stats(self) -> WriterStats:
        """How many commits, and how many writes they held."""
        return WriterStats()

    def _tx(self, db: Any) -> Tx:
        return Tx(db, self._clock(), dialect=self.dialect, mirror_images=self.mirror_images, policy=self.policy)

    # -- listeners ---------------------------------------------------------------------------------

    def add_outbox_listener(self, wake: Callable[[], None]) -> None:
        """`wake()` is called after every commit that queued notifications."""
        self._outbox_listeners.append(wake)

    def add_due_listener(self, wake: Callable[[float], None]) -> None:
        """`wake(due_at)` is called after a commit that made waiting work due (a circuit closed)."""
        self._due_listeners.append(wake)

    def add_listener(self, listener: Listener) -> None:
        """`listener(job_ids)` is called after every commit that changed those jobs."""
        self._listeners.append(listener)

    def add_attempt_listener(self, listener: AttemptListener) -> None:
        """`listener(ended, failovers)` is called after every commit that ended attempts, (provider,
        state) each, or failed jobs over, (from, to, reason) each: /metrics counts them."""
        self._attempt_listeners.append(listener)

    def _committed(self, tx: Tx) -> None:
        """After a commit, in the event loop: tell whoever listens what it changed."""
        if tx.attempt_ends or tx.failovers:
            for heard in self._attempt_listeners:
                heard(tuple(tx.attempt_ends), tuple(tx.failovers))
        for job_id, status, by in tx.finished:  # submissions are logged by the engine; their ends here
            log.info("finished %s: %s%s", job_id, status, f" (by {by})" if by else "")
        for provider, effect in tx.circuit_effects:
            if isinstance(effect, circuits.Opened):
                until = rfc3339(effect.until)
                log.warning(
                    "circuit of %s opened until %s: %s (%d in a row)", provider, until, effect.reason, effect.failures
                )
            else:
                log.info("circuit of %s closed", provider)
        for refusal in tx.exhausted:
            log.warning(
                "budget of %s spent for %s: %s", refusal.scope, budget.day_of(refusal.reset_at - 1), refusal.message
            )
        for provider, degraded in tx.health.items():
            (self.degraded.add if degraded else self.degraded.discard)(provider)
        if tx.wake_at is not None:
            for wake_due in self._due_listeners:
                wake_due(tx.wake_at)
        if tx.outbox_changed:
            for wake in self._outbox_listeners:
                wake()
        if tx.changed:
            changed = frozenset(tx.changed)
            for listener in self._listeners:
                listener(changed)

    # -- secrets and health ------------------------------------------------------------------------

    async def secret(self, generate: Callable[[], str]) -> str:
        """The signing key kept in the database, made once on first use."""

        def write(tx: Tx) -> str:
            row = tx.one("SELECT value FROM meta WHERE key = 'secret'")
            if row is not None:
                return str(row["value"])
            value = generate()
            tx.execute("INSERT INTO meta (key, value) VALUES ('secret', ?)", (value,))
            return value

        return await self._write(write)

    async def write_probe(self) -> None:
        """A real write (readiness: the disk takes writes, the lock can be had)."""

        def write(tx: Tx) -> None:
            probe(tx.db)

        return await self._write(write)

    # -- jobs --------------------------------------------------------------------------------------

    async def create_job(self, new: NewJob, lease_for_all: LeaseFor | None = None) -> tuple[Job, bool]:
        """Insert a job, or return the one with the same idempotency key (created = False).

        A job jobhook sends at once (`new.submit_lease_until`) is marked "sending"; when its provider's
        circuit is open, it goes to a later candidate whose circuit is not (`claim`, with
        `lease_for_all`: by default every provider's lease is the first's), or waits.

        Raises budget.OverBudget when a daily cap refuses the job's first attempt (SPEC §9): no job is
        made and nothing is sent (the cap's first refusal of the day is recorded, and told)."""

        def write(tx: Tx) -> tuple[Job, bool] | budget.Refusal:
            if new.idempotency_key is not None:
                row = tx.one("SELECT * FROM jobs WHERE idempotency_key = ?", (new.idempotency_key,))
                if row is not None:
                    return job_from_row(row), False
            sending = new.submit_lease_until is not None
            shut = False  # the provider's circuit is open: the job is not sent there now (SPEC §8)
            if new.submit_lease_until is not None:
                permission = tx.permit(new.id, new.provider, new.request, new.submit_lease_until, new_attempt=True)
                if isinstance(permission, budget.Refusal):
                    ledger_exhausted(tx, permission)
                    return permission
                if isinstance(permission, circuits.Blocked):
                    sending, shut = False, True
            tx.execute(
                "INSERT INTO jobs (id, provider, status, request, metadata, callback_url_registered, "
                "submitted_by_backend, submit_state, submit_attempts, idempotency_key, request_hash, "
                "created_at, updated_at, candidates, max_price_usd) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.provider,
                    dumps(dict(new.request)),
                    dumps(dict(new.metadata)) if new.metadata is not None else None,
                    int(new.callback_url_registered),
                    int(new.submitted_by_backend),
                    SubmitState.SENDING if sending else None,
                    1 if sending else 0,
                    new.idempotency_key,
                    new.request_hash,
                    tx.now,
                    tx.now,
                    dumps([item.to_json() for item in new.candidates]) if new.candidates else None,
                    new.max_price_usd,
                ),
            )
            tx.start_attempt(new.id, new.provider, tries=1 if sending else 0)
            tx.schedule(new.id, WorkKind.DEADLINE, Lane.INTERNAL, new.deadline_at, 0)
            if new.submit_lease_until is not None and sending:
                tx.schedule(new.id, WorkKind.SUBMIT, new.provider, new.submit_lease_until, 0)
            elif new.submit_at is not None:
                tx.schedule(new.id, WorkKind.SUBMIT, new.provider, new.submit_at, 0)
            tx.event(
                new.id,
                "created",
                None,
                {
                    "provider": new.provider,
                    "submitted_by": "backend" if new.submitted_by_backend else "jobhook",
                    **({"candidates": [item.provider for item in new.candidates]} if new.candidates else {}),
                },
            )
            if shut:
                lease_for = lease_for_all or (lambda provider: new.submit_lease_until)
                claim(tx, tx.job(new.id), lease_for)
            return tx.job(new.id), True

        made = await self._write(write)
        if isinstance(made, budget.Refusal):
            raise budget.OverBudget(made)
        return made

    async def begin_submit(self, job_id: str, lease_for: LeaseFor, *, take_due: bool = False) -> Job | None:
        """Mark a queued job's next attempt as in flight (`claim`: at the first of its candidates whose
        circuit lets it); None if it is not to be sent now (waiting for a circuit, left to the work queue,
        settled, or already in flight).

        `lease_for(provider)`: the lease of a submission to that provider, or None if the caller will not
        send to it (then the work queue does). `take_due`: the caller is not the work queue holding the
        job's 'submit' row, so the row must be due and held by nobody: the request that failed the job
        over claims its next attempt so, and never one that a worker is already sending."""

        def write(tx: Tx) -> Job | None:
            job = tx.job(job_id)
            if job.status is not Status.QUEUED or job.submit_state is SubmitState.SENDING or job.submitted_by_backend:
                return None
            if take_due and not tx.take_due(job_id, WorkKind.SUBMIT):
                return None
            return claim(tx, job, lease_for)

        return await self._write(write)

    async def record_submit(self, job_id: str, result: SubmitResult, *, claim_next: bool = False) -> Job:
        """Write the outcome of a submission attempt as `attempt.decide` decides it (SPEC §3).

        Should the job fail over, its next attempt is due now, not claimed (SPEC §8): `claim_next`, the
        caller claims it at once itself (`begin_submit(take_due=True)`), so the work queue is not woken
        for it; a crash before that leaves it due, for the work queue after a restart."""

        def write(tx: Tx) -> Job:
            job = tx.job(job_id)
            decision = attempt.decide(job, result, now=tx.now)
            tx.event(job_id, *decision.event)
            tx.credits(job.provider, decision.credits.remaining, decision.credits.exhausted)
            # Every answer tells of the provider's health, one to a job already settled too.
            verdict = circuits.verdict(result, past_the_retries=decision.past_the_retries)
            tx.circuit_outcome(job_id, job.provider, verdict)
            if isinstance(decision.step, attempt.Settled):
                self._write_unfollowed(tx, job, result)
                return tx.job(job_id)  # as the answer left it (a late answer is written on its attempt)
            self._write_attempt(tx, job, decision, wake_next=not claim_next)
            return tx.job(job_id)

        return await self._write(write)

    def _write_unfollowed(self, tx: Tx, job: Job, result: SubmitResult) -> None:
        """An answer for an attempt the job stopped following while it was in flight (an earlier one
        completed the job, SPEC §8): written on the attempt, which is followed late if it may deliver."""
        state = str(attempt.attempt_state(result))
        late = report.unfollowed_answer(job, state, task_id=result.task_id, cost_usd=result.cost_usd)
        if late is None:
            return
        end = late.end
        error = dumps(result.error.to_json()) if result.error is not None else None
        fields: dict[str, Any] = {"provider_task_id": late.task_id, "error": error}
        if end.cost_usd is not None:
            fields["cost_usd"] = end.cost_usd
        tx.end_attempt(job.id, end.state, ended=late.ended, seq=end.seq, **fields)
        if late.cost_usd is not None:
            tx.update(job.id, cost_usd=late.cost_usd)
        tx.late_polls(job.id, late.late_polls)

    def _write_attempt(self, tx: Tx, job: Job, decision: attempt.SubmitDecision, *, wake_next: bool = True) -> None:
        """Write a decision that changes the job: its fields, its history (cause before consequence),
        what the answer already says of the task (the status machine's), then the next due work."""
        step, result = decision.step, decision.outcome
        if decision.unschedule:
            tx.unschedule(job.id, *decision.unschedule)
        fields: dict[str, Any] = {"submit_state": decision.submit_state}
        if decision.status is not None:
            fields["status"] = str(decision.status)
        if decision.status is Status.SUBMITTED:
            fields["submitted_at"] = tx.now
        if decision.task_id is not None:
            fields["provider_task_id"] = decision.task_id
        if isinstance(step, attempt.Final):
            fields.update(error=dumps(step.error.to_json()), finished_at=tx.now, resolved_by=str(Source.SUBMIT))
        try:
            tx.update(job.id, **fields)
        except tx.dialect.integrity_errors:
            raise TaskIdConflict(decision.task_id) from None
        if decision.status is not None:
            tx.event(job.id, "status", str(decision.status), decision.status_detail)
        if decision.state is not None:
            state = decision.state
            ended = state in (attempt.AttemptState.REJECTED, attempt.AttemptState.COMPLETED)
            # A not_sent attempt that is retried at the same provider goes on; one left for the next
            # candidate, or for an earlier attempt the job follows again, ends here.
            ended = ended or isinstance(step, attempt.NextCandidate | report.FallBack)
            error = decision.attempt_error.to_json() if decision.attempt_error is not None else None
            tx.end_attempt(
                job.id,
                str(state),
                ended=ended,
                provider_task_id=decision.task_id,
                error=dumps(error) if error is not None else None,
            )
        if isinstance(step, attempt.NextCandidate):
            tx.failover(tx.job(job.id), str(decision.state), wake=wake_next)
            return
        if isinstance(step, report.FallBack):
            tx.fall_back(tx.job(job.id), step)
            return
        if result.media:
            tx.update(job.id, media=dumps([media.to_json() for media in result.media]))
        if result.observation is not None:
            tx.apply(tx.job(job.id), report.Report(result.observation, Source.SUBMIT, cost_usd=result.cost_usd))
        for type_ in decision.notify:
            tx.notify(type_, job=tx.job(job.id))
        if isinstance(step, attempt.Retry):
            tx.schedule(job.id, WorkKind.SUBMIT, job.provider, step.at, 0)
        elif isinstance(step, attempt.Poll):
            after = tx.job(job.id)  # the answer may already have finished it (a synchronous one)
            if not after.finished and after.provider_task_id:
                tx.schedule(job.id, WorkKind.POLL, job.provider, step.at, 0)

    async def record_poll(
        self,
        job_id: str,
        observation: Observation | None,
        detail: Mapping[str, Any],
        *,
        outcome: str,
        next_poll: tuple[float, int] | None,
        cost_if_completed: float | None = None,
        confirming: bool = False,
        seq: int | None = None,
        late: LatePoll | None = None,
    ) -> Applied:
        """Write one poll: what it saw (if anything), and when to poll next unless the job finished.

        `confirming`: the poll that checks a bare webhook's claim; what it confirms is the callback's.
        `seq`: the attempt asked about (None: the job's current one). `late`: a late poll (of an attempt
        the job no longer follows), whose row goes on to the next such attempt, if any (SPEC §8).
        """

        def write(tx: Tx) -> Applied:
            job = tx.job(job_id)
            decision = None
            if confirming:
                tx.unschedule(job_id, WorkKind.CONFIRM)
            if observation is not None:
                source = Source.CALLBACK if confirming else Source.POLL
                seen = report.Report(observation, source, seq, cost_if_completed)
                decision = tx.apply(job, seen, record=("poll", outcome, detail)).machine
                job = tx.job(job_id)
            else:
                tx.event(job_id, "poll", outcome, detail)
            current = job.current_attempt()
            if late is not None:
                self._next_late_poll(tx, job, seq, late, next_poll)
            elif job.status in FINAL:
                tx.unschedule(job_id)
            elif seq is not None and current is not None and current.seq != seq:
                pass  # the job moved on while this poll was out: its new attempt is polled on its own terms
            elif next_poll is not None:
                tx.schedule(job_id, WorkKind.POLL, job.provider, next_poll[0], next_poll[1])
            else:
                tx.unschedule(job_id, WorkKind.POLL)
            return Applied(job, decision)

        return await self._write(write)

    async def record_callback(
        self,
        job_id: str,
        event_key: str,
        observation: Observation,
        detail: Mapping[str, Any],
        *,
        bind_task_id: str | None,
        cost_if_completed: float | None,
        poll_if_bound: float | None = None,
        seq: int | None = None,
        seen: Job | None = None,
    ) -> CallbackResult:
        """Write one genuine delivery: bind the task id if new, then apply it once per event key.

        `seq`: the attempt the delivery is about (None: the job's current one); an earlier attempt's
        results still count (SPEC §8: a reroute left it alive). `seen`: the job as the caller read it,
        given only when the delivery is for its current attempt; an engine may then write the plain case
        in fewer round trips if the job is unchanged since (PostgreSQL: service.store.pg_callback). This
        transaction is the rule for every case."""

        def write(tx: Tx) -> CallbackResult:
            job = tx.job(job_id)
            if self._bind_from_callback(tx, job, bind_task_id, seq):
                job = tx.job(job_id)
                if poll_if_bound is not None:
                    self._poll_bound(tx, job, seq, poll_if_bound)
            if not tx.first_receipt(job_id, event_key, detail):
                return CallbackResult(ReceiptKind.DUPLICATE, job, None)
            target = job.attempt(seq) if seq is not None else None
            tx.callback_came(target.provider if target is not None else job.provider)
            decision = tx.apply(
                job,
                report.Report(observation, Source.CALLBACK, seq, cost_if_completed),
                record=("callback", "accepted", {**detail, "event": event_key}),
            )
            return CallbackResult(ReceiptKind.ACCEPTED, tx.job(job_id), decision.machine)

        return await self._write(write)

    async def record_claim(
        self,
        job_id: str,
        event_key: str,
        detail: Mapping[str, Any],
        *,
        bind_task_id: str | None,
        seq: int | None = None,
    ) -> ReceiptKind:
        """A bare webhook (no headers to check): keep its receipt and schedule the poll that confirms it.

        Nothing is applied from the claim itself; the confirming poll, due now, applies what it sees.
        `seq`: the attempt it is about; one the job no longer follows is confirmed by its late poll, now.
        """

        def write(tx: Tx) -> ReceiptKind:
            job = tx.job(job_id)
            self._bind_from_callback(tx, job, bind_task_id, seq)
            target = job.attempt(seq) if seq is not None else None
            if target is not None and not report.attempt_is_current(job, seq):
                return self._claim_late(tx, job, target, event_key, detail)
            if not tx.first_receipt(job_id, event_key, detail):
                if not job.finished:
                    # An earlier copy's claim may have been refuted by its poll, and this one be true now:
                    # confirm again. A 'confirm' row still there (due, or leased by a poll in flight, which
                    # was sent after the first copy came) already answers this copy: one query, not two.
                    tx.schedule(job_id, WorkKind.CONFIRM, job.provider, tx.now, 0, replace=False)
                return ReceiptKind.DUPLICATE
            tx.callback_came(job.provider)
            tx.event(job_id, "callback", "accepted", {**detail, "event": event_key, "effect": "confirming"})
            tx.schedule(job_id, WorkKind.CONFIRM, job.provider, tx.now, 0)
            return ReceiptKind.ACCEPTED

        return await self._write(write)

    async def record_media(self, job_id: str, held: Mapping[int, MediaFile], detail: Mapping[str, Any]) -> Job:
        """Images jobhook now holds (index → file); the 'mirror' row is done."""

        def write(tx: Tx) -> Job:
            job = tx.job(job_id)
            media: list[Any] = list(job.media) + [None] * max(0, job.image_count() - len(job.media))
            for index, file in held.items():
                media[index] = file.to_json()
            tx.update(job_id, media=dumps(media))
            tx.unschedule(job_id, WorkKind.MIRROR)
            tx.event(job_id, "mirror", "done", {**detail, "images": sorted(held)})
            return tx.job(job_id)

        return await self._write(write)

    async def reschedule(
        self,
        job_id: str,
        kind: WorkKind,
        lane: str,
        due_at: float,
        attempt: int,
        event: tuple[str, str, Mapping[str, Any]],
    ) -> None:
        """Try `kind` again at `due_at` (attempt number `attempt`), recording why."""

        def write(tx: Tx) -> None:
            tx.job(job_id)
            tx.schedule(job_id, kind, lane, due_at, attempt)
            tx.event(job_id, *event)

        return await self._write(write)

    def _bind_from_callback(self, tx: Tx, job: Job, task_id: str | None, seq: int | None = None) -> bool:
        """A genuine callback names its task: bind the job (or the earlier attempt `seq` it is about) to
        it if it has none yet (True if bound)."""
        target = job.attempt(seq) if seq is not None else None
        if target is not None and not report.attempt_is_current(job, seq):
            # An earlier attempt, sent without a known outcome: its callback binds the attempt alone.
            if task_id is None or target.provider_task_id == task_id:
                return False
            if target.provider_task_id is not None:
                raise TaskIdConflict(task_id)
            state = str(attempt.AttemptState.ACCEPTED) if target.alive else target.state or "accepted"
            tx.end_attempt(job.id, state, ended=False, seq=target.seq, provider_task_id=task_id)
            detail = {"provider_task_id": task_id, "by": "callback", "attempt": target.seq, "provider": target.provider}
            tx.event(job.id, "bound", None, detail)
            return True
        if task_id is None or job.provider_task_id == task_id:
            return False
        if job.provider_task_id is not None:
            raise TaskIdConflict(task_id)
        self._bind(tx, job, task_id, by="callback")
        return True

    def _poll_bound(self, tx: Tx, job: Job, seq: int | None, at: float) -> None:
        """A callback bound a task id: poll it from `at` (an earlier attempt's, by late polls)."""
        if report.attempt_is_current(job, seq):
            if not job.finished:
                tx.schedule(job.id, WorkKind.POLL, job.provider, at, 0)
            return
        target = job.attempt(seq) if seq is not None else None
        if target is not None and target.alive:
            tx.schedule(job.id, WorkKind.LATE_POLL, target.provider, at, 0, replace=False)
            tx.wake_at = at if tx.wake_at is None else min(tx.wake_at, at)

    def _claim_late(
        self, tx: Tx, job: Job, target: AttemptRecord, event_key: str, detail: Mapping[str, Any]
    ) -> ReceiptKind:
        """A bare webhook about an attempt the job no longer follows: its late poll confirms it, now."""
        first = tx.first_receipt(job.id, event_key, detail)
        if target.alive and (first or target.provider_task_id is not None):
            tx.unschedule(job.id, WorkKind.LATE_POLL)
            tx.schedule(job.id, WorkKind.LATE_POLL, target.provider, tx.now, 0)
            tx.wake_at = tx.now if tx.wake_at is None else min(tx.wake_at, tx.now)
        if not first:
            return ReceiptKind.DUPLICATE
        tx.callback_came(target.provider)
        tx.event(job.id, "callback", "accepted", {**detail, "event": event_key, "effect": "confirming"})
        return ReceiptKind.ACCEPTED

    def _next_late_poll(
        self, tx: Tx, job: Job, seq: int | None, late: LatePoll, next_poll: tuple[float, int] | None
    ) -> None:
        """After a late poll of attempt `seq`: the row goes on to the next attempt to follow late, in its
        provider's lane, or goes when none is left (SPEC §8)."""
        following = report.next_late_target(job, seq, since=late.since) if next_poll is not None else None
        if following is None:
            tx.unschedule(job.id, WorkKind.LATE_POLL)
            return
        assert next_poll is not None
        if following.provider != late.lane:
            tx.unschedule(job.id, WorkKind.LATE_POLL)
        tx.schedule(job.id, WorkKind.LATE_POLL, following.provider, next_poll[0], next_poll[1])

    def _bind(self, tx: Tx, job: Job, task_id: str, *, by: str) -> None:
        other = tx.one(
            "SELECT id FROM jobs WHERE provider = ? AND provider_task_id = ? AND id != ?",
            (job.provider, task_id, job.id),
        )
        if other is not None:
            raise TaskIdConflict(task_id)
        fields: dict[str, Any] = {"provider_task_id": task_id, "submit_state": SubmitState.DONE}
        if job.submitted_at is None:
            fields["submitted_at"] = tx.now
        if job.status is Status.QUEUED:
            fields["status"] = "submitted"
        tx.update(job.id, **fields)
        current = job.current_attempt()
        seq = current.seq if current is not None else None
        tx.end_attempt(job.id, str(attempt.AttemptState.ACCEPTED), ended=False, seq=seq, provider_task_id=task_id)
        tx.event(job.id, "bound", None, {"provider_task_id": task_id, "by": by})
        if job.status is Status.QUEUED:
            tx.event(job.id, "status", "submitted", {"from": "queued", "by": by})

    async def bind_task_id(self, job_id: str, task_id: str, first_poll_at: float) -> Job:
        """`PATCH /v1/jobs/{id}`: the backend says which task it created. Idempotent for the same id."""

        def write(tx: Tx) -> Job:
            job = tx.job(job_id)
            if job.provider_task_id == task_id:
                return job
            if job.provider_task_id is not None:
                raise TaskIdConflict(task_id)
            self._bind(tx, job, task_id, by="backend")
            job = tx.job(job_id)
            if not job.finished:
                tx.schedule(job_id, WorkKind.POLL, job.provider, first_poll_at, 0)
            return job

        return await self._write(write)

    async def expire(self, job_id: str) -> Job:
        """The job's deadline (JOBHOOK_JOB_TIMEOUT) has come: time it out, unless it is finished."""

        def write(tx: Tx) -> Job:
            job = tx.job(job_id)
            tx.unschedule(job_id, WorkKind.DEADLINE)
            verdict = status_machine.on_deadline(
                job.status,
                has_task_id=job.provider_task_id is not None,
                sending=job.submit_state is SubmitState.SENDING,
                alive_elsewhere=report.alive_elsewhere(job) is not None,
            )
            if verdict is None:
                return job
            new_status, error = verdict
            fields: dict[str, Any] = {"status": str(new_status), "error": dumps(error.to_json()), "finished_at": tx.now}
            if job.submit_state is SubmitState.SENDING:
                fields["submit_state"] = SubmitState.UNCERTAIN  # settled: nothing waits for this call's answer any more
            tx.update(job_id, **fields)
            if job.submit_state is SubmitState.SENDING:
                # Sent, and no answer will be waited for: the provider may charge (its price is kept).
                tx.end_attempt(job_id, str(attempt.AttemptState.UNCERTAIN), ended=False)
            tx.event(job_id, "status", str(new_status), {"from": str(job.status), "by": "deadline"})
            if new_status in FINAL:
                tx.unschedule(job_id)
            expired = tx.job(job_id)
            tx.notify(f"job.{new_status}", job=expired)
            return expired

        return await self._write(write)

    async def reroute(
        self, job_id: str, from_attempt: int | None, *, deadline_at: float
    ) -> tuple[rerouting.Verdict, Job]:
        """`POST /v1/jobs/{id}/reroute` (SPEC §8): move the job to its next candidate now, as
        `service.domain.reroute` decides, leaving attempt `from_attempt` (None: the current one). The
        attempt left stays alive if it may still deliver (followed by late polls when it has a task id);
        the job gets a new deadline, `deadline_at`, and its next submission is due now."""

        def write(tx: Tx) -> tuple[rerouting.Verdict, Job]:
            job = tx.job(job_id)
            verdict = rerouting.decide(job, from_attempt)
            if not isinstance(verdict, rerouting.Reroute):
                return verdict, job
            left = verdict.left
            if verdict.ends_left and left is not None:
                tx.end_attempt(job_id, "not_sent", seq=left.seq)
            # The caller claims the next attempt at once itself (`begin_submit(take_due=True)`), so the
            # work queue is not woken for it; a crash before that leaves it due, sent after a restart.
            tx.failover(job, rerouting.REASON, wake=False, note=verdict.detail(job.provider))
            if job.status is Status.TIMED_OUT:
                tx.update(job_id, finished_at=None, resolved_by=None)  # unfinished again, at its new provider
            tx.schedule(job_id, WorkKind.DEADLINE, Lane.INTERNAL, deadline_at, 0)
            tx.late_polls(job_id, verdict.late_polls)
            return verdict, tx.job(job_id)

        return await self._write(write)

    async def note(self, job_id: str, type_: str, outcome: str | None, detail: Mapping[str, Any]) -> None:
        """Record an event that changes nothing else (a stopped poll, a mirroring given up, …): nobody
        waiting on the job is woken by it."""

        def write(tx: Tx) -> None:
            tx.event(job_id, type_, outcome, detail, wake=False)

        return await self._write(write)

    async def record_refusal(self, job_id: str, code: str, detail: Mapping[str, Any]) -> None:
        """A refused delivery to the job's callback URL: on its history, within the job's bound
        (service.domain.history), and waking nobody."""

        def write(tx: Tx) -> None:
            tx.delivery_noise(job_id, "refused", code, detail)

        return await self._write(write)

    async def unschedule(self, job_id: str, kind: WorkKind) -> None:

        def write(tx: Tx) -> None:
            tx.unschedule(job_id, kind)

        return await self._write(write)

    async def log_refused(self, code: str, detail: Mapping[str, Any]) -> None:
        """A delivery refused before any job could be named: kept in a bounded log."""

        def write(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO refused_callbacks (at, code, detail) VALUES (?, ?, ?)",
                (tx.now, code, dumps(dict(detail))),
            )
            tx.execute(
                "DELETE FROM refused_callbacks WHERE id <= (SELECT MAX(id) FROM refused_callbacks) - ?",
                (REFUSED_LOG_SIZE,),
            )

        return await self._write(write)

    async def refused_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._read("SELECT * FROM refused_callbacks ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": row["at"], "code": row["code"], "detail": loads(row["detail"])} for row in rows]

    # -- due work ----------------------------------------------------------------------------------

    async def claim_due(self, provider: str, now: float, limit: int, lease_until: float) -> list[Due]:
        """Take up to `limit` due rows of `provider`, pushing their due time to `lease_until`."""
        if limit <= 0:
            return []

        def write(tx: Tx) -> list[Row]:
            cursor = tx.execute(
                "UPDATE due SET due_at = ? WHERE (job_id, kind) IN ("
                " SELECT job_id, kind FROM due WHERE provider = ? AND due_at <= ? ORDER BY due_at LIMIT ?"
                f"{tx.dialect.skip_locked}) RETURNING job_id, kind, provider, attempt",
                (lease_until, provider, now, limit),
            )
            return cursor.fetchall()

        rows = await self._write(write)
        return [Due(row["job_id"], WorkKind(row["kind"]), row["provider"], lease_until, row["attempt"]) for row in rows]

    async def next_due_at(self, provider: str) -> float | None:
        rows = await self._read("SELECT MIN(due_at) FROM due WHERE provider = ?", (provider,))
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def due_for(self, job_id: str) -> list[Due]:
        rows = await self._read("SELECT * FROM due WHERE job_id = ? ORDER BY due_at", (job_id,))
        return [
            Due(row["job_id"], WorkKind(row["kind"]), row["provider"], row["due_at"], row["attempt"]) for row in rows
        ]

    # -- reads -------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._lookup_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        attempts = await self._lookup_one(ATTEMPTS_SQL, (job_id,))
        return job_from_row(rows[0], tuple(attempt_from_row(row) for row in attempts))

    async def job_by_idempotency_key(self, key: str) -> Job | None:
        """The job an Idempotency-Key made, if any (its attempts left out)."""
        rows = await self._read("SELECT * FROM jobs WHERE idempotency_key = ?", (key,))
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(
        self, *, status: str | None, provider: str | None, before_id: str | None, limit: int
    ) -> list[Job]:
        """Newest first; `before_id` is the last id of the previous page (keyset pagination)."""
        clauses, params = [], []
        for column, value in (("status", status), ("provider", provider)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        if not rows:
            return []
        marks = ", ".join("?" for _ in rows)
        found: dict[str, list[AttemptRecord]] = {}
        sql = f"SELECT * FROM attempts WHERE job_id IN ({marks}) ORDER BY job_id, seq"
        for row in await self._read(sql, [row["id"] for row in rows]):
            found.setdefault(row["job_id"], []).append(attempt_from_row(row))
        return [job_from_row(row, tuple(found.get(row["id"], ()))) for row in rows]

    async def events(self, job_id: str, *, after_id: int = 0, limit: int | None = None) -> list[Event]:
        """The job's history, oldest first: from the event after `after_id` (keyset pagination), at
        most `limit` of them (all when None)."""
        sql = "SELECT * FROM job_events WHERE job_id = ? AND id > ? ORDER BY id"
        params: tuple[Any, ...] = (job_id, after_id)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = await self._read(sql, params)
        return [
            Event(row["id"], row["job_id"], row["at"], row["type"], row["outcome"], loads(row["detail"]))
            for row in rows
        ]

    async def usage_since(self, timestamp: float) -> dict[str, dict[str, Any]]:
        """Jobs created since `timestamp` per provider, and what they cost (ids are time-ordered)."""
        rows = await self._read(
            "SELECT provider, COUNT(*), COALESCE(SUM(cost_usd), 0) FROM jobs WHERE id >= ? GROUP BY provider",
            (job_id_floor(timestamp),),
        )
        return {row[0]: {"jobs": row[1], "cost_usd": round(row[2], 4)} for row in rows}

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (provider, status), kept by triggers in the same transactions as the jobs (on
        PostgreSQL in shards, summed here)."""
        rows = await self._read("SELECT provider, status, SUM(n) FROM job_counts GROUP BY provider, status")
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def provider_circuits(self) -> dict[str, circuits.Circuit]:
        """Every provider's circuit that has a row (one without is closed, never having failed)."""
        rows = await self._read("SELECT * FROM provider_circuits ORDER BY provider")
        return {row["provider"]: circuit_from_row(row) for row in rows}

    async def provider_measurements(self, providers: Iterable[str]) -> dict[str, measure.Measured]:
        """Each of `providers`' latency and success rate over its last measure.WINDOW finished attempts
        (SPEC §8); a provider with none is left out (unmeasured). One bounded read per provider, by the
        `attempts_finished` index: the cost does not grow with the attempts ever made."""
        measured: dict[str, measure.Measured] = {}
        for provider in providers:
            rows = await self._read(MEASURE_SQL, (provider, measure.WINDOW))
            if rows:
                measured[provider] = measure.measure([measure.Finished(row[0], float(row[1])) for row in rows])
        return measured

    async def counts(self) -> dict[str, int]:
        rows = await self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {row[0]: row[1] for row in rows}
