"""JOBHOOK_MAX_CONNECTIONS, JOBHOOK_MAX_WAITERS, JOBHOOK_MAX_STREAMS, JOBHOOK_HEAD_TIMEOUT (issue 14, item 3)."""

from __future__ import annotations

import pytest

from service.config import ConfigError, ConnectionLimits, Settings


def test_defaults() -> None:
    limits = Settings.from_environ({}).limits
    assert limits == ConnectionLimits(max_connections=4096, max_waiters=1000, max_streams=100, head_timeout=10.0)


def test_values() -> None:
    limits = Settings.from_environ(
        {
            "JOBHOOK_MAX_CONNECTIONS": "500",
            "JOBHOOK_MAX_WAITERS": "20",
            "JOBHOOK_MAX_STREAMS": "3",
            "JOBHOOK_HEAD_TIMEOUT": "2.5",
        }
    ).limits
    assert limits == ConnectionLimits(max_connections=500, max_waiters=20, max_streams=3, head_timeout=2.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBHOOK_MAX_CONNECTIONS", "15"),  # below what the service needs for itself
        ("JOBHOOK_MAX_CONNECTIONS", "many"),
        ("JOBHOOK_MAX_WAITERS", "0"),
        ("JOBHOOK_MAX_WAITERS", "1.5"),
        ("JOBHOOK_MAX_STREAMS", "-1"),
        ("JOBHOOK_HEAD_TIMEOUT", "0"),
        ("JOBHOOK_HEAD_TIMEOUT", "1h"),
        ("JOBHOOK_HEAD_TIMEOUT", "soon"),
    ],
)
def test_bad_values_name_the_variable_in_one_line(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ") and "\n" not in str(caught.value)
