"""A provider's circuit (SPEC §8): when jobhook stops sending it work, and when it tries again. Pure.

A circuit is `closed` (send), `open` until a time (send nothing), then `half_open`: exactly one job —
the probe — may try it; its success closes the circuit, its failure opens it again for twice the last
cooldown (up to a cap). Only failures that are the provider's own count (`verdict`): a key refused, no
credits, a rate limit past the retries, a 5xx, no connection. A request the provider refused for what
it asked (400, 422) says nothing about the provider and leaves the circuit as it is. A job whose
provider is shut moves on to a later candidate that is not (`when_shut`), or waits for the first to
half-open.

The stored circuit holds `open` with its `until`; `half_open` is read from the clock (`state_at`), so
that nothing has to wake to half-open a circuit. The probe is claimed with a lease (`probe_until`): a
probe cut by a crash does not hold the circuit shut for good.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

from service.domain.attempt import SubmitKind, SubmitResult
from service.domain.job import rfc3339
from service.domain.status import JobError

# The error of an attempt not sent because its provider's circuit was open (SPEC §8).
CIRCUIT_OPEN_CODE = "circuit_open"


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # as shown: an `open` circuit whose cooldown is over


@dataclasses.dataclass(frozen=True)
class CircuitPolicy:
    """The settings (JOBHOOK_ROUTE_BREAKER_FAILURES, _COOLDOWN, _MAX_COOLDOWN, _CREDITS_COOLDOWN)."""

    failures: int = 3
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    credits_cooldown: float = 600.0


@dataclasses.dataclass(frozen=True)
class Circuit:
    """One provider's circuit as stored (`provider_circuits`); a provider without a row is closed."""

    provider: str
    state: CircuitState = CircuitState.CLOSED  # CLOSED or OPEN: HALF_OPEN is never stored
    failures: int = 0  # attempts in a row that failed for the provider's own reasons
    until: float | None = None  # OPEN: the end of the cooldown
    cooldown: float | None = None  # OPEN: the cooldown in force (doubled after a failed probe)
    reason: str | None = None  # the last failure's code (http_401, insufficient_credits, not_sent, …)
    opened_at: float | None = None
    probe_job: str | None = None  # the job trying the half-open circuit
    probe_until: float | None = None  # its lease: past it, another job may probe

    def state_at(self, now: float) -> CircuitState:
        if self.state is CircuitState.OPEN and self.until is not None and now >= self.until:
            return CircuitState.HALF_OPEN
        return self.state

    def probing(self, now: float) -> bool:
        """Is a probe in flight (claimed, and its lease not run out)?"""
        return self.probe_job is not None and self.probe_until is not None and now < self.probe_until

    def to_json(self, now: float) -> dict[str, Any]:
        """What operators see (`GET /v1/providers`, `jobhook providers`, the dashboard)."""
        state = self.state_at(now)
        return {
            "state": str(state),
            "until": rfc3339(self.until) if state is not CircuitState.CLOSED else None,
            "failures_in_a_row": self.failures,
            "reason": self.reason,
            "probing": state is CircuitState.HALF_OPEN and self.probing(now),
        }


# -- may this provider be tried now? -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Go:
    """Closed: send."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """Half-open and nobody probing: this job is the probe (claim it, then send)."""


@dataclasses.dataclass(frozen=True)
class Blocked:
    """Do not send before `until` (the cooldown's end, or a probe's lease; a probe's success wakes
    the jobs that wait sooner)."""

    until: float


Permission = Go | Probe | Blocked


# -- a job whose provider is shut, with candidates after it ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class PassOver:
    """A later candidate may be tried now: the current one is recorded `not_sent` with `error` (nothing
    was sent, nothing is charged) and the job moves on, rather than wait for a circuit (SPEC §8)."""

    error: JobError


@dataclasses.dataclass(frozen=True)
class WaitFor:
    """Every candidate left is shut: the job waits `queued` until `until`, when the first of them —
    `provider` — half-opens (or the probe in flight there runs out its lease), and is then tried again."""

    provider: str
    until: float


def when_shut(provider: str, until: float, later: Sequence[tuple[str, Permission]]) -> PassOver | WaitFor:
    """The job's provider is Blocked until `until`; `later`: its candidates after it, each with what
    its circuit allows this job now (`may_try`). A job with none left waits, as a single provider does."""
    if any(not isinstance(permission, Blocked) for _, permission in later):
        message = f"{provider}'s circuit is open until {rfc3339(until)}: not sent, the next candidate is tried"
        return PassOver(JobError(CIRCUIT_OPEN_CODE, message))
    first, first_until = provider, until
    for name, permission in later:
        assert isinstance(permission, Blocked)
        if permission.until < first_until:
            first, first_until = name, permission.until
    return WaitFor(first, first_until)


def may_try(circuit: Circuit, now: float, job_id: str | None = None) -> Permission:
    """May a job (`job_id`: the probe itself, trying again, is let through) be sent to it now?"""
    state = circuit.state_at(now)
    if state is CircuitState.CLOSED:
        return Go()
    if state is CircuitState.OPEN:
        assert circuit.until is not None
        return Blocked(circuit.until)
    if circuit.probing(now) and circuit.probe_job != job_id:
        assert circuit.probe_until is not None
        return Blocked(circuit.probe_until)
    return Probe()


# -- what an attempt's outcome says of the provider ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Success:
    """The provider took a job: it works."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """The provider failed the attempt for its own reasons; `credits`: for want of credits."""

    reason: str
    credits: bool = False


@dataclasses.dataclass(frozen=True)
class Neutral:
    """Nothing is learnt of the provider's health (a refusal of the request itself, an unknown outcome)."""


Verdict = Success | Failure | Neutral

# Refusals that are the provider's (or its account's) own: the key, the balance, the endpoint, the
# rate. Every other 4xx (400, 409, 413, 415, 422, …) is about the request, the caller's fault.
PROVIDER_STATUSES = frozenset({401, 402, 403, 404, 405, 406, 408, 429})
_HTTP_CODE = re.compile(r"^http_(\d{3})$")


def verdict(outcome: SubmitResult, *, past_the_retries: bool = False) -> Verdict:
    """The circuit's reading of one submission outcome (`service.domain.attempt`); `past_the_retries`:
    the outcome, a 429/5xx, ended the attempt (`SubmitDecision.past_the_retries`)."""
    kind = outcome.kind
    if kind is SubmitKind.ACCEPTED:
        return Success()
    if kind in (SubmitKind.UNCERTAIN, SubmitKind.FAILED):
        return Neutral()  # sent, no answer: the provider may have taken it
    if outcome.credits_exhausted:
        return Failure("insufficient_credits", credits=True)
    # A refusal's code is its error's; a 429/5xx's (retried: no error) is in its detail.
    code = outcome.error.provider_code if outcome.error is not None else outcome.detail.get("provider_code")
    status = _status(outcome.detail, str(code) if code is not None else None)
    if kind is SubmitKind.RETRY:
        # No connection, 5xx, 408: each try counts. Each is the provider's own failure, and a job without
        # a candidate left retries without end: were only attempts that end counted, jobs naming one
        # provider would never open the circuit of a provider that is down, and would go on sending to
        # it. A try past the retries is counted as a try, not once more as the attempt's end.
        if outcome.detail.get("reason") == "not_sent":
            return Failure("not_sent")
        if status == 429:
            # The provider pacing its clients, and saying when to come back (Retry-After, respected):
            # counted only when it ends an attempt past the retries (SPEC §8), once however many tries.
            return Failure("http_429") if past_the_retries else Neutral()
        return Failure(f"http_{status}" if status is not None else "unavailable")
    if status is not None and (status in PROVIDER_STATUSES or status >= 500):
        return Failure(f"http_{status}")
    return Neutral()


def _status(detail: Mapping[str, Any], provider_code: str | None) -> int | None:
    """The HTTP status the refusal meant: the answer's, or (a 200 carrying an error code) the code's."""
    status = detail.get("http_status")
    if isinstance(status, int) and status >= 400:
        return status
    match = _HTTP_CODE.match(provider_code or "")
    return int(match.group(1)) if match else (status if isinstance(status, int) else None)


# -- what an outcome does to the circuit ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Opened:
    """The circuit opened (or opened again after a failed probe): `provider.circuit_opened`."""

    until: float
    cooldown: float
    failures: int
    reason: str
    probe_failed: bool

    def detail(self) -> dict[str, Any]:
        return {
            "until": rfc3339(self.until),
            "cooldown": self.cooldown,
            "failures_in_a_row": self.failures,
            "reason": self.reason,
            "probe_failed": self.probe_failed,
        }


@dataclasses.dataclass(frozen=True)
class Closed:
    """A success closed an open circuit: `provider.circuit_closed`."""

    opened_at: float | None
    reason: str | None

    def detail(self) -> dict[str, Any]:
        return {"opened_at": rfc3339(self.opened_at), "reason": self.reason}


Effect = Opened | Closed


@dataclasses.dataclass(frozen=True)
class Change:
    circuit: Circuit
    effect: Effect | None = None

    def changed(self, before: Circuit) -> bool:
        return self.circuit != before


def on_outcome(circuit: Circuit, seen: Verdict, now: float, policy: CircuitPolicy, job_id: str) -> Change:
    """What one attempt's verdict (of job `job_id`) does to the provider's circuit."""
    probe = circuit.probe_job == job_id
    if isinstance(seen, Neutral):
        if probe:  # the probe learnt nothing: another job may probe
            return Change(dataclasses.replace(circuit, probe_job=None, probe_until=None))
        return Change(circuit)
    if isinstance(seen, Success):
        if circuit.state is CircuitState.CLOSED:
            return Change(dataclasses.replace(circuit, failures=0))
        # The probe (or a job sent before the circuit opened) got through: the provider works.
        return Change(Circuit(circuit.provider), Closed(circuit.opened_at, circuit.reason))
    failures = circuit.failures + 1
    if circuit.state is CircuitState.CLOSED:
        if failures < policy.failures:
            return Change(dataclasses.replace(circuit, failures=failures, reason=seen.reason))
        cooldown = policy.credits_cooldown if seen.credits else policy.cooldown
        return _open(circuit, seen, now, cooldown, failures, opened_at=now, probe_failed=False)
    if not probe:
        # Sent before the circuit opened, answered since: counted, but only the probe decides.
        return Change(dataclasses.replace(circuit, failures=failures, reason=seen.reason))
    doubled = min(policy.max_cooldown, 2 * (circuit.cooldown or policy.cooldown))
    cooldown = max(policy.credits_cooldown, doubled) if seen.credits else doubled
    return _open(circuit, seen, now, cooldown, failures, opened_at=circuit.opened_at, probe_failed=True)


def _open(
    circuit: Circuit,
    seen: Failure,
    now: float,
    cooldown: float,
    failures: int,
    *,
    opened_at: float | None,
    probe_failed: bool,
) -> Change:
    opened = Circuit(
        circuit.provider,
        CircuitState.OPEN,
        failures=failures,
        until=now + cooldown,
        cooldown=cooldown,
        reason=seen.reason,
        opened_at=opened_at,
    )
    return Change(opened, Opened(now + cooldown, cooldown, failures, seen.reason, probe_failed))
