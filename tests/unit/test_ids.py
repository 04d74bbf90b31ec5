"""Job ids: `job_` + a monotonic ULID (Crockford base32, 48-bit ms time + 80 random bits)."""

from __future__ import annotations

import itertools
import re
import threading
import types

import pytest

from service import ids
from service.ids import JOB_ID, is_job_id, new_job_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PATTERN = re.compile(r"job_[0-7][0-9A-HJKMNP-TV-Z]{25}")


def decode(job_id: str) -> int:
    value = 0
    for char in job_id.removeprefix("job_"):
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_ids_match_the_pattern() -> None:
    for _ in range(1000):
        job_id = new_job_id()
        assert PATTERN.fullmatch(job_id), job_id
        assert JOB_ID.match(job_id)
        assert is_job_id(job_id)


def test_ids_strictly_increase_across_10000_calls() -> None:
    made = [new_job_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(made))
    assert all(decode(a) < decode(b) for a, b in itertools.pairwise(made))  # string order = number order


def test_ids_carry_their_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_last", 0)
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time=lambda: 1_781_000_000.123))
    job_id = new_job_id()
    assert decode(job_id) >> 80 == 1_781_000_000_123


def test_ids_still_increase_when_the_clock_stands_still_or_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([2_000_000_000.0] * 50 + [1_000_000_000.0] * 50)
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time=lambda: next(clock)))
    made = [new_job_id() for _ in range(100)]
    assert all(a < b for a, b in itertools.pairwise(made))
    assert all(is_job_id(job_id) for job_id in made)


def test_ids_increase_when_randomness_is_maximal_then_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    randomness = iter([b"\xff" * 10, b"\x00" * 10, b"\x00" * 10])
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time=lambda: 1_781_000_000.0))
    monkeypatch.setattr(ids, "os", types.SimpleNamespace(urandom=lambda n: next(randomness)))
    first, second, third = new_job_id(), new_job_id(), new_job_id()
    assert first < second < third
    assert decode(second) == decode(first) + 1 and decode(third) == decode(first) + 2


def test_ids_are_unique_across_threads() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        local = [new_job_id() for _ in range(1000)]
        with lock:
            made.extend(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 4000


VALID = "job_01J9Z8X7W6V5T4S3R2Q1P0NMKH"

NEAR_MISSES = [
    "",
    "job_",
    "job",
    VALID[:-1],  # 25 characters
    VALID + "0",  # 27 characters
    VALID.lower(),
    "job_" + VALID[4:].lower(),
    "JOB_" + VALID[4:],
    "job-" + VALID[4:],
    "jobs_" + VALID[4:],
    "_" + VALID,
    VALID[4:],  # the ULID without the prefix
    "job_" + VALID[4:-1] + "I",
    "job_" + VALID[4:-1] + "L",
    "job_" + VALID[4:-1] + "O",
    "job_" + VALID[4:-1] + "U",
    "job_" + VALID[4:-1] + "-",
    "job_" + VALID[4:-1] + "é",
    "job_" + VALID[4:-1] + "０",  # a full-width digit
    " " + VALID,
    VALID + " ",
    VALID[:10] + " " + VALID[11:],
    VALID + "/events",
    "job_" + "0" * 25,
]


def test_valid_example() -> None:
    assert is_job_id(VALID)
    assert is_job_id("job_" + "0" * 26)
    assert is_job_id("job_7" + "Z" * 25)


@pytest.mark.parametrize("value", NEAR_MISSES, ids=repr)
def test_near_misses_are_refused(value: str) -> None:
    assert not is_job_id(value)


@pytest.mark.parametrize("value", [VALID + "\n", "job_" + "0" * 26 + "\n"], ids=repr)
def test_trailing_newline_is_refused(value: str) -> None:
    assert not is_job_id(value)


@pytest.mark.parametrize("first", ["8", "9", "G", "Z"])
def test_ulid_overflow_is_refused(first: str) -> None:
    assert not is_job_id("job_" + first + "0" * 25)
