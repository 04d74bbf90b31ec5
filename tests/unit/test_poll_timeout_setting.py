"""JOBHOOK_POLL_TIMEOUT: a poll's HTTP timeout, bounded by the lease a poll in flight holds."""

from __future__ import annotations

import pytest

from service.config import POLL_TIMEOUT_MAX, Settings
from service.engine import POLL_LEASE
from service.errors import ConfigError


def test_default_and_explicit_values() -> None:
    assert Settings.from_environ({}).poll_timeout == 30.0
    assert Settings.from_environ({"JOBHOOK_POLL_TIMEOUT": "0.5"}).poll_timeout == 0.5
    assert Settings.from_environ({"JOBHOOK_POLL_TIMEOUT": "30s"}).poll_timeout == 30.0


@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "at least 0.1"), ("31", "at most 30"), ("1m", "at most 30"), ("soon", "expected seconds")],
)
def test_refusals_name_the_variable(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"JOBHOOK_POLL_TIMEOUT": value})
    assert refused.value.variable == "JOBHOOK_POLL_TIMEOUT"
    assert says in refused.value.message


def test_a_poll_always_ends_within_its_lease() -> None:
    """A poll that outlived its lease would come due again while still in flight: sent twice."""
    assert POLL_TIMEOUT_MAX < POLL_LEASE
