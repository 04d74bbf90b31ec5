"""Notifications end to end (SPEC §6): the real app, a real SMTP server, and HTTP sinks on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from tests.conftest import ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.sinks import HTTPSink, SMTPSink, notify_env, sinks

Sinks = tuple[HTTPSink, HTTPSink, SMTPSink]


@pytest.fixture
async def receivers() -> AsyncIterator[Sinks]:
    async with sinks() as all_three:
        yield all_three


def notifications(events: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    return [(e["outcome"], e["detail"].get("destination")) for e in events if e["type"] == "notification"]


async def test_a_finished_job_reaches_every_destination_once(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    async with jobhook(**notify_env(slack, backend, smtp)) as svc:
        job = await svc.submit(provider="simulator", prompt='A poster reading "SUMMER NIGHTS"', aspect_ratio="16:9")
        done = await svc.wait_finished(job["id"])
        await eventually(lambda: slack.delivered() and backend.delivered() and smtp.messages)
        await asyncio.sleep(0.5)  # anything extra would have arrived by now
        [hook] = backend.delivered()
        body = hook.json()
        assert body["type"] == "job.completed"
        assert body["data"]["id"] == job["id"]
        assert body["data"]["status"] == "completed"
        assert body["timestamp"].endswith("Z")
        assert hook.headers["webhook-id"].startswith("msg_")
        assert backend.rejected_signatures == 0
        [message] = slack.delivered()
        blocks = message.json()["blocks"]
        for block in blocks:
            parsed = Block.parse(block)
            assert parsed is not None
            parsed.validate_json()
        assert "SUMMER NIGHTS" in str(blocks)
        [mail] = smtp.messages
        assert mail["Subject"].startswith("[jobhook] completed: A poster reading")
        assert mail.get_content_type() == "multipart/alternative"
        assert {part.get_content_type() for part in mail.iter_parts()} == {"text/plain", "text/html"}
        assert smtp.envelopes[0][1] == ["ops@example.com", "art@example.com"]
        events = await svc.events(done["id"])
        assert ("queued", None) in notifications(events)
        delivered = sorted(dest for outcome, dest in notifications(events) if outcome == "delivered")
        assert delivered == ["email", "slack", "webhook"]


async def test_notify_on_filters_job_events(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    async with jobhook(**notify_env(slack, backend, smtp, JOBHOOK_NOTIFY_ON="failed")) as svc:
        ok = await svc.submit(provider="simulator", prompt="fine")
        bad = await svc.submit(provider="simulator", prompt="doomed", provider_options={"simulate": {"fail": True}})
        await svc.wait_finished(ok["id"])
        await svc.wait_finished(bad["id"])
        await eventually(lambda: backend.delivered())
        await asyncio.sleep(0.5)
        assert [r.json()["type"] for r in backend.delivered()] == ["job.failed"]
        assert [r.json()["data"]["id"] for r in backend.delivered()] == [bad["id"]]
        assert notifications(await svc.events(ok["id"])) == []


async def test_failed_sends_are_retried_with_the_same_event_id(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    backend.answers = [500, 503]
    smtp.replies = ["451 4.3.0 try again later"]
    async with jobhook(**notify_env(slack, backend, smtp)) as svc:
        job = await svc.submit(provider="simulator", prompt="third time lucky")
        await svc.wait_finished(job["id"])
        await eventually(lambda: backend.delivered() and smtp.messages)
        ids = {r.headers["webhook-id"] for r in backend.received}
        assert [r.answered for r in backend.received] == [500, 503, 200]
        assert len(ids) == 1
        assert len({r.body for r in backend.received}) == 1  # the same message, only re-signed

        async def webhook_outcomes() -> list[tuple[str | None, str | None]] | None:
            found = [(o, d) for o, d in notifications(await svc.events(job["id"])) if d == "webhook"]
            return found if ("delivered", "webhook") in found else None  # recorded just after the 200

        outcomes = await eventually(webhook_outcomes)
        assert outcomes == [("retry", "webhook"), ("retry", "webhook"), ("delivered", "webhook")]
        assert len(smtp.messages) == 1


async def test_rate_limited_destination_is_retried_after_its_retry_after(
    jobhook: ServiceFactory, receivers: Sinks
) -> None:
    slack, backend, smtp = receivers
    slack.answers = [429]
    slack.retry_after = "1"
    async with jobhook(**notify_env(slack, backend, smtp)) as svc:
        job = await svc.submit(provider="simulator", prompt="slow down")
        await svc.wait_finished(job["id"])
        await eventually(lambda: slack.delivered())
        first, second = slack.received
        assert (first.answered, second.answered) == (429, 200)
        assert second.time - first.time >= 1.0


async def test_spent_schedule_is_dead_and_resend_delivers_it(
    jobhook: ServiceFactory, receivers: Sinks, database: str
) -> None:
    slack, backend, smtp = receivers
    backend.always = 500
    env = notify_env(slack, backend, smtp, JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,0.1,0.1")
    async with jobhook(**env) as svc:
        job = await svc.submit(provider="simulator", prompt="never lands")
        await svc.wait_finished(job["id"])
        dead = await eventually(lambda: svc.runtime.store.outbox(status="dead"))
        assert [(row.destination, row.attempts) for row in dead] == [("webhook", 3)]
        assert len(backend.received) == 3
        listing = run_cli("outbox", "--dead", database=database)
        assert "webhook" in listing and "dead" in listing
        backend.always = None
        resent = run_cli("outbox", "resend", "--dead", database=database)
        assert "1 delivery queued again" in resent
        svc.runtime.outbox.wake()  # as the next tick would, within 15 s
        await eventually(lambda: backend.delivered())
        assert len({r.headers["webhook-id"] for r in backend.received}) == 1
        assert await svc.runtime.store.outbox(status="dead") == []


async def test_gone_stops_the_webhook_but_not_the_others(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    backend.answers = [410]
    async with jobhook(**notify_env(slack, backend, smtp)) as svc:
        first = await svc.submit(provider="simulator", prompt="one")
        await svc.wait_finished(first["id"])
        await eventually(lambda: backend.received)
        second = await svc.submit(provider="simulator", prompt="two")
        await svc.wait_finished(second["id"])
        await eventually(lambda: len(slack.delivered()) == 2 and len(smtp.messages) == 2)
        await asyncio.sleep(0.5)
        assert len(backend.received) == 1  # stopped after the 410
        assert await svc.runtime.store.stopped_destinations() == {"webhook": "HTTP 410: gone; resend to resume"}
        pending = await svc.runtime.store.outbox(status="pending")
        assert [row.destination for row in pending] == ["webhook"]
        dead = await svc.runtime.store.outbox(status="dead")
        await svc.runtime.store.resend([row.id for row in dead])
        await eventually(lambda: len(backend.delivered()) == 2)


async def test_a_failing_destination_never_delays_the_others(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    slack.always = 500
    async with jobhook(
        **notify_env(slack, backend, smtp, JOBHOOK_NOTIFY_RETRY_SCHEDULE="0,0.05,0.05,0.05,0.05,0.05,0.05")
    ) as svc:
        jobs = [await svc.submit(provider="simulator", prompt=f"job {n}") for n in range(6)]
        for job in jobs:
            await svc.wait_finished(job["id"])
        await eventually(lambda: len(backend.delivered()) == 6 and len(smtp.messages) == 6)
        assert svc.runtime.outbox.status()["slack"] == "open"  # the breaker paused it


async def test_provider_health_degrades_and_recovers(jobhook: ServiceFactory, receivers: Sinks) -> None:
    slack, backend, smtp = receivers
    async with FakeAivideoapi(complete_after=0.1, callback_retry_delays=(0.0,)) as fake:
        fake.default_script = TaskScript(drop_callback=True)
        env = notify_env(
            slack,
            backend,
            smtp,
            JOBHOOK_AIVIDEOAPI_API_KEY="sk-test",
            JOBHOOK_AIVIDEOAPI_BASE_URL=fake.base_url,
            JOBHOOK_DEGRADED_AFTER="2",
            JOBHOOK_CALLBACK_GRACE="1.5",
            JOBHOOK_POLL_INTERVAL="0.2",
        )
        async with jobhook(**env) as svc:
            for n in range(2):
                job = await svc.submit(provider="aivideoapi", prompt=f"silent {n}")
                assert (await svc.wait_finished(job["id"]))["resolved_by"] == "poll"
            types = await eventually(lambda: provider_events(backend))
            assert types == ["provider.callbacks_degraded"]
            # Degraded: the next job is polled from the poll interval, not after the grace.
            fake.default_script = TaskScript(outcome="never")
            job = await svc.submit(provider="aivideoapi", prompt="polled early")
            created = fake.creates[-1].time
            await eventually(lambda: [q for q in fake.queries if q.task_id == job["provider_task_id"]])
            first_query = min(q.time for q in fake.queries if q.task_id == job["provider_task_id"])
            assert first_query - created < 1.5
            # A genuine callback: recovered.
            fake.complete(job["provider_task_id"])
            await svc.wait_finished(job["id"])
            await eventually(lambda: len(provider_events(backend)) == 2)
            assert provider_events(backend) == ["provider.callbacks_degraded", "provider.callbacks_recovered"]
            assert svc.runtime.store.degraded == set()


def provider_events(sink: HTTPSink) -> list[str]:
    return [r.json()["type"] for r in sink.delivered() if r.json()["type"].startswith("provider.")]


async def test_low_credits_are_told_once_per_crossing(jobhook: ServiceFactory, receivers: Sinks) -> None:
    from tests.fakes.segmind import FakeSegmind

    slack, backend, smtp = receivers
    async with FakeSegmind(latency=0.05, credits=23.0, price_per_image=2.0) as segmind:
        env = notify_env(
            slack,
            backend,
            smtp,
            JOBHOOK_SEGMIND_API_KEY="sg",
            JOBHOOK_SEGMIND_BASE_URL=segmind.base_url,
            JOBHOOK_CREDITS_LOW="20",
            JOBHOOK_MIRROR_IMAGES="false",
        )
        async with jobhook(**env) as svc:
            for n in range(4):  # 21, 19, 17, 15 credits left
                job = await svc.submit(provider="segmind", prompt=f"spend {n}")
                assert (await svc.wait_finished(job["id"]))["status"] == "completed"
            await eventually(lambda: provider_events(backend))
            await asyncio.sleep(0.5)
            [event] = [r.json() for r in backend.delivered() if r.json()["type"] == "provider.credits_low"]
            assert event["data"]["provider"] == "segmind"
            assert event["data"]["credits"] == 19.0
            assert event["data"]["threshold"] == 20.0


def run_cli(*args: str, database: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "JOBHOOK_DATABASE": database},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
