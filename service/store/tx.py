"""One write transaction, engine-neutral: the SQL every engine shares, and the few words it does not.

The store's named operations (service.store.common) are plain functions of a `Tx`: they run whole on
whichever connection the engine hands them (SQLite's one writer, or a PostgreSQL connection of the
pool), so that the rules they write — dedupe, the status machine, the outbox in the same transaction
— are one piece of code on every engine. Parameters are `?` placeholders; an engine whose driver
wants another style translates them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import orjson

from service.domain import budget, history, report
from service.domain import circuit as circuits
from service.domain.job import AttemptRecord, Candidate, Job, rfc3339
from service.domain.status import FINAL, JobError, Source, Status
from service.domain.work import TRACKING_KINDS, Lane, SubmitState, WorkKind
from service.ids import new_message_id
from service.store import budget_queries as ledger
from service.store.base import JobNotFound, OutboxPolicy

REFUSED_LOG_SIZE = 1000

Listener = Callable[[frozenset[str]], None]


class Row(Protocol):
    """A result row by position or by column name (sqlite3.Row, and the PostgreSQL store's rows)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Dialect:
    """What differs between the engines in the SQL they share."""

    name: str
    # A write's constraint violations (a task id bound twice, …), as the driver raises them.
    integrity_errors: tuple[type[BaseException], ...]
    # Appended to the read of a row the transaction will change: another writer waits for it.
    lock_row: str = ""
    # Appended to the choice of rows to claim (due work, deliveries): rows another claims are skipped.
    skip_locked: str = ""
    # A subquery that makes one JSON-array parameter rows of text (a batch of ids).
    json_ids: str = "SELECT value FROM json_each(?)"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def job_from_row(row: Row, attempts: tuple[AttemptRecord, ...] = (), version: int | None = None) -> Job:
    """The job of a `jobs` row, with its attempts (read apart: ATTEMPTS_SQL) and its row version."""
    return Job(
        id=row["id"],
        provider=row["provider"],
        status=Status(row["status"]),
        request=loads(row["request"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        provider_task_id=row["provider_task_id"],
        metadata=loads(row["metadata"]),
        images=tuple(loads(row["images"]) or ()),
        error=JobError.from_json(loads(row["error"])),
        resolved_by=row["resolved_by"],
        callback_url_registered=bool(row["callback_url_registered"]),
        submitted_by_backend=bool(row["submitted_by_backend"]),
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
        cost_usd=row["cost_usd"],
        submit_state=SubmitState(row["submit_state"]) if row["submit_state"] is not None else None,
        submit_attempts=row["submit_attempts"],
        media=tuple(loads(row["media"]) or ()),
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        candidates=tuple(Candidate.from_json(item) for item in loads(row["candidates"]) or ()),
        max_price_usd=row["max_price_usd"],
        attempts=attempts,
        version=version,
    )


def attempt_from_row(row: Row) -> AttemptRecord:
    return AttemptRecord(
        seq=row["seq"],
        provider=row["provider"],
        started_at=row["started_at"],
        provider_task_id=row["provider_task_id"],
        state=row["state"],
        error=JobError.from_json(loads(row["error"])),
        cost_usd=row["cost_usd"],
        ended_at=row["ended_at"],
        tries=row["tries"],
    )


ATTEMPTS_SQL = "SELECT * FROM attempts WHERE job_id = ? ORDER BY seq"


class Tx:
    """One open write transaction: a thin veneer that remembers which jobs it changed."""

    def __init__(
        self, db: Connection, now: float, *, dialect: Dialect, mirror_images: bool, policy: OutboxPolicy
    ) -> None:
        self.db = db
        self.dialect = dialect
        self.now = now
        self.mirror_images = mirror_images
        self.policy = policy
        self.changed: set[str] = set()
        # Jobs this transaction brought to a final status: (id, status, resolved_by), logged after commit.
        self.finished: list[tuple[str, str, str | None]] = []
        self.outbox_changed = False
        self.health: dict[str, bool] = {}  # provider → degraded, for what this transaction changed
        self.wake_at: float | None = None  # waiting work was brought forward to then (by a circuit)
        self.circuit_effects: list[tuple[str, circuits.Effect]] = []  # (provider, effect), logged after commit
        # Counted in /metrics after commit: (provider, state) of each attempt ended, (from, to, reason)
        # of each failover.
        self.attempt_ends: list[tuple[str, str]] = []
        self.failovers: list[tuple[str, str, str]] = []
        # Prices reserved in this transaction for attempts it starts after (`permit`), by job (SPEC §9).
        self.holds: dict[str, ledger.Hold] = {}
        self.exhausted: list[budget.Refusal] = []  # caps that refused for the first time today, logged after commit

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Cursor:
        return self.db.execute(sql, tuple(params))

    def one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        row: Row | None = self.db.execute(sql, tuple(params)).fetchone()
        return row

    def job(self, job_id: str) -> Job:
        row = self.one(f"SELECT * FROM jobs WHERE id = ?{self.dialect.lock_row}", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        attempts = tuple(attempt_from_row(item) for item in self.execute(ATTEMPTS_SQL, (job_id,)).fetchall())
        return job_from_row(row, attempts)

    # -- attempts (SPEC §8) ------------------------------------------------------------------------

    def start_attempt(self, job_id: str, provider: str, *, tries: int = 0) -> None:
        """A new attempt, at `provider`, the job's current one from now on; `tries`: sent that often
        already (a new job marked "sending" in the same transaction: once). It holds the price `permit`
        reserved for the job in this transaction, if any."""
        self.execute(
            "INSERT INTO attempts (job_id, seq, provider, started_at, tries) "
            "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE job_id = ?), ?, ?, ?)",
            (job_id, job_id, provider, self.now, tries),
        )
        held = self.holds.pop(job_id, None)
        if held is not None:
            ledger.hold(self, job_id, held)

    def end_attempt(
        self, job_id: str, state: str, *, ended: bool = True, seq: int | None = None, **fields: Any
    ) -> None:
        """Write an attempt's state (and `fields`: provider_task_id, error, cost_usd): attempt `seq`, by
        default the latest one (the one being submitted); `ended`: it is over (rejected, completed,
        failed…), so its end time is now."""
        fields["state"] = state
        if ended:
            fields["ended_at"] = self.now
        assignments = ", ".join(f"{name} = ?" for name in fields)
        which = "?" if seq is not None else "(SELECT MAX(seq) FROM attempts WHERE job_id = ?)"
        rows = self.execute(
            f"UPDATE attempts SET {assignments} WHERE job_id = ? AND seq = {which} "
            "RETURNING job_id, seq, provider, budget_micros, budget_day, budget_shard, budget_held",
            (*fields.values(), job_id, seq if seq is not None else job_id),
        ).fetchall()
        for row in rows:
            if row["budget_held"] is not None:  # kept or released with the state (SPEC §9)
                ledger.settle(self, row, state)
        if ended:
            self.attempt_ends.extend((row["provider"], state) for row in rows)

    def failover(self, job: Job, reason: str, *, wake: bool = True, note: Mapping[str, Any] | None = None) -> None:
        """Move the job to its next candidate (SPEC §8): called when the current attempt ended not_sent,
        rejected or failed, so the provider it leaves holds nothing it may charge for, or when the
        backend asks for it anyway (a reroute: `service.domain.reroute`).
        The job is queued again at the new provider with a new attempt, its submission due now; nothing
        here marks it "sending": it is claimed (`Store.begin_submit`, its own transaction) by whoever
        sends it, so that a crash after this commit leaves it due, and sent once after a restart.
        `wake=False`: the caller claims it at once itself, so the work queue is not woken for it. `note`:
        more for the `failover` event to say (a reroute says whether both providers may charge)."""
        following, rest = job.candidates[0], job.candidates[1:]
        self.failovers.append((job.provider, following.provider, reason))
        self.unschedule(job.id, WorkKind.SUBMIT, WorkKind.POLL, WorkKind.CONFIRM)
        fields: dict[str, Any] = {
            "provider": following.provider,
            "candidates": dumps([item.to_json() for item in rest]),
            "provider_task_id": None,
            "submit_state": None,
            "callback_url_registered": int(following.callbacks),
            "error": None,
        }
        if job.status is not Status.QUEUED:
            fields["status"] = str(Status.QUEUED)
        self.update(job.id, **fields)
        detail = {"from": job.provider, "to": following.provider, "reason": reason, **(note or {})}
        self.event(job.id, "failover", reason, detail)
        if job.status is not Status.QUEUED:
            self.event(job.id, "status", str(Status.QUEUED), {"from": str(job.status), "by": "failover"})
        self.start_attempt(job.id, following.provider)
        self.schedule(job.id, WorkKind.SUBMIT, following.provider, self.now, 0)
        if wake:
            self.wake(self.now)

    def mark_sending(self, job_id: str, provider: str, lease_until: float) -> None:
        """The job's submission is about to go to `provider`: "sending" until `lease_until` (its
        'submit' row is the lease), one more try of its current attempt."""
        self.execute(
            "UPDATE jobs SET submit_state = ?, submit_attempts = submit_attempts + 1, updated_at = ? WHERE id = ?",
            (SubmitState.SENDING, self.now, job_id),
        )
        self.execute(
            "UPDATE attempts SET tries = tries + 1 WHERE job_id = ? "
            "AND seq = (SELECT MAX(seq) FROM attempts WHERE job_id = ?)",
            (job_id, job_id),
        )
        self.schedule(job_id, WorkKind.SUBMIT, provider, lease_until, 0)
        self.changed.add(job_id)

    def take_due(self, job_id: str, kind: WorkKind) -> bool:
        """Is the job's `kind` row due now and held by nobody (a worker that claims a row pushes its
        due time past now)? One conditional write, so of two asking at once one gets it."""
        taken = self.execute(
            "UPDATE due SET due_at = due_at WHERE job_id = ? AND kind = ? AND due_at <= ?",
            (job_id, str(kind), self.now),
        ).rowcount
        return bool(taken == 1)

    def wake(self, at: float) -> None:
        """Tell the work queue, after commit, that work is due at `at`."""
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def event(
        self, job_id: str, type_: str, outcome: str | None, detail: Mapping[str, Any], *, wake: bool = True
    ) -> None:
        """One line of the job's history. `wake=False`: a note that changes nothing a reader of the job
        sees (a refused or duplicate delivery, a stopped poll), so nobody waiting on the job is woken:
        what outsiders can send at will must not fan out to every stream and waiter."""
        self.execute(
            "INSERT INTO job_events (job_id, at, type, outcome, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, self.now, type_, outcome, dumps(dict(detail))),
        )
        if wake:
            self.changed.add(job_id)

    def delivery_noise(self, job_id: str, outcome: str, code: str, detail: Mapping[str, Any]) -> None:
        """A refused or duplicate delivery: an event of its own while the job has had at most
        `history.NOISE_EVENTS_PER_JOB` of them, then counted on the job's one summary event.

        The count is a row per job (not a scan of its history): a duplicate is the retry storm's hot
        path. Past the bound, the summary row is read and rewritten by primary key. Wakes nobody.
        """
        counter = self.execute(
            "INSERT INTO job_event_bounds (job_id, noise) VALUES (?, 1) ON CONFLICT (job_id) "
            "DO UPDATE SET noise = job_event_bounds.noise + 1 RETURNING noise, summary_id",
            (job_id,),
        ).fetchone()
        if history.keeps_own_event(counter["noise"]):
            self.event(job_id, "callback", outcome, detail, wake=False)
            return
        summary_id = counter["summary_id"]
        row = None if summary_id is None else self.one("SELECT detail FROM job_events WHERE id = ?", (summary_id,))
        if row is not None:
            summary = history.summarise(loads(row["detail"]), outcome, code, self.now)
            self.execute("UPDATE job_events SET detail = ? WHERE id = ?", (dumps(summary), summary_id))
            return
        summary = history.summarise(None, outcome, code, self.now)
        created = self.execute(
            "INSERT INTO job_events (job_id, at, type, outcome, detail) VALUES (?, ?, 'callback', ?, ?) RETURNING id",
            (job_id, self.now, history.SUMMARY_OUTCOME, dumps(summary)),
        ).fetchone()
        self.execute("UPDATE job_event_bounds SET summary_id = ? WHERE job_id = ?", (created["id"], job_id))

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = self.now
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))
        self.changed.add(job_id)
        if fields.get("finished_at") is not None:  # every way to a final status sets it, once
            self.finished.append((job_id, str(fields.get("status")), fields.get("resolved_by")))

    def schedule(
        self, job_id: str, kind: WorkKind, lane: str, due_at: float, attempt: int, *, replace: bool = True
    ) -> None:
        """Make `kind` due for the job at `due_at` in `lane` (its provider's name, or a `Lane`);
        `replace=False` keeps a row already there (pending or leased by a worker that is doing it now)."""
        on_conflict = "DO UPDATE SET due_at = excluded.due_at, attempt = excluded.attempt" if replace else "DO NOTHING"
        self.execute(
            "INSERT INTO due (job_id, kind, provider, due_at, attempt) VALUES (?, ?, ?, ?, ?) "
            f"ON CONFLICT (job_id, kind) {on_conflict}",
            (job_id, str(kind), str(lane), due_at, attempt),
        )

    def unschedule(self, job_id: str, *kinds: WorkKind) -> None:
        """Drop the job's due rows of `kinds`; by default those that track it (not its mirroring)."""
        kinds = kinds or TRACKING_KINDS
        marks = ", ".join("?" for _ in kinds)
        self.execute(f"DELETE FROM due WHERE job_id = ? AND kind IN ({marks})", (job_id, *map(str, kinds)))

    def wants(self, type_: str) -> bool:
        """Does any destination want events of this type?"""
        if not self.policy.destinations:
            return False
        return not type_.startswith("job.") or type_.removeprefix("job.") in self.policy.notify_on

    def notify(
        self,
        type_: str,
        *,
        job: Job | None = None,
        provider: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """An event for every configured destination, in this transaction (the outbox pattern)."""
        if not self.wants(type_):
            return
        policy = self.policy
        notification_id = new_message_id()
        payload = {"job": job.to_json(base_url=policy.base_url)} if job is not None else {"detail": dict(detail or {})}
        self.execute(
            "INSERT INTO notifications (id, type, job_id, provider, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                notification_id,
                type_,
                job.id if job is not None else None,
                provider or (job.provider if job is not None else None),
                dumps(payload),
                self.now,
            ),
        )
        for destination in policy.destinations:
            self.execute(
                "INSERT INTO outbox (notification_id, destination, status, next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, 'pending', ?, ?, ?)",
                (notification_id, destination, self.now, self.now, self.now),
            )
        if job is not None:
            detail_out = {"type": type_, "id": notification_id, "destinations": list(policy.destinations)}
            self.event(job.id, "notification", "queued", detail_out)
        self.outbox_changed = True

    def first_receipt(self, job_id: str, event_key: str, detail: Mapping[str, Any]) -> bool:
        """Is this the first delivery of this event for this job? A repeat is counted and recorded."""
        count = self.execute(
            "INSERT INTO callback_receipts (job_id, event_key, first_at, last_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id, event_key) DO UPDATE SET count = callback_receipts.count + 1, last_at = excluded.last_at "
            "RETURNING count",
            (job_id, event_key, self.now, self.now),
        ).fetchone()[0]
        if count == 1:
            return True
        self.delivery_noise(job_id, "duplicate", event_key, {**detail, "event": event_key})
        return False

    def provider_state(self, provider: str) -> Row:
        self.execute(
            "INSERT INTO provider_state (provider, updated_at) VALUES (?, ?) ON CONFLICT (provider) DO NOTHING",
            (provider, self.now),
        )
        row = self.one(f"SELECT * FROM provider_state WHERE provider = ?{self.dialect.lock_row}", (provider,))
        assert row is not None
        return row

    def finished_by_polling(self, provider: str) -> None:
        """A job with a registered callback had to be finished by a poll: one more in a row."""
        state = self.provider_state(provider)
        in_a_row = state["polled_in_a_row"] + 1
        degrade = in_a_row >= self.policy.degraded_after and not state["degraded"]
        self.execute(
            "UPDATE provider_state SET polled_in_a_row = ?, degraded = ?, updated_at = ? WHERE provider = ?",
            (in_a_row, int(degrade or bool(state["degraded"])), self.now, provider),
        )
        if degrade:
            self.health[provider] = True
            self.notify("provider.callbacks_degraded", provider=provider, detail={"polled_in_a_row": in_a_row})

    def callback_came(self, provider: str) -> None:
        """A genuine callback: the run of polled jobs ends, and a degraded provider recovers."""
        state = self.one(
            "SELECT degraded FROM provider_state WHERE provider = ? AND (polled_in_a_row > 0 OR degraded != 0)",
            (provider,),
        )
        if state is None:  # the usual case: nothing to reset (no row at all means the same)
            return
        self.execute(
            "UPDATE provider_state SET polled_in_a_row = 0, degraded = 0, updated_at = ? WHERE provider = ?",
            (self.now, provider),
        )
        if state["degraded"]:
            self.health[provider] = False
            self.notify("provider.callbacks_recovered", provider=provider, detail={})

    def credits(self, provider: str, remaining: float | None, exhausted: bool) -> None:
        """A provider's balance: `provider.credits_low` once per crossing below the threshold."""
        if remaining is None and not exhausted:
            return
        state = self.provider_state(provider)
        low = exhausted or (remaining is not None and remaining < self.policy.credits_low)
        self.execute(
            "UPDATE provider_state SET credits = COALESCE(?, credits), credits_low = ?, updated_at = ? WHERE provider = ?",
            (remaining, int(low), self.now, provider),
        )
        if low and not state["credits_low"]:
            detail = {"credits": remaining, "threshold": self.policy.credits_low, "exhausted": exhausted}
            self.notify("provider.credits_low", provider=provider, detail=detail)

    # -- circuits (SPEC §8) -------------------------------------------------------------------------

    def circuit(self, provider: str, *, lock: bool = False) -> circuits.Circuit:
        """The provider's circuit (closed when it has no row); `lock`: for a change (row made if missing)."""
        if lock:
            self.execute(
                "INSERT INTO provider_circuits (provider, updated_at) VALUES (?, ?) ON CONFLICT (provider) DO NOTHING",
                (provider, self.now),
            )
        row = self.one(
            f"SELECT * FROM provider_circuits WHERE provider = ?{self.dialect.lock_row if lock else ''}", (provider,)
        )
        return circuit_from_row(row) if row is not None else circuits.Circuit(provider)

    def may_send(self, provider: str, job_id: str, lease_until: float) -> circuits.Permission:
        """May the job's submission go to the provider now? A half-open circuit's probe is claimed here,
        atomically (one conditional UPDATE: of two processes asking at once, one gets the row)."""
        permission = circuits.may_try(self.circuit(provider), self.now, job_id)
        if not isinstance(permission, circuits.Probe):
            return permission
        claimed = self.execute(
            "UPDATE provider_circuits SET probe_job = ?, probe_until = ?, updated_at = ? "
            "WHERE provider = ? AND state = 'open' AND open_until <= ? "
            "AND (probe_job IS NULL OR probe_until <= ? OR probe_job = ?)",
            (job_id, lease_until, self.now, provider, self.now, self.now, job_id),
        ).rowcount
        if claimed == 1:
            return permission
        # Another took the probe (or the circuit changed) since the read: ask again of what is stored now.
        again = circuits.may_try(self.circuit(provider, lock=True), self.now, job_id)
        return again if not isinstance(again, circuits.Probe) else circuits.Blocked(lease_until)

    def circuit_outcome(self, job_id: str, provider: str, seen: circuits.Verdict) -> circuits.Effect | None:
        """Write what an attempt's verdict does to the provider's circuit, its events with it."""
        policy = self.policy.circuits
        before = self.circuit(provider)
        if not circuits.on_outcome(before, seen, self.now, policy, job_id).changed(before):
            return None  # the usual case (a success on a closed circuit): no write, no lock
        before = self.circuit(provider, lock=True)
        change = circuits.on_outcome(before, seen, self.now, policy, job_id)
        after = change.circuit
        self.execute(
            "UPDATE provider_circuits SET state = ?, failures = ?, open_until = ?, cooldown = ?, reason = ?, "
            "opened_at = ?, probe_job = ?, probe_until = ?, updated_at = ? WHERE provider = ?",
            (
                str(after.state),
                after.failures,
                after.until,
                after.cooldown,
                after.reason,
                after.opened_at,
                after.probe_job,
                after.probe_until,
                self.now,
                provider,
            ),
        )
        effect = change.effect
        if effect is not None:
            self.circuit_effects.append((provider, effect))
        if isinstance(effect, circuits.Opened):
            self.event(job_id, "circuit", "opened", {"provider": provider, **effect.detail()})
            self.notify("provider.circuit_opened", provider=provider, detail=effect.detail())
            if effect.probe_failed:  # the jobs that waited for the probe's answer wait for the next one
                self._release_waiting(provider, effect.until)
        elif isinstance(effect, circuits.Closed):
            self.event(job_id, "circuit", "closed", {"provider": provider, **effect.detail()})
            self.notify("provider.circuit_closed", provider=provider, detail=effect.detail())
            self._release_waiting(provider, self.now)  # the jobs that waited for the circuit go now
        return effect

    def _release_waiting(self, provider: str, at: float) -> None:
        """Bring the provider's queued jobs' submissions due later than `at` forward to `at`."""
        self.execute(
            "UPDATE due SET due_at = ? WHERE provider = ? AND kind = ? AND due_at > ? AND job_id IN "
            "(SELECT id FROM jobs WHERE provider = ? AND status = 'queued' AND submit_state IS NULL)",
            (at, provider, str(WorkKind.SUBMIT), at, provider),
        )
        self.wake(at)

    def circuit_wait(self, job_id: str, provider: str, until: float, *, lane: str | None = None) -> None:
        """The job is not sent while the provider's circuit is open: its submission is due at `until`
        (the job's deadline still ends it first if that comes sooner). `lane`: the job's own provider,
        when it waits for a later candidate's circuit (every one it has left is open)."""
        self.schedule(job_id, WorkKind.SUBMIT, lane or provider, until, 0)
        message = f"circuit open until {rfc3339(until)}"
        self.event(job_id, "circuit", "waiting", {"provider": provider, "until": rfc3339(until), "message": message})

    def fall_back(self, job: Job, step: report.FallBack) -> None:
        """The job's current attempt ended with no candidate left, but an earlier one may still deliver:
        the job follows that one again (SPEC §8), and is polled there if it has a task id."""
        to = step.to
        fields: dict[str, Any] = {
            "provider": to.provider,
            "provider_task_id": to.provider_task_id,
            "submit_state": SubmitState.UNCERTAIN if to.state == "uncertain" else SubmitState.DONE,
            "error": None,
        }
        if step.status is not None:
            fields["status"] = str(step.status)
        self.unschedule(job.id, WorkKind.SUBMIT, WorkKind.POLL, WorkKind.CONFIRM)
        self.update(job.id, **fields)
        message = (
            f"nothing is left to try after {job.provider}; the job follows attempt {to.seq} at {to.provider} "
            f"again ({to.state}), which may still deliver"
        )
        detail = {"from": job.provider, "to": to.provider, "attempt": to.seq, "message": message}
        self.event(job.id, "fallback", to.provider, detail)
        if step.status is not None:
            self.event(job.id, "status", str(step.status), {"from": str(job.status), "by": "fallback"})
        if to.provider_task_id:
            self.schedule(job.id, WorkKind.POLL, to.provider, self.now + self.policy.poll_interval, 0)
        self.late_polls(job.id, step.late_polls)

    def late_polls(self, job_id: str, change: report.LatePolls | None) -> None:
        """Start (in the lane of the provider to ask first) or stop the job's late polls."""
        if change is None:
            return
        if change.lane is None:
            self.unschedule(job_id, WorkKind.LATE_POLL)
            return
        at = self.now + self.policy.poll_interval
        self.schedule(job_id, WorkKind.LATE_POLL, change.lane, at, 0, replace=False)
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    # -- budgets (SPEC §9) ---------------------------------------------------------------------------

    def permit(
        self, job_id: str, provider: str, request: Mapping[str, Any], lease_until: float, *, new_attempt: bool = False
    ) -> circuits.Permission | budget.Refusal:
        """May the job's attempt go to `provider` now? Its circuit first (`may_send`), then the daily
        caps: the attempt's price is reserved here, in the transaction that marks it sending, so that
        no number of concurrent submissions passes a cap. The job's current attempt holds it, or
        (`new_attempt`) the one `start_attempt` makes next in this transaction. Refused by a cap: a
        probe claimed on the way is given back, and nothing is reserved."""
        permission = self.may_send(provider, job_id, lease_until)
        if isinstance(permission, circuits.Blocked):
            return permission
        held = ledger.reserve(self, job_id, provider, request)
        if isinstance(held, budget.Refusal):
            if isinstance(permission, circuits.Probe):
                self.execute(
                    "UPDATE provider_circuits SET probe_job = NULL, probe_until = NULL WHERE provider = ? AND probe_job = ?",
                    (provider, job_id),
                )
            return held
        if held is not None:
            if new_attempt:
                self.holds[job_id] = held
            else:
                ledger.hold(self, job_id, held)
        return permission

    def hold_off(self, job_id: str, provider: str, why: circuits.Blocked | budget.Refusal) -> None:
        """The job is not sent now (`permit` said why): it waits for the circuit, or for the budget."""
        if isinstance(why, circuits.Blocked):
            self.circuit_wait(job_id, provider, why.until)
        else:
            self.budget_wait(job_id, provider, why)

    def budget_wait(self, job_id: str, provider: str, refusal: budget.Refusal) -> None:
        """A cap refuses the job's attempt: its submission is due at the cap's reset (the next UTC
        midnight; its deadline still ends it first if that comes sooner), and the job's events say why."""
        self.schedule(job_id, WorkKind.SUBMIT, provider, refusal.reset_at, 0)
        detail = {**refusal.detail(), "provider": provider, "message": refusal.message}
        self.event(job_id, "budget", "waiting", detail)
        ledger.exhausted(self, refusal)

    def apply(
        self,
        job: Job,
        seen: report.Report,
        *,
        record: tuple[str, str | None, Mapping[str, Any]] | None = None,
    ) -> report.Decision:
        """Write what a provider's report on one of the job's attempts does, as the domain decides it
        (service.domain.report; SPEC §2, §8).

        `record` is the event that brought the report (type, outcome, detail); it is written first, with
        the decision's effect, so that a job's history reads cause before consequence.
        """
        decision = report.decide(job, seen)
        step, source = decision.step, str(seen.source)
        if record is not None:
            type_, outcome, detail = record
            self.event(job.id, type_, outcome, {**detail, "effect": decision.effect})
        end = decision.attempt
        if end is not None:
            error = dumps(end.error.to_json()) if end.error is not None else None
            self.end_attempt(job.id, end.state, seq=end.seq, cost_usd=end.cost_usd, error=error)
        if isinstance(step, report.NextCandidate):
            # The provider failed the task (resellers refund failed tasks): the next candidate is tried.
            self.failover(job, "failed")
            return decision
        if isinstance(step, report.FallBack):
            self.fall_back(job, step)
            return decision
        if isinstance(step, report.Advance | report.Complete | report.Fail):
            self._finish(job, decision, step, source)
        elif decision.cost_changed:
            self.update(job.id, cost_usd=decision.cost_usd)
        if decision.conflict is not None:
            self.event(job.id, "conflict", str(seen.observation.status), decision.conflict)
        if decision.abandon is not None:
            self.end_attempt(job.id, "not_sent", seq=decision.abandon)
        self.late_polls(job.id, decision.late_polls)
        return decision

    def _finish(
        self, job: Job, decision: report.Decision, step: report.Advance | report.Complete | report.Fail, source: str
    ) -> None:
        """Write the job's move forward: progress, or its final status."""
        status = step.status if isinstance(step, report.Advance) else None
        fields: dict[str, Any] = {}
        if isinstance(step, report.Complete):
            status = Status.COMPLETED
            if step.images:
                fields["images"] = dumps(list(step.images))
            fields.update(error=None, cost_usd=decision.cost_usd)
            if step.follow is not None:  # an earlier attempt delivered first: the job is its now
                fields.update(provider=step.follow.provider, provider_task_id=step.follow.provider_task_id)
        elif isinstance(step, report.Fail):
            status = Status.FAILED
            fields["error"] = dumps(step.error.to_json())
        assert status is not None
        fields["status"] = str(status)
        if status in FINAL:
            fields["finished_at"] = self.now
            fields["resolved_by"] = source
        if job.submitted_at is None:
            fields["submitted_at"] = self.now
        self.update(job.id, **fields)
        self.event(job.id, "status", str(status), {"from": str(job.status), "by": source})
        machine = decision.machine
        if machine.ignored:
            kept = len(machine.images)
            detail = {"offered": kept + machine.ignored, "kept": kept, "ignored": machine.ignored}
            self.event(job.id, "images", "ignored", {**detail, "by": source})
        if status in FINAL:
            self.unschedule(job.id)
            if self.wants(f"job.{status}"):
                self.notify(f"job.{status}", job=self.job(job.id))
            followed = not (isinstance(step, report.Complete) and step.follow is not None)
            if source == Source.POLL and job.callback_url_registered and followed:
                self.finished_by_polling(job.provider)
        if isinstance(step, report.Complete) and step.images and self.mirror_images:
            self.schedule(job.id, WorkKind.MIRROR, Lane.MIRROR, self.now, 0)


def circuit_from_row(row: Row) -> circuits.Circuit:
    return circuits.Circuit(
        provider=row["provider"],
        state=circuits.CircuitState(row["state"]),
        failures=row["failures"],
        until=row["open_until"],
        cooldown=row["cooldown"],
        reason=row["reason"],
        opened_at=row["opened_at"],
        probe_job=row["probe_job"],
        probe_until=row["probe_until"],
    )


def probe(db: Connection) -> None:
    """A write that changes nothing that matters (readiness, and burying a failed commit)."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (repr(time.time()),),
    )
