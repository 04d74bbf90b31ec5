"""Fixtures the routing tests share (failover, its edges, rerouting): the two fake resellers most of
them route between. A module that needs them set up otherwise defines its own, which takes precedence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.apiframe import FakeApiframe


@pytest.fixture
async def aivideoapi() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.2) as provider:
        yield provider


@pytest.fixture
async def apiframe() -> AsyncIterator[FakeApiframe]:
    async with FakeApiframe(complete_after=0.2) as provider:
        yield provider
