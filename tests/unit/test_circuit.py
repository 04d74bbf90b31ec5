"""A provider's circuit (service.domain.circuit): verdicts, permissions and transitions, as tables."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import Settings
from service.domain import attempt, circuit
from service.domain.circuit import Blocked, Circuit, CircuitPolicy, CircuitState, Go, Probe
from service.domain.status import JobError
from service.errors import ConfigError

NOW = 10_000.0
POLICY = CircuitPolicy(failures=3, cooldown=30.0, max_cooldown=100.0, credits_cooldown=600.0)


def refused(status: int, code: str) -> attempt.SubmitResult:
    return attempt.rejected({"http_status": status}, JobError("provider_rejected", "no", code), http_status=status)


def retried(status: int) -> attempt.SubmitResult:
    return attempt.retry({"http_status": status}, now=NOW, backoff=5.0)


# (name, outcome, past the retries: it ended the attempt, the verdict)
VERDICTS: list[tuple[str, attempt.SubmitResult, bool, circuit.Verdict]] = [
    ("accepted", attempt.accepted({}, task_id="t1"), False, circuit.Success()),
    ("401: the key", refused(401, "invalid_api_key"), False, circuit.Failure("http_401")),
    (
        "402: credits",
        refused(402, "insufficient_credits"),
        False,
        circuit.Failure("insufficient_credits", credits=True),
    ),
    ("403", refused(403, "forbidden"), False, circuit.Failure("http_403")),
    (
        "segmind's 406",
        refused(406, "insufficient_credits"),
        False,
        circuit.Failure("insufficient_credits", credits=True),
    ),
    ("404: the endpoint", refused(404, "not_found"), False, circuit.Failure("http_404")),
    ("400: the request itself", refused(400, "invalid_request"), False, circuit.Neutral()),
    ("422: the request itself", refused(422, "http_422"), False, circuit.Neutral()),
    ("409", refused(409, "conflict"), False, circuit.Neutral()),
    ("200 carrying code 401", refused(200, "http_401"), False, circuit.Failure("http_401")),
    ("429, to be retried: the provider pacing us", retried(429), False, circuit.Neutral()),
    ("429 past the retries: ends the attempt", retried(429), True, circuit.Failure("http_429")),
    ("503, to be retried: each try counts", retried(503), False, circuit.Failure("http_503")),
    ("503 past the retries: counted once, as a try", retried(503), True, circuit.Failure("http_503")),
    ("408, to be retried", retried(408), False, circuit.Failure("http_408")),
    (
        "429 in a 200's body code",
        attempt.retry({"http_status": 200, "provider_code": "http_429"}, now=NOW, backoff=5.0),
        False,
        circuit.Neutral(),
    ),
    ("no connection", attempt.not_sent("refused", now=NOW, backoff=5.0), False, circuit.Failure("not_sent")),
    ("no answer: uncertain", attempt.uncertain({}, synchronous=False), False, circuit.Neutral()),
    ("a synchronous call cut", attempt.uncertain({}, synchronous=True), False, circuit.Neutral()),
    ("unreadable 2xx", attempt.unreadable({}, "bad json", synchronous=False), False, circuit.Neutral()),
]


@pytest.mark.parametrize(("outcome", "past", "expected"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS])
def test_verdict(outcome: attempt.SubmitResult, past: bool, expected: circuit.Verdict) -> None:
    assert circuit.verdict(outcome, past_the_retries=past) == expected


CLOSED = Circuit("aivideoapi")
TWO = Circuit("aivideoapi", failures=2, reason="http_401")
OPEN = Circuit("aivideoapi", CircuitState.OPEN, 3, until=NOW + 10, cooldown=30.0, reason="http_401", opened_at=NOW - 20)
HALF = dataclasses.replace(OPEN, until=NOW - 1)
PROBING = dataclasses.replace(HALF, probe_job="job_probe", probe_until=NOW + 40)
LAPSED = dataclasses.replace(HALF, probe_job="job_probe", probe_until=NOW - 1)

PERMISSIONS: list[tuple[str, Circuit, str, circuit.Permission]] = [
    ("closed: go", CLOSED, "job_a", Go()),
    ("failures below the threshold: go", TWO, "job_a", Go()),
    ("open: blocked until the cooldown's end", OPEN, "job_a", Blocked(NOW + 10)),
    ("half-open, nobody probing: this job probes", HALF, "job_a", Probe()),
    ("half-open, a probe in flight: blocked until its lease", PROBING, "job_a", Blocked(NOW + 40)),
    ("half-open, the probe itself asks again", PROBING, "job_probe", Probe()),
    ("half-open, the probe's lease ran out: another probes", LAPSED, "job_a", Probe()),
]


@pytest.mark.parametrize(("state", "job_id", "expected"), [p[1:] for p in PERMISSIONS], ids=[p[0] for p in PERMISSIONS])
def test_may_try(state: Circuit, job_id: str, expected: circuit.Permission) -> None:
    assert circuit.may_try(state, NOW, job_id) == expected


FAIL = circuit.Failure("http_401")
BROKE = circuit.Failure("insufficient_credits", credits=True)
OK = circuit.Success()
MEH = circuit.Neutral()


def opened(failures: int, cooldown: float, reason: str = "http_401", opened_at: float = NOW) -> Circuit:
    return Circuit(
        "aivideoapi",
        CircuitState.OPEN,
        failures,
        until=NOW + cooldown,
        cooldown=cooldown,
        reason=reason,
        opened_at=opened_at,
    )


TRANSITIONS: list[tuple[str, Circuit, circuit.Verdict, str, Circuit, type | None]] = [
    ("closed, a failure: counted", CLOSED, FAIL, "job_a", dataclasses.replace(TWO, failures=1), None),
    ("closed, the Nth failure: opens", TWO, FAIL, "job_a", opened(3, 30.0), circuit.Opened),
    (
        "closed, the Nth for credits: the credits cooldown",
        TWO,
        BROKE,
        "job_a",
        opened(3, 600.0, "insufficient_credits"),
        circuit.Opened,
    ),
    ("closed, a success: the run ends", TWO, OK, "job_a", dataclasses.replace(TWO, failures=0), None),
    ("closed, a request's own refusal: nothing", TWO, MEH, "job_a", TWO, None),
    (
        "open, a late failure of a job sent before: counted only",
        OPEN,
        FAIL,
        "job_a",
        dataclasses.replace(OPEN, failures=4),
        None,
    ),
    ("open, a late success: the provider works, closes", OPEN, OK, "job_a", CLOSED, circuit.Closed),
    ("half-open, the probe succeeds: closes", PROBING, OK, "job_probe", CLOSED, circuit.Closed),
    (
        "half-open, the probe fails: the cooldown doubles",
        PROBING,
        FAIL,
        "job_probe",
        opened(4, 60.0, opened_at=NOW - 20),
        circuit.Opened,
    ),
    (
        "half-open, the probe fails at the cap",
        dataclasses.replace(PROBING, cooldown=80.0),
        FAIL,
        "job_probe",
        opened(4, 100.0, opened_at=NOW - 20),
        circuit.Opened,
    ),
    (
        "half-open, the probe out of credits",
        PROBING,
        BROKE,
        "job_probe",
        opened(4, 600.0, "insufficient_credits", NOW - 20),
        circuit.Opened,
    ),
    ("half-open, the probe learns nothing: released", PROBING, MEH, "job_probe", HALF, None),
    (
        "half-open, another job's failure: counted only",
        PROBING,
        FAIL,
        "job_a",
        dataclasses.replace(PROBING, failures=4),
        None,
    ),
]


@pytest.mark.parametrize(
    ("before", "seen", "job_id", "after", "effect"), [t[1:] for t in TRANSITIONS], ids=[t[0] for t in TRANSITIONS]
)
def test_on_outcome(before: Circuit, seen: circuit.Verdict, job_id: str, after: Circuit, effect: type | None) -> None:
    change = circuit.on_outcome(before, seen, NOW, POLICY, job_id)
    assert change.circuit == after
    assert type(change.effect) is effect if effect is not None else change.effect is None


def test_the_effects_say_what_happened() -> None:
    change = circuit.on_outcome(PROBING, FAIL, NOW, POLICY, "job_probe")
    assert isinstance(change.effect, circuit.Opened)
    assert change.effect.detail() == {
        "until": "1970-01-01T02:47:40.000Z",
        "cooldown": 60.0,
        "failures_in_a_row": 4,
        "reason": "http_401",
        "probe_failed": True,
    }
    closed = circuit.on_outcome(PROBING, OK, NOW, POLICY, "job_probe").effect
    assert isinstance(closed, circuit.Closed)
    assert closed.detail() == {"opened_at": "1970-01-01T02:46:20.000Z", "reason": "http_401"}


SHOWN: list[tuple[str, Circuit, dict[str, object]]] = [
    ("closed", TWO, {"state": "closed", "until": None, "failures_in_a_row": 2, "reason": "http_401", "probing": False}),
    (
        "open",
        OPEN,
        {
            "state": "open",
            "until": "1970-01-01T02:46:50.000Z",
            "failures_in_a_row": 3,
            "reason": "http_401",
            "probing": False,
        },
    ),
    (
        "half-open",
        HALF,
        {
            "state": "half_open",
            "until": "1970-01-01T02:46:39.000Z",
            "failures_in_a_row": 3,
            "reason": "http_401",
            "probing": False,
        },
    ),
    (
        "probing",
        PROBING,
        {
            "state": "half_open",
            "until": "1970-01-01T02:46:39.000Z",
            "failures_in_a_row": 3,
            "reason": "http_401",
            "probing": True,
        },
    ),
]


@pytest.mark.parametrize(("state", "shown"), [s[1:] for s in SHOWN], ids=[s[0] for s in SHOWN])
def test_what_operators_see(state: Circuit, shown: dict[str, object]) -> None:
    assert state.to_json(NOW) == shown


def test_settings_defaults_and_overrides() -> None:
    assert Settings.from_environ({}).circuits == CircuitPolicy(3, 30.0, 600.0, 600.0)
    env = {
        "JOBHOOK_ROUTE_BREAKER_FAILURES": "5",
        "JOBHOOK_ROUTE_COOLDOWN": "2s",
        "JOBHOOK_ROUTE_MAX_COOLDOWN": "1m",
        "JOBHOOK_ROUTE_CREDITS_COOLDOWN": "1h",
    }
    assert Settings.from_environ(env).circuits == CircuitPolicy(5, 2.0, 60.0, 3600.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBHOOK_ROUTE_BREAKER_FAILURES": "0"}, "JOBHOOK_ROUTE_BREAKER_FAILURES: must be at least 1, got 0"),
        ({"JOBHOOK_ROUTE_BREAKER_FAILURES": "three"}, "JOBHOOK_ROUTE_BREAKER_FAILURES: expected a whole number"),
        ({"JOBHOOK_ROUTE_COOLDOWN": "soon"}, "JOBHOOK_ROUTE_COOLDOWN: expected seconds"),
        ({"JOBHOOK_ROUTE_CREDITS_COOLDOWN": "0"}, "JOBHOOK_ROUTE_CREDITS_COOLDOWN: must be at least"),
        (
            {"JOBHOOK_ROUTE_COOLDOWN": "5m", "JOBHOOK_ROUTE_MAX_COOLDOWN": "1m"},
            "JOBHOOK_ROUTE_MAX_COOLDOWN: must not be below JOBHOOK_ROUTE_COOLDOWN (300s), got 60s",
        ),
    ],
)
def test_settings_errors_are_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# -- a job whose provider is shut, with candidates after it (SPEC §8) -----------------------------------

SHUT: list[tuple[str, float, list[tuple[str, circuit.Permission]], type, str | None, float | None]] = [
    ("no candidate left: waits for its own", NOW + 30, [], circuit.WaitFor, "aivideoapi", NOW + 30),
    ("the next is closed: passed over", NOW + 30, [("apiframe", Go())], circuit.PassOver, None, None),
    ("the next may probe: passed over", NOW + 30, [("apiframe", Probe())], circuit.PassOver, None, None),
    (
        "the next is shut, the one after is not: passed over (and the next too, in turn)",
        NOW + 30,
        [("apiframe", Blocked(NOW + 5)), ("apiinone", Go())],
        circuit.PassOver,
        None,
        None,
    ),
    (
        "every one shut: waits for the first to half-open, a later one",
        NOW + 30,
        [("apiframe", Blocked(NOW + 50)), ("apiinone", Blocked(NOW + 10))],
        circuit.WaitFor,
        "apiinone",
        NOW + 10,
    ),
    (
        "every one shut: its own half-opens first",
        NOW + 5,
        [("apiframe", Blocked(NOW + 50))],
        circuit.WaitFor,
        "aivideoapi",
        NOW + 5,
    ),
    (
        "every one shut, two at the same time: the first in order",
        NOW + 30,
        [("apiframe", Blocked(NOW + 10)), ("apiinone", Blocked(NOW + 10))],
        circuit.WaitFor,
        "apiframe",
        NOW + 10,
    ),
]


@pytest.mark.parametrize(
    ("until", "later", "step", "provider", "wait_until"), [row[1:] for row in SHUT], ids=[row[0] for row in SHUT]
)
def test_when_shut(
    until: float,
    later: list[tuple[str, circuit.Permission]],
    step: type,
    provider: str | None,
    wait_until: float | None,
) -> None:
    decided = circuit.when_shut("aivideoapi", until, later)
    assert type(decided) is step
    if isinstance(decided, circuit.WaitFor):
        assert (decided.provider, decided.until) == (provider, wait_until)
    else:
        assert isinstance(decided, circuit.PassOver)
        assert decided.error.code == "circuit_open"
        assert decided.error.message == (
            "aivideoapi's circuit is open until 1970-01-01T02:47:10.000Z: not sent, the next candidate is tried"
        )
