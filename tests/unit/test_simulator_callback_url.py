"""The simulator posts only to jobhook's own callback URLs: `prefix + "../…"` and its cousins are not."""

from __future__ import annotations

import pytest

from service.simulator import callback_url_allowed

PREFIX = "http://127.0.0.1:8000/callbacks/"
TOKEN = "eyJqIjoiam9iXzAxIn0.Zx9-a_b"


@pytest.mark.parametrize(
    "url",
    [
        PREFIX + TOKEN,
        "HTTP://127.0.0.1:8000/callbacks/" + TOKEN,  # the scheme is case-insensitive
        "http://127.0.0.1:8000/callbacks/" + "...",  # three dots are a name, not a segment
    ],
)
def test_jobhooks_own_callback_urls_are_allowed(url: str) -> None:
    assert callback_url_allowed(url, PREFIX)


@pytest.mark.parametrize(
    "url",
    [
        PREFIX + "../v1/jobs",
        PREFIX + "..",
        PREFIX + ".",
        PREFIX + "./x",
        PREFIX + "%2e%2e/v1/jobs",
        PREFIX + "%2E%2E",
        PREFIX + ".%2e/v1/jobs",
        PREFIX + "x/../../v1/jobs",
        PREFIX + "x%2f..%2f..%2fv1%2fjobs",
        PREFIX + "x\\..\\..\\v1",
        PREFIX + TOKEN + "?next=/v1/jobs",
        PREFIX + TOKEN + "#frag",
        PREFIX,  # no token
        PREFIX + "/" + TOKEN,
        "http://127.0.0.1:8001/callbacks/" + TOKEN,  # another port
        "http://127.0.0.1/callbacks/" + TOKEN,
        "https://127.0.0.1:8000/callbacks/" + TOKEN,  # another scheme
        "http://localhost:8000/callbacks/" + TOKEN,  # another host name, even for the same address
        "http://127.0.0.1:8000@evil.example/callbacks/" + TOKEN,
        "http://user@127.0.0.1:8000/callbacks/" + TOKEN,
        "http://127.0.0.1:8000\\@evil.example/callbacks/" + TOKEN,
        "http://127.0.0.1:99999/callbacks/" + TOKEN,  # a port that cannot be
        "http://[::1/callbacks/" + TOKEN,  # a host that cannot be parsed
        "http://127.0.0.1:8000/callbacks" + TOKEN,
        "ftp://127.0.0.1:8000/callbacks/" + TOKEN,
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert not callback_url_allowed(url, PREFIX)


def test_the_default_port_may_be_spelled_out_or_not() -> None:
    assert callback_url_allowed("https://hooks.example/callbacks/" + TOKEN, "https://hooks.example:443/callbacks/")
    assert callback_url_allowed("https://hooks.example:443/callbacks/" + TOKEN, "https://hooks.example/callbacks/")
