"""Backoff for polls and retried submissions: exponential with jitter, capped; Retry-After parsing."""

from __future__ import annotations

import email.utils
import itertools
import random
import time
from collections.abc import Iterator

import pytest

from service.domain.backoff import MAX_RETRY_AFTER, delay, retry_after

NOW = 1_781_000_000.0

# (base, cap): the defaults of SPEC §1, and a few shapes around them.
SCHEDULES = [(5.0, 60.0), (1.0, 3600.0), (0.01, 0.01), (0.5, 1000.0), (60.0, 5.0), (3.0, 3.0 * 2**20)]
ATTEMPTS = [*range(0, 70), 100, 1023, 1024, 1025, 10**6, 10**18, 2**200]


def expected_step(attempt: int, base: float, cap: float) -> float:
    """The un-jittered step: base·2^attempt, capped (every schedule above reaches its cap by 2^40)."""
    if attempt >= 64:
        return cap
    return min(cap, base * 2**attempt)


class FixedRandom(random.Random):
    """`uniform` returns one end of its range, and records what it was asked."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a if self.end == "low" else b


@pytest.mark.parametrize(("base", "cap"), SCHEDULES)
def test_delay_bounds_for_many_attempts_and_seeds(base: float, cap: float) -> None:
    for seed in range(25):
        rng = random.Random(seed)
        for attempt in ATTEMPTS:
            step = expected_step(attempt, base, cap)
            value = delay(attempt, base, cap, rng)
            assert isinstance(value, float)
            assert value <= cap, (attempt, seed)
            assert value <= step
            assert value >= 0.75 * step, (attempt, seed)


@pytest.mark.parametrize(("base", "cap"), SCHEDULES)
@pytest.mark.parametrize("end", ["low", "high"])
def test_delay_doubles_until_the_cap(base: float, cap: float, end: str) -> None:
    rng = FixedRandom(end)
    factor = 0.75 if end == "low" else 1.0
    values = [delay(attempt, base, cap, rng) for attempt in range(60)]
    assert rng.calls == [(0.75, 1.0)] * 60  # the jitter only ever shortens, by at most a quarter
    assert values[0] == pytest.approx(min(base, cap) * factor)
    for previous, current in itertools.pairwise(values):
        if current < cap * factor:
            assert current == pytest.approx(previous * 2)
        else:
            assert current == pytest.approx(cap * factor)
    assert values[-1] == pytest.approx(cap * factor)  # and the cap is eventually reached


def test_default_poll_schedule_exactly() -> None:
    rng = FixedRandom("high")
    assert [delay(n, 5.0, 60.0, rng) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


@pytest.mark.parametrize("attempt", [10**6, 10**18, 2**200, 2**4096])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    value = delay(attempt, 5.0, 60.0, random.Random(1))
    assert 45.0 <= value <= 60.0


def test_jitter_spreads_jobs_submitted_together() -> None:
    values = [delay(0, 5.0, 60.0, random.Random(seed)) for seed in range(200)]
    assert len(set(values)) > 150
    assert min(values) < 3.9  # some land in the lower part of [3.75, 5] ...
    assert max(values) > 4.85  # ... and some near the top


def test_delay_is_deterministic_for_a_seed() -> None:
    first = [delay(n, 5.0, 60.0, random.Random(7)) for n in range(10)]
    second = [delay(n, 5.0, 60.0, random.Random(7)) for n in range(10)]
    assert first == second


# -- Retry-After ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        ("  30  ", 30.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("3600", 3600.0),
        ("3599.5", 3599.5),
        ("3601", MAX_RETRY_AFTER),
        ("86400", MAX_RETRY_AFTER),
        ("1e9", MAX_RETRY_AFTER),
        ("1e999", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("-5", 0.0),
        ("-inf", 0.0),
    ],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    assert retry_after(header, NOW) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "\t\n",
        "soon",
        "abc",
        "NaN",
        "nan",
        "-nan",
        "0x10",
        "5s",
        "1,5",
        "\x00",
        "Oct",
        "1 2 3 4 5",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 25:28:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "21 Oct 2015",
    ],
)
def test_retry_after_unreadable_is_none(header: str | None) -> None:
    assert retry_after(header, NOW) is None


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)  # IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(90, 90.0), (1, 1.0), (3600, 3600.0), (0, 0.0), (-1, 0.0), (-86400, 0.0), (7200, MAX_RETRY_AFTER)],
)
def test_retry_after_http_date(offset: int, expected: float) -> None:
    assert retry_after(_http_date(NOW + offset), NOW) == pytest.approx(expected)


def test_retry_after_date_long_past() -> None:
    assert retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0.0
    assert retry_after("Sunday, 06-Nov-94 08:49:37 GMT", NOW) == 0.0  # RFC 850, obsolete but allowed


def test_retry_after_http_date_far_future_is_capped() -> None:
    assert retry_after("Fri, 31 Dec 2100 23:59:59 GMT", NOW) == MAX_RETRY_AFTER


@pytest.fixture
def japan_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone at UTC+9 (a POSIX TZ string: no tz database needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("japan_local_time")
def test_retry_after_gmt_date_ignores_local_time_zone() -> None:
    assert retry_after(_http_date(NOW + 120), NOW) == pytest.approx(120.0)


@pytest.mark.usefixtures("japan_local_time")
def test_retry_after_asctime_date_is_gmt_whatever_the_local_time_zone() -> None:
    asctime = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(NOW + 120))  # "Sun Nov  6 08:49:37 1994"
    assert retry_after(asctime, NOW) == pytest.approx(120.0)
