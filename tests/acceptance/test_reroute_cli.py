"""As a user would: a job accepted by aivideoapi goes quiet; `jobhook reroute ID` moves it to apiframe
(saying both may charge), a second one is refused with the reason, and `--from-attempt` naming an attempt
left already changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.acceptance.test_cli import run
from tests.acceptance.test_failover_cli import TOKEN, cli_env, serve_two_providers
from tests.conftest import eventually
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.apiframe import FakeApiframe


def test_reroute_help_says_both_may_charge() -> None:
    shown = run("reroute", "--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "BOTH PROVIDERS MAY CHARGE" in text and "--from-attempt" in text and "JOBHOOK_URL" in text


async def test_reroute_moves_a_quiet_job_and_says_why_when_it_cannot(tmp_path: Path, database: str) -> None:
    async with FakeAivideoapi(complete_after=0.2) as aivideoapi, FakeApiframe(complete_after=0.2) as apiframe:
        aivideoapi.default_script = TaskScript(outcome="never")
        service = await serve_two_providers(tmp_path, database, aivideoapi, apiframe)
        try:
            env = cli_env(service)
            # The fakes run in this event loop: the CLI runs in a thread so that they can answer it.
            submitted = await asyncio.to_thread(run, "submit", "--provider", "aivideoapi,apiframe", "A kite", env=env)
            assert submitted.returncode == 0, submitted.stderr + service.log()
            job_id = json.loads(submitted.stdout)["id"]
            moved = await asyncio.to_thread(run, "reroute", job_id, env=env)
            assert moved.returncode == 0, moved.stderr + service.log()
            assert f"{job_id}: rerouted to apiframe" in moved.stdout
            lines = moved.stdout.splitlines()
            assert lines[1].split()[:3] == ["1.", "aivideoapi", "accepted"]
            assert lines[2].split()[:2] == ["2.", "apiframe"]

            async def completed() -> bool:
                async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                    job = (await client.get(f"{service.url}/v1/jobs/{job_id}")).json()
                return bool(job["status"] == "completed")

            await eventually(completed, timeout=20)
            shown = await asyncio.to_thread(run, "job", job_id, env=env)
            assert "failover  reroute" in shown.stdout and "both may charge" in shown.stdout
            again = await asyncio.to_thread(run, "reroute", job_id, "--from-attempt", "1", env=env)
            assert again.returncode == 0, again.stderr
            assert "attempt 1 was left already" in again.stdout
            refused = await asyncio.to_thread(run, "reroute", job_id, env=env)
            assert refused.returncode == 2
            assert refused.stderr.startswith("jobhook: job_final: ") and len(refused.stderr.splitlines()) == 1
            unknown = await asyncio.to_thread(run, "reroute", "job_01JAAAAAAAAAAAAAAAAAAAAAAA", env=env)
            assert (unknown.returncode, unknown.stderr.split(":")[1].strip()) == (2, "job_not_found")
            assert (len(aivideoapi.creates), len(apiframe.creates)) == (1, 1)
        finally:
            service.stop()
