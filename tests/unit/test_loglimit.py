"""Log lines outsiders can cause: a few per key and window, the rest counted and said later."""

from __future__ import annotations

from service.loglimit import LogLimiter, note


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_cut_to_the_limit_and_the_next_window_says_how_many_were_left_out() -> None:
    clock = Clock()
    limiter = LogLimiter(3, 60.0, clock=clock)
    admitted = [limiter.admit(("job", "stale_timestamp")) for _ in range(1000)]
    assert admitted[:3] == [0, 0, 0]
    assert set(admitted[3:]) == {None}
    clock.now += 59.9
    assert limiter.admit(("job", "stale_timestamp")) is None  # still the same window
    clock.now += 0.2
    assert limiter.admit(("job", "stale_timestamp")) == 998  # written, saying what was left out
    assert limiter.admit(("job", "stale_timestamp")) == 0


def test_keys_are_limited_apart() -> None:
    limiter = LogLimiter(1, 60.0, clock=Clock())
    assert limiter.admit(("a", "x")) == 0
    assert limiter.admit(("a", "x")) is None
    assert limiter.admit(("a", "y")) == 0
    assert limiter.admit(("b", "x")) == 0


def test_the_keys_remembered_are_bounded() -> None:
    clock = Clock()
    limiter = LogLimiter(1, 60.0, keys=100, clock=clock)
    for n in range(10_000):
        limiter.admit((f"job{n}", "x"))
    assert len(limiter._windows) <= 100


def test_the_written_lines_say_when_more_are_left_out_and_how_many_were() -> None:
    clock = Clock()
    limiter = LogLimiter(2, 60.0, clock=clock)
    key = ("job", "x")
    assert note(limiter.admit(key) or 0, limiter, key) == ""
    assert "at most 2 per 60 s" in note(limiter.admit(key) or 0, limiter, key)
    assert limiter.admit(key) is None
    clock.now += 61
    assert "1 more like it in the previous 60 s were not logged" in note(limiter.admit(key) or 0, limiter, key)
